"""Finding a case and possible duplicates in the workspace (issue 14, items 4 and 5): through the
API's own functions, with the name posted, never in a URL."""

from __future__ import annotations

import re
import uuid

from sqlmodel import Session, col, func, select

from reintegration.db import AuditRecord
from tests.conftest import Stack
from tests.journey import Journey
from tests.test_person_search import open_case, someone
from tests.test_workspace_cases import case_id_of, caseworker, check_page, form_of, hidden, intake, send_form
from tests.workspace import Person, csrf_token


def searches(stack: Stack, sub: str) -> int:
    with Session(stack.engine) as session:
        query = select(func.count()).where(col(AuditRecord.action) == "case.search", col(AuditRecord.actor_sub) == sub)
        return int(session.exec(query).one())


async def test_a_caseworker_finds_a_case_by_name_reference_or_number(stack):
    j = Journey(stack)
    person = {**someone(), "identity_number": f"ZZ{uuid.uuid4().hex[:6]}"}
    case = await open_case(stack, j.cw, **person)
    me = await caseworker(stack, "cw-search-1")
    try:
        html = await me.page("/workspace/search")
        check_page(html)
        token = csrf_token(html)
        name = f"{person['second_name'].lower()} {person['first_name']}"
        for sent in ({"name": name}, {"reference": case["reference"]}, {"identity_number": person["identity_number"]}):
            r = await me.http.post("/workspace/search", data={**sent, "csrf_token": token})
            assert r.status_code == 200, r.text[:2000]
            assert f'href="/workspace/cases/{case["case_id"]}"' in r.text
            assert person["first_name"] not in str(r.url)
        r = await me.http.post("/workspace/search", data={"name": name, "birthdate": "2001-01-01", "csrf_token": token})
        assert r.status_code == 200 and "No case in your countries matches." in r.text
        r = await me.http.post("/workspace/search", data={"csrf_token": token})
        assert r.status_code == 422 and "Fill in one way to search" in r.text
        r = await me.http.post("/workspace/search", data={"name": "?!", "csrf_token": token})
        assert r.status_code == 422 and "no letters or digits" in r.text
        assert searches(stack, "cw-search-1") == 4  # four searches; the refused ones searched nothing
    finally:
        await me.aclose()
    partner = await Person(stack).sign_in("partner", "partner-search", agency="shelter-es")
    try:
        await partner.page("/workspace/search", expect=403)
    finally:
        await partner.aclose()


async def test_opening_the_same_person_twice_shows_the_case_and_opens_only_when_confirmed(stack):
    me = await caseworker(stack, f"cw-dup-{uuid.uuid4().hex[:6]}")
    marker = f"Dup{uuid.uuid4().hex[:8]}"
    try:
        first = case_id_of(await send_form(me, "/workspace/cases/new", "/workspace/cases/new", intake(marker)))
        r = await send_form(me, "/workspace/cases/new", "/workspace/cases/new", intake(marker))
        assert r.status_code == 409, r.text[:2000]
        assert "This person may have a case already" in r.text and f'href="/workspace/cases/{first}"' in r.text
        assert 'name="confirm_new" value="1"' in r.text and "open a new case" in r.text
        assert f'value="{marker}"' in r.text  # the form as it was filled in
        # Sent again from that page: a new case, over the possible duplicate.
        form = form_of(r.text, "/workspace/cases/new")
        data = {
            **intake(marker),
            "confirm_new": "1",
            "csrf_token": csrf_token(r.text),
            "idempotency_key": hidden(form, "idempotency_key"),
        }
        second = case_id_of(await me.http.post("/workspace/cases/new", data=data))
        assert second != first
        assert re.search(r"Case [A-Z]{2}-\d{4}-", await me.page(f"/workspace/cases/{second}"))
    finally:
        await me.aclose()
