"""Tasks as records: making one, cancelling, what is open or done, what is overdue.

What a task action may do (accept, complete, ...) is ``rules.task_actions``; what a stage's tasks
mean for its steps is in that stage's module.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta

from workflows.model import (
    OPEN_TASK_STATUSES,
    Actor,
    JourneyState,
    OriginAssessment,
    Service,
    TaskOutcome,
    TaskState,
    TaskStatus,
    TimelineEvent,
)
from workflows.rules.base import NewId
from workflows.rules.dates import end_of
from workflows.rules.events import task_event


def open_tasks(state: JourneyState) -> list[TaskState]:
    return [t for t in state.tasks.values() if t.is_open]


def done_this_stage(state: JourneyState, service: Service) -> list[TaskState]:
    """Tasks of this service done during the current run of the current stage.

    A return after a change of pathway starts afresh: earlier assessments and documents are stale.
    """
    return [
        t
        for t in state.tasks.values()
        if t.service == service
        and t.stage == state.stage
        and t.stage_run == state.stage_runs
        and t.status == TaskStatus.completed
        and t.outcome == TaskOutcome.done
    ]


def task_done(state: JourneyState, service: Service) -> bool:
    return bool(done_this_stage(state, service))


def latest_origin_assessment(state: JourneyState) -> OriginAssessment | None:
    done = done_this_stage(state, Service.origin_assessment)
    return max(done, key=lambda t: t.completed_at or t.assigned_at).assessment if done else None


def task_overdue(status: TaskStatus | str, accept_by: datetime, due_on: date, now: datetime) -> bool:
    """What overdue means for a task, wherever it is asked (the journey, the read model, a partner's
    inbox): past its acceptance deadline while still unaccepted, or open past the end of its due day."""
    status = TaskStatus(status)
    if status == TaskStatus.assigned and now > accept_by:
        return True
    return status in OPEN_TASK_STATUSES and now > end_of(due_on)


def last_overdue_day(now: datetime) -> date:
    """The latest due day that is over at ``now``: an open task due on it or before is overdue
    (``task_overdue``, as a bound for a query)."""
    day = now.astimezone(UTC).date()
    return day if now > end_of(day) else day - timedelta(days=1)


def reassignable(status: TaskStatus | str, overdue: bool) -> bool:
    """Whether a task may be given to another agency: it was declined or could not be delivered, or
    it is overdue (``task_overdue``)."""
    return overdue or TaskStatus(status) in (TaskStatus.declined, TaskStatus.delivery_failed)


def is_overdue(task: TaskState, now: datetime) -> bool:
    return task_overdue(task.status, task.accept_by, task.due_on, now)


def new_task(
    state: JourneyState,
    service: Service,
    agency_id: str,
    due_date: date | None,
    notes: str,
    now: datetime,
    new_id: NewId,
) -> TaskState:
    task = TaskState(
        task_id=new_id(),
        service=service,
        agency_id=agency_id,
        stage=state.stage,
        assigned_at=now,
        accept_by=now + timedelta(days=state.config.task_accept_days),
        due_on=due_date or (now.date() + timedelta(days=state.config.task_due_days)),
        notes=notes,
        version=state.version,
        stage_run=state.stage_runs,
    )
    state.tasks[task.task_id] = task
    return task


def cancel_tasks(
    state: JourneyState, tasks: Iterable[TaskState], actor: Actor, now: datetime, new_id: NewId, reason: str
) -> list[TimelineEvent]:
    events = []
    for task in tasks:
        task.status, task.version = TaskStatus.cancelled, state.version
        task.outcome_notes = reason
        events.append(task_event(state, task, "cancelled", actor, now, new_id))
    return events


def cancel_open_of(
    state: JourneyState, services: frozenset[Service], actor: Actor, now: datetime, new_id: NewId, reason: str
) -> list[TimelineEvent]:
    """Leaving a stage cancels the open tasks that only made sense in it (its services)."""
    return cancel_tasks(state, [t for t in open_tasks(state) if t.service in services], actor, now, new_id, reason)
