"""What the read model is sent after a change: the state, its events, and what to show of it."""

from __future__ import annotations

from workflows.ids import stage_workflow_id
from workflows.model import JourneyState, Projection, TimelineEvent
from workflows.rules.registry import open_items
from workflows.rules.steps import allowed_steps


def project(state: JourneyState, events: list[TimelineEvent]) -> Projection:
    return Projection(
        state=state,
        events=events,
        allowed_steps=allowed_steps(state),
        open_items=open_items(state),
        active_workflow_id=stage_workflow_id(state),
    )
