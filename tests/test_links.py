"""Linked cases (issue 14, item 7): family members, co-victims of one situation; each case shows only
the linked cases in the reader's scope; bad links are refused and change nothing."""

from __future__ import annotations

import uuid

from sqlmodel import Session, col, func, select

from reintegration.db import CaseLinkRecord
from tests.conftest import Stack
from tests.journey import Journey, day
from tests.test_audit import trail
from tests.test_workspace_cases import caseworker, check_page, send_form
from tests.workspace import csrf_token


def links_of(stack: Stack, case_id: str) -> int:
    with Session(stack.engine) as session:
        query = select(func.count()).where(
            (col(CaseLinkRecord.case_a) == case_id) | (col(CaseLinkRecord.case_b) == case_id)
        )
        return int(session.exec(query).one())


async def listed(stack: Stack, case_id: str, headers: dict[str, str]) -> list[dict]:
    r = await stack.http.get(f"/v1/cases/{case_id}/links", headers=headers)
    assert r.status_code == 200, r.text
    return list(r.json()["items"])


async def test_two_cases_are_linked_and_each_shows_the_other(stack):
    mother, daughter = Journey(stack), Journey(stack)
    await mother.open()
    await daughter.open()
    path = f"/v1/cases/{mother.case_id}/links"
    r = await stack.http.post(
        path, json={"reference": daughter.case["reference"].lower(), "relation": "family-members"}, headers=mother.cw
    )
    assert r.status_code == 201, r.text
    link = r.json()
    assert (link["case_id"], link["reference"], link["relation"]) == (
        daughter.case_id,
        daughter.case["reference"],
        "family-members",
    )
    assert set(link) == {
        "link_id",
        "case_id",
        "reference",
        "stage",
        "status",
        "owner_country",
        "relation",
        "created_at",
        "created_by",
    }
    # Seen from both sides.
    assert [x["case_id"] for x in await listed(stack, mother.case_id, mother.cw)] == [daughter.case_id]
    assert [x["case_id"] for x in await listed(stack, daughter.case_id, mother.supervisor)] == [mother.case_id]
    # Again, with the same relation: the same link, 200; with another: 409; nothing added.
    again = await stack.http.post(
        path, json={"case_id": daughter.case_id, "relation": "family-members"}, headers=mother.cw
    )
    assert again.status_code == 200 and again.json()["link_id"] == link["link_id"]
    other = await stack.http.post(
        path, json={"case_id": daughter.case_id, "relation": "same-situation"}, headers=mother.cw
    )
    assert other.status_code == 409 and "family-members" in other.json()["detail"]
    assert links_of(stack, mother.case_id) == 1
    # In both trails.
    for case_id, theirs in ((mother.case_id, daughter.case_id), (daughter.case_id, mother.case_id)):
        rows = [r for r in await trail(stack, case_id) if r["action"] == "case.link"]
        assert [r["detail"] for r in rows] == [
            {"link_id": link["link_id"], "linked_case_id": theirs, "relation": "family-members"}
        ]
    # Removed: gone from both; removing it again is 404.
    r = await stack.http.delete(f"/v1/cases/{daughter.case_id}/links/{link['link_id']}", headers=mother.cw)
    assert r.status_code == 204
    assert (
        await listed(stack, mother.case_id, mother.cw) == [] and await listed(stack, daughter.case_id, mother.cw) == []
    )
    r = await stack.http.delete(f"/v1/cases/{daughter.case_id}/links/{link['link_id']}", headers=mother.cw)
    assert r.status_code == 404
    assert [r["action"] for r in await trail(stack, mother.case_id) if r["action"].startswith("case.")][
        -1
    ] == "case.unlink"


