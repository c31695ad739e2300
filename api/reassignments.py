"""Bulk reassignment: a supervisor moves all or some of one caseworker's open cases in her region to
another caseworker, by a workflow that reassigns case by case (``workflows/reassignment.py``),
resumable after any restart, its progress readable here while it runs.

(No ``from __future__ import annotations`` here: ``commands_for`` reads the route's real annotations.)
"""

from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Body, Path, Request, Response
from fastapi.responses import JSONResponse
from pydantic import Field, model_validator
from sqlmodel import Session, col, select
from temporalio.client import WorkflowQueryFailedError
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError

from api.audit import Entry
from api.deps import IDENTIFIER, SessionDep, keyring_of, read_in_thread, require, temporal_client
from api.errors import NotFound, Unavailable, Unprocessable, responses
from api.languages import N_
from api.pipeline import Pipeline, commands_for
from api.users import known_owner
from reintegration.db import CaseRecord, ReassignmentRecord, aware
from reintegration.tokens import Claims
from workflows.model import BulkReassignment, ReassignmentProgress, Role, Strict
from workflows.reassignment import BulkReassignmentWorkflow, reason_purpose, reassignment_workflow_id

router = APIRouter(prefix="/v1/supervision/reassignments", tags=["supervision"])

UserIdField = Annotated[str, Field(max_length=100, pattern=IDENTIFIER)]
CaseIdField = Annotated[str, Field(max_length=64, pattern=r"^[0-9a-f-]{36}$")]
MAX_CASES = 5000
QUERY_TIMEOUT = timedelta(seconds=2)


class ReassignmentRequest(Strict):
    """Move ``from_caseworker``'s open cases in the supervisor's region (all of them, or those named)
    to ``to_caseworker``."""

    from_caseworker: UserIdField
    to_caseworker: UserIdField
    case_ids: list[CaseIdField] | None = Field(
        default=None, max_length=MAX_CASES, description="Only these of her cases; all of them when absent"
    )
    reason: str = Field(default="", max_length=2000)

    @model_validator(mode="after")
    def _two_people(self) -> "ReassignmentRequest":
        if self.from_caseworker == self.to_caseworker:
            raise ValueError("the cases would go to the caseworker who has them")
        if self.case_ids is not None and not self.case_ids:
            raise ValueError("name at least one case, or leave case_ids out for all of them")
        return self


class ReassignmentPublic(Strict):
    """A bulk reassignment and how far it went."""

    reassignment_id: str
    from_caseworker: str
    to_caseworker: str
    status: Literal["running", "finished"]
    total: int
    done: int = Field(description="Cases moved so far")
    skipped: dict[str, str] = Field(description="Cases left as they were, by id, with why")
    created_by: str
    created_at: datetime
    finished_at: datetime | None


def _public(row: ReassignmentRecord, progress: ReassignmentProgress | None = None) -> ReassignmentPublic:
    done, skipped = (len(progress.done), dict(progress.skipped)) if progress else (row.done, dict(row.skipped))
    return ReassignmentPublic(
        reassignment_id=row.reassignment_id,
        from_caseworker=row.from_caseworker,
        to_caseworker=row.to_caseworker,
        status=row.status,  # type: ignore[arg-type]
        total=row.total,
        done=done,
        skipped=skipped,
        created_by=row.created_by,
        created_at=aware(row.created_at),
        finished_at=aware(row.finished_at) if row.finished_at else None,
    )


def _cases(session: Session, user: Claims, body: ReassignmentRequest) -> list[CaseRecord]:
    """The cases to move, checked: hers, open, in the region; the new caseworker one of each's country."""
    query = select(CaseRecord).where(
        col(CaseRecord.owner_caseworker) == body.from_caseworker, col(CaseRecord.status) != "closed"
    )
    region = user.country_scope
    if region is not None:
        query = query.where(col(CaseRecord.owner_country).in_(region))
    if body.case_ids is not None:
        query = query.where(col(CaseRecord.case_id).in_(body.case_ids))
    cases = list(session.exec(query.order_by(col(CaseRecord.opened_at), col(CaseRecord.case_id))).all())
    if body.case_ids is not None and len(cases) != len(set(body.case_ids)):
        raise Unprocessable(
            N_("{count} of the cases named are not open cases of {user} in your region"),
            params={"count": str(len(set(body.case_ids)) - len(cases)), "user": body.from_caseworker},
        )
    if not cases:
        raise Unprocessable(N_("{user} has no open case in your region"), params={"user": body.from_caseworker})
    if len(cases) > MAX_CASES:
        raise Unprocessable(N_("at most {count} cases at once: name them"), params={"count": str(MAX_CASES)})
    for country in sorted({c.owner_country for c in cases}):
        known_owner(session, body.to_caseworker, country)
    return cases


