"""Tasks: a partner's inbox and actions; a caseworker's and supervisor's view of tasks in scope."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query
from sqlalchemy import or_
from sqlmodel import select

from api import idempotency
from api.audit import Auditor, AuditorDep, Entry, replayed_body
from api.deps import (
    ClientDep,
    CurrentUser,
    EngineDep,
    IdempotencyKey,
    SessionDep,
    SettingsDep,
    keyring_of,
    require,
)
from api.errors import Forbidden, responses
from api.journeys import (
    OPEN_STATUSES,
    aware,
    decode_cursor,
    encode_cursor,
    send_command,
    task_in_scope,
    utcnow,
)
from api.schemas import Page, TaskPublic
from reintegration.db import TaskRecord
from reintegration.partner_view import PartnerTask, is_overdue, partner_task
from workflows.model import (
    AcceptTaskBody,
    Actor,
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


def task_public(session: Any, task: TaskRecord) -> TaskPublic:
    data = task.model_dump()
    keyring = keyring_of(session)
    for key in ("notes", "outcome_notes", "decline_reason"):
        data[key] = keyring.open_field(task.case_id, key, data[key])
    for key in ("assigned_at", "accept_by", "accepted_at", "completed_at", "declined_at"):
        if data[key] is not None:
            data[key] = aware(data[key])
    return TaskPublic(**data, overdue=is_overdue(task))


def view(session: Any, settings: Any, task: TaskRecord, role: Role) -> TaskPublic | PartnerTask:
    if role == Role.partner:
        return partner_task(session, keyring_of(session), task, settings.partner_fields)
    return task_public(session, task)


@router.get(
    "",
    response_model=Page[TaskPublic | PartnerTask],
    summary="List tasks in scope",
    responses=responses(401, 403, 422, 503),
)
def list_tasks(
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    auditor: AuditorDep,
    status: TaskStatus | None = None,
    service: Service | None = None,
    overdue: bool | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> Page[Any]:
    """A partner sees its agency's tasks; caseworkers and supervisors the tasks of their countries."""
    query = select(TaskRecord)
    if user.role == Role.partner:
        query = query.where(TaskRecord.agency_id == user.agency)
    elif user.role in (Role.caseworker, Role.supervisor):
        if user.country_scope is not None:
            query = query.where(TaskRecord.owner_country.in_(user.country_scope))
    else:
        raise Forbidden("an admin has no access to tasks")
    if status:
        query = query.where(TaskRecord.status == status.value)
    if service:
        query = query.where(TaskRecord.service == service.value)
    if overdue is not None:
        now = utcnow()
        late = or_(
            (TaskRecord.status == "assigned") & (TaskRecord.accept_by < now),
            TaskRecord.status.in_(OPEN_STATUSES) & (TaskRecord.due_on < now.date()),
        )
        query = query.where(late if overdue else ~late)
    if cursor:
        at, key = decode_cursor(cursor)
        query = query.where(
            (TaskRecord.assigned_at < at) | ((TaskRecord.assigned_at == at) & (TaskRecord.task_id < key))
        )
    rows = session.exec(query.order_by(TaskRecord.assigned_at.desc(), TaskRecord.task_id.desc()).limit(limit + 1)).all()
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        next_cursor = encode_cursor(aware(last.assigned_at), last.task_id)
    items = [view(session, settings, t, user.role) for t in rows[:limit]]
    auditor.record_many(
        [person_read(t, v, via="list") for t, v in zip(rows[:limit], items, strict=True) if carries_person(v)]
    )
    return Page[Any](items=items, next_cursor=next_cursor)


@router.get(
    "/{task_id}",
    response_model=TaskPublic | PartnerTask,
    summary="Read a task",
    responses=responses(401, 403, 404, 503),
)
def read_task(
    task_id: TaskId, user: CurrentUser, session: SessionDep, settings: SettingsDep, auditor: AuditorDep
) -> Any:
    task = task_in_scope(session, task_id, user)
    seen = view(session, settings, task, user.role)
    if carries_person(seen):  # audited before the data leaves; no row, no data
        auditor.record_many([person_read(task, seen)])
    return seen


def carries_person(seen: Any) -> bool:
    return isinstance(seen, PartnerTask) and bool(seen.person)


def person_read(task: TaskRecord, seen: Any, via: str = "read") -> Entry:
    """The audit row of a partner seeing the person's fields its service needs (names only)."""
    return Entry(
        "task.read-person",
        case_id=task.case_id,
        task_id=task.task_id,
        status=200,
        detail={"via": via, "fields": sorted(seen.person)},
    )


