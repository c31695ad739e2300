"""Steps and task assignment on a case: one documented route per step of journey.md.

(No ``from __future__ import annotations`` here: the routes are built in a loop and FastAPI reads
their body types from the real annotations.)
"""

from typing import Annotated, Any

from fastapi import APIRouter, Body, Response

from api import idempotency
from api.audit import Auditor, AuditorDep, Entry
from api.cases import (
    CASEWORK,
    CaseId,
    IdempotencyKey,
    IfMatch,
    TaskId,
    _respond,
    actor_of,
    etag_header,
    parse_etag,
)
from api.deps import ClientDep, EngineDep, SessionDep, SettingsDep, keyring_of, require
from api.errors import NotFound, PreconditionFailed, Unprocessable, responses
from api.journeys import case_in_scope, send_command
from api.schemas import CasePublic, TaskPublic
from api.tasks import task_public
from reintegration import agencies
from reintegration.db import TaskRecord
from workflows.model import (
    AssignTaskBody,
    CancelTaskBody,
    ReassignTaskBody,
    Step,
    StepCommand,
    TaskAction,
    TaskCommand,
)
from workflows.rules import STEPS

router = APIRouter(prefix="/v1/cases", tags=["steps"])


def _resolve_agencies(session: Any, settings: Any, case: Any, items: list[dict[str, Any]]) -> None:
    """Name each partner item's agency (the service's default where none is named), and check that
    it offers the service in the country where the service is needed; 422 saying why otherwise."""
    for item in items:
        service = item.get("service")
        if not service:
            continue
        country = agencies.service_country(
            service, owner_country=case.owner_country, origin_country=case.origin_country
        )
        try:
            item["agency_id"] = agencies.resolve(
                session,
                service=service,
                agency_id=item.get("agency_id"),
                country=country,
                default_agencies=settings.default_agencies,
            )
        except agencies.AgencyRefused as refused:
            raise Unprocessable(str(refused)) from None


async def _record(
    step: Step,
    case_id: str,
    body: Any,
    *,
    response: Response,
    user: Any,
    session: Any,
    client: Any,
    engine: Any,
    settings: Any,
    if_match: str | None,
    key: str | None,
    auditor: Auditor,
) -> CasePublic:
    """Record one step on the case's workflow and return the case as it is after it."""
    case_in_scope(session, case_id, user)
    result = await idempotency.once(
        engine,
        keyring_of(session),
        user=user,
        key=key,
        status_code=200,
        session=session,
        ttl=settings.idempotency_ttl,
        request_hash=idempotency.fingerprint(
            "POST",
            f"/v1/cases/{case_id}/steps/{step.value}",
            {"body": body.model_dump(mode="json"), "if_match": if_match},
        ),
        run=lambda _: _record_once(
            step,
            case_id,
            body,
            response=response,
            user=user,
            session=session,
            client=client,
            engine=engine,
            settings=settings,
            if_match=if_match,
            key=key,
            auditor=auditor,
        ),
        headers=etag_header,
    )
    return auditor.replayed(result, Entry(f"step.{step.value}", case_id=case_id))


async def _record_once(
    step: Step,
    case_id: str,
    body: Any,
    *,
    response: Response,
    user: Any,
    session: Any,
    client: Any,
    engine: Any,
    settings: Any,
    if_match: str | None,
    key: str | None,
    auditor: Auditor,
) -> CasePublic:
    case = case_in_scope(session, case_id, user)
    expected = None
    if if_match is not None and if_match != "*":
        expected = parse_etag(if_match)
        if expected != case.version:
            raise PreconditionFailed("the case moved on since that ETag; read it again")
    payload = body.model_dump(mode="json")
    if step.value in case.allowed_steps:  # otherwise the workflow answers 409 before agencies matter
        _resolve_agencies(session, settings, case, payload.get("measures", []) + payload.get("services", []))
    # The workflow checks the version again: two writers with the same ETag cannot both succeed.
    command = StepCommand(step=step, body=payload, actor=actor_of(user), expected_version=expected)
    await send_command(
        client, engine, case_id, "step", command, update_id=idempotency.update_id(user, key), session=session
    )
    auditor.record(f"step.{step.value}", case_id=case_id)
    return _respond(response, session, case_id, settings)


def _make_step_route(step: Step) -> None:
    rule = STEPS[step]
    model, roles, example = rule.body, rule.roles, rule.example

    async def record_step(
        case_id: CaseId,
        body: Annotated[model, Body(openapi_examples={step.value: {"value": example}})],  # type: ignore[valid-type]
        response: Response,
        user: Annotated[Any, require(*roles)],
        session: SessionDep,
        client: ClientDep,
        engine: EngineDep,
        settings: SettingsDep,
        auditor: AuditorDep,
        if_match: IfMatch = None,
        idempotency_key: IdempotencyKey = None,
    ) -> CasePublic:
        return await _record(
            step,
            case_id,
            body,
            response=response,
            user=user,
            session=session,
            client=client,
            engine=engine,
            settings=settings,
            if_match=if_match,
            key=idempotency_key,
            auditor=auditor,
        )

    record_step.__name__ = f"record_{step.name}"
    router.add_api_route(
        f"/{{case_id}}/steps/{step.value}",
        record_step,
        methods=["POST"],
        response_model=CasePublic,
        summary=f"Record the {step.value} step",
        description=(model.__doc__ or "") + "\n\nReturns the case as it is after the step.",
        responses=responses(401, 403, 404, 409, 412, 422, 503),
    )


for _step in Step:
    _make_step_route(_step)


