"""Lawful erasure of a person's data, and the payload codec endpoints of the Temporal Web UI."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import anyio
import structlog
from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import Response
from google.protobuf import json_format
from pydantic import BaseModel, Field
from sqlalchemy import delete, select, text, update
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, col
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from api.audit import request_ids, with_client_request_id
from api.cases import CaseId
from api.deps import ClientDep, SessionDep, current_user, keyring_of, release_connection, require
from api.documents import delete_blobs, forget_documents
from api.errors import (
    Conflict,
    Forbidden,
    NotFound,
    TooManyRequests,
    Unauthorized,
    Unavailable,
    Unprocessable,
    problem,
    responses,
)
from api.languages import N_
from api.limits import RateLimits, client_key
from api.links import forget_links
from reintegration import audit, notes, person_index
from reintegration.codec import ENCODING, EncryptionCodec, payload_key_id
from reintegration.crypto import (
    FREE_TEXT_KEYS,
    SYSTEM_KEY_ID,
    DataKeyRecord,
    KeyUnavailable,
    Unreadable,
    erase_fields,
)
from reintegration.db import (
    CaseRecord,
    DeliveryRecord,
    IdempotencyRecord,
    NotificationRecord,
    PersonRecord,
    PlanDraftRecord,
    TaskRecord,
    TimelineRecord,
    TransferRecord,
    UserNotificationRecord,
    aware,
)
from reintegration.tokens import Claims, DevelopmentVerifier, InvalidToken
from workflows import ids
from workflows.model import Role

log = structlog.get_logger("api")

router = APIRouter(tags=["privacy"])
codec_router = APIRouter(prefix="/codec", tags=["codec"], include_in_schema=False)


class Erasure(BaseModel):
    """What an erasure did."""

    case_id: str
    erased_at: datetime = Field(description="When the case's data key was destroyed")
    kept: list[str] = Field(description="What stays, for statistics: anonymous facts only")


KEPT = ["stage", "status", "pathway", "countries", "dates", "services", "agencies", "scores", "timeline event names"]


@router.delete(
    "/v1/cases/{case_id}/personal-data",
    response_model=Erasure,
    summary="Erase the person's data (lawful request)",
    description=(
        "Destroys the case's data key, so the person's data and every free text of the case can no "
        "longer be read anywhere (database, exports, workflow histories), and deletes what the database "
        "held of it. The anonymous facts stay for statistics. Only a closed case (withdrawing consent "
        "closes it). Repeating it changes nothing and gives the same answer."
    ),
    responses=responses(401, 403, 404, 409, 503),
)
def erase_personal_data(
    case_id: CaseId,
    request: Request,
    user: Annotated[Claims, require(Role.admin)],
    session: SessionDep,
    client: ClientDep,
) -> Erasure:
    """A plain handler (FastAPI's thread pool): the database work stays off the event loop, and
    only the termination of the case's workflows goes back to it."""
    case = session.get(CaseRecord, case_id)
    if case is None or not user.sees_country(case.owner_country):
        raise NotFound(N_("no such case"))
    if case.status != "closed":
        raise Conflict(
            N_("only a closed case's personal data can be erased; withdrawing consent closes the case"),
            allowed_steps=case.allowed_steps,
        )
    _stop_workflows(session, client, case_id)
    keyring = keyring_of(session)
    destroyed = keyring.destroy_case_key(session, case_id)
    session.execute(delete(PersonRecord).where(col(PersonRecord.case_id) == case_id))
    notes.erase_notes(session, case_id)
    person_index.forget_person(session, case_id)  # a hash of the name would outlive the erasure
    forget_links(session, case_id)  # who was related to whom goes with the person's data
    blob_keys = forget_documents(session, case_id)  # the blobs themselves once this commits
    session.execute(delete(IdempotencyRecord).where(col(IdempotencyRecord.case_id) == case_id))
    session.execute(delete(PlanDraftRecord).where(col(PlanDraftRecord.case_id) == case_id))
    session.execute(update(TransferRecord).where(col(TransferRecord.case_id) == case_id).values(reason="", refusal=""))
    session.execute(
        update(TaskRecord)
        .where(col(TaskRecord.case_id) == case_id)
        .values(notes="", outcome_notes="", decline_reason="")
    )
    for row in session.execute(select(TimelineRecord).where(col(TimelineRecord.case_id) == case_id)).scalars():
        row.facts = erase_fields(row.facts, FREE_TEXT_KEYS)
    case.facts = erase_fields(case.facts, FREE_TEXT_KEYS)
    if destroyed:  # now, not by a repeat (which changes nothing)
        # A new version of the case: what any API process kept opened for the one before (beside a
        # key it may still hold for a few seconds) is not served again, and its ETag moves on.
        case.version += 1
    session.add(case)
    # The audit row commits with the erasure, or neither does.
    request_id, client_request_id = request_ids(request)
    audit.append(
        session,
        actor=user,
        request_id=request_id,
        entries=with_client_request_id(
            [audit.Entry("personal-data.erase", case_id=case_id, status=200)], client_request_id
        ),
    )
    session.commit()
    keyring.forget(case_id)
    delete_blobs(request.app.state.blobs, blob_keys)
    _flush_freed_pages(session)
    key = session.execute(select(DataKeyRecord).where(col(DataKeyRecord.case_id) == case_id)).scalar_one_or_none()
    erased_at = aware(key.destroyed_at) if key is not None and key.destroyed_at else datetime.now(UTC)
    log.info("personal data erased", case_id=case_id)
    return Erasure(case_id=case_id, erased_at=erased_at, kept=KEPT)


def _flush_freed_pages(session: Session) -> None:
    """SQLite overwrites deleted content (``secure_delete``, set on every connection); move the
    write-ahead log into the database so the destroyed key leaves the log file too. PostgreSQL
    leaves old row versions until (auto)vacuum: see the README on backups and retention."""
    if session.get_bind().dialect.name == "sqlite":
        session.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))