@router.post(
    "",
    status_code=202,
    response_model=ReassignmentPublic,
    summary="Move one caseworker's cases to another",
    description=(
        "All of `from_caseworker`'s open cases in the supervisor's region, or those named, go to `to_caseworker` "
        "(a known, active caseworker of each case's country), case by case, by a workflow that resumes after "
        "any restart. `202` with its progress; read it again at `GET /v1/supervision/reassignments/{id}`."
    ),
    responses=responses(401, 403, 422, 503),
)
async def start_reassignment(
    body: Annotated[
        ReassignmentRequest,
        Body(
            openapi_examples={
                "leave": {"value": {"from_caseworker": "cw-es-1", "to_caseworker": "cw-es-2", "reason": "on leave"}}
            }
        ),
    ],
    response: Response,
    p: Annotated[Pipeline, commands_for(Role.supervisor)],
) -> ReassignmentPublic | JSONResponse:
    counted: list[int] = []

    async def run(reassignment_id: str) -> ReassignmentPublic:
        # A retry of a request whose answer was lost finds its row (and its workflow) already there.
        row = await p.db(p.session.get, ReassignmentRecord, reassignment_id)
        if row is None:
            cases = await p.db(_cases, p.session, p.user, body)
            row = ReassignmentRecord(
                reassignment_id=reassignment_id,
                created_by=p.user.sub,
                from_caseworker=body.from_caseworker,
                to_caseworker=body.to_caseworker,
                reason=keyring_of(p.session).seal_system(body.reason, purpose=reason_purpose(reassignment_id))
                if body.reason
                else "",
                countries=sorted({c.owner_country for c in cases}),
                total=len(cases),
                created_at=datetime.now(UTC),
            )
            case_ids = [c.case_id for c in cases]

            def save() -> None:
                p.session.add(row)
                p.session.commit()
                p.session.refresh(row)

            await p.db(save)
        else:
            try:  # saved, but perhaps not started: the cases again (none left if it did start)
                case_ids = [c.case_id for c in await p.db(_cases, p.session, p.user, body)]
            except Unprocessable:
                case_ids = []
        counted.append(row.total)
        try:
            await p.client.start_workflow(
                BulkReassignmentWorkflow.run,
                BulkReassignment(
                    reassignment_id=reassignment_id,
                    case_ids=case_ids,
                    from_caseworker=body.from_caseworker,
                    to_caseworker=body.to_caseworker,
                    actor=p.actor,
                ),
                id=reassignment_workflow_id(reassignment_id),
                task_queue=p.settings.temporal_task_queue,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            )
        except WorkflowAlreadyStartedError:
            pass  # this very reassignment, started by the attempt whose answer was lost
        except RPCError:
            raise Unavailable(N_("Temporal is not reachable")) from None
        response.headers["Location"] = f"/v1/supervision/reassignments/{reassignment_id}"
        return _public(row)

    return await p.once(
        path="/v1/supervision/reassignments",
        request=body.model_dump(mode="json"),
        run=run,
        audit=lambda answer: [
            Entry(
                "supervision.reassignment",
                detail={
                    "reassignment_id": answer.get("reassignment_id"),
                    "from_caseworker": body.from_caseworker,
                    "to_caseworker": body.to_caseworker,
                    "cases": answer.get("total", counted[0] if counted else None),
                },
            )
        ],
        status_code=202,
    )


@router.get(
    "/{reassignment_id}",
    response_model=ReassignmentPublic,
    summary="How far a bulk reassignment went",
    responses=responses(401, 403, 404, 422, 503),
)
async def get_reassignment(
    reassignment_id: Annotated[str, Path(max_length=64, pattern=r"^[0-9a-f-]{36}$")],
    request: Request,
    user: Annotated[Claims, require(Role.supervisor)],
    session: SessionDep,
) -> ReassignmentPublic:
    row = await read_in_thread(session, lambda: session.get(ReassignmentRecord, reassignment_id))
    if row is None or not all(user.sees_country(c) for c in row.countries):
        raise NotFound(N_("no such reassignment"))
    if row.status == "finished":
        return _public(row)
    handle = temporal_client(request).get_workflow_handle(reassignment_workflow_id(reassignment_id))
    try:
        # A query needs a worker: with none running, say what the row knows rather than wait.
        progress = await handle.query(BulkReassignmentWorkflow.progress, rpc_timeout=QUERY_TIMEOUT)
    except (RPCError, WorkflowQueryFailedError):
        return _public(row)  # the worker is away: what the row knows
    return _public(row, progress)
