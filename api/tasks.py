"""Tasks: a partner's inbox and actions; a caseworker's and supervisor's view of tasks in scope."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, TypeGuard

from fastapi import APIRouter, Body, Path, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlmodel import Session, col, select
from sqlmodel.sql.expression import SelectOfScalar

from api.audit import AuditorDep, Entry, auditor_for
from api.deps import CurrentUser, SessionDep, SettingsDep, keyring_of, read_in_thread
from api.errors import Forbidden, responses
from api.journeys import (
    task_in_scope,
    utcnow,
)
from api.languages import N_
from api.pagination import Cursor, Keyset, Limit, page
from api.pipeline import Pipeline, commands_for
from api.schemas import Page, TaskPublic
from reintegration.commands import Route, read_route
from reintegration.crypto import Keyring
from reintegration.db import TaskRecord, aware
from reintegration.overdue import overdue_condition
from reintegration.partner_view import PartnerTask, partner_task, prefetch
from reintegration.settings import Settings
from reintegration.tokens import Claims
from workflows import rules
from workflows.model import (
    AcceptTaskBody,
    CompleteTaskBody,
    DeclineTaskBody,
    Role,
    Service,
    TaskAction,
    TaskCommand,
    TaskStatus,
)

router = APIRouter(prefix="/v1/tasks", tags=["tasks"])

TaskId = Annotated[str, Path(max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._@:-]{0,63}$")]


def task_public(session: Session, task: TaskRecord) -> TaskPublic:
    return opened_task(keyring_of(session), task).public()


@dataclass(frozen=True)
class OpenedTask:
    """A task's row with its free text opened: what its view needs but whether it is overdue now."""

    fields: dict[str, Any]

    def public(self, now: datetime | None = None) -> TaskPublic:
        f = self.fields
        return TaskPublic(
            **f, overdue=rules.task_overdue(f["status"], f["accept_by"], f["due_on"], now or datetime.now(UTC))
        )


def opened_task(keyring: Keyring, task: TaskRecord) -> OpenedTask:
    data = task.model_dump()
    for key in ("notes", "outcome_notes", "decline_reason"):
        data[key] = keyring.open_field(task.case_id, key, data[key])
    for key in ("assigned_at", "accept_by", "accepted_at", "completed_at", "declined_at"):
        if data[key] is not None:
            data[key] = aware(data[key])
    return OpenedTask(data)


def view(session: Session, settings: Settings, task: TaskRecord, role: Role) -> TaskPublic | PartnerTask:
    if role == Role.partner:
        return partner_task(session, keyring_of(session), task, settings.partner_fields)
    return task_public(session, task)


# Newest first.
TASKS_ORDER = Keyset(col(TaskRecord.assigned_at), col(TaskRecord.task_id), descending=True)


def tasks_query(
    user: Claims, *, status: TaskStatus | None = None, service: Service | None = None, overdue: bool | None = None
) -> SelectOfScalar[TaskRecord]:
    """The tasks in the caller's scope (a partner: its agency's; a caseworker or supervisor: their
    countries'), with the list's filters: the one query of ``GET /v1/tasks`` and the workspace."""
    query = select(TaskRecord)
    if user.role == Role.partner:
        query = query.where(col(TaskRecord.agency_id) == user.agency)
    elif user.role in (Role.caseworker, Role.supervisor):
        if user.country_scope is not None:
            query = query.where(col(TaskRecord.owner_country).in_(user.country_scope))
    else:
        raise Forbidden(N_("an admin has no access to tasks"))
    if status:
        query = query.where(col(TaskRecord.status) == status.value)
    if service:
        query = query.where(col(TaskRecord.service) == service.value)
    if overdue is not None:
        late = overdue_condition(utcnow())
        query = query.where(late if overdue else ~late)
    return query


