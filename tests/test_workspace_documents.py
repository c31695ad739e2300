"""Documents in the workspace (issue 14, item 2): the upload form read as it streams, the CSRF token
checked before a byte is kept, the file's name kept nowhere, the download audited."""

from __future__ import annotations

import uuid

from reintegration.logs import tap
from tests.journey import Journey
from tests.test_confidentiality import database_text
from tests.test_documents import PNG, blob_keys, pdf, records
from tests.test_workspace_cases import caseworker
from tests.workspace import Person, csrf_token


def form_fields(html: str, action: str) -> dict[str, str]:
    import re

    found = re.search(rf'<form method="post" action="{re.escape(action)}"[^>]*>(.*?)</form>', html, re.S)
    assert found, f"no form posting to {action}"
    return dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', found.group(1)))


async def test_a_caseworker_adds_a_document_from_the_case_page_and_downloads_it(stack):
    j = Journey(stack)
    await j.open()
    me = await caseworker(stack)
    page = f"/workspace/cases/{j.case_id}"
    action = f"{page}/documents"
    name = f"Zq{uuid.uuid4().hex[:8]}-passport.pdf"  # a file's name often names the person
    content = pdf("scan", 150_000)
    try:
        html = await me.page(page)
        assert "No documents yet." in html and 'enctype="multipart/form-data"' in html
        fields = form_fields(html, action)
        with tap() as logs:
            r = await me.http.post(
                action, data={**fields, "kind": "identity-document"}, files={"document": (name, content, "text/plain")}
            )
            assert (r.status_code, r.headers["location"]) == (303, f"{page}?done=document")
            again = await me.http.post(  # the same form sent twice: one document
                action, data={**fields, "kind": "identity-document"}, files={"document": (name, content, "text/plain")}
            )
            assert again.status_code == 303
        assert records(stack, j.case_id) == 1
        html = await me.page(r.headers["location"])
        assert "The document was added." in html and "Identity or travel document" in html
        [doc] = (await stack.http.get(f"/v1/cases/{j.case_id}/documents", headers=j.cw)).json()["items"]
        assert doc["media_type"] == "application/pdf"  # told by content, not by "text/plain" or the name
        got = await me.http.get(f"/workspace/documents/{doc['document_id']}")
        assert got.status_code == 200 and got.content == content and "attachment" in got.headers["content-disposition"]
        assert name not in logs.getvalue() and name not in database_text(stack)
        assert name.split("-")[0] not in got.headers["content-disposition"]

        # Not a document taken: said on the page, nothing kept.
        before = blob_keys(stack)
        fields = form_fields(await me.page(page), action)
        r = await me.http.post(
            action, data={**fields, "kind": "other"}, files={"document": ("x.pdf", b"<html>", "application/pdf")}
        )
        assert (r.status_code, r.headers["location"]) == (303, f"{page}?refused=415")
        assert "a document is taken as PDF, JPEG or PNG" in await me.page(r.headers["location"])
        # Without the session's CSRF token: refused before anything is kept.
        r = await me.http.post(
            action, data={"kind": "other", "csrf_token": "forged"}, files={"document": ("a.png", PNG, "image/png")}
        )
        assert r.status_code == 403
        # No kind chosen: said, nothing kept.
        r = await me.http.post(
            action, data={"csrf_token": fields["csrf_token"]}, files={"document": ("a.png", PNG, "image/png")}
        )
        assert r.headers.get("location") == f"{page}?refused=422"
        assert blob_keys(stack) == before and records(stack, j.case_id) == 1
    finally:
        await me.aclose()


async def test_a_partner_adds_a_document_to_its_task_and_another_agency_cannot_fetch_it(stack):
    j = Journey(stack)
    await j.open()
    task = await j.assign("shelter", "shelter-es")
    shelter = await Person(stack).sign_in("partner", "partner-web-docs", agency="shelter-es")
    clinic = await Person(stack).sign_in("partner", "partner-web-clinic", agency="clinic-es")
    page = f"/workspace/inbox/{task['task_id']}"
    try:
        html = await shelter.page(page)
        fields = form_fields(html, f"{page}/documents")
        r = await shelter.http.post(
            f"{page}/documents",
            data={**fields, "kind": "medical-report"},
            files={"document": ("r.png", PNG, "image/png")},
        )
        assert (r.status_code, r.headers["location"]) == (303, f"{page}?done=document")
        html = await shelter.page(r.headers["location"])
        assert "The document was added." in html and "Medical report" in html
        [doc] = (await stack.http.get(f"/v1/tasks/{task['task_id']}/documents", headers=j.cw)).json()["items"]
        assert (await shelter.http.get(f"/workspace/documents/{doc['document_id']}")).content == PNG
        assert (await clinic.http.get(f"/workspace/documents/{doc['document_id']}")).status_code == 404
        r = await clinic.http.post(
            f"{page}/documents",
            data={"kind": "other", "csrf_token": csrf_token(await clinic.page("/workspace/inbox"))},
            files={"document": ("r.png", PNG, "image/png")},
        )
        assert r.status_code == 404 and records(stack, j.case_id) == 1
    finally:
        await shelter.aclose()
        await clinic.aclose()


async def test_a_form_cut_short_or_malformed_stores_nothing(stack):
    j = Journey(stack)
    await j.open()
    me = await caseworker(stack)
    page = f"/workspace/cases/{j.case_id}"
    action = f"{page}/documents"
    try:
        token = csrf_token(await me.page(page))
        head = (
            f'--XyZ\r\nContent-Disposition: form-data; name="csrf_token"\r\n\r\n{token}\r\n'
            '--XyZ\r\nContent-Disposition: form-data; name="kind"\r\n\r\nother\r\n'
            '--XyZ\r\nContent-Disposition: form-data; name="document"; filename="a.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        before = blob_keys(stack)
        multipart = {"content-type": "multipart/form-data; boundary=XyZ"}
        for body in (head + PNG + b"\x00" * 70_000, head + PNG + b"\r\n--XyZ\r\nnot a header\r\n\r\n"):
            r = await me.http.post(action, content=body, headers=multipart)  # no closing boundary / malformed
            assert (r.status_code, r.headers.get("location")) == (303, f"{page}?refused=422"), r.text[:500]
        assert blob_keys(stack) == before and records(stack, j.case_id) == 0
    finally:
        await me.aclose()
