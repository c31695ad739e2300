"""Lawful erasure of a person's data, and the payload codec endpoints of the Temporal Web UI."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Annotated, Any

import anyio
import structlog
from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import Response
from google.protobuf import json_format
from pydantic import BaseModel, Field
from sqlalchemy import delete, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send
from temporalio.api.common.v1 import Payloads
from temporalio.service import RPCError

from api.cases import CaseId
from api.deps import ClientDep, SessionDep, current_user, keyring_of, require
from api.errors import Conflict, Forbidden, NotFound, Unauthorized, Unavailable, Unprocessable, responses
from reintegration import audit
from reintegration.codec import ENCODING, KEY_ID, EncryptionCodec
from reintegration.crypto import ERASED, FREE_TEXT_KEYS, DataKeyRecord, KeyUnavailable
from reintegration.db import (
    CaseRecord,
    DeliveryRecord,
    IdempotencyRecord,
    NotificationRecord,
    PersonRecord,
    TaskRecord,
    TimelineRecord,
    aware,
)
from reintegration.tokens import Claims, InvalidToken, VerifierUnavailable
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
async def erase_personal_data(
    case_id: CaseId,
    request: Request,
    user: Annotated[Claims, require(Role.admin)],
    session: SessionDep,
    client: ClientDep,
) -> Erasure:
    case = session.get(CaseRecord, case_id)
    if case is None or not user.sees_country(case.owner_country):
        raise NotFound("no such case")
    if case.status != "closed":
        raise Conflict("only a closed case's personal data can be erased; withdrawing consent closes the case",
                       allowed_steps=case.allowed_steps)
    await _stop_messages(session, client, case_id)
    keyring = keyring_of(session)
    keyring.destroy_case_key(session, case_id)
    session.execute(delete(PersonRecord).where(PersonRecord.case_id == case_id))
    session.execute(delete(IdempotencyRecord).where(IdempotencyRecord.case_id == case_id))
    session.execute(update(TaskRecord).where(TaskRecord.case_id == case_id)
                    .values(notes="", outcome_notes="", decline_reason=""))
    for row in session.execute(select(TimelineRecord).where(TimelineRecord.case_id == case_id)).scalars():
        row.facts = _erased(row.facts)
    case.facts = _erased(case.facts)
    session.add(case)
    # The audit row commits with the erasure, or neither does.
    audit.append(session, actor=user, request_id=_request_id(request),
                 entries=[audit.Entry("personal-data.erase", case_id=case_id, status=200)])
    session.commit()
    key = session.execute(select(DataKeyRecord).where(DataKeyRecord.case_id == case_id)).scalar_one_or_none()
    erased_at = aware(key.destroyed_at) if key is not None and key.destroyed_at else datetime.now(timezone.utc)
    log.info("personal data erased", case_id=case_id)
    return Erasure(case_id=case_id, erased_at=erased_at, kept=KEPT)


def _request_id(request: Request) -> str:
    return str(getattr(request.state, "request_id", None) or uuid.uuid4())


def _erased(value: Any) -> Any:
    """Free text replaced by the erased marker (it could no longer be opened anyway)."""
    if isinstance(value, dict):
        return {k: (ERASED if k in FREE_TEXT_KEYS and isinstance(v, str) and v else _erased(v))
                for k, v in value.items()}
    if isinstance(value, list):
        return [_erased(v) for v in value]
    return value


async def _stop_messages(session: Session, client: Any, case_id: str) -> None:
    """Messages still on their way to agencies or supervisors would need the key: stop them first."""
    pending = [
        f"case-{case_id}-delivery-{d}" for d in session.execute(
            select(DeliveryRecord.delivery_id).where(DeliveryRecord.case_id == case_id,
                                                     DeliveryRecord.status == "pending")).scalars()
    ] + [
        f"case-{case_id}-notify-{n}" for n in session.execute(
            select(NotificationRecord.notification_id).where(NotificationRecord.case_id == case_id,
                                                             NotificationRecord.status == "pending")).scalars()
    ]
    for workflow_id in pending:
        try:
            await client.get_workflow_handle(workflow_id).terminate(reason="the personal data was erased")
        except RPCError as exc:
            if "not found" not in str(exc).lower() and "already completed" not in str(exc).lower():
                raise Unavailable("Temporal is unavailable; retry the erasure") from None
    if pending:
        session.execute(update(DeliveryRecord).where(DeliveryRecord.case_id == case_id,
                                                     DeliveryRecord.status == "pending").values(status="skipped"))
        session.execute(update(NotificationRecord).where(NotificationRecord.case_id == case_id,
                                                         NotificationRecord.status == "pending")
                        .values(status="skipped"))


# --- The payload codec for the Temporal Web UI -----------------------------------------------------


def codec_user(user: Annotated[Claims, Depends(current_user)]) -> Claims:
    if user.role != Role.supervisor:
        raise Forbidden("only a supervisor may read workflow payloads")
    return user


async def codec_user_in_path(
    request: Request, token: str = Path(max_length=4000, pattern=r"^[A-Za-z0-9._-]+$")
) -> Claims:
    """Development only: the Web UI started by ``make run`` can't send a header, so the token rides
    in the endpoint's path. Production refuses it (the UI passes its OIDC access token instead)."""
    if request.app.state.settings.environment != "development":
        raise NotFound("no such endpoint")
    try:
        claims = await anyio.to_thread.run_sync(request.app.state.verifier.verify, token)
    except InvalidToken:
        raise Unauthorized("the token in the codec endpoint is invalid or expired") from None
    except VerifierUnavailable:
        raise Unavailable("the identity provider's keys cannot be fetched") from None
    if claims.role != Role.supervisor:
        raise Forbidden("only a supervisor may read workflow payloads")
    return claims


