"""Case notes in the workspace (issue 14, item 1): the case page's notes and its form, the case's
notes page, and the notes on a partner's task page; each through the API's own functions, so the
scope, the one-note-per-form and the audit of every reading are the API's."""

from __future__ import annotations

import re
import uuid

from sqlmodel import Session, col, func, select

from reintegration.db import AuditRecord
from tests.conftest import Stack
from tests.journey import Journey, day
from tests.test_notes import note_count
from tests.test_workspace_cases import caseworker, check_page, form_of, hidden, send_form
from tests.test_workspace_partner import form_of as partner_form
from tests.workspace import Person, csrf_token


def reads(stack: Stack, case_id: str) -> int:
    with Session(stack.engine) as session:
        query = select(func.count()).where(col(AuditRecord.case_id) == case_id, col(AuditRecord.action) == "note.read")
        return int(session.exec(query).one())


async def test_a_caseworker_adds_notes_from_the_case_page_and_reads_them_all(stack):
    j = Journey(stack)
    await j.open()
    person = await caseworker(stack)
    page = f"/workspace/cases/{j.case_id}"
    try:
        html = await person.page(page)
        check_page(html)
        assert 'id="notes-title"' in html and "No notes yet." in html
        assert reads(stack, j.case_id) == 1  # showing the case's notes is a reading of them

        # An empty note: said beside the field, nothing stored.
        r = await send_form(person, page, f"{page}/notes", {"text": "   "})
        assert r.status_code == 422 and re.search(r'id="note-text-error">', r.text), r.text[:3000]
        assert note_count(stack, j.case_id) == 0

        html = await person.page(page)
        form = form_of(html, f"{page}/notes")
        data = {
            "text": "Called her: settled,\nasks about language classes.",
            "csrf_token": csrf_token(html),
            "idempotency_key": hidden(form, "idempotency_key"),
        }
        first = await person.http.post(f"{page}/notes", data=data)
        second = await person.http.post(f"{page}/notes", data=data)  # a double click
        assert (first.status_code, second.status_code) == (303, 303), first.text[:2000]
        assert first.headers["location"] == f"{page}?done=note"
        assert note_count(stack, j.case_id) == 1
        html = await person.page(first.headers["location"])
        assert "The note was added." in html and "asks about language classes." in html
        assert "cw-es-1" in html.split('id="notes-title"')[1].split('id="timeline-title"')[0]

        # Many notes: the newest on the case page, every one on the notes page.
        for n in range(21):
            r = await stack.http.post(f"/v1/cases/{j.case_id}/notes", json={"text": f"Visit {n:02d}."}, headers=j.cw)
            assert r.status_code == 201, r.text
        html = await person.page(page)
        assert "Visit 20." in html and "Visit 01." in html and "Visit 00." not in html
        assert f'href="{page}/notes?cursor=' in html
        notes = await person.page(f"{page}/notes")
        check_page(notes)
        assert "Visit 00." in notes and "asks about language classes." in notes and j.case["reference"] in notes
        assert notes.index("Visit 20.") < notes.index("Visit 00.")  # newest first
        notes = await person.page(f"{page}/notes?cursor=forged")
        assert "That page link is no longer valid" in notes and "Visit 20." in notes
    finally:
        await person.aclose()

    # Out of scope, another role: the API's refusals.
    other = await caseworker(stack, sub="cw-pt-1", countries="PT")
    partner = await Person(stack).sign_in("partner", "partner-shelter-es", agency="shelter-es")
    try:
        for who in (other, partner):
            await who.page(f"{page}/notes", expect=404 if who is other else 403)
            r = await who.http.post(f"{page}/notes", data={"text": "not mine", "csrf_token": "x"})
            assert r.status_code in (403, 404)
    finally:
        await other.aclose()
        await partner.aclose()
    assert note_count(stack, j.case_id) == 22


async def test_a_closed_case_shows_its_notes_without_the_form(stack):
    j = Journey(stack)
    await j.open()
    r = await stack.http.post(f"/v1/cases/{j.case_id}/notes", json={"text": "Before closing."}, headers=j.cw)
    assert r.status_code == 201
    await j.step("withdraw-consent", {"withdrawn_on": day(1)})
    person = await caseworker(stack)
    try:
        html = await person.page(f"/workspace/cases/{j.case_id}")
        assert "Before closing." in html and f'action="/workspace/cases/{j.case_id}/notes"' not in html
    finally:
        await person.aclose()


async def test_a_partner_reads_and_adds_the_notes_on_its_task(stack):
    j = Journey(stack)
    await j.open()
    r = await stack.http.post(f"/v1/cases/{j.case_id}/notes", json={"text": "Staff only."}, headers=j.cw)
    assert r.status_code == 201
    task = await j.assign("shelter", "shelter-es")
    r = await stack.http.post(
        f"/v1/tasks/{task['task_id']}/notes", json={"text": "Ring twice at the door."}, headers=j.cw
    )
    assert r.status_code == 201
    person = await Person(stack).sign_in("partner", f"partner-{uuid.uuid4().hex[:6]}", agency="shelter-es")
    page = f"/workspace/inbox/{task['task_id']}"
    try:
        html = await person.page(page)
        section = html.split('id="task-notes-title"')[1].split('id="person-title"')[0]
        assert "Ring twice at the door." in section and "Staff only." not in html

        fields = partner_form(html, f"{page}/notes")
        r = await person.http.post(f"{page}/notes", data={**fields, "text": ""})
        assert r.status_code == 422 and 'id="note-text-error"' in r.text
        r = await person.http.post(f"{page}/notes", data={**fields, "text": "Bed ready from 6 pm."})
        assert (r.status_code, r.headers["location"]) == (303, f"{page}?done=note#task-notes-title")
        again = await person.http.post(f"{page}/notes", data={**fields, "text": "Bed ready from 6 pm."})
        assert again.status_code == 303  # the same form twice: one note
        html = await person.page(f"{page}?done=note")
        assert "The note was added." in html
        section = html.split('id="task-notes-title"')[1].split('id="person-title"')[0]
        assert section.index("Bed ready from 6 pm.") < section.index("Ring twice at the door.")
        assert note_count(stack, j.case_id) == 3

        # Closed: the note is refused in words, nothing added.
        await j.step("withdraw-consent", {"withdrawn_on": day(1)})
        html = await person.page(page)
        fields = partner_form(html, f"{page}/notes")
        r = await person.http.post(f"{page}/notes", data={**fields, "text": "Too late."})
        assert r.status_code == 409 and "the case is closed" in r.text
        assert note_count(stack, j.case_id) == 3
    finally:
        await person.aclose()
