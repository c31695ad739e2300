"""What the read model is sent after a change: the state, its events, and what to show of it."""

from __future__ import annotations

from workflows.ids import stage_workflow_id
from workflows.model import JourneyState, Projection, TaskState, TimelineEvent
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
    """Whether a change hands the case over to another country, on arrival or by a transfer (the
    scope of all its tasks moves with it)."""
    return any(e.kind == "case" and e.name in ("handed-over", "transferred") for e in events)


def touched_tasks(state: JourneyState, events: list[TimelineEvent]) -> dict[str, TaskState]:
    """The tasks a change touched: those it versioned (a task keeps the case version of its last
    change), or every one on a hand-over, which moves the scope of them all."""
    every = hands_over(events)
    return {k: t for k, t in state.tasks.items() if every or t.version == state.version}


def case_agencies(state: JourneyState) -> list[str]:
    """Every agency the case has given a task to, as the case's row lists them."""
    return sorted({t.agency_id for t in state.tasks.values()})


def project_changes(state: JourneyState, events: list[TimelineEvent]) -> Projection:
    """What the projection activity is sent after a change: ``project`` with only the tasks the
    change touched (all of them on a hand-over) and without the applied updates' results, which the
    read model never shows; the case's agencies are named, as the case's row lists them all.

    The activity's input is a payload in the history (encrypted, stored, sent to the worker) at
    every command: sending the whole state made it grow with every task and answer the case kept.
    (The read model writes the same rows either way; the command the workflow issues is the same,
    so histories recorded before replay unchanged.)"""
    return project(state, events).model_copy(
        update={
            "state": state.model_copy(update={"tasks": touched_tasks(state, events), "applied_updates": {}}),
            "agencies": case_agencies(state),
        }
    )
