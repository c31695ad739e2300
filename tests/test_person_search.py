"""Search by reference, name and birth date, or identity number, and possible duplicates at opening
(issue 14, items 4 and 5): through keyed blind indexes, never a name in clear, in the caller's scope
only, every search and every duplicate check audited without what was sought."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import delete
from sqlmodel import Session, col, select

from reintegration import person_index
from reintegration.db import AuditRecord, PersonIndexRecord
from reintegration.logs import tap
from tests.conftest import Stack
from tests.journey import Journey, case_body
from tests.test_confidentiality import database_text


def someone() -> dict[str, Any]:
    """A person nobody else in the run has: unique words in the name, a fixed birth date."""
    tag = uuid.uuid4().hex[:8]
    return {"first_name": f"Zoë{tag}", "second_name": f"Dă{tag} Lupu", "birthdate": "1990-05-06"}


async def open_case(stack: Stack, headers: dict[str, str], *, expect: int = 201, **kw: Any) -> dict[str, Any]:
    r = await stack.http.post("/v1/cases", json=case_body(**kw), headers=headers)
    assert r.status_code == expect, r.text
    return dict(r.json())


async def search(stack: Stack, headers: dict[str, str], body: dict[str, Any], *, expect: int = 200) -> Any:
    r = await stack.http.post("/v1/cases/search", json=body, headers=headers)
    assert r.status_code == expect, r.text
    return r.json()


def audit_rows(stack: Stack, action: str, sub: str) -> list[AuditRecord]:
    with Session(stack.engine) as session:
        query = select(AuditRecord).where(col(AuditRecord.action) == action, col(AuditRecord.actor_sub) == sub)
        return list(session.exec(query.order_by(col(AuditRecord.seq))).all())


async def test_a_second_case_of_the_same_person_is_caught_at_opening(stack):
    j = Journey(stack)
    person = someone()
    first = await open_case(stack, j.cw, **person)
    sub = "cw-es-1"
    before = len(audit_rows(stack, "case.duplicate-check", sub))

    # The same person, written otherwise: accents, case, the words of the name in another order.
    again = {
        "first_name": person["first_name"].upper().replace("Ë", "E"),
        "second_name": "lupu " + person["second_name"].split()[0].replace("Ă", "a"),
        "birthdate": person["birthdate"],
    }
    problem = await open_case(stack, j.cw, expect=409, confirm_new=False, **again)
    assert problem["title"] == "Possible duplicate" and problem["elsewhere"] == []
    assert problem["duplicates"] == [
        {"case_id": first["case_id"], "reference": first["reference"], "stage": "protection", "owner_country": "ES"}
    ]
    # Nothing was opened: a search by the name finds the one case.
    found = await search(stack, j.cw, {"name": f"{person['first_name']} {person['second_name']}"})
    assert [c["case_id"] for c in found["items"]] == [first["case_id"]]
    rows = audit_rows(stack, "case.duplicate-check", sub)
    assert len(rows) == before + 1 and rows[-1].detail == {"in_scope": 1, "elsewhere": 0} and rows[-1].status == 409

    # The same identity document, another name: the same person too.
    numbered = {**someone(), "identity_number": f"X-{uuid.uuid4().hex[:6]}"}
    await open_case(stack, j.cw, **numbered)
    other_name = {**someone(), "identity_number": numbered["identity_number"].lower().replace("-", " ")}
    problem = await open_case(stack, j.cw, expect=409, confirm_new=False, **other_name)
    assert len(problem["duplicates"]) == 1

    # The refusal is not kept for its Idempotency-Key (it names cases, held to the caller's scope as
    # it is made): the same request with the same key is checked again, a second row.
    keyed = {**j.cw, "Idempotency-Key": f"dup-{uuid.uuid4().hex}"}
    checks = len(audit_rows(stack, "case.duplicate-check", sub))
    for _ in range(2):
        r = await stack.http.post("/v1/cases", json=case_body(confirm_new=False, **again), headers=keyed)
        assert r.status_code == 409 and r.json()["duplicates"]
    assert len(audit_rows(stack, "case.duplicate-check", sub)) == checks + 2

    # Confirmed as a new case: opened, and the trail says over how many possible duplicates.
    second = await open_case(stack, j.cw, confirm_new=True, **again)
    with Session(stack.engine) as session:
        row = session.exec(
            select(AuditRecord).where(
                col(AuditRecord.action) == "case.open", col(AuditRecord.case_id) == second["case_id"]
            )
        ).one()
    assert row.detail == {"possible_duplicates": {"in_scope": 1, "elsewhere": 0}}
    # No name in clear: the index holds hashes only.
    with Session(stack.engine) as session:
        values = session.exec(select(PersonIndexRecord).where(col(PersonIndexRecord.case_id) == first["case_id"])).all()
    assert {v.kind for v in values} == {"name", "name_birthdate", "family_birthdate"}
    assert all(len(v.value) == 64 for v in values)
    text = database_text(stack)
    assert person["first_name"] not in text and person["second_name"].split()[0] not in text


async def test_a_match_in_another_office_is_only_said_with_whom_to_ask(stack):
    person = someone()
    portugal = stack.auth("caseworker", "cw-pt-dup", countries=["PT"])
    elsewhere = await open_case(stack, portugal, country="PT", **person)
    spain = stack.auth("caseworker", "cw-es-dup", countries=["ES"])
    r = await stack.http.post("/v1/cases", json=case_body(confirm_new=False, **person), headers=spain)
    assert r.status_code == 409, r.text
    problem = r.json()
    assert problem["duplicates"] == [] and problem["elsewhere"] == [
        {"country": "PT", "contact": "the supervisors in PT"}
    ]
    assert elsewhere["case_id"] not in r.text and elsewhere["reference"] not in r.text
    # A search finds nothing outside the caller's countries; the supervisor of every country finds it.
    assert (await search(stack, spain, {"name": f"{person['second_name']} {person['first_name']}"}))["items"] == []
    everyone = stack.auth("supervisor", "sup-dup")
    found = await search(stack, everyone, {"name": f"{person['first_name']} {person['second_name']}"})
    assert [c["case_id"] for c in found["items"]] == [elsewhere["case_id"]]


async def test_search_by_reference_name_birth_date_and_number(stack):
    j = Journey(stack)
    person = {**someone(), "identity_number": f"AB {uuid.uuid4().hex[:6]}"}
    case = await open_case(stack, j.cw, **person)
    name = f"{person['first_name']} {person['second_name']}"
    with tap() as logs:
        by_reference = await search(stack, j.cw, {"reference": case["reference"].lower()})
        by_name = await search(stack, j.supervisor, {"name": name.upper()})
        by_birth = await search(stack, j.cw, {"name": name, "birthdate": person["birthdate"]})
        wrong_birth = await search(stack, j.cw, {"name": name, "birthdate": "1990-05-07"})
        by_number = await search(stack, j.cw, {"identity_number": person["identity_number"].replace(" ", "-")})
        part_of_name = await search(stack, j.cw, {"name": person["first_name"]})
    for found in (by_reference, by_name, by_birth, by_number):
        assert [c["case_id"] for c in found["items"]] == [case["case_id"]], found
        assert set(found["items"][0]) >= {"reference", "stage", "status"} and "person" not in found["items"][0]
    assert wrong_birth["items"] == [] and part_of_name["items"] == []  # each word of the name counts
    assert person["first_name"] not in logs.getvalue() and person["identity_number"] not in logs.getvalue()

    rows = audit_rows(stack, "case.search", "cw-es-1")[-5:]
    assert [r.detail for r in rows] == [
        {"by": "reference", "results": 1},
        {"by": "name+birthdate", "results": 1},
        {"by": "name+birthdate", "results": 0},
        {"by": "identity_number", "results": 1},
        {"by": "name", "results": 0},
    ]
    assert person["first_name"] not in str([r.detail for r in rows])


async def test_bad_searches_are_refused(stack):
    j = Journey(stack)
    for body in (
        {},
        {"name": "Ana", "reference": "ES-2026-AAAAAA"},
        {"birthdate": "1990-01-01"},
        {"reference": "ES 2026"},
        {"name": ""},
        {"name": "Ana", "surname": "Pop"},
        {"identity_number": "x" * 101},
    ):
        await search(stack, j.cw, body, expect=422)
    problem = await search(stack, j.cw, {"name": "!!! ---"}, expect=422)
    assert "letters or digits" in problem["detail"]
    for who in (j.partner("shelter-es"), stack.auth("admin", "admin-1")):
        await search(stack, who, {"name": "Ana"}, expect=403)
    r = await stack.http.post("/v1/cases/search", json={"name": "Ana"}, params={"cursor": "forged"}, headers=j.cw)
    assert r.status_code == 422


async def test_an_erased_person_is_no_longer_found_nor_a_duplicate(stack):
    j = Journey(stack)
    person = someone()
    await j.open(**person)
    await j.step("withdraw-consent", {"withdrawn_on": j.case["opened_at"][:10]})
    r = await stack.http.delete(f"/v1/cases/{j.case_id}/personal-data", headers=stack.auth("admin", "admin-1"))
    assert r.status_code == 200, r.text
    name = f"{person['first_name']} {person['second_name']}"
    assert (await search(stack, j.cw, {"name": name}))["items"] == []
    with Session(stack.engine) as session:
        assert not session.exec(select(PersonIndexRecord).where(col(PersonIndexRecord.case_id) == j.case_id)).all()
    await open_case(stack, j.cw, confirm_new=False, **person)  # no duplicate any more


async def test_cases_opened_before_the_indexes_are_indexed_once(stack):
    j = Journey(stack)
    person = someone()
    await j.open(**person)
    with Session(stack.engine) as session:  # as a case opened by the release before the indexes
        session.execute(delete(PersonIndexRecord).where(col(PersonIndexRecord.case_id) == j.case_id))
        session.commit()
    name = f"{person['first_name']} {person['second_name']}"
    assert (await search(stack, j.cw, {"name": name}))["items"] == []
    assert person_index.index_missing(stack.engine, stack.keyring) >= 1
    assert [c["case_id"] for c in (await search(stack, j.cw, {"name": name}))["items"]] == [j.case_id]
    assert person_index.index_missing(stack.engine, stack.keyring) == 0  # nothing left to index
