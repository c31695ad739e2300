"""Corrections of the person's data (issue 14, item 3): ``PATCH /v1/cases/{id}/person`` with If-Match;
the trail names the fields that changed, never their values; the blind indexes follow."""

from __future__ import annotations

import asyncio
import uuid

from sqlmodel import Session, col, select

from reintegration.db import AuditRecord
from reintegration.logs import tap
from tests.conftest import Stack
from tests.journey import Journey
from tests.test_person_search import search, someone
from tests.test_workspace_cases import caseworker, form_of
from tests.workspace import csrf_token


async def read(stack: Stack, j: Journey) -> tuple[dict, str]:
    r = await stack.http.get(f"/v1/cases/{j.case_id}/person", headers=j.cw)
    assert r.status_code == 200, r.text
    return r.json(), r.headers["etag"]


async def patch(stack: Stack, j: Journey, body: object, etag: str | None, *, expect: int = 200) -> dict:
    headers = {**j.cw, **({"If-Match": etag} if etag is not None else {})}
    r = await stack.http.patch(f"/v1/cases/{j.case_id}/person", json=body, headers=headers)
    assert r.status_code == expect, r.text
    if expect >= 400:
        assert r.headers["content-type"].startswith("application/problem+json")
    return dict(r.json())


def person_reads(stack: Stack, case_id: str) -> list[AuditRecord]:
    with Session(stack.engine) as session:
        query = select(AuditRecord).where(col(AuditRecord.case_id) == case_id, col(AuditRecord.action) == "person.read")
        return list(session.exec(query).all())


def corrections(stack: Stack, case_id: str) -> list[AuditRecord]:
    with Session(stack.engine) as session:
        query = select(AuditRecord).where(
            col(AuditRecord.case_id) == case_id, col(AuditRecord.action) == "person.correct"
        )
        return list(session.exec(query.order_by(col(AuditRecord.seq))).all())


async def test_a_misspelt_name_is_corrected_and_the_trail_names_only_the_fields(stack):
    j = Journey(stack)
    person = someone()
    await j.open(**person)
    before, etag = await read(stack, j)
    assert etag == '"person-1"' and before["first_name"] == person["first_name"]
    right = f"Zoe{uuid.uuid4().hex[:8]}"
    with tap() as logs:
        after = await patch(stack, j, {"first_name": right, "mobile_phone": None, "gender": before["gender"]}, etag)
    assert after["first_name"] == right and after["second_name"] == person["second_name"]
    assert right not in logs.getvalue()
    now, etag2 = await read(stack, j)
    assert now == after and etag2 == '"person-2"'
    rows = corrections(stack, j.case_id)
    assert [r.detail for r in rows] == [{"fields": ["first_name"]}]  # the gender sent unchanged is no change
    assert right not in str(rows[0].detail) and person["first_name"] not in str(rows[0].detail)

    # The search follows the correction: found by the new name, not the old one.
    found = await search(stack, j.cw, {"name": f"{right} {person['second_name']}"})
    assert [c["case_id"] for c in found["items"]] == [j.case_id]
    assert (await search(stack, j.cw, {"name": f"{person['first_name']} {person['second_name']}"}))["items"] == []

    # A stale ETag, a missing one, a malformed one: refused, nothing changed.
    await patch(stack, j, {"first_name": "Late"}, etag, expect=412)
    await patch(stack, j, {"first_name": "Late"}, None, expect=428)
    await patch(stack, j, {"first_name": "Late"}, 'W/"3"', expect=412)
    odd = {**j.cw, "If-Match": '"person-²"'.encode("latin-1")}  # a digit, but not ASCII
    r = await stack.http.patch(f"/v1/cases/{j.case_id}/person", json={"first_name": "Late"}, headers=odd)
    assert r.status_code == 412
    assert (await read(stack, j))[0]["first_name"] == right
    # Nothing sent twice changes nothing: same ETag answered, no correction row; the answer shows the
    # person's data, so it is a reading of them, audited.
    reads = len(person_reads(stack, j.case_id))
    same = await patch(stack, j, {"first_name": right}, etag2)
    assert same["first_name"] == right and len(corrections(stack, j.case_id)) == 1
    assert len(person_reads(stack, j.case_id)) == reads + 1


