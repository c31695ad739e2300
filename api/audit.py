"""The audit trail over HTTP: the ``Auditor`` the routers record with, and a case's trail for supervisors.

Changes are recorded once they took effect (inside the idempotent run, so a response is stored for
its ``Idempotency-Key`` only once its row is written); reads of personal data are recorded before
the data is returned, and if the row cannot be written the data is not returned (``503``). A replay
of a successful request for its ``Idempotency-Key`` is recorded too, marked ``replay``: it has no new
effect, but its response may carry personal data again.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from datetime import datetime
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Depends, Path, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, col, select

from api.deps import IDENTIFIER, CurrentUser, SessionDep, require
from api.errors import Unavailable, responses
from api.journeys import case_in_scope
from api.languages import N_
from api.pagination import Cursor, Keyset, Limit, page
from api.schemas import Page
from reintegration import audit
from reintegration.db import AuditRecord, aware
from reintegration.tokens import Claims
from workflows.model import Role

log = structlog.get_logger("api")

router = APIRouter(tags=["audit"])

Entry = audit.Entry


class Auditor:
    """Appends the caller's actions and reads of personal data to the audit trail, for one request.

    It writes with the request's own session and commits it: a second connection per request would
    let a burst of concurrent requests, each holding one, wait for the pool forever. So record once
    the handler's own changes are committed (or when it made none).
    """

    def __init__(
        self, *, session: Session, user: Claims, request_id: str, client_request_id: str | None = None
    ) -> None:
        self.session = session
        self.user = user
        self.request_id = request_id
        self.client_request_id = client_request_id

    def record(
        self,
        action: str,
        *,
        case_id: str | None = None,
        task_id: str | None = None,
        status: int = 200,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Append one row; ``503`` if it cannot be written."""
        self.record_many([Entry(action, case_id=case_id, task_id=task_id, status=status, detail=detail or {})])

    def stage(self, entries: list[audit.Entry]) -> None:
        """Append rows in the session's transaction, which the caller commits with its own change:
        the change and its rows are written together, or neither is."""
        audit.append(
            self.session,
            actor=self.user,
            request_id=self.request_id,
            entries=with_client_request_id(entries, self.client_request_id),
        )

    def record_many(self, entries: list[audit.Entry]) -> None:
        if not entries:
            return
        entries = with_client_request_id(entries, self.client_request_id)
        try:
            audit.append(self.session, actor=self.user, request_id=self.request_id, entries=entries)
            self.session.commit()
        except SQLAlchemyError as exc:
            try:
                self.session.rollback()
            except SQLAlchemyError:
                pass  # the database is gone; the session is discarded with the request
            log.error(
                "audit trail unavailable",
                error=type(exc).__name__,
                request_id=self.request_id,
                action=entries[0].action,
            )
            raise Unavailable(N_("the audit trail is unavailable; nothing was returned")) from None

    def replayed(self, result: Response, *entries: audit.Entry) -> Response:
        """Record a successful request replayed for its ``Idempotency-Key``, then give its response.

        An entry without a case or task id takes the one of the replayed body.
        """
        body = replayed_body(result)
        if body is not None:
            self.record_many(
                [
                    replace(
                        e,
                        replay=True,
                        status=result.status_code,
                        case_id=e.case_id or body.get("case_id"),
                        task_id=e.task_id or body.get("task_id"),
                    )
                    for e in entries
                ]
            )
        return result


def replayed_body(result: object) -> dict[str, Any] | None:
    """The body of a successful response replayed by ``api.idempotency.once``; ``None`` for a fresh one."""
    if isinstance(result, Response) and result.status_code < 400:
        body = json.loads(bytes(result.body))
        return body if isinstance(body, dict) else {}
    return None


def with_client_request_id(entries: list[audit.Entry], client_request_id: str | None) -> list[audit.Entry]:
    """The client's own ``X-Request-ID``, kept beside the server's in each row's detail."""
    if not client_request_id:
        return entries
    return [replace(e, detail={**e.detail, "client_request_id": client_request_id}) for e in entries]


