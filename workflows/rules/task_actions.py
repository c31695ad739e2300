"""Task actions: assigning a task to an agency and what its partner or the caseworker does with it
(accept, complete, decline, reassign, cancel; the orchestrator's delivery failure). The same in
every stage; what a stage's own tasks mean is in its module (reception, the origin assessment)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from workflows.model import (
    TASK_BODIES,
    AgencyNeed,
    AssignTaskBody,
    CaseStatus,
    CompleteTaskBody,
    DeclineTaskBody,
    DeliveryFailedBody,
    JourneyState,
    ReassignTaskBody,
    Role,
    Service,
    TaskAction,
    TaskCommand,
    TaskStatus,
    TimelineEvent,
)
from workflows.rules import voluntary_return
from workflows.rules.base import NewId
from workflows.rules.errors import N_, Forbidden, InvalidCommand, StepNotAllowed, TaskNotFound
from workflows.rules.events import task_event
from workflows.rules.protection import SafetyPlanBody
from workflows.rules.registry import allowed_services
from workflows.rules.reintegration import ReintegrationPlanBody
from workflows.rules.steps import allowed_steps, parse_body
from workflows.rules.tasks import cancel_tasks, is_overdue, new_task, reassignable

CASEWORKER_ACTIONS = (TaskAction.assign, TaskAction.reassign, TaskAction.cancel)
# The statuses each action may start from.
ALLOWED_FROM: dict[TaskAction, frozenset[TaskStatus]] = {
    TaskAction.accept: frozenset({TaskStatus.assigned}),
    TaskAction.complete: frozenset({TaskStatus.accepted}),
    TaskAction.decline: frozenset({TaskStatus.assigned, TaskStatus.accepted}),
    TaskAction.reassign: frozenset(
        {TaskStatus.declined, TaskStatus.delivery_failed, TaskStatus.assigned, TaskStatus.accepted}
    ),
    TaskAction.cancel: frozenset(
        {TaskStatus.assigned, TaskStatus.accepted, TaskStatus.declined, TaskStatus.delivery_failed}
    ),
    TaskAction.delivery_failed: frozenset({TaskStatus.assigned}),
}
PAST = {
    TaskAction.accept: N_("accepted"),
    TaskAction.complete: N_("completed"),
    TaskAction.decline: N_("declined"),
    TaskAction.reassign: N_("reassigned"),
    TaskAction.cancel: N_("cancelled"),
    TaskAction.delivery_failed: N_("marked undeliverable"),
}


def check_task(state: JourneyState, cmd: TaskCommand, now: datetime) -> Any:
    """Raise if the task action may not happen now; return its parsed body."""
    try:
        return _check_task(state, cmd, now)
    except StepNotAllowed as exc:
        if exc.allowed_steps is None:
            exc.allowed_steps = allowed_steps(state)
        raise


def _check_task(state: JourneyState, cmd: TaskCommand, now: datetime) -> Any:
    body = parse_body(TASK_BODIES[cmd.action], cmd.body)
    if cmd.action == TaskAction.delivery_failed:
        if cmd.actor.role != Role.system:
            raise Forbidden(N_("only the orchestrator reports a failed delivery"))
    elif cmd.action in CASEWORKER_ACTIONS and cmd.actor.role not in (Role.caseworker, Role.supervisor):
        raise Forbidden(N_("only a caseworker may {action} a task").format(action=cmd.action.value))
    elif cmd.action not in CASEWORKER_ACTIONS and cmd.actor.role != Role.partner:
        raise Forbidden(N_("only the agency's partner may {action} a task").format(action=cmd.action.value))
    if state.status == CaseStatus.closed:
        raise StepNotAllowed(N_("the case is closed"), [])
    if state.closure_requested is not None and cmd.action in (TaskAction.assign, TaskAction.reassign):
        raise StepNotAllowed(N_("a closure is waiting for a supervisor's decision"))
    if isinstance(body, AssignTaskBody):
        if body.agency_id is None:
            raise InvalidCommand(N_("name the agency for the {service} task").format(service=body.service.value))
        if body.service not in allowed_services(state):
            raise StepNotAllowed(
                N_("a {service} task is not allowed in the {stage} stage").format(
                    service=body.service.value, stage=state.stage.value
                )
            )
        return body
    task = state.tasks.get(cmd.task_id or "")
    if task is None:
        raise TaskNotFound(N_("no such task on this case"))
    if cmd.actor.role == Role.partner and cmd.actor.agency != task.agency_id:
        raise TaskNotFound(N_("no such task on this case"))
    if task.status not in ALLOWED_FROM[cmd.action]:
        raise StepNotAllowed(
            N_("a task that is {status} cannot be {done}").format(status=task.status.value, done=PAST[cmd.action])
        )
    if isinstance(body, CompleteTaskBody):
        voluntary_return.check_completion(state, task, body)
    if isinstance(body, DeliveryFailedBody) and (body.agency_id, body.assignment) != (task.agency_id, task.assignment):
        raise StepNotAllowed(N_("the task has moved to another agency since"))
    if isinstance(body, ReassignTaskBody):
        if not reassignable(task.status, is_overdue(task, now)):
            raise StepNotAllowed(N_("only a declined, undeliverable or overdue task can be reassigned"))
        if body.agency_id == task.agency_id:
            raise InvalidCommand(N_("reassign to another agency"))
    return body


def service_country(state: JourneyState, service: Service) -> str:
    """Where a service is delivered: in the country of origin, or where the case is owned now."""
    return state.origin_country if service in voluntary_return.ORIGIN_SERVICES else state.owner_country


def agency_needs(state: JourneyState, body: object, task_id: str | None = None) -> list[AgencyNeed]:
    """The agencies a checked step or task body gives tasks to, with their services and countries."""
    items: list[tuple[Service | None, str | None]] = []
    match body:
        case AssignTaskBody():
            items = [(body.service, body.agency_id)]
        case ReassignTaskBody():
            items = [(state.tasks[task_id or ""].service, body.agency_id)]
        case SafetyPlanBody():
            items = [(m.service, m.agency_id) for m in body.measures if m.service]
        case ReintegrationPlanBody():
            items = [(i.service, i.agency_id) for i in body.services]
    return [
        AgencyNeed(service=service, agency_id=agency_id, country=service_country(state, service))
        for service, agency_id in items
        if agency_id and service
    ]


def apply_task(
    state: JourneyState, cmd: TaskCommand, body: Any, now: datetime, new_id: NewId
) -> tuple[list[TimelineEvent], str]:
    """Record a checked task action; return the timeline events and the task's id."""
    state.version += 1
    state.last_activity_at = now
    if isinstance(body, AssignTaskBody):
        task = new_task(state, body.service, body.agency_id or "", body.due_date, body.notes, now, new_id)
        return [task_event(state, task, "assigned", cmd.actor, now, new_id)], task.task_id
    task = state.tasks[cmd.task_id or ""]
    task.version = state.version
    events: list[TimelineEvent] = []
    match body:
        case ReassignTaskBody():
            previous = task.agency_id
            task.previous_agencies.append(task.agency_id)
            task.agency_id, task.status = body.agency_id, TaskStatus.assigned
            task.assigned_at, task.accepted_at, task.declined_at = now, None, None
            task.delivery_failed_at = None
            task.decline_reason = ""  # the last agency's reason is not the next agency's business
            task.accept_by = now + timedelta(days=state.config.task_accept_days)
            task.due_on = body.due_date or (now.date() + timedelta(days=state.config.task_due_days))
            if body.notes:
                task.notes = body.notes
            events.append(task_event(state, task, "reassigned", cmd.actor, now, new_id, from_agency=previous))
        case CompleteTaskBody():
            task.status, task.completed_at = TaskStatus.completed, now
            task.outcome, task.outcome_notes = body.outcome, body.notes
            facts = voluntary_return.record_completion(task, body)
            events.append(
                task_event(state, task, "completed", cmd.actor, now, new_id, outcome=body.outcome.value, **facts)
            )
            events += voluntary_return.after_completion(state, task, body, cmd.actor, now, new_id)
        case DeclineTaskBody():
            task.status, task.declined_at, task.decline_reason = TaskStatus.declined, now, body.reason
            events.append(task_event(state, task, "declined", cmd.actor, now, new_id))
        case DeliveryFailedBody():
            task.status, task.delivery_failed_at = TaskStatus.delivery_failed, now
            task.decline_reason = body.reason
            events.append(
                task_event(state, task, "delivery-failed", cmd.actor, now, new_id, delivery_id=body.delivery_id)
            )
        case _ if cmd.action == TaskAction.accept:
            task.status, task.accepted_at = TaskStatus.accepted, now
            events.append(task_event(state, task, "accepted", cmd.actor, now, new_id))
        case _ if cmd.action == TaskAction.cancel:
            events += cancel_tasks(state, [task], cmd.actor, now, new_id, body.reason)
    return events, task.task_id
