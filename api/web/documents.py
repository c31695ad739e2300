"""Documents in the workspace: the case page's and the task page's lists and their upload forms, and
the download, through the API's own functions (``api.documents``): the same scope, limits, typing by
content, encryption, audit. The form is read as it streams (``uploads``): its file is never whole in
memory, nor on disk in clear."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import Response

from api.cases import CASEWORK, CaseId
from api.deps import IDENTIFIER
from api.documents import DocumentId, _upload, blobs_of, prepare_download, serve_document
from api.errors import ApiProblem, Forbidden, NotFound
from api.web import sessions
from api.web.case_view import case_path
from api.web.context import WebDep, same_origin
from api.web.refusals import form_key, refused_page, see
from api.web.upload_words import UPLOAD_REFUSED
from api.web.uploads import BadForm, read_form_upload
from reintegration.documents import DocumentKind
from workflows.model import Role

router = APIRouter(include_in_schema=False)

FILE_FIELD = "document"


async def _form(request: Request, web: WebDep) -> tuple[DocumentKind | None, str | None, AsyncIterator[bytes]]:
    """The form's kind and key, and its file's bytes; the session's CSRF token checked before any."""
    same_origin(request)
    fields, file = await read_form_upload(request, file_field=FILE_FIELD)
    sessions.check_csrf(web.record, fields.get("csrf_token"))
    key = form_key(fields)  # the form's own key (a fresh one if it came without a usable one)
    try:
        kind = DocumentKind(fields.get("kind", ""))
    except ValueError:
        kind = None
    return kind, key, file


async def _send(
    request: Request, web: WebDep, back: str, *, case_id: str | None = None, task_id: str | None = None
) -> Response:
    try:
        kind, key, file = await _form(request, web)
    except BadForm:
        return see(back, refused="422")
    if kind is None:
        return see(back, refused="422")
    try:
        await _upload(
            request,
            web.user,
            web.session,
            web.auditor,
            web.settings,
            key,
            kind,
            case_id=case_id,
            task_id=task_id,
            body=file,
        )
    except ApiProblem as problem:
        if problem.status in (403, 404):
            return refused_page(web, problem.status)
        return see(back, refused=str(problem.status if problem.status in UPLOAD_REFUSED else 422))
    return see(back, done="document")


@router.post("/workspace/cases/{case_id}/documents")
async def upload_to_case(case_id: CaseId, request: Request, web: WebDep) -> Response:
    if web.user.role not in CASEWORK:
        return refused_page(web, 403)
    return await _send(request, web, case_path(case_id), case_id=case_id)


@router.post("/workspace/inbox/{task_id}/documents")
async def upload_to_task(task_id: str, request: Request, web: WebDep) -> Response:
    if web.user.role != Role.partner or not re.fullmatch(IDENTIFIER, task_id) or len(task_id) > 64:
        return refused_page(web, 403 if web.user.role != Role.partner else 404)
    return await _send(request, web, f"/workspace/inbox/{task_id}", task_id=task_id)


@router.get("/workspace/documents/{document_id}")
async def download(document_id: DocumentId, request: Request, web: WebDep) -> Response:
    """The document, audited as ``GET /v1/documents/{id}/content`` is, for the person signed in."""
    if web.user.role not in (*CASEWORK, Role.partner):
        return refused_page(web, 403)
    store = blobs_of(request)
    try:
        record, key = await anyio.to_thread.run_sync(
            prepare_download, web.session, web.user, web.auditor, store, document_id
        )
    except (NotFound, Forbidden) as problem:
        return refused_page(web, problem.status)
    return serve_document(record, key, store)