async def test_a_link_reaches_only_cases_in_scope(stack):
    spain, portugal = Journey(stack), Journey(stack, caseworker="cw-pt-links", countries=["PT"])
    await spain.open()
    await portugal.open(country="PT")
    # Spain cannot link to (nor learn of) the Portuguese case: the same answer as for no case at all.
    for body in (
        {"case_id": portugal.case_id},
        {"case_id": str(uuid.uuid4())},
        {"reference": portugal.case["reference"]},
    ):
        r = await stack.http.post(
            f"/v1/cases/{spain.case_id}/links", json={**body, "relation": "other"}, headers=spain.cw
        )
        assert r.status_code == 422 and "no such case in your countries" in r.json()["detail"], r.text
    # A supervisor of both links them; each caseworker sees no link (the other case is not in scope).
    everywhere = stack.auth("supervisor", "sup-links")
    r = await stack.http.post(
        f"/v1/cases/{spain.case_id}/links",
        json={"case_id": portugal.case_id, "relation": "same-situation"},
        headers=everywhere,
    )
    assert r.status_code == 201, r.text
    link_id = r.json()["link_id"]
    assert await listed(stack, spain.case_id, spain.cw) == []
    assert await listed(stack, portugal.case_id, portugal.cw) == []
    assert len(await listed(stack, spain.case_id, everywhere)) == 1
    r = await stack.http.delete(f"/v1/cases/{spain.case_id}/links/{link_id}", headers=spain.cw)
    assert r.status_code == 404  # the link is not theirs to see, so not theirs to remove
    assert links_of(stack, spain.case_id) == 1


async def test_bad_links_are_refused_and_change_nothing(stack):
    j = Journey(stack)
    await j.open()
    path = f"/v1/cases/{j.case_id}/links"
    for body in (
        {"case_id": j.case_id, "relation": "family-members"},  # itself
        {"relation": "family-members"},
        {"case_id": j.case_id, "reference": j.case["reference"], "relation": "family-members"},
        {"case_id": j.case_id, "relation": "cousins"},
        {"case_id": "../x", "relation": "family-members"},
        {"case_id": j.case_id, "relation": "family-members", "why": "text"},
    ):
        r = await stack.http.post(path, json=body, headers=j.cw)
        assert r.status_code == 422, (body, r.text)
    for who, status in ((j.partner("shelter-es"), 403), (stack.auth("admin", "admin-1"), 403)):
        assert (await stack.http.get(path, headers=who)).status_code == status
        assert (
            await stack.http.post(path, json={"case_id": j.case_id, "relation": "family-members"}, headers=who)
        ).status_code == status
    assert (await stack.http.get(f"/v1/cases/{uuid.uuid4()}/links", headers=j.cw)).status_code == 404
    assert (await stack.http.delete(f"{path}/{uuid.uuid4()}", headers=j.cw)).status_code == 404
    assert links_of(stack, j.case_id) == 0


async def test_the_erasure_of_either_case_removes_the_link(stack):
    a, b = Journey(stack), Journey(stack)
    await a.open()
    await b.open()
    r = await stack.http.post(
        f"/v1/cases/{a.case_id}/links", json={"case_id": b.case_id, "relation": "family-members"}, headers=a.cw
    )
    assert r.status_code == 201
    await a.step("withdraw-consent", {"withdrawn_on": day(1)})
    r = await stack.http.delete(f"/v1/cases/{a.case_id}/personal-data", headers=stack.auth("admin", "admin-1"))
    assert r.status_code == 200
    assert links_of(stack, b.case_id) == 0 and await listed(stack, b.case_id, b.cw) == []


async def test_the_case_page_links_a_case_by_its_reference_and_removes_the_link(stack):
    a, b = Journey(stack), Journey(stack)
    await a.open()
    await b.open()
    me = await caseworker(stack)
    page = f"/workspace/cases/{a.case_id}"
    try:
        html = await me.page(page)
        check_page(html)
        assert "No linked case in your countries." in html
        r = await send_form(me, page, f"{page}/links", {"reference": "ES-0000-NOSUCH", "relation": "family-members"})
        assert r.status_code == 422 and "no such case in your countries" in r.text
        r = await send_form(me, page, f"{page}/links", {"reference": b.case["reference"], "relation": "same-situation"})
        assert (r.status_code, r.headers["location"]) == (303, f"{page}?done=linked")
        html = await me.page(r.headers["location"])
        assert "The cases are linked." in html and f'href="/workspace/cases/{b.case_id}"' in html
        assert "Co-victims of one trafficking situation" in html
        [link] = await listed(stack, a.case_id, a.cw)
        remove = f"{page}/links/{link['link_id']}/remove"
        r = await me.http.post(remove, data={"csrf_token": csrf_token(html)})
        assert (r.status_code, r.headers["location"]) == (303, f"{page}?done=unlinked")
        assert await listed(stack, b.case_id, b.cw) == []
    finally:
        await me.aclose()