def _stop_workflows(session: Session, client: Client, case_id: str) -> None:
    """Whatever of the case still runs (a message on its way to an agency or supervisors) would need
    the key: terminate it first. The read model's pending rows and the server's list of the case's
    running workflows are both consulted (the list is eventually consistent; the rows are not)."""
    pending = (
        [
            ids.message_workflow_id(case_id, "delivery", d)
            for d in session.execute(
                select(col(DeliveryRecord.delivery_id)).where(
                    col(DeliveryRecord.case_id) == case_id, col(DeliveryRecord.status) == "pending"
                )
            ).scalars()
        ]
        + [
            ids.message_workflow_id(case_id, "notify", n)
            for n in session.execute(
                select(col(NotificationRecord.notification_id)).where(
                    col(NotificationRecord.case_id) == case_id, col(NotificationRecord.status) == "pending"
                )
            ).scalars()
        ]
        + [
            ids.message_workflow_id(case_id, "mail", n)
            for n in session.execute(
                select(col(UserNotificationRecord.notification_id)).where(
                    col(UserNotificationRecord.case_id) == case_id,
                    col(UserNotificationRecord.email_status) == "pending",
                )
            ).scalars()
        ]
    )
    release_connection(session)  # none held while Temporal answers
    anyio.from_thread.run(_terminate, client, case_id, pending)
    if pending:
        session.execute(
            update(DeliveryRecord)
            .where(col(DeliveryRecord.case_id) == case_id, col(DeliveryRecord.status) == "pending")
            .values(status="skipped")
        )
        session.execute(
            update(NotificationRecord)
            .where(col(NotificationRecord.case_id) == case_id, col(NotificationRecord.status) == "pending")
            .values(status="skipped")
        )
        session.execute(
            update(UserNotificationRecord)
            .where(
                col(UserNotificationRecord.case_id) == case_id, col(UserNotificationRecord.email_status) == "pending"
            )
            .values(email_status="none")
        )


async def _terminate(client: Client, case_id: str, pending: list[str]) -> None:
    """Terminate the case's running workflows and those of its pending messages."""
    try:
        query = ids.case_workflows_query(case_id) + ' AND ExecutionStatus = "Running"'
        running = {execution.id async for execution in client.list_workflows(query)}
    except RPCError:
        raise Unavailable(N_("Temporal is unavailable; retry the erasure")) from None
    for workflow_id in sorted(running | set(pending)):
        try:
            await client.get_workflow_handle(workflow_id).terminate(reason="the personal data was erased")
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:  # NOT_FOUND: finished meanwhile, or never started
                raise Unavailable(N_("Temporal is unavailable; retry the erasure")) from None


# --- The payload codec for the Temporal Web UI -----------------------------------------------------


def codec_user(user: Annotated[Claims, Depends(current_user)]) -> Claims:
    if user.role != Role.supervisor:
        raise Forbidden(N_("only a supervisor may read workflow payloads"))
    return user


async def codec_user_in_path(
    request: Request, token: str = Path(max_length=4000, pattern=r"^[A-Za-z0-9._-]+$")
) -> Claims:
    """Development only: the Web UI started by ``make run`` can't send a header, so a codec token
    (``reintegration.tokens.mint_codec``: good for these routes only, bound to the running stack)
    rides in the endpoint's path. Production refuses it (the UI passes its OIDC access token instead).
    The request was charged to its address's rate limit on the way in, like any unauthenticated one."""
    verifier = request.app.state.verifier  # only the development key's verifier reads codec tokens
    if request.app.state.settings.environment != "development" or not isinstance(verifier, DevelopmentVerifier):
        raise NotFound(N_("no such endpoint"))
    try:
        claims = await anyio.to_thread.run_sync(verifier.verify_codec, token)
    except InvalidToken:
        raise Unauthorized(N_("the token in the codec endpoint is invalid or expired")) from None
    if claims.role != Role.supervisor:
        raise Forbidden(N_("only a supervisor may read workflow payloads"))
    request.state.claims = claims  # for the access log
    return claims


