"""Reopening a closed case: ``POST /v1/cases/{id}/reopen`` (supervisor in scope).

The closed run's state is read back from the case workflow (its ``journey`` query), the journey's
rule checks the reopening (``rules.reopening``), and a new run of the case's workflow starts from that
state with it, linked to the old one by the workflow id: the old runs' histories stay, and so do the
timeline, notes, documents and audit trail of the case, which the new run adds to. Not after the
erasure of the case's personal data, nor after the person withdrew consent.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Response
from fastapi.responses import JSONResponse
from pydantic import ConfigDict, Field
from temporalio.client import (
    WithStartWorkflowOperation,
    WorkflowQueryFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from api.audit import Entry
from api.cases import CaseId, _respond
from api.deps import release_connection
from api.errors import ApiProblem, Conflict, Forbidden, Unavailable, Unprocessable, responses
from api.journeys import case_in_scope
from api.languages import N_
from api.pipeline import Pipeline, commands_for
from api.schemas import CasePublic
from reintegration import commands
from reintegration.db import PersonRecord, aware
from workflows import ids, rules
from workflows.case import CaseRun, CaseWorkflow
from workflows.model import CaseStatus, JourneyState, Reopening, Role, ShortText, Stage, Strict

router = APIRouter(tags=["cases"])
HANDED_BACK_WITHIN = 10  # seconds: the closing stage's workflow hands the state back to the case's


class ReopenCase(Strict):
    """The stage the journey starts again in, and why (kept sealed with the case's key)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"stage": "protection", "reason": "Identified again: re-trafficked."}]},
    )

    stage: Stage = Field(description="`protection` (a new risk assessment and pathway) or `reintegration` (a new plan)")
    reason: ShortText


def _reopenable(p: Pipeline, case_id: str) -> datetime:
    """When the case closed, if it may be reopened; 409 otherwise."""
    session = p.session
    record = case_in_scope(session, case_id, p.user)
    if record.status != "closed" or record.closed_at is None:
        raise Conflict(N_("only a closed case is reopened"), allowed_steps=record.allowed_steps)
    if session.get(PersonRecord, case_id) is None:
        raise Conflict(N_("the case's personal data was erased: it cannot be reopened"), allowed_steps=[])
    closed_at = aware(record.closed_at)
    release_connection(session)
    return closed_at


def _refused(exc: rules.JourneyRuleError) -> ApiProblem:
    """The journey rule's refusal of the reopening as a problem."""
    if isinstance(exc, rules.Forbidden):
        return Forbidden(exc.detail)
    if isinstance(exc, rules.InvalidCommand):
        return Unprocessable(exc.detail)
    return Conflict(exc.detail, allowed_steps=[])


async def _closed_state(p: Pipeline, case_id: str, closed_at: datetime) -> JourneyState:
    """The closed journey's state, as the case workflow holds it: just after the closure the last
    stage's workflow may still be handing it back (the read model shows the closure first). A run
    started after the closure is another supervisor's reopening, at the same moment: 409."""
    handle = p.client.get_workflow_handle(ids.workflow_id(case_id))
    for _ in range(HANDED_BACK_WITHIN * 10):
        try:
            state: JourneyState = await handle.query(
                "journey", result_type=JourneyState, rpc_timeout=commands.UPDATE_TIMEOUT
            )
            if state.status != CaseStatus.closed and (await handle.describe()).start_time > closed_at:
                raise Conflict(N_("the case is being reopened already"), allowed_steps=[])
        except (RPCError, WorkflowQueryFailedError):
            break
        if state.status == CaseStatus.closed:
            return state
        await asyncio.sleep(0.1)
    raise Unavailable(N_("Temporal is unavailable; retry with the same Idempotency-Key"))


@router.post(
    "/v1/cases/{case_id}/reopen",
    response_model=CasePublic,
    summary="Reopen a closed case",
    description=(
        "A supervisor reopens a closed case (re-trafficking, a new need) in the protection or the "
        "reintegration stage, with a reason: a new run of its journey, the old history kept. `409` for a "
        "case not closed, erased, or closed because the person withdrew consent."
    ),
    responses=responses(401, 403, 404, 409, 422, 503),
)
async def reopen_case(
    case_id: CaseId,
    body: Annotated[ReopenCase, Body()],
    response: Response,
    p: Annotated[Pipeline, commands_for(Role.supervisor)],
) -> CasePublic | JSONResponse:
    await p.case(case_id)  # 404 outside the caller's scope, before anything is claimed

    async def run(_: str) -> CasePublic:
        closed_at = await p.db(_reopenable, p, case_id)
        state = await _closed_state(p, case_id, closed_at)
        reopening = Reopening(stage=body.stage, reason=body.reason, actor=p.actor)
        try:
            rules.check_reopen(state, reopening)
        except rules.JourneyRuleError as exc:
            raise _refused(exc) from None
        start = WithStartWorkflowOperation(
            CaseWorkflow.run,
            CaseRun(state=state, reopening=reopening),
            id=ids.workflow_id(case_id),
            task_queue=p.settings.temporal_task_queue,
            # A run already running (another reopening at the same moment) is not this one's.
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        )
        try:
            await p.client.execute_update_with_start_workflow(  # type: ignore[unused-coroutine]  # as open_case
                CaseWorkflow.opened, start_workflow_operation=start, rpc_timeout=commands.UPDATE_TIMEOUT
            )
        except WorkflowAlreadyStartedError:
            raise Conflict(N_("the case is being reopened already"), allowed_steps=[]) from None
        except RPCError as exc:
            if exc.status == RPCStatusCode.ALREADY_EXISTS:
                raise Conflict(N_("the case is being reopened already"), allowed_steps=[]) from None
            raise Unavailable(N_("Temporal is unavailable; retry with the same Idempotency-Key")) from None
        except WorkflowUpdateRPCTimeoutOrCancelledError:
            raise Unavailable(N_("Temporal is unavailable; retry with the same Idempotency-Key")) from None
        return await p.db(_respond, response, p.session, case_id, p.settings)

    def audit(_: dict[str, Any]) -> list[Entry]:
        return [Entry("case.reopen", case_id=case_id, detail={"stage": body.stage.value})]

    return await p.once(path=f"/v1/cases/{case_id}/reopen", request=body.model_dump(mode="json"), run=run, audit=audit)