@router.post(
    "/{case_id}/withdraw-consent",
    response_model=CasePublic,
    summary="The person withdrew consent",
    description="Open tasks are cancelled and the case closes with reason `withdrew`.",
    responses=responses(401, 403, 404, 409, 412, 422, 503),
)
async def withdraw_consent(
    case_id: CaseId,
    body: Annotated[
        STEPS[Step.withdraw_consent].body,
        Body(openapi_examples={"withdraw": {"value": STEPS[Step.withdraw_consent].example}}),
    ],  # type: ignore[valid-type]
    response: Response,
    user: Annotated[Any, require(*CASEWORK)],
    session: SessionDep,
    client: ClientDep,
    engine: EngineDep,
    settings: SettingsDep,
    auditor: AuditorDep,
    if_match: IfMatch = None,
    idempotency_key: IdempotencyKey = None,
) -> CasePublic:
    return await _record(
        Step.withdraw_consent,
        case_id,
        body,
        response=response,
        user=user,
        session=session,
        client=client,
        engine=engine,
        settings=settings,
        if_match=if_match,
        key=idempotency_key,
        auditor=auditor,
    )


async def _task_command(
    *,
    case_id: str,
    action: TaskAction,
    task_id: str | None,
    body: dict[str, Any],
    user: Any,
    session: Any,
    client: Any,
    engine: Any,
    settings: Any,
    key: str | None,
    auditor: Auditor,
) -> TaskPublic:
    case = case_in_scope(session, case_id, user)
    if task_id is not None:
        task = session.get(TaskRecord, task_id)
        if task is None or task.case_id != case_id:
            raise NotFound("no such task on this case")
        if action == TaskAction.reassign:
            _resolve_agencies(session, settings, case, [{**body, "service": task.service}])
    else:
        _resolve_agencies(session, settings, case, [body])

    async def run(_: str) -> TaskPublic:
        command = TaskCommand(action=action, task_id=task_id, body=body, actor=actor_of(user))
        result = await send_command(
            client, engine, case_id, "task", command, update_id=idempotency.update_id(user, key), session=session
        )
        auditor.record(
            f"task.{action.value}", case_id=case_id, task_id=result.task_id, status=201 if task_id is None else 200
        )
        session.expire_all()
        return task_public(session, session.get(TaskRecord, result.task_id))

    path = f"/v1/cases/{case_id}/tasks" + (f"/{task_id}/{action.value}" if task_id else "")
    result = await idempotency.once(
        engine,
        keyring_of(session),
        user=user,
        key=key,
        session=session,
        status_code=201 if task_id is None else 200,
        ttl=settings.idempotency_ttl,
        request_hash=idempotency.fingerprint("POST", path, body),
        run=run,
    )
    return auditor.replayed(result, Entry(f"task.{action.value}", case_id=case_id, task_id=task_id))


@router.post(
    "/{case_id}/tasks",
    status_code=201,
    response_model=TaskPublic,
    summary="Assign a task to a partner agency",
    responses=responses(401, 403, 404, 409, 422, 503),
)
async def assign_task(
    case_id: CaseId,
    body: Annotated[
        AssignTaskBody,
        Body(
            openapi_examples={
                "shelter": {
                    "value": {
                        "service": "shelter",
                        "agency_id": "shelter-es",
                        "notes": "Needs a bed tonight; speaks Romanian.",
                    }
                }
            }
        ),
    ],
    user: Annotated[Any, require(*CASEWORK)],
    session: SessionDep,
    client: ClientDep,
    engine: EngineDep,
    settings: SettingsDep,
    auditor: AuditorDep,
    idempotency_key: IdempotencyKey = None,
) -> TaskPublic:
    return await _task_command(
        case_id=case_id,
        action=TaskAction.assign,
        task_id=None,
        body=body.model_dump(mode="json"),
        user=user,
        session=session,
        client=client,
        engine=engine,
        settings=settings,
        key=idempotency_key,
        auditor=auditor,
    )


@router.post(
    "/{case_id}/tasks/{task_id}/reassign",
    response_model=TaskPublic,
    summary="Give a declined or overdue task to another agency",
    responses=responses(401, 403, 404, 409, 422, 503),
)
async def reassign_task(
    case_id: CaseId,
    task_id: TaskId,
    body: Annotated[ReassignTaskBody, Body(openapi_examples={"reassign": {"value": {"agency_id": "clinic-es"}}})],
    user: Annotated[Any, require(*CASEWORK)],
    session: SessionDep,
    client: ClientDep,
    engine: EngineDep,
    settings: SettingsDep,
    auditor: AuditorDep,
    idempotency_key: IdempotencyKey = None,
) -> TaskPublic:
    return await _task_command(
        case_id=case_id,
        action=TaskAction.reassign,
        task_id=task_id,
        body=body.model_dump(mode="json"),
        user=user,
        session=session,
        client=client,
        engine=engine,
        settings=settings,
        key=idempotency_key,
        auditor=auditor,
    )


@router.post(
    "/{case_id}/tasks/{task_id}/cancel",
    response_model=TaskPublic,
    summary="Cancel an open task",
    responses=responses(401, 403, 404, 409, 422, 503),
)
async def cancel_task(
    case_id: CaseId,
    task_id: TaskId,
    body: Annotated[CancelTaskBody, Body(openapi_examples={"cancel": {"value": {"reason": "No longer needed."}}})],
    user: Annotated[Any, require(*CASEWORK)],
    session: SessionDep,
    client: ClientDep,
    engine: EngineDep,
    settings: SettingsDep,
    auditor: AuditorDep,
    idempotency_key: IdempotencyKey = None,
) -> TaskPublic:
    return await _task_command(
        case_id=case_id,
        action=TaskAction.cancel,
        task_id=task_id,
        body=body.model_dump(mode="json"),
        user=user,
        session=session,
        client=client,
        engine=engine,
        settings=settings,
        key=idempotency_key,
        auditor=auditor,
    )