async def test_two_corrections_from_the_same_etag_one_wins(stack):
    j = Journey(stack)
    await j.open(**someone())
    _, etag = await read(stack, j)
    answers = await asyncio.gather(
        *(
            stack.http.patch(
                f"/v1/cases/{j.case_id}/person", json={"first_name": f"Who{n}"}, headers={**j.cw, "If-Match": etag}
            )
            for n in range(4)
        )
    )
    assert sorted(r.status_code for r in answers) == [200, 412, 412, 412]
    winner = next(r.json()["first_name"] for r in answers if r.status_code == 200)
    now, etag2 = await read(stack, j)
    assert now["first_name"] == winner and etag2 == '"person-2"'
    assert len(corrections(stack, j.case_id)) == 1


async def test_bad_corrections_are_refused_and_change_nothing(stack):
    j = Journey(stack)
    await j.open(**someone())
    before, etag = await read(stack, j)
    for body in (
        {},
        {"first_name": None},
        {"first_name": ""},
        {"gender": "Other"},
        {"birthdate": "2999-01-01"},
        {"citizenship": ["ROU"]},
        {"nickname": "x"},
        [],
    ):
        await patch(stack, j, body, etag, expect=422)
    assert (await read(stack, j)) == (before, etag)
    assert corrections(stack, j.case_id) == []
    # Scope and roles: another country's caseworker, a partner, an admin.
    for who, status in (
        (stack.auth("caseworker", "cw-pt-9", countries=["PT"]), 404),
        (j.partner("shelter-es"), 403),
        (stack.auth("admin", "admin-1"), 403),
    ):
        r = await stack.http.patch(
            f"/v1/cases/{j.case_id}/person", json={"first_name": "X"}, headers={**who, "If-Match": etag}
        )
        assert r.status_code == status
        assert (await stack.http.get(f"/v1/cases/{j.case_id}/person", headers=who)).status_code == status
    r = await stack.http.patch(
        f"/v1/cases/{uuid.uuid4()}/person", json={"first_name": "X"}, headers={**j.cw, "If-Match": etag}
    )
    assert r.status_code == 404


async def test_an_erased_person_cannot_be_corrected_or_read(stack):
    j = Journey(stack)
    await j.open(**someone())
    _, etag = await read(stack, j)
    await j.step("withdraw-consent", {"withdrawn_on": j.case["opened_at"][:10]})
    r = await stack.http.delete(f"/v1/cases/{j.case_id}/personal-data", headers=stack.auth("admin", "admin-1"))
    assert r.status_code == 200
    await patch(stack, j, {"first_name": "After"}, etag, expect=409)
    assert (await stack.http.get(f"/v1/cases/{j.case_id}/person", headers=j.cw)).status_code == 409


async def test_the_case_page_corrects_the_persons_details_and_never_overwrites_a_later_correction(stack):
    j = Journey(stack)
    person = someone()
    await j.open(**person)
    me = await caseworker(stack)
    page = f"/workspace/cases/{j.case_id}?include=person"
    action = f"/workspace/cases/{j.case_id}/person"
    try:
        html = await me.page(page)
        form = form_of(html, action)
        assert f'value="{person["first_name"]}"' in form and 'name="version" value="1"' in form
        right = f"Zoe{uuid.uuid4().hex[:6]}"
        data = {
            "first_name": right,
            "second_name": person["second_name"],
            "birthdate": person["birthdate"],
            "gender": "Feminine",
            "citizenship": "RO",
            "primary_language": "ro",
            "identification_place": "Madrid",
            "version": "1",
            "csrf_token": csrf_token(html),
        }
        r = await me.http.post(action, data=data)
        assert r.status_code == 303, r.text[:3000]
        assert r.headers["location"] == f"/workspace/cases/{j.case_id}?include=person&done=person-corrected"
        shown = await me.page(r.headers["location"])
        assert "The person&#39;s details were corrected." in shown and right in shown
        fields = sorted(corrections(stack, j.case_id)[-1].detail["fields"])
        assert "first_name" in fields and right not in str(fields)

        # The same form sent again (version 1): someone corrected it since; nothing saved, said in words.
        r = await me.http.post(action, data={**data, "first_name": "Stale"})
        assert r.status_code == 412 and "Someone corrected the person" in r.text
        assert (await read(stack, j))[0]["first_name"] == right
        # A place longer than a correction takes, a version that is no number: said, nothing saved.
        r = await me.http.post(action, data={**data, "version": "2", "identification_place": "x" * 201})
        assert r.status_code == 422
        r = await me.http.post(action, data={**data, "version": "²"})
        assert r.status_code == 412
        # An empty first name: beside its field, nothing saved.
        r = await me.http.post(action, data={**data, "version": "2", "first_name": ""})
        assert r.status_code == 422 and 'id="person-first-name-error"' in r.text
        assert (await read(stack, j))[1] == '"person-2"'
    finally:
        await me.aclose()