async def _payloads(request: Request) -> Payloads:
    try:
        return json_format.Parse(await request.body(), Payloads())
    except (json_format.ParseError, UnicodeDecodeError, ValueError):
        raise Unprocessable("the body is not a JSON Payloads message") from None


def _reply(payloads: list[Any]) -> Response:
    return Response(json_format.MessageToJson(Payloads(payloads=payloads)), media_type="application/json")


async def _decode(request: Request, user: Claims) -> Response:
    """Each decode is audited (who read which keys' payloads) before anything is returned."""
    payloads = (await _payloads(request)).payloads
    keys = sorted({p.metadata[KEY_ID].decode() for p in payloads if KEY_ID in p.metadata})

    def record() -> None:
        with Session(request.app.state.engine) as session:
            cases = sorted(session.execute(select(DataKeyRecord.case_id).where(
                DataKeyRecord.key_id.in_(keys), DataKeyRecord.case_id.is_not(None))).scalars())  # type: ignore
            detail = {"payloads": len(payloads)}
            entries = [audit.Entry("codec.decode", case_id=c, status=200, detail=detail) for c in cases[:50]]
            audit.append(session, actor=user, request_id=_request_id(request),
                         entries=entries or [audit.Entry("codec.decode", status=200, detail=detail)])
            session.commit()

    try:
        await anyio.to_thread.run_sync(record)
    except SQLAlchemyError:
        raise Unavailable("the audit trail is unavailable; nothing was decoded") from None
    codec = EncryptionCodec(request.app.state.keyring)
    out = []
    for payload in payloads:
        try:
            out += await codec.decode([payload])
        except KeyUnavailable:
            out.append(payload)  # erased (or not ours): it stays unreadable
    return _reply(out)


async def _encode(request: Request) -> Response:
    """What the UI sends (a signal's input, say) is encrypted with the system key: it names no case."""
    codec = EncryptionCodec(request.app.state.keyring)
    out = []
    for payload in (await _payloads(request)).payloads:
        out += [payload] if payload.metadata.get("encoding") == ENCODING else await codec.encode([payload])
    return _reply(out)


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

    def __init__(self, app: ASGIApp, origins: list[str]) -> None:
        self.app = app
        self.cors = CORSMiddleware(app, allow_origins=origins, allow_methods=["POST"], allow_credentials=True,
                                   allow_headers=["Authorization", "Content-Type", "X-Namespace"], max_age=600)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/codec/"):
            await self.cors(scope, receive, send)
        else:
            await self.app(scope, receive, send)
