"""Documents of a case and of a task (issue 14, item 2): uploaded as the body, typed by content,
limited in size before anything is kept, encrypted with the case's key while streaming, stored in the
blob store (a folder; an S3-compatible server), downloaded with an audit row, reached by a partner only
through its task, unrecoverable after the erasure; no half-written document under any fault."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlmodel import Session, col, func, select

from reintegration.blobs import LocalBlobStore, S3BlobStore
from reintegration.db import AuditRecord, DocumentRecord
from reintegration.logs import tap
from tests.conftest import Stack, running_stack
from tests.journey import Journey, day
from tests.test_blobs import BUCKET, s3_client, s3_endpoint  # noqa: F401 - the S3 server fixture
from tests.test_confidentiality import database_text

PDF = b"%PDF-1.7\n% a consent form\n"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


def pdf(marker: str, size: int = 0) -> bytes:
    body = PDF + f"({marker})".encode() + os.urandom(size)
    return body + b"\n%%EOF\n"


def records(stack: Stack, case_id: str) -> int:
    with Session(stack.engine) as session:
        return int(session.exec(select(func.count()).where(col(DocumentRecord.case_id) == case_id)).one())


def blob_keys(stack: Stack) -> set[str]:
    store = stack.app_state().blobs
    if isinstance(store, LocalBlobStore):
        return set(store.keys())
    listed = store.client.list_objects_v2(Bucket=BUCKET, Prefix=store.prefix).get("Contents", [])
    return {item["Key"].removeprefix(store.prefix) for item in listed}


async def upload(
    stack: Stack, path: str, body: bytes, headers: dict[str, str], *, kind: str = "consent-form", expect: int = 201
) -> dict:
    r = await stack.http.post(path, params={"kind": kind}, content=body, headers=headers)
    assert r.status_code == expect, r.text
    if expect >= 400:
        assert r.headers["content-type"].startswith("application/problem+json")
    return dict(r.json())


async def test_a_document_goes_in_encrypted_and_comes_back_the_same(stack):
    j = Journey(stack)
    await j.open()
    marker = f"Zq{uuid.uuid4().hex[:10]}"
    content = pdf(marker, 300_000)
    before = blob_keys(stack)
    with tap() as logs:
        doc = await upload(stack, f"/v1/cases/{j.case_id}/documents", content, {**j.cw, "Content-Type": "image/png"})
        assert (doc["media_type"], doc["size"], doc["kind"]) == ("application/pdf", len(content), "consent-form")
        assert doc["uploaded_by"] == {"sub": "cw-es-1", "role": "caseworker", "agency": None}
        r = await stack.http.get(f"/v1/documents/{doc['document_id']}/content", headers=j.supervisor)
    assert r.status_code == 200 and r.content == content
    assert r.headers["content-type"] == "application/pdf" and r.headers["cache-control"] == "no-store"
    assert r.headers["content-disposition"] == f'attachment; filename="consent-form-{doc["document_id"][:8]}.pdf"'
    assert marker not in logs.getvalue()
    # Stored encrypted: the marker is in no blob and in no table.
    new = blob_keys(stack) - before
    assert len(new) == 1
    raw = b"".join(stack.app_state().blobs.get(new.pop()))
    assert marker.encode() not in raw and len(raw) > len(content)
    assert marker not in database_text(stack)
    # Listed, without content; the download is in the trail, and so is the upload.
    listed = (await stack.http.get(f"/v1/cases/{j.case_id}/documents", headers=j.cw)).json()["items"]
    assert [d["document_id"] for d in listed] == [doc["document_id"]]
    with Session(stack.engine) as session:
        rows = session.exec(
            select(AuditRecord).where(col(AuditRecord.case_id) == j.case_id, col(AuditRecord.action).like("document.%"))
        ).all()
    assert [(r.action, r.actor_sub) for r in rows] == [("document.upload", "cw-es-1"), ("document.download", "sup-1")]
    assert rows[0].detail == {
        "document_id": doc["document_id"],
        "kind": "consent-form",
        "media_type": "application/pdf",
        "size": len(content),
    }


async def test_types_are_told_by_content_and_others_refused(stack):
    j = Journey(stack)
    await j.open()
    path = f"/v1/cases/{j.case_id}/documents"
    png = await upload(stack, path, PNG, {**j.cw, "Content-Type": "application/pdf"}, kind="medical-report")
    assert png["media_type"] == "image/png"
    jpeg = await upload(stack, path, b"\xff\xd8\xff\xe0" + os.urandom(100), j.cw, kind="identity-document")
    assert jpeg["media_type"] == "image/jpeg"
    before = blob_keys(stack)
    for body in (b"MZ\x90\x00 an executable", b"<html>a page</html>", b"GIF89a....", b"%PD", b""):
        problem = await upload(stack, path, body, {**j.cw, "Content-Type": "application/pdf"}, expect=415)
        assert "PDF, JPEG or PNG" in problem["detail"]
    for kind in ("passport-scan", ""):
        await upload(stack, path, PNG, j.cw, kind=kind, expect=422)
    assert blob_keys(stack) == before and records(stack, j.case_id) == 2


async def test_a_partner_reaches_only_the_documents_of_the_task_it_holds(stack):
    j = Journey(stack)
    await j.open()
    case_doc = await upload(stack, f"/v1/cases/{j.case_id}/documents", pdf("case"), j.cw)
    task = await j.assign("shelter", "clinic-es")
    on_task = f"/v1/tasks/{task['task_id']}/documents"
    clinic, shelter = j.partner("clinic-es"), j.partner("shelter-es")
    staff_doc = await upload(stack, on_task, pdf("for the clinic"), j.cw, kind="medical-report")
    clinic_doc = await upload(stack, on_task, pdf("report"), clinic, kind="medical-report")
    assert clinic_doc["case_id"] is None and clinic_doc["uploaded_by"]["agency"] == "clinic-es"
    listed = (await stack.http.get(on_task, headers=clinic)).json()["items"]
    assert {d["document_id"] for d in listed} == {staff_doc["document_id"], clinic_doc["document_id"]}
    for doc, status in ((staff_doc, 200), (clinic_doc, 200), (case_doc, 404)):
        r = await stack.http.get(f"/v1/documents/{doc['document_id']}/content", headers=clinic)
        assert r.status_code == status, (doc, r.text)
    # Another agency: no such task, no such document.
    assert (await stack.http.get(on_task, headers=shelter)).status_code == 404
    await upload(stack, on_task, pdf("x"), shelter, expect=404)
    assert (
        await stack.http.get(f"/v1/documents/{clinic_doc['document_id']}/content", headers=shelter)
    ).status_code == 404
    # Given to the shelter: the clinic's documents and the staff's for the clinic stay with the clinic.
    await j.task_action(task["task_id"], "clinic-es", "decline", {"reason": "full"})
    r = await stack.http.post(
        f"/v1/cases/{j.case_id}/tasks/{task['task_id']}/reassign", json={"agency_id": "shelter-es"}, headers=j.cw
    )
    assert r.status_code == 200, r.text
    assert (await stack.http.get(on_task, headers=shelter)).json()["items"] == []
    for doc in (staff_doc, clinic_doc):
        r = await stack.http.get(f"/v1/documents/{doc['document_id']}/content", headers=shelter)
        assert r.status_code == 404
    # The staff read everything of the case; a caseworker of another country nothing; an admin never.
    assert len((await stack.http.get(f"/v1/cases/{j.case_id}/documents", headers=j.cw)).json()["items"]) == 3
    elsewhere = stack.auth("caseworker", "cw-pt-docs", countries=["PT"])
    assert (
        await stack.http.get(f"/v1/documents/{case_doc['document_id']}/content", headers=elsewhere)
    ).status_code == 404
    admin = stack.auth("admin", "admin-1")
    assert (await stack.http.get(f"/v1/documents/{case_doc['document_id']}/content", headers=admin)).status_code == 403
    assert (await stack.http.get(f"/v1/documents/{uuid.uuid4()}/content", headers=j.cw)).status_code == 404


async def test_an_idempotency_key_names_the_document(stack):
    j = Journey(stack)
    await j.open()
    path = f"/v1/cases/{j.case_id}/documents"
    headers = {**j.cw, "Idempotency-Key": f"doc-{uuid.uuid4().hex}"}
    before = blob_keys(stack)
    first = await upload(stack, path, pdf("once"), headers)
    again = await upload(stack, path, pdf("once"), headers)
    assert first == again and records(stack, j.case_id) == 1 and len(blob_keys(stack) - before) == 1
    other = Journey(stack)
    await other.open()
    await upload(stack, f"/v1/cases/{other.case_id}/documents", pdf("once"), headers, expect=422)
    # Sent twice at once with one key: one document, one blob; both answers the same.
    at_once = {**j.cw, "Idempotency-Key": f"doc-{uuid.uuid4().hex}"}
    before = blob_keys(stack)
    answers = await asyncio.gather(*(upload(stack, path, pdf("twice", 400_000), at_once) for _ in range(2)))
    assert answers[0] == answers[1] and records(stack, j.case_id) == 2 and len(blob_keys(stack) - before) == 1


async def test_no_document_is_added_to_a_closed_case(stack):
    j = Journey(stack)
    await j.open()
    await j.step("withdraw-consent", {"withdrawn_on": day(1)})
    await upload(stack, f"/v1/cases/{j.case_id}/documents", pdf("late"), j.cw, expect=409)
    assert records(stack, j.case_id) == 0


async def test_a_database_outage_during_an_upload_stores_nothing_half_written(stack):
    j = Journey(stack)
    await j.open()
    await upload(stack, f"/v1/cases/{j.case_id}/documents", pdf("warm"), j.cw)  # the case's key unwrapped
    before = blob_keys(stack)
    with stack.engine.begin() as conn:
        conn.execute(text("ALTER TABLE documents RENAME TO documents_away"))
    try:
        path = f"/v1/cases/{j.case_id}/documents"
        r = await stack.http.post(path, params={"kind": "legal-document"}, content=pdf("lost?", 200_000), headers=j.cw)
        assert r.status_code == 503, r.text
    finally:
        with stack.engine.begin() as conn:
            conn.execute(text("ALTER TABLE documents_away RENAME TO documents"))
    assert blob_keys(stack) == before and records(stack, j.case_id) == 1


async def test_the_erasure_makes_every_document_unrecoverable(stack):
    j = Journey(stack)
    await j.open()
    task = await j.assign("shelter", "shelter-es")
    docs = [
        await upload(stack, f"/v1/cases/{j.case_id}/documents", pdf("a"), j.cw),
        await upload(stack, f"/v1/tasks/{task['task_id']}/documents", pdf("b"), j.partner("shelter-es")),
    ]
    before = blob_keys(stack)
    await j.step("withdraw-consent", {"withdrawn_on": day(1)})
    r = await stack.http.delete(f"/v1/cases/{j.case_id}/personal-data", headers=stack.auth("admin", "admin-1"))
    assert r.status_code == 200
    assert len(before - blob_keys(stack)) == 2 and records(stack, j.case_id) == 0
    for doc in docs:
        assert (await stack.http.get(f"/v1/documents/{doc['document_id']}/content", headers=j.cw)).status_code == 404


# --- With a small limit, and with the S3-compatible store ------------------------------------------

LIMIT = 200_000


@pytest.fixture(scope="module")
async def small(temporal_env, tmp_path_factory) -> AsyncIterator[Stack]:
    async with running_stack(
        "sqlite", temporal_env, tmp_path_factory.mktemp("docs-small"), document_max_bytes=LIMIT
    ) as s:
        yield s


async def test_a_document_over_the_limit_is_refused_before_it_is_kept(small):
    j = Journey(small)
    await j.open()
    path = f"/v1/cases/{j.case_id}/documents"
    before = blob_keys(small)
    r = await small.http.post(path, params={"kind": "other"}, content=pdf("big", LIMIT), headers=j.cw)
    assert r.status_code == 413, r.text  # said by Content-Length: refused before a byte is read

    async def streamed() -> AsyncIterator[bytes]:
        yield pdf("big")
        for _ in range(10):
            yield os.urandom(50_000)  # no Content-Length: found while it streams

    r = await small.http.post(path, params={"kind": "other"}, content=streamed(), headers=j.cw)
    assert r.status_code == 413, r.text
    assert blob_keys(small) == before and records(small, j.case_id) == 0
    ok = await upload(small, path, pdf("fits", LIMIT - 1000), j.cw)
    assert ok["size"] <= LIMIT


@pytest.fixture(scope="module")
async def on_s3(temporal_env, tmp_path_factory, s3_endpoint) -> AsyncIterator[Stack]:  # noqa: F811
    secret = Path(tmp_path_factory.mktemp("s3-secret")) / "secret"
    secret.write_text("test")
    async with running_stack(
        "sqlite",
        temporal_env,
        tmp_path_factory.mktemp("docs-s3"),
        blob_store="s3",
        s3_endpoint_url=s3_endpoint,
        s3_bucket=BUCKET,
        s3_access_key_id="test",
        s3_secret_access_key_file=secret,
    ) as s:
        yield s


async def test_documents_in_an_s3_compatible_store(on_s3):
    stack = on_s3
    assert isinstance(stack.app_state().blobs, S3BlobStore)
    j = Journey(stack)
    await j.open()
    content = pdf("s3", 12 * 1024 * 1024)  # more than one part
    before = blob_keys(stack)
    doc = await upload(stack, f"/v1/cases/{j.case_id}/documents", content, j.cw)
    assert len(blob_keys(stack) - before) == 1
    r = await stack.http.get(f"/v1/documents/{doc['document_id']}/content", headers=j.cw)
    assert r.status_code == 200 and r.content == content
    # A refused upload leaves no object and no unfinished multipart upload.
    await upload(stack, f"/v1/cases/{j.case_id}/documents", b"not a document", j.cw, expect=415)
    store = stack.app_state().blobs
    assert store.client.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []
    await j.step("withdraw-consent", {"withdrawn_on": day(1)})
    r = await stack.http.delete(f"/v1/cases/{j.case_id}/personal-data", headers=stack.auth("admin", "admin-1"))
    assert r.status_code == 200
    assert blob_keys(stack) == before