async def act(
    *,
    task_id: str,
    action: TaskAction,
    body: Any,
    user: Any,
    session: Any,
    client: Any,
    engine: Any,
    settings: Any,
    key: str | None,
    auditor: Auditor,
) -> Any:
    """Send a task action to the case's workflow and return the task as it is after it."""
    task = task_in_scope(session, task_id, user)
    payload = body.model_dump(mode="json")

    async def run(_: str) -> Any:
        command = TaskCommand(
            action=action, task_id=task_id, body=payload, actor=Actor(sub=user.sub, role=user.role, agency=user.agency)
        )
        await send_command(
            client, engine, task.case_id, "task", command, update_id=idempotency.update_id(user, key), session=session
        )
        session.expire_all()
        seen = view(session, settings, session.get(TaskRecord, task_id), user.role)
        done = Entry(f"task.{action.value}", case_id=task.case_id, task_id=task_id, status=200)
        auditor.record_many([done, *([person_read(task, seen, via=action.value)] if carries_person(seen) else [])])
        return seen

    def replay(_: dict[str, Any]) -> dict[str, Any]:
        """A repeat shows the task as its partner may see it now (consent withdrawn, the task cancelled or
        taken away, the agency deactivated: no person, no notes), never what the first answer held."""
        session.expire_all()
        return view(session, settings, task_in_scope(session, task_id, user), user.role).model_dump(mode="json")

    result = await idempotency.once(
        engine,
        keyring_of(session),
        user=user,
        key=key,
        status_code=200,
        run=run,
        case_id=task.case_id,
        session=session,
        ttl=settings.idempotency_ttl,
        replay=replay,
        unstored=frozenset({"person"}),
        request_hash=idempotency.fingerprint("POST", f"/v1/tasks/{task_id}/{action.value}", payload),
    )
    replayed = replayed_body(result)
    if replayed is not None:
        entries = [Entry(f"task.{action.value}", case_id=task.case_id, task_id=task_id)]
        if replayed.get("person"):
            entries.append(
                Entry(
                    "task.read-person",
                    case_id=task.case_id,
                    task_id=task_id,
                    detail={"via": action.value, "fields": sorted(replayed["person"])},
                )
            )
        auditor.replayed(result, *entries)
    return result


PARTNER = (Role.partner,)


@router.post(
    "/{task_id}/accept",
    response_model=PartnerTask,
    summary="Accept a task",
    responses=responses(401, 403, 404, 409, 422, 503),
)
async def accept_task(
    task_id: TaskId,
    user: Annotated[Any, require(*PARTNER)],
    session: SessionDep,
    client: ClientDep,
    engine: EngineDep,
    settings: SettingsDep,
    auditor: AuditorDep,
    body: Annotated[
        AcceptTaskBody, Body(openapi_examples={"accept": {"value": {"notes": "We can take this."}}})
    ] = AcceptTaskBody(),
    idempotency_key: IdempotencyKey = None,
) -> Any:
    return await act(
        task_id=task_id,
        action=TaskAction.accept,
        body=body,
        user=user,
        session=session,
        client=client,
        engine=engine,
        settings=settings,
        key=idempotency_key,
        auditor=auditor,
    )


@router.post(
    "/{task_id}/complete",
    response_model=PartnerTask,
    summary="Complete a task",
    responses=responses(401, 403, 404, 409, 422, 503),
)
async def complete_task(
    task_id: TaskId,
    user: Annotated[Any, require(*PARTNER)],
    session: SessionDep,
    client: ClientDep,
    engine: EngineDep,
    settings: SettingsDep,
    auditor: AuditorDep,
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
    idempotency_key: IdempotencyKey = None,
) -> Any:
    return await act(
        task_id=task_id,
        action=TaskAction.complete,
        body=body,
        user=user,
        session=session,
        client=client,
        engine=engine,
        settings=settings,
        key=idempotency_key,
        auditor=auditor,
    )


@router.post(
    "/{task_id}/decline",
    response_model=PartnerTask,
    summary="Decline a task",
    responses=responses(401, 403, 404, 409, 422, 503),
)
async def decline_task(
    task_id: TaskId,
    user: Annotated[Any, require(*PARTNER)],
    session: SessionDep,
    client: ClientDep,
    engine: EngineDep,
    settings: SettingsDep,
    auditor: AuditorDep,
    body: Annotated[
        DeclineTaskBody, Body(openapi_examples={"full": {"value": {"reason": "No beds free this month."}}})
    ],
    idempotency_key: IdempotencyKey = None,
) -> Any:
    return await act(
        task_id=task_id,
        action=TaskAction.decline,
        body=body,
        user=user,
        session=session,
        client=client,
        engine=engine,
        settings=settings,
        key=idempotency_key,
        auditor=auditor,
    )
