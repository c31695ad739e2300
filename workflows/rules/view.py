"""What the read model is sent after a change: the state, its events, and what to show of it."""

from __future__ import annotations

from workflows.ids import stage_workflow_id
from workflows.model import JourneyState, Projection, TimelineEvent
from workflows.rules.registry import open_items
from workflows.rules.steps import allowed_steps


def project(state: JourneyState, events: list[TimelineEvent]) -> Projection:
    """The whole state and what to show of it (reconciliation rewrites a case's rows from this)."""
    return Projection(
        state=state,
        events=events,
        allowed_steps=allowed_steps(state),
        open_items=open_items(state),
        active_workflow_id=stage_workflow_id(state),
    )


def hands_over(events: list[TimelineEvent]) -> bool:
    """Whether a change hands the case over to another country (the scope of all its tasks moves)."""
    return any(e.name == "handed-over" for e in events)


def project_changes(state: JourneyState, events: list[TimelineEvent]) -> Projection:
    """What the projection activity is sent after a change: ``project`` with only the tasks the
    change touched (all of them on a hand-over) and without the applied updates' results, which the
    read model never shows; the case's agencies are named, as the case's row lists them all.

    The activity's input is a payload in the history (encrypted, stored, sent to the worker) at
    every command: sending the whole state made it grow with every task and answer the case kept.
    (The read model writes the same rows either way; the command the workflow issues is the same,
    so histories recorded before replay unchanged.)"""
    everything = project(state, events)
    touched = hands_over(events)
    tasks = {k: t for k, t in state.tasks.items() if touched or t.version == state.version}
    return everything.model_copy(
        update={
            "state": state.model_copy(update={"tasks": tasks, "applied_updates": {}}),
            "agencies": sorted({t.agency_id for t in state.tasks.values()}),
        }
    )
