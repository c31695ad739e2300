"""Steps and task assignment on a case: one documented route per step of journey.md.

(No ``from __future__ import annotations`` here: the routes are built in a loop and FastAPI reads
their body types from the real annotations.)
"""

from typing import Annotated, Any

from fastapi import APIRouter, Body, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlmodel import Session

from api.audit import Entry
from api.cases import CASEWORK, CaseId, TaskId, _respond, etag_header, parse_etag
from api.errors import NotFound, PreconditionFailed, Unprocessable, responses
from api.journeys import case_in_scope
from api.languages import N_
from api.pipeline import IfMatch, Pipeline, commands_for
from api.schemas import CasePublic, TaskPublic
from api.tasks import task_public
from api.users import known_owner
from reintegration import agencies
from reintegration.commands import Route
from reintegration.db import CaseRecord, TaskRecord
from reintegration.settings import Settings
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


def _resolve_agencies(session: Session, settings: Settings, case: CaseRecord, items: list[dict[str, Any]]) -> None:
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


def _check_step(
    p: Pipeline, step: Step, case_id: str, payload: dict[str, Any], if_match: str | None
) -> tuple[int | None, Route]:
    """What a step is checked for before it is sent: the case in the caller's scope (404), its
    ETag (412), and, for a step the case allows now, its agencies and receiving caseworker (422).
    The version ``If-Match`` names, if any, and the case's route."""
    case = case_in_scope(p.session, case_id, p.user)
    expected = None
    if if_match is not None and if_match != "*":
        expected = parse_etag(if_match)
        if expected != case.version:
            raise PreconditionFailed(N_("the case moved on since that ETag; read it again"))
    if step.value in case.allowed_steps:  # otherwise the workflow answers 409 before agencies matter
        _resolve_agencies(p.session, p.settings, case, payload.get("measures", []) + payload.get("services", []))
        if step == Step.travel_plan:  # the case goes to this caseworker of the country of origin
            known_owner(p.session, payload["receiving_caseworker"], case.origin_country)
    return expected, Route.of(case)


async def _record(
    p: Pipeline, step: Step, case_id: str, body: BaseModel, response: Response, if_match: str | None
) -> CasePublic | JSONResponse:
    """Record one step on the case's workflow and return the case as it is after it."""
    if p.key is not None:  # 404 before the key is claimed (without a key, ``run`` checks at once)
        await p.case(case_id)
    payload = body.model_dump(mode="json")

    async def run(_: str) -> CasePublic:
        expected, route = await p.checked(_check_step, p, step, case_id, payload, if_match)
        # The workflow checks the version again: two writers with the same ETag cannot both succeed.
        command = StepCommand(step=step, body=payload, actor=p.actor, expected_version=expected)
        await p.send(case_id, "step", command, route=route)
        return await p.answer(_respond, response, p.session, case_id, p.settings)

    return await p.once(
        path=f"/v1/cases/{case_id}/steps/{step.value}",
        request={"body": payload, "if_match": if_match},
        run=run,
        audit=lambda _: [Entry(f"step.{step.value}", case_id=case_id)],
        headers=etag_header,
    )


def _make_step_route(step: Step) -> None:
    rule = STEPS[step]
    model, roles, example = rule.body, rule.roles, rule.example

    async def record_step(
        case_id: CaseId,
        # The step's model, chosen at runtime: a type to FastAPI, a variable to mypy.
        body: Annotated[model, Body(openapi_examples={step.value: {"value": example}})],  # type: ignore[valid-type]
        response: Response,
        p: Annotated[Pipeline, commands_for(*roles)],
        if_match: IfMatch = None,
    ) -> CasePublic | JSONResponse:
        return await _record(p, step, case_id, body, response, if_match)

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
        STEPS[Step.withdraw_consent].body,  # type: ignore[valid-type]  # a type to FastAPI, a lookup to mypy
        Body(openapi_examples={"withdraw": {"value": STEPS[Step.withdraw_consent].example}}),
    ],
    response: Response,
    p: Annotated[Pipeline, commands_for(*CASEWORK)],
    if_match: IfMatch = None,
) -> CasePublic | JSONResponse:
    return await _record(p, Step.withdraw_consent, case_id, body, response, if_match)


def _check_task_command(
    p: Pipeline, case_id: str, action: TaskAction, task_id: str | None, payload: dict[str, Any]
) -> Route:
    """The case in the caller's scope (404), the task on it (404), and the agency a new or
    reassigned task goes to (422); the case's route."""
    case = case_in_scope(p.session, case_id, p.user)
    if task_id is not None:
        task = p.session.get(TaskRecord, task_id)
        if task is None or task.case_id != case_id:
            raise NotFound(N_("no such task on this case"))
        if action == TaskAction.reassign:
            _resolve_agencies(p.session, p.settings, case, [{**payload, "service": task.service}])
    else:
        _resolve_agencies(p.session, p.settings, case, [payload])
    return Route.of(case)


async def _task_command(
    p: Pipeline, case_id: str, action: TaskAction, task_id: str | None, body: BaseModel
) -> TaskPublic | JSONResponse:
    """Assign, reassign or cancel a task of the case; the task as it is after it."""
    payload = body.model_dump(mode="json")
    route = await p.checked(_check_task_command, p, case_id, action, task_id, payload)

    async def run(_: str) -> TaskPublic:
        command = TaskCommand(action=action, task_id=task_id, body=payload, actor=p.actor)
        # With a key, ``run`` may start long after the checks (a first request with the key still in
        # progress): the route is read again then, never taken from before the wait.
        result = await p.send(case_id, "task", command, route=route if p.key is None else None)
        return await p.answer(_task_after, p.session, result.task_id)

    path = f"/v1/cases/{case_id}/tasks" + (f"/{task_id}/{action.value}" if task_id else "")
    return await p.once(
        path=path,
        request=payload,
        run=run,
        audit=lambda answer: [Entry(f"task.{action.value}", case_id=case_id, task_id=answer.get("task_id"))],
        status_code=201 if task_id is None else 200,
    )


def _task_after(session: Session, task_id: str | None) -> TaskPublic:
    session.expire_all()
    task = session.get(TaskRecord, task_id) if task_id is not None else None
    assert task is not None, "the workflow answered a task command: the task is in the read model"
    return task_public(session, task)


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
    p: Annotated[Pipeline, commands_for(*CASEWORK)],
) -> TaskPublic | JSONResponse:
    return await _task_command(p, case_id, TaskAction.assign, None, body)


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
    p: Annotated[Pipeline, commands_for(*CASEWORK)],
) -> TaskPublic | JSONResponse:
    return await _task_command(p, case_id, TaskAction.reassign, task_id, body)


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
    p: Annotated[Pipeline, commands_for(*CASEWORK)],
) -> TaskPublic | JSONResponse:
    return await _task_command(p, case_id, TaskAction.cancel, task_id, body)