def request_ids(request: Request) -> tuple[str, str | None]:
    """The server's id of the request (``RequestContext``; a fresh one without it) and the client's."""
    return (
        str(getattr(request.state, "request_id", None) or uuid.uuid4().hex),
        getattr(request.state, "client_request_id", None),
    )


def auditor_for(request: Request, session: Session, user: Claims) -> Auditor:
    """The request's auditor, made by the routes read or sent most themselves (FastAPI solves each
    dependency of each request anew: one less is a few per cent of a case's read)."""
    request_id, client_request_id = request_ids(request)
    return Auditor(session=session, user=user, request_id=request_id, client_request_id=client_request_id)


async def get_auditor(request: Request, session: SessionDep, user: CurrentUser) -> Auditor:
    return auditor_for(request, session, user)


AuditorDep = Annotated[Auditor, Depends(get_auditor)]


# --- A case's trail ------------------------------------------------------------------------------


class AuditActor(BaseModel):
    sub: str
    role: str
    agency: str | None


class AuditEntry(BaseModel):
    """One row of the audit trail: who, what, which case or task, when; no personal data."""

    seq: int = Field(description="Position in the whole trail (monotonic)")
    at: datetime
    actor: AuditActor
    action: str = Field(description="e.g. case.open, step.<step>, task.<action>, person.read, task.read-person")
    case_id: str | None
    task_id: str | None
    request_id: str
    status: int | None = Field(description="The HTTP status of the response")
    replay: bool = Field(description="An Idempotency-Key replay: the same response again, no new effect")
    detail: dict[str, Any] = Field(description="Ids and counts only")
    prev_hash: str
    hash: str = Field(
        description="HMAC-SHA256 of this row's fields and prev_hash, with a key kept outside the database in clear"
    )

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "seq": 1042,
                    "at": "2026-11-21T09:14:03.512Z",
                    "actor": {"sub": "cw-es-1", "role": "caseworker", "agency": None},
                    "action": "person.read",
                    "case_id": "0b9c1f7e-2d1a-4c57-9a43-5f0e6c1d2a9b",
                    "task_id": None,
                    "request_id": "5f2b8c1e-8d3a-4f6b-9c2d-1a7e3b4c5d6e",
                    "status": 200,
                    "replay": False,
                    "detail": {},
                    "prev_hash": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
                    "hash": "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752",
                }
            ]
        }
    }


AuditPage = Page[AuditEntry]


def _entry(row: AuditRecord) -> AuditEntry:
    return AuditEntry(
        seq=row.seq,
        at=aware(row.at),
        actor=AuditActor(sub=row.actor_sub, role=row.actor_role, agency=row.actor_agency),
        action=row.action,
        case_id=row.case_id,
        task_id=row.task_id,
        request_id=row.request_id,
        status=row.status,
        replay=row.replay,
        detail=row.detail or {},
        prev_hash=row.prev_hash,
        hash=row.hash,
    )


# Oldest first.
AUDIT_ORDER = Keyset(col(AuditRecord.seq))


@router.get(
    "/v1/cases/{case_id}/audit",
    response_model=AuditPage,
    summary="The audit trail of a case",
    description="Every action on the case and every read of the person's data, oldest first.",
    responses=responses(401, 403, 404, 422),
)
def case_audit(
    case_id: Annotated[str, Path(max_length=64, pattern=IDENTIFIER)],
    user: Annotated[Claims, require(Role.supervisor)],
    session: SessionDep,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> AuditPage:
    case_in_scope(session, case_id, user)
    query = select(AuditRecord).where(col(AuditRecord.case_id) == case_id)
    rows, next_cursor = page(session, query, AUDIT_ORDER, limit=limit, cursor=cursor)
    return AuditPage(items=[_entry(r) for r in rows], next_cursor=next_cursor)