async def _payloads(request: Request) -> Payloads:
    try:
        return json_format.Parse(await request.body(), Payloads())
    except (json_format.ParseError, UnicodeDecodeError, ValueError):
        raise Unprocessable(N_("the body is not a JSON Payloads message")) from None


def _reply(payloads: list[Payload]) -> Response:
    return Response(json_format.MessageToJson(Payloads(payloads=payloads)), media_type="application/json")


async def _decode(request: Request, user: Claims) -> Response:
    """Decode what the supervisor may read: payloads of cases in their region whose key still
    exists (and, for a supervisor of all countries, the system key's). Everything else is given back
    as it came, still encrypted. Each case read is audited before anything is returned."""
    payloads = (await _payloads(request)).payloads
    keys = {k for k in map(payload_key_id, payloads) if k is not None}

    def readable_keys() -> set[str]:
        with Session(request.app.state.engine) as session:
            rows = session.execute(
                select(col(DataKeyRecord.key_id), col(DataKeyRecord.case_id), col(CaseRecord.owner_country))
                .join(CaseRecord, col(CaseRecord.case_id) == col(DataKeyRecord.case_id))
                .where(col(DataKeyRecord.key_id).in_(keys), col(DataKeyRecord.wrapped).is_not(None))
            ).all()
            allowed = {r.key_id: r.case_id for r in rows if user.sees_country(r.owner_country)}
            detail = {"payloads": len(payloads)}
            entries = [
                audit.Entry("codec.decode", case_id=c, status=200, detail=detail) for c in sorted(set(allowed.values()))
            ]
            if SYSTEM_KEY_ID in keys and user.all_countries:
                allowed[SYSTEM_KEY_ID] = ""
                entries.append(audit.Entry("codec.decode", status=200, detail={**detail, "key": SYSTEM_KEY_ID}))
            if entries:
                request_id, client_request_id = request_ids(request)
                audit.append(
                    session,
                    actor=user,
                    request_id=request_id,
                    keyring=request.app.state.keyring,
                    entries=with_client_request_id(entries, client_request_id),
                )
                session.commit()
            return set(allowed)

    try:
        allowed = await anyio.to_thread.run_sync(readable_keys)
    except SQLAlchemyError:
        raise Unavailable(N_("the audit trail is unavailable; nothing was decoded")) from None
    codec = EncryptionCodec(request.app.state.keyring)
    out: list[Payload] = []
    for payload in payloads:
        if payload.metadata.get("encoding") == ENCODING and payload_key_id(payload) not in allowed:
            out.append(payload)  # another region's, erased, or not a payload key: stays unreadable
            continue
        try:
            out += await codec.decode([payload])
        except (KeyUnavailable, Unreadable):
            out.append(payload)
    return _reply(out)


async def _encode(request: Request) -> Response:
    """Nothing the Web UI encodes is accepted by a workflow (the worker decodes only what is sealed with
    the key of the case, or of no case, that the workflow names), so nothing is encoded: a signal, an
    update or a workflow started from the UI would be refused anyway. Commands go through the API."""
    raise Forbidden(N_("workflows take commands through the API only; the Web UI cannot send them"))


@codec_router.post("/decode")
async def decode(request: Request, user: Annotated[Claims, Depends(codec_user)]) -> Response:
    return await _decode(request, user)


@codec_router.post("/encode")
async def encode(request: Request, user: Annotated[Claims, Depends(codec_user)]) -> Response:
    return await _encode(request)


@codec_router.post("/t/{token}/decode")
async def decode_dev(request: Request, user: Annotated[Claims, Depends(codec_user_in_path)]) -> Response:
    return await _decode(request, user)


@codec_router.post("/t/{token}/encode")
async def encode_dev(request: Request, user: Annotated[Claims, Depends(codec_user_in_path)]) -> Response:
    return await _encode(request)


class CodecCors:
    """CORS for the codec endpoints only, and only from the Temporal Web UI's origins."""

    def __init__(self, app: ASGIApp, origins: list[str], limits: RateLimits) -> None:
        self.app, self.limits = app, limits
        self.cors = CORSMiddleware(
            app,
            allow_origins=origins,
            allow_methods=["POST"],
            allow_credentials=True,
            allow_headers=["Authorization", "Content-Type", "X-Namespace"],
            max_age=600,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/codec/"):
            if scope["method"] == "OPTIONS":  # a preflight is answered here: charged like any anonymous request
                try:
                    self.limits.charge(client_key(scope))
                except TooManyRequests as exc:
                    await problem(exc.status, exc.title, exc.detail, exc.headers)(scope, receive, send)
                    return
            await self.cors(scope, receive, send)
        else:
            await self.app(scope, receive, send)