@router.get(
    "",
    response_model=Page[TaskPublic | PartnerTask],
    summary="List tasks in scope",
    responses=responses(401, 403, 422, 503),
)
async def list_tasks(
    request: Request,
    user: CurrentUser,
    session: SessionDep,
    status: TaskStatus | None = None,
    service: Service | None = None,
    overdue: bool | None = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[TaskPublic | PartnerTask]:
    """A partner sees its agency's tasks; caseworkers and supervisors the tasks of their countries.
    (A partner's inbox is read most: its database work is one ``read_in_thread``, its settings and
    auditor taken from the request, as a case's read.)"""
    settings, auditor = request.app.state.settings, auditor_for(request, session, user)

    def read() -> Page[TaskPublic | PartnerTask]:
        query = tasks_query(user, status=status, service=service, overdue=overdue)
        rows, next_cursor = page(session, query, TASKS_ORDER, limit=limit, cursor=cursor)
        if user.role == Role.partner:
            prefetch(session, list(rows))
        items = [view(session, settings, t, user.role) for t in rows]
        seen = [person_read(t, v, via="list") for t, v in zip(rows, items, strict=True) if carries_person(v)]
        auditor.record_many(seen)  # audited before the data leaves; no rows, no data
        return Page[TaskPublic | PartnerTask](items=items, next_cursor=next_cursor)

    return await read_in_thread(session, read)


@router.get(
    "/{task_id}",
    response_model=TaskPublic | PartnerTask,
    summary="Read a task",
    responses=responses(401, 403, 404, 503),
)
def read_task(
    task_id: TaskId, user: CurrentUser, session: SessionDep, settings: SettingsDep, auditor: AuditorDep
) -> TaskPublic | PartnerTask:
    task = task_in_scope(session, task_id, user)
    seen = view(session, settings, task, user.role)
    if carries_person(seen):  # audited before the data leaves; no row, no data
        auditor.record_many([person_read(task, seen)])
    return seen


def carries_person(seen: TaskPublic | PartnerTask) -> TypeGuard[PartnerTask]:
    """A partner's view of a task that shows some of the person's fields."""
    return isinstance(seen, PartnerTask) and bool(seen.person)


def person_read(task: TaskRecord, seen: PartnerTask, via: str = "read") -> Entry:
    """The audit row of a partner seeing the person's fields its service needs (names only)."""
    return Entry(
        "task.read-person",
        case_id=task.case_id,
        task_id=task.task_id,
        status=200,
        detail={"via": via, "fields": sorted(seen.person or {})},
    )


def _task_and_route(session: Session, task_id: str, user: Claims) -> tuple[str, Route | None]:
    case_id = task_in_scope(session, task_id, user).case_id
    return case_id, read_route(session, case_id)


async def act(
    p: Pipeline, task_id: str, action: TaskAction, body: BaseModel
) -> TaskPublic | PartnerTask | JSONResponse:
    """Send a partner's action on a task to the case's workflow; the task as it is after it."""
    # The task in the caller's scope (404) and its case's route, in one thread.
    case_id, route = await p.checked(_task_and_route, p.session, task_id, p.user)
    payload = body.model_dump(mode="json")

    async def run(_: str) -> TaskPublic | PartnerTask:
        command = TaskCommand(action=action, task_id=task_id, body=payload, actor=p.actor)
        # With a key, ``run`` may start long after the checks: the route is read again then.
        await p.send(case_id, "task", command, route=route if p.key is None else None)
        return await p.answer(_seen_after, p.session, p.settings, task_id, p.user.role)

    def replay(_: dict[str, Any]) -> dict[str, Any]:
        """A repeat shows the task as its partner may see it now (consent withdrawn, the task cancelled or
        taken away, the agency deactivated: no person, no notes), never what the first answer held."""
        p.session.expire_all()
        return view(p.session, p.settings, task_in_scope(p.session, task_id, p.user), p.user.role).model_dump(
            mode="json"
        )

    def audit(answer: dict[str, Any]) -> list[Entry]:
        """The action, and the person's fields the answer shows (names only), read before they leave."""
        done = Entry(f"task.{action.value}", case_id=case_id, task_id=task_id)
        if not answer.get("person"):
            return [done]
        fields = sorted(answer["person"])
        return [
            done,
            Entry(
                "task.read-person",
                case_id=case_id,
                task_id=task_id,
                detail={"via": action.value, "fields": fields},
            ),
        ]

    return await p.once(
        path=f"/v1/tasks/{task_id}/{action.value}",
        request=payload,
        run=run,
        audit=audit,
        case_id=case_id,
        replay=replay,
        unstored=frozenset({"person"}),
    )


def _seen_after(session: Session, settings: Settings, task_id: str, role: Role) -> TaskPublic | PartnerTask:
    session.expire_all()
    task = session.get(TaskRecord, task_id)
    assert task is not None, "the workflow answered a task command: the task is in the read model"
    return view(session, settings, task, role)


PARTNER = (Role.partner,)


@router.post(
    "/{task_id}/accept",
    response_model=PartnerTask,
    summary="Accept a task",
    responses=responses(401, 403, 404, 409, 422, 503),
)
async def accept_task(
    task_id: TaskId,
    p: Annotated[Pipeline, commands_for(*PARTNER)],
    body: Annotated[
        AcceptTaskBody, Body(openapi_examples={"accept": {"value": {"notes": "We can take this."}}})
    ] = AcceptTaskBody(),
) -> TaskPublic | PartnerTask | JSONResponse:
    return await act(p, task_id, TaskAction.accept, body)


@router.post(
    "/{task_id}/complete",
    response_model=PartnerTask,
    summary="Complete a task",
    responses=responses(401, 403, 404, 409, 422, 503),
)
async def complete_task(
    task_id: TaskId,
    p: Annotated[Pipeline, commands_for(*PARTNER)],
    body: Annotated[
        CompleteTaskBody,
        Body(
            openapi_examples={
                "done": {
                    "summary": "Service delivered",
                    "value": {"outcome": "done", "notes": "First consultation held."},
                },
                "origin-assessment": {
                    "summary": "Origin assessment: safe",
                    "value": {"outcome": "done", "assessment": "safe"},
                },
                "reception": {
                    "summary": "Reception: arrived",
                    "value": {"outcome": "done", "arrived_on": "2026-12-10"},
                },
            }
        ),
    ],
) -> TaskPublic | PartnerTask | JSONResponse:
    return await act(p, task_id, TaskAction.complete, body)


@router.post(
    "/{task_id}/decline",
    response_model=PartnerTask,
    summary="Decline a task",
    responses=responses(401, 403, 404, 409, 422, 503),
)
async def decline_task(
    task_id: TaskId,
    p: Annotated[Pipeline, commands_for(*PARTNER)],
    body: Annotated[
        DeclineTaskBody, Body(openapi_examples={"full": {"value": {"reason": "No beds free this month."}}})
    ],
) -> TaskPublic | PartnerTask | JSONResponse:
    return await act(p, task_id, TaskAction.decline, body)
