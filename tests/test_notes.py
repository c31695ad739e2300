"""Case notes (issue 14, item 1): the case's staff write and read a case's notes; a partner agency
writes and reads the notes on the task it holds; every read is audited; bad input changes nothing."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import text
from sqlmodel import Session, col, func, select

from reintegration import audit
from reintegration.db import NoteRecord
from tests.conftest import Stack
from tests.journey import Journey, day
from tests.test_audit import head, trail


def note_count(stack: Stack, case_id: str) -> int:
    with Session(stack.engine) as session:
        return int(session.exec(select(func.count()).where(col(NoteRecord.case_id) == case_id)).one())


async def add(stack: Stack, path: str, text: Any, headers: dict[str, str], *, expect: int = 201) -> dict[str, Any]:
    r = await stack.http.post(path, json={"text": text}, headers=headers)
    assert r.status_code == expect, r.text
    if expect >= 400:
        assert r.headers["content-type"].startswith("application/problem+json")
    return dict(r.json())


async def listed(stack: Stack, path: str, headers: dict[str, str], **params: Any) -> dict[str, Any]:
    r = await stack.http.get(path, headers=headers, params=params)
    assert r.status_code == 200, r.text
    return dict(r.json())


async def test_the_case_staff_write_and_read_the_case_notes_newest_first(stack):
    j = Journey(stack)
    await j.open()
    notes = f"/v1/cases/{j.case_id}/notes"
    first = await add(stack, notes, "  Phone call: settled at the shelter.  ", j.cw)
    assert first["text"] == "Phone call: settled at the shelter."  # trimmed
    assert first["author"] == {"sub": "cw-es-1", "role": "caseworker", "agency": None}
    assert first["case_id"] == j.case_id and first["task_id"] is None
    second = await add(stack, notes, "Supervisor: follow up on the residence permit.", j.supervisor)
    assert second["author"]["role"] == "supervisor"

    page = await listed(stack, notes, j.cw)
    assert [n["note_id"] for n in page["items"]] == [second["note_id"], first["note_id"]]
    assert page["next_cursor"] is None
    # Page by page, nothing repeated or skipped.
    one = await listed(stack, notes, j.supervisor, limit=1)
    two = await listed(stack, notes, j.supervisor, limit=1, cursor=one["next_cursor"])
    assert [n["note_id"] for n in one["items"] + two["items"]] == [second["note_id"], first["note_id"]]
    assert two["next_cursor"] is None

    # Out of scope: a caseworker of another country is told there is no such case; a partner or an
    # admin may never read a case's notes.
    elsewhere = stack.auth("caseworker", "cw-pt-1", countries=["PT"])
    assert (await stack.http.get(notes, headers=elsewhere)).status_code == 404
    await add(stack, notes, "not mine", elsewhere, expect=404)
    for who in (j.partner("shelter-es"), stack.auth("admin", "admin-1")):
        assert (await stack.http.get(notes, headers=who)).status_code == 403
        await add(stack, notes, "not mine", who, expect=403)
    assert (await stack.http.get(f"/v1/cases/{uuid.uuid4()}/notes", headers=j.cw)).status_code == 404
    await add(stack, f"/v1/cases/{uuid.uuid4()}/notes", "no case", j.cw, expect=404)
    assert note_count(stack, j.case_id) == 2

    # Every read is in the audit trail, with how many notes were read, never their text; so is every note added.
    rows = [r for r in await trail(stack, j.case_id) if r["action"].startswith("note.")]
    assert [(r["action"], r["actor"]["sub"]) for r in rows] == [
        ("note.add", "cw-es-1"),
        ("note.add", "sup-1"),
        ("note.read", "cw-es-1"),
        ("note.read", "sup-1"),
        ("note.read", "sup-1"),
    ]
    assert [r["detail"] for r in rows[2:]] == [{"notes": 2}, {"notes": 1}, {"notes": 1}]
    assert rows[0]["detail"] == {"note_id": first["note_id"]}
    assert "settled" not in str(rows)


async def test_bad_notes_are_refused_and_change_nothing(stack):
    j = Journey(stack)
    await j.open()
    notes = f"/v1/cases/{j.case_id}/notes"
    for bad in ("", "   ", None, 42, "x" * 4001):
        await add(stack, notes, bad, j.cw, expect=422)
    for body in ({}, {"text": "fine", "author": "someone else"}, ["text"]):
        r = await stack.http.post(notes, json=body, headers=j.cw)
        assert r.status_code == 422, r.text
    r = await stack.http.post(notes, content=b"{not json", headers={**j.cw, "content-type": "application/json"})
    assert r.status_code == 422
    r = await stack.http.get(notes, headers=j.cw, params={"cursor": "forged!"})
    assert r.status_code == 422
    assert note_count(stack, j.case_id) == 0
    assert len(await add(stack, notes, "x" * 4000, j.cw)) > 0  # the longest allowed


async def test_a_note_is_added_once_per_idempotency_key(stack):
    j = Journey(stack)
    await j.open()
    notes = f"/v1/cases/{j.case_id}/notes"
    headers = {**j.cw, "Idempotency-Key": f"note-{uuid.uuid4()}"}
    first = await stack.http.post(notes, json={"text": "Visit at home."}, headers=headers)
    again = await stack.http.post(notes, json={"text": "Visit at home."}, headers=headers)
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()
    other = await stack.http.post(notes, json={"text": "Something else."}, headers=headers)
    assert other.status_code == 422
    assert note_count(stack, j.case_id) == 1
    rows = [(r["action"], r["replay"]) for r in await trail(stack, j.case_id) if r["action"] == "note.add"]
    assert rows == [("note.add", False), ("note.add", True)]


async def test_a_partner_writes_and_reads_only_the_notes_on_the_task_its_agency_holds(stack):
    j = Journey(stack)
    await j.open()
    await add(stack, f"/v1/cases/{j.case_id}/notes", "Case staff only.", j.cw)
    task = await j.assign("shelter", "clinic-es")
    on_task = f"/v1/tasks/{task['task_id']}/notes"
    clinic, shelter = j.partner("clinic-es"), j.partner("shelter-es")

    staff_note = await add(stack, on_task, "Please call before visiting.", j.cw)
    assert staff_note["task_id"] == task["task_id"]
    clinic_note = await add(stack, on_task, "No bed free until Monday.", clinic)
    assert clinic_note["author"] == {"sub": "partner-clinic-es", "role": "partner", "agency": "clinic-es"}
    assert clinic_note["case_id"] is None  # a partner knows the case by its reference only
    # Another agency's partner: no such task; an admin: never.
    await add(stack, on_task, "not ours", shelter, expect=404)
    assert (await stack.http.get(on_task, headers=shelter)).status_code == 404
    assert (await stack.http.get(on_task, headers=stack.auth("admin", "admin-1"))).status_code == 403

    seen = await listed(stack, on_task, clinic)
    assert [n["text"] for n in seen["items"]] == ["No bed free until Monday.", "Please call before visiting."]
    assert {n["case_id"] for n in seen["items"]} == {None}
    # The case's staff read the task's notes on the task and among the case's.
    assert len((await listed(stack, on_task, j.cw))["items"]) == 2
    case_notes = await listed(stack, f"/v1/cases/{j.case_id}/notes", j.cw)
    assert {n["text"] for n in case_notes["items"]} == {
        "Case staff only.",
        "Please call before visiting.",
        "No bed free until Monday.",
    }

    # Declined and given to the shelter: the shelter reads neither the clinic's note nor the staff's
    # note written for the clinic; the staff's notes written for the shelter, it does.
    await j.task_action(task["task_id"], "clinic-es", "decline", {"reason": "full"})
    r = await stack.http.post(
        f"/v1/cases/{j.case_id}/tasks/{task['task_id']}/reassign", json={"agency_id": "shelter-es"}, headers=j.cw
    )
    assert r.status_code == 200, r.text
    assert (await listed(stack, on_task, shelter))["items"] == []
    await add(stack, on_task, "She prefers a women-only shelter.", j.cw)
    seen = await listed(stack, on_task, shelter)
    assert [n["text"] for n in seen["items"]] == ["She prefers a women-only shelter."]
    assert (await stack.http.get(on_task, headers=clinic)).status_code == 404  # no longer the clinic's task
    await add(stack, on_task, "Bed ready.", shelter)

    rows = [r for r in await trail(stack, j.case_id) if r["action"] == "note.read" and r["task_id"]]
    assert [(r["actor"]["sub"], r["detail"]) for r in rows] == [
        ("partner-clinic-es", {"notes": 2}),
        ("cw-es-1", {"notes": 2}),
        ("partner-shelter-es", {"notes": 0}),
        ("partner-shelter-es", {"notes": 1}),
    ]


async def test_no_note_is_added_to_a_closed_case_and_the_notes_stay_readable(stack):
    j = Journey(stack)
    await j.open()
    task = await j.assign("shelter", "shelter-es")
    await add(stack, f"/v1/cases/{j.case_id}/notes", "Before closing.", j.cw)
    await j.step("withdraw-consent", {"withdrawn_on": day(1)})
    assert j.case["status"] == "closed"
    problem = await add(stack, f"/v1/cases/{j.case_id}/notes", "After closing.", j.cw, expect=409)
    assert "closed" in problem["detail"]
    await add(stack, f"/v1/tasks/{task['task_id']}/notes", "After closing.", j.partner("shelter-es"), expect=409)
    assert note_count(stack, j.case_id) == 1
    assert [n["text"] for n in (await listed(stack, f"/v1/cases/{j.case_id}/notes", j.cw))["items"]] == [
        "Before closing."
    ]


async def test_no_audit_row_no_note_written_or_read(stack):
    """With the audit trail unwritable, a note is neither added (the note and its row are one
    transaction) nor read (503, nothing of the notes in the answer); afterwards all is as before."""
    j = Journey(stack)
    await j.open()
    notes = f"/v1/cases/{j.case_id}/notes"
    await add(stack, notes, "Written before.", j.cw)
    before = head(stack.engine)
    with stack.engine.begin() as conn:
        conn.execute(text("ALTER TABLE audit_trail RENAME TO audit_trail_away"))
    try:
        headers = {**j.cw, "Idempotency-Key": f"note-{uuid.uuid4()}"}
        r = await stack.http.post(notes, json={"text": "Written during."}, headers=headers)
        assert r.status_code == 503 and r.headers["content-type"] == "application/problem+json"
        r = await stack.http.get(notes, headers=j.cw)
        assert r.status_code == 503 and "Written" not in r.text
    finally:
        with stack.engine.begin() as conn:
            conn.execute(text("ALTER TABLE audit_trail_away RENAME TO audit_trail"))
    assert note_count(stack, j.case_id) == 1 and head(stack.engine) == before
    # The client's retry with the same key adds the note, once.
    r = await stack.http.post(notes, json={"text": "Written during."}, headers=headers)
    assert r.status_code == 201, r.text
    assert note_count(stack, j.case_id) == 2
    assert audit.verify(stack.engine, stack.keyring).ok
