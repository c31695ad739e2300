"""Timeline events and stage changes: how every rule records what happened."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from workflows.ids import CHILD_STAGES
from workflows.model import Actor, CaseStatus, ClosureReason, JourneyState, Stage, TaskState, TimelineEvent
from workflows.rules.base import NewId

# What a step's timeline entry leaves out: free text (sealed in the read model; never a fact).
FREE_TEXT_FIELDS = ("notes", "threats", "measures", "services")


def event(
    state: JourneyState,
    now: datetime,
    new_id: NewId,
    kind: str,
    name: str,
    actor: Actor | None,
    *,
    task_id: str | None = None,
    facts: dict[str, Any] | None = None,
) -> TimelineEvent:
    if kind != "supervision":  # the orchestrator noticing a stall is not activity on the case
        state.last_activity_at = now
    return TimelineEvent(
        event_id=new_id(),
        seq=state.version,
        at=now,
        kind=kind,
        name=name,
        actor_sub=actor.sub if actor else None,
        actor_role=actor.role if actor else None,
        task_id=task_id,
        facts=facts or {},
    )


def task_event(
    state: JourneyState, task: TaskState, what: str, actor: Actor, now: datetime, new_id: NewId, **facts: str
) -> TimelineEvent:
    task.version = state.version
    return event(
        state,
        now,
        new_id,
        "task",
        what,
        actor,
        task_id=task.task_id,
        facts={"service": task.service.value, "agency_id": task.agency_id, "assignment": task.assignment, **facts},
    )


def step_facts(body: dict[str, Any]) -> dict[str, Any]:
    """What a step's timeline entry keeps: the structured facts, not free text."""
    return {k: v for k, v in body.items() if k not in FREE_TEXT_FIELDS}


def enter(state: JourneyState, stage: Stage, now: datetime, new_id: NewId) -> TimelineEvent:
    previous = state.stage
    state.stage, state.stage_entered_at = stage, now
    if stage in CHILD_STAGES:
        state.stage_runs += 1
    return event(state, now, new_id, "stage", stage.value, None, facts={"from": previous.value})


def close(state: JourneyState, reason: ClosureReason, now: datetime, new_id: NewId) -> TimelineEvent:
    entry = enter(state, Stage.closed, now, new_id)
    state.status, state.closure_reason, state.closed_at = CaseStatus.closed, reason, now
    state.closure_requested = state.closure_requested_at = None
    entry.facts["reason"] = reason.value
    return entry
