"""Documents over HTTP: upload (the body is the document itself), list, download.

- ``POST /v1/cases/{id}/documents?kind=`` (caseworker, supervisor in scope) and
  ``POST /v1/tasks/{id}/documents?kind=`` (the partner agency holding the task, and the case's staff):
  ``413`` over ``REINTEGRATION_DOCUMENT_MAX_BYTES`` (said by Content-Length, or found while it
  streams), ``415`` unless its first bytes are a PDF's, a JPEG's or a PNG's, whatever it is called or
  declared; encrypted while it streams (``reintegration/documents.py``) and stored whole or not at all;
  its record and ``document.upload`` audit row in one transaction once it is stored (if they cannot
  be written, the blob is deleted and the answer is ``503``). An ``Idempotency-Key`` names the
  document: the same key again gives the same document, without storing the body again.
- ``GET /v1/cases/{id}/documents``, ``GET /v1/tasks/{id}/documents``: what each is, never its content.
- ``GET /v1/documents/{id}/content``: the document, audited (``document.download``) before a byte
  leaves. A partner reaches only the documents of the task its agency holds: its own agency's, and
  the staff's added while its agency held the task.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Annotated, Any

import anyio
import structlog
from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from sqlalchemy import and_, or_
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from api.access_log import bind_ids
from api.audit import Auditor, AuditorDep, Entry
from api.cases import CASEWORK, CaseId, TaskId
from api.deps import IDENTIFIER, IdempotencyKey, SessionDep, SettingsDep, keyring_of, release_connection, require
from api.errors import (
    Conflict,
    NotFound,
    PayloadTooLarge,
    Unavailable,
    Unprocessable,
    UnsupportedMediaType,
    responses,
)
from api.journeys import case_in_scope, task_in_scope
from api.languages import N_
from api.pagination import Cursor, Keyset, Limit, page
from api.schemas import Page
from reintegration import documents
from reintegration.blobs import STORE_ERRORS, BlobStore
from reintegration.crypto import DataKey
from reintegration.db import CaseRecord, DocumentRecord, PersonRecord, TaskRecord, aware
from reintegration.settings import Settings
from reintegration.tokens import Claims
from workflows.model import Role

log = structlog.get_logger("api")

router = APIRouter(tags=["documents"])

DOCUMENTS_ORDER = Keyset(col(DocumentRecord.uploaded_at), col(DocumentRecord.document_id), descending=True)
TASK_DOCUMENT_USERS = (Role.partner, Role.caseworker, Role.supervisor)
DocumentId = Annotated[str, Path(max_length=64, pattern=IDENTIFIER)]
Kind = Annotated[documents.DocumentKind, Query(description="What the document is")]
# Idempotency-Keys name documents in a namespace of their own.
_KEYED = uuid.UUID("0b6f6e55-2f8b-4a44-9b79-5d1f2a3c7e10")
UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "description": "The document itself (PDF, JPEG or PNG), as the body; its type is told by its content",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}


class Uploader(BaseModel):
    sub: str
    role: Role
    agency: str | None = None


class DocumentPublic(BaseModel):
    """What a document is; never its name or content."""

    document_id: str
    case_id: str | None = Field(description="None for a partner, who knows the case by its reference")
    task_id: str | None
    kind: documents.DocumentKind
    media_type: str = Field(description="Told by the document's first bytes")
    size: int = Field(description="Bytes")
    uploaded_at: datetime
    uploaded_by: Uploader


def document_public(record: DocumentRecord, *, partner: bool = False) -> DocumentPublic:
    return DocumentPublic(
        document_id=record.document_id,
        case_id=None if partner else record.case_id,
        task_id=record.task_id,
        kind=documents.DocumentKind(record.kind),
        media_type=record.media_type,
        size=record.size,
        uploaded_at=aware(record.uploaded_at),
        uploaded_by=Uploader(sub=record.uploaded_by, role=Role(record.uploader_role), agency=record.uploader_agency),
    )


def blobs_of(request: Request) -> BlobStore:
    store: BlobStore = request.app.state.blobs
    return store


def partner_may_reach(agency: str) -> Any:
    """A task's documents its agency reaches: its own, and the staff's added while it held the task."""
    return or_(
        col(DocumentRecord.uploader_agency) == agency,
        and_(col(DocumentRecord.uploader_agency).is_(None), col(DocumentRecord.task_agency) == agency),
    )


# --- Upload ----------------------------------------------------------------------------------------


def _document_id(user: Claims, key: str | None) -> str:
    return str(uuid.uuid5(_KEYED, f"{user.sub}\x00{key}")) if key else str(uuid.uuid4())


def _open_case(case: CaseRecord | None) -> None:
    if case is not None and case.status == "closed":
        raise Conflict(N_("the case is closed: documents can no longer be added to it"), allowed_steps=[])


def _prepare(
    session: Session, user: Claims, case_id: str | None, task_id: str | None, document_id: str
) -> tuple[CaseRecord, TaskRecord | None, DocumentRecord | None, DataKey | None]:
    """Scope and state before anything is read of the body; the document already stored under this
    Idempotency-Key, if any."""
    task = task_in_scope(session, task_id, user) if task_id is not None else None
    case = case_in_scope(session, case_id, user) if case_id is not None else session.get(CaseRecord, task.case_id)  # type: ignore[union-attr]
    if case is None:
        raise NotFound(N_("no such case"))
    existing = session.get(DocumentRecord, document_id)
    if existing is not None:
        if existing.case_id != case.case_id or existing.task_id != task_id:
            raise Unprocessable(N_("this Idempotency-Key was used with another request"))
        return case, task, existing, None
    _open_case(case)
    key = keyring_of(session).case_key(case.case_id)  # the case's data key, for the upload's thread
    release_connection(session)  # none held while the body streams in
    return case, task, None, key


def _still_open(session: Session, case_id: str) -> None:
    """The case as it is now (locked where the database can): an upload that outlived the case's
    closure or erasure while it streamed is not recorded."""
    case = session.exec(select(CaseRecord).where(col(CaseRecord.case_id) == case_id).with_for_update()).first()
    if case is None or case.status == "closed" or session.get(PersonRecord, case_id) is None:
        raise Conflict(N_("the case is closed: documents can no longer be added to it"), allowed_steps=[])


def _record(
    session: Session,
    auditor: Auditor,
    user: Claims,
    case: CaseRecord,
    task: TaskRecord | None,
    document_id: str,
    blob_key: str,
    kind: documents.DocumentKind,
    stored: documents.Stored,
) -> DocumentRecord:
    _still_open(session, case.case_id)
    record = DocumentRecord(
        document_id=document_id,
        case_id=case.case_id,
        task_id=task.task_id if task is not None else None,
        task_agency=task.agency_id if task is not None else None,
        kind=kind.value,
        media_type=stored.media_type,
        size=stored.size,
        blob_key=blob_key,
        uploaded_by=user.sub,
        uploader_role=user.role.value,
        uploader_agency=user.agency if user.role == Role.partner else None,
        uploaded_at=datetime.now(UTC),
    )
    session.add(record)
    session.flush()
    detail = {"document_id": document_id, "kind": kind.value, "media_type": stored.media_type, "size": stored.size}
    auditor.stage([Entry("document.upload", case_id=case.case_id, task_id=record.task_id, status=201, detail=detail)])
    session.commit()
    return record


async def _upload(
    request: Request,
    user: Claims,
    session: Session,
    auditor: Auditor,
    settings: Settings,
    key: str | None,
    kind: documents.DocumentKind,
    *,
    case_id: str | None = None,
    task_id: str | None = None,
    body: AsyncIterator[bytes] | None = None,
) -> DocumentPublic:
    """The upload of ``body`` (the request's own body unless given: the workspace's form gives the
    file's part of it)."""
    declared = request.headers.get("content-length", "")
    if body is None and declared.isascii() and declared.isdigit() and int(declared) > settings.document_max_bytes:
        raise PayloadTooLarge(settings.document_max_bytes)  # (a form's length counts its other fields too)
    document_id = _document_id(user, key)
    case, task, existing, case_key = await anyio.to_thread.run_sync(
        _prepare, session, user, case_id, task_id, document_id
    )
    partner = user.role == Role.partner
    if existing is not None or case_key is None:  # the same upload again: the same document, stored once
        assert existing is not None
        replayed = Entry(
            "document.upload",
            case_id=case.case_id,
            task_id=existing.task_id,
            status=201,
            replay=True,
            detail={"document_id": document_id},
        )
        await anyio.to_thread.run_sync(auditor.record_many, [replayed])
        return document_public(existing, partner=partner)
    store = blobs_of(request)
    blob_key = uuid.uuid4().hex
    try:
        stored = await documents.store_upload(
            store,
            case_key,
            document_id=document_id,
            blob_key=blob_key,
            body=body if body is not None else request.stream(),
            max_bytes=settings.document_max_bytes,
        )
    except documents.TooLarge:
        raise PayloadTooLarge(settings.document_max_bytes) from None
    except documents.UnknownType:
        raise UnsupportedMediaType(N_("a document is taken as PDF, JPEG or PNG, told by its content")) from None
    except documents.Refused:
        raise Unprocessable(N_("the document could not be read")) from None
    except STORE_ERRORS as exc:
        log.error("document store unavailable", error=type(exc).__name__)
        raise Unavailable(N_("the document store is unavailable; nothing was stored")) from None
    try:
        record = await anyio.to_thread.run_sync(
            _record, session, auditor, user, case, task, document_id, blob_key, kind, stored
        )
    except IntegrityError:  # the same upload (one Idempotency-Key) sent twice at once: the other won
        await anyio.to_thread.run_sync(store.delete, blob_key, limiter=TRANSFERS)
        won = await anyio.to_thread.run_sync(_after_race, session, document_id)
        if won is None or won.case_id != case.case_id or won.task_id != (task.task_id if task else None):
            raise Unprocessable(N_("this Idempotency-Key was used with another request")) from None
        return document_public(won, partner=partner)
    except BaseException:  # no record, no blob: nothing half-written
        await anyio.to_thread.run_sync(store.delete, blob_key, limiter=TRANSFERS)
        raise
    return document_public(record, partner=partner)


def _after_race(session: Session, document_id: str) -> DocumentRecord | None:
    session.rollback()
    return session.get(DocumentRecord, document_id)


@router.post(
    "/v1/cases/{case_id}/documents",
    status_code=201,
    response_model=DocumentPublic,
    summary="Add a document to a case",
    openapi_extra=UPLOAD_BODY,
    responses=responses(401, 403, 404, 409, 413, 415, 422, 503),
)
async def upload_case_document(
    case_id: CaseId,
    kind: Kind,
    request: Request,
    user: Annotated[Claims, require(*CASEWORK)],
    session: SessionDep,
    auditor: AuditorDep,
    settings: SettingsDep,
    idempotency_key: IdempotencyKey = None,
) -> DocumentPublic:
    bind_ids(case_id=case_id)
    return await _upload(request, user, session, auditor, settings, idempotency_key, kind, case_id=case_id)


@router.post(
    "/v1/tasks/{task_id}/documents",
    status_code=201,
    response_model=DocumentPublic,
    summary="Add a document to a task",
    description="The partner agency holding the task, and the case's caseworkers and supervisors.",
    openapi_extra=UPLOAD_BODY,
    responses=responses(401, 403, 404, 409, 413, 415, 422, 503),
)
async def upload_task_document(
    task_id: TaskId,
    kind: Kind,
    request: Request,
    user: Annotated[Claims, require(*TASK_DOCUMENT_USERS)],
    session: SessionDep,
    auditor: AuditorDep,
    settings: SettingsDep,
    idempotency_key: IdempotencyKey = None,
) -> DocumentPublic:
    return await _upload(request, user, session, auditor, settings, idempotency_key, kind, task_id=task_id)


# --- Lists -----------------------------------------------------------------------------------------


@router.get(
    "/v1/cases/{case_id}/documents",
    response_model=Page[DocumentPublic],
    summary="The documents of a case, newest first",
    responses=responses(401, 403, 404, 422, 503),
)
def list_case_documents(
    case_id: CaseId,
    user: Annotated[Claims, require(*CASEWORK)],
    session: SessionDep,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[DocumentPublic]:
    case_in_scope(session, case_id, user)
    query = select(DocumentRecord).where(col(DocumentRecord.case_id) == case_id)
    rows, following = page(session, query, DOCUMENTS_ORDER, limit=limit, cursor=cursor)
    return Page(items=[document_public(r) for r in rows], next_cursor=following)


@router.get(
    "/v1/tasks/{task_id}/documents",
    response_model=Page[DocumentPublic],
    summary="The documents of a task, newest first",
    description="For a partner, those its agency reaches (its own, and the staff's added while it held the task).",
    responses=responses(401, 403, 404, 422, 503),
)
def list_task_documents(
    task_id: TaskId,
    user: Annotated[Claims, require(*TASK_DOCUMENT_USERS)],
    session: SessionDep,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[DocumentPublic]:
    task_in_scope(session, task_id, user)
    query = select(DocumentRecord).where(col(DocumentRecord.task_id) == task_id)
    partner = user.role == Role.partner
    if partner:
        query = query.where(partner_may_reach(str(user.agency)))
    rows, following = page(session, query, DOCUMENTS_ORDER, limit=limit, cursor=cursor)
    return Page(items=[document_public(r, partner=partner) for r in rows], next_cursor=following)


# --- Download --------------------------------------------------------------------------------------


def reachable_document(session: Session, user: Claims, document_id: str) -> DocumentRecord:
    """The document if the caller may have it; 404 otherwise (no leak of existence)."""
    record = session.get(DocumentRecord, document_id)
    if record is None:
        raise NotFound(N_("no such document"))
    try:
        if user.role == Role.partner:
            if record.task_id is None:
                raise NotFound(N_("no such document"))
            task_in_scope(session, record.task_id, user)
            reachable = record.uploader_agency == user.agency or (
                record.uploader_agency is None and record.task_agency == user.agency
            )
            if not reachable:
                raise NotFound(N_("no such document"))
        else:
            case_in_scope(session, record.case_id, user)
    except NotFound:
        raise NotFound(N_("no such document")) from None
    return record


def prepare_download(
    session: Session, user: Claims, auditor: Auditor, store: BlobStore, document_id: str
) -> tuple[DocumentRecord, DataKey]:
    record = reachable_document(session, user, document_id)
    try:
        kept = store.exists(record.blob_key)
    except STORE_ERRORS as exc:
        log.error("document store unavailable", error=type(exc).__name__)
        raise Unavailable(N_("the document store is unavailable; try again in a moment")) from None
    if not kept:
        raise NotFound(N_("the document's content is no longer kept"))
    key = keyring_of(session).case_key(record.case_id)
    # Audited before a byte leaves; no row, no document (503).
    auditor.record(
        "document.download", case_id=record.case_id, task_id=record.task_id, detail={"document_id": document_id}
    )
    return record, key


# The document store's transfers wait on its network: in threads of their own, never holding one of
# the few that run the API's database work (``Settings.api_threads``).
TRANSFERS = anyio.CapacityLimiter(8)
_DONE = object()


async def transferred(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    """Each chunk of a document read from the store in a transfer thread (``TRANSFERS``)."""
    while (chunk := await anyio.to_thread.run_sync(next, chunks, _DONE, limiter=TRANSFERS)) is not _DONE:
        yield chunk  # type: ignore[misc]  # not _DONE: a chunk


def serve_document(record: DocumentRecord, key: DataKey, store: BlobStore) -> StreamingResponse:
    """The document, decrypted as it streams, as an attachment never cached."""
    extension = next(ext for _, media, ext in documents.TYPES if media == record.media_type)

    async def content() -> AsyncIterator[bytes]:
        try:
            async for chunk in transferred(documents.open_stream(key, record.document_id, store.get(record.blob_key))):
                yield chunk
        except documents.Damaged:
            log.error("document damaged", document_id=record.document_id)
            raise

    return StreamingResponse(
        content(),
        media_type=record.media_type,
        headers={
            "Content-Disposition": f'attachment; filename="{record.kind}-{record.document_id[:8]}.{extension}"',
            "Content-Length": str(record.size),
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
        },
    )


@router.get(
    "/v1/documents/{document_id}/content",
    summary="Download a document",
    description="Audited (`document.download`) before the document leaves. Served as an attachment, never cached.",
    response_class=StreamingResponse,
    responses={
        **responses(401, 403, 404, 503),
        200: {
            "description": "The document",
            "content": {t: {"schema": {"type": "string", "format": "binary"}} for _, t, _ in documents.TYPES},
        },
    },
)
async def download_document(
    document_id: DocumentId,
    request: Request,
    user: Annotated[Claims, require(Role.partner, Role.caseworker, Role.supervisor)],
    session: SessionDep,
    auditor: AuditorDep,
) -> StreamingResponse:
    store = blobs_of(request)
    record, key = await anyio.to_thread.run_sync(prepare_download, session, user, auditor, store, document_id)
    return serve_document(record, key, store)


def forget_documents(session: Session, case_id: str) -> list[str]:
    """Delete the case's documents' records (its erasure, in the caller's transaction); the blob keys
    to delete once it commits."""
    records = session.exec(select(DocumentRecord).where(col(DocumentRecord.case_id) == case_id)).all()
    for record in records:
        session.delete(record)
    return [r.blob_key for r in records]


def delete_blobs(store: BlobStore, keys: list[str]) -> int:
    """Delete the blobs (after the erasure committed; its key is destroyed, so any left are unreadable)."""
    gone = 0
    for key in keys:
        try:
            store.delete(key)
            gone += 1
        except Exception as exc:  # noqa: BLE001 - the rest are still deleted; unreadable anyway
            log.warning("document blob not deleted", error=type(exc).__name__)
    return gone
