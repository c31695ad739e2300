"""The case's anonymous facts (issue 17, item 1): kept at opening outside the person vault, read and
replaced through ``/v1/cases/{id}/facts`` (audited by field names), following corrections of the
person's data, surviving the erasure, and given by the backfill to the cases without them; and the
age band at every boundary."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, col, delete, select

from reintegration import case_facts
from reintegration.case_facts import AgeBand, age_band, keep_missing, update_person_facts
from reintegration.db import AuditRecord, CaseFactsRecord, CaseRecord
from reintegration.persons import load_person
from tests.conftest import Stack
from tests.journey import Journey, case_body, day

IDENTIFIED = "2026-11-20"
VICTIM = {
    # Out of the picklist's order, one twice: kept once each, in the picklist's order.
    "control_methods": ["WithholdsDocuments", "DebtBondage", "WithholdsDocuments"],
    "recruitment_methods": ["ThroughFriendsOrSocialEvents"],
    "recruitment_websites": ["4Sale", "Facebook"],
    "sex_exploitation_types": ["Prostitution"],
    "forced_labour_industry": "A_AgricultureForestryAndFishing",
    "relationship_to_trafficker": "Acquainted",
    "referred_on": "2026-11-19",
}
EMPTY = {
    "recruitment_methods": [],
    "recruitment_websites": [],
    "control_methods": [],
    "sex_exploitation_types": [],
    "forced_labour_industry": None,
    "relationship_to_trafficker": None,
    "referred_on": None,
}


# --- The age band, a pure function -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("birthdate", "identified_on", "band"),
    [
        (date(2000, 6, 15), date(2000, 6, 15), AgeBand.child),  # born that day
        (date(2000, 6, 15), date(2012, 6, 14), AgeBand.child),  # 11
        (date(2000, 6, 15), date(2012, 6, 15), AgeBand.adolescent),  # 12 on the day
        (date(2000, 6, 15), date(2018, 6, 14), AgeBand.adolescent),  # 17
        (date(2000, 6, 15), date(2018, 6, 15), AgeBand.young_adult),  # 18 on the day
        (date(2000, 6, 15), date(2025, 6, 14), AgeBand.young_adult),  # 24
        (date(2000, 6, 15), date(2025, 6, 15), AgeBand.adult),  # 25 on the day
        (date(2000, 6, 15), date(2035, 6, 14), AgeBand.adult),  # 34
        (date(2000, 6, 15), date(2035, 6, 15), AgeBand.middle_aged),  # 35 on the day
        (date(2000, 6, 15), date(2050, 6, 14), AgeBand.middle_aged),  # 49
        (date(2000, 6, 15), date(2050, 6, 15), AgeBand.older),  # 50 on the day
        (date(1920, 1, 1), date(2026, 11, 20), AgeBand.older),
        (date(1999, 4, 2), date(2026, 11, 20), AgeBand.adult),
        (None, date(2026, 11, 20), AgeBand.unknown),
        (date(2027, 1, 1), date(2026, 11, 20), AgeBand.unknown),  # born after: no age to tell
        (date(1999, 4, 2), None, AgeBand.unknown),  # no identification date: no age to tell
    ],
)
def test_the_age_band_at_identification(birthdate: date | None, identified_on: date | None, band: AgeBand) -> None:
    assert age_band(birthdate, identified_on) == band


# --- Through the API -----------------------------------------------------------------------------------


def cw(stack: Stack) -> dict[str, str]:
    return stack.auth("caseworker", "cw-es-1", countries=["ES"])


async def open_case(stack: Stack, *, victim: dict[str, Any] | None = None, **person: Any) -> str:
    body = case_body(**{"first_name": f"Facts{uuid.uuid4().hex[:8]}", **person})
    body["identification"]["identified_on"] = IDENTIFIED
    if victim is not None:
        body["victim"] = victim
    r = await stack.http.post("/v1/cases", json=body, headers=cw(stack))
    assert r.status_code == 201, r.text
    return str(r.json()["case_id"])


async def facts(stack: Stack, case_id: str, *, headers: dict[str, str] | None = None, expect: int = 200) -> Any:
    r = await stack.http.get(f"/v1/cases/{case_id}/facts", headers=headers or cw(stack))
    assert r.status_code == expect, r.text
    return r.json()


async def put(
    stack: Stack, case_id: str, body: Any, *, headers: dict[str, str] | None = None, expect: int = 200
) -> Any:
    r = await stack.http.put(f"/v1/cases/{case_id}/facts", json=body, headers=headers or cw(stack))
    assert r.status_code == expect, r.text
    if expect >= 400:
        assert r.headers["content-type"].startswith("application/problem+json")
    return r.json()


def audited(stack: Stack, case_id: str) -> list[AuditRecord]:
    with Session(stack.engine) as session:
        query = select(AuditRecord).where(col(AuditRecord.case_id) == case_id, col(AuditRecord.action) == "case.facts")
        return list(session.exec(query.order_by(col(AuditRecord.seq))).all())


def victim_part(shown: dict[str, Any]) -> dict[str, Any]:
    return {k: shown[k] for k in EMPTY}


async def test_the_opening_keeps_the_facts_and_a_put_replaces_them_audited(stack):
    case_id = await open_case(stack, victim=VICTIM, birthdate="1999-04-02")
    shown = await facts(stack, case_id)
    assert (shown["sex"], shown["age_band"]) == ("Feminine", "25-34")
    assert victim_part(shown) == {
        **VICTIM,
        "control_methods": ["DebtBondage", "WithholdsDocuments"],
        "recruitment_websites": ["Facebook", "4Sale"],
    }
    unknown = await open_case(stack, birthdate=None)
    shown = await facts(stack, unknown)
    assert (shown["sex"], shown["age_band"]) == ("Feminine", "unknown") and victim_part(shown) == EMPTY

    # A PUT replaces the whole: what it leaves out is cleared; the trail names the fields only.
    after = await put(stack, case_id, {"control_methods": ["FalsePromises"], "referred_on": "2026-11-18"})
    assert after == await facts(stack, case_id)
    assert victim_part(after) == {**EMPTY, "control_methods": ["FalsePromises"], "referred_on": "2026-11-18"}
    assert (after["sex"], after["age_band"]) == ("Feminine", "25-34")  # not the PUT's to change
    rows = audited(stack, case_id)
    assert [(r.actor_sub, r.status, r.detail) for r in rows] == [
        (
            "cw-es-1",
            200,
            {
                "fields": [
                    "control_methods",
                    "forced_labour_industry",
                    "recruitment_methods",
                    "recruitment_websites",
                    "referred_on",
                    "relationship_to_trafficker",
                    "sex_exploitation_types",
                ]
            },
        )
    ]
    assert "FalsePromises" not in str(rows[0].detail) and "2026-11-18" not in str(rows[0].detail)
    await put(stack, case_id, {"referred_on": "2026-11-18", "control_methods": ["FalsePromises"]})
    assert audited(stack, case_id)[-1].detail == {"fields": []}  # the same again: audited, nothing changed

    # Bad bodies: refused, nothing changed, nothing audited.
    before, trail = await facts(stack, case_id), len(audited(stack, case_id))
    for body in (
        {"control_methods": ["Bribery"]},
        {"forced_labour_industry": "Z_Nowhere"},
        {"relationship_to_trafficker": "Unacquainted"},  # the standard's spelling is "Unaquainted"
        {"sex_exploitation_types": "Prostitution"},
        {"referred_on": "yesterday"},
        {"sex": "Masculine"},  # follows the person's data, not written here
        {"age_band": "50+"},
        {"recruitment_methods": ["Other"] * 11},
        [],
    ):
        await put(stack, case_id, body, expect=422)
    assert await facts(stack, case_id) == before and len(audited(stack, case_id)) == trail


async def test_scope_roles_and_a_closed_case(stack):
    j = Journey(stack)
    case_id = await open_case(stack, victim={"control_methods": ["DebtBondage"]})
    j.case_id = case_id
    before = await facts(stack, case_id)
    for who, status in (
        (stack.auth("caseworker", "cw-pt-9", countries=["PT"]), 404),
        (stack.auth("supervisor", "sup-fr", countries=["FR"]), 404),
        (j.partner("shelter-es"), 403),
        (stack.auth("admin", "admin-1"), 403),
    ):
        await facts(stack, case_id, headers=who, expect=status)
        await put(stack, case_id, {"control_methods": ["FalsePromises"]}, headers=who, expect=status)
    await facts(stack, str(uuid.uuid4()), expect=404)
    await put(stack, str(uuid.uuid4()), {}, expect=404)
    supervisor = stack.auth("supervisor", "sup-es", countries=["ES"])
    assert await facts(stack, case_id, headers=supervisor) == before  # a supervisor of the region reads them

    await j.step("withdraw-consent", {"withdrawn_on": day(0)})
    await put(stack, case_id, {"control_methods": ["FalsePromises"]}, expect=409)
    assert await facts(stack, case_id) == before and audited(stack, case_id) == []


async def test_a_correction_of_the_person_moves_sex_and_age_band(stack):
    case_id = await open_case(stack, victim={"control_methods": ["DebtBondage"]}, birthdate="1999-04-02")
    r = await stack.http.get(f"/v1/cases/{case_id}/person", headers=cw(stack))
    assert r.status_code == 200, r.text
    r = await stack.http.patch(
        f"/v1/cases/{case_id}/person",
        json={"gender": "Masculine", "birthdate": "2010-01-01"},
        headers={**cw(stack), "If-Match": r.headers["etag"]},
    )
    assert r.status_code == 200, r.text
    shown = await facts(stack, case_id)
    assert (shown["sex"], shown["age_band"]) == ("Masculine", "12-17")  # 16 when identified
    assert shown["control_methods"] == ["DebtBondage"]
    r = await stack.http.patch(
        f"/v1/cases/{case_id}/person",
        json={"birthdate": None},
        headers={**cw(stack), "If-Match": r.headers["etag"]},
    )
    assert r.status_code == 200, r.text
    assert (await facts(stack, case_id))["age_band"] == "unknown"


async def test_the_facts_outlive_the_erasure_and_the_backfill_gives_them_to_cases_without(stack):
    j = Journey(stack)
    erased = await open_case(stack, victim={"control_methods": ["DebtBondage"]}, birthdate="1999-04-02")
    j.case_id = erased
    await j.step("withdraw-consent", {"withdrawn_on": day(0)})
    r = await stack.http.delete(f"/v1/cases/{erased}/personal-data", headers=stack.auth("admin", "admin-1"))
    assert r.status_code == 200, r.text
    assert (await stack.http.get(f"/v1/cases/{erased}/person", headers=cw(stack))).status_code == 409
    shown = await facts(stack, erased)
    assert (shown["sex"], shown["age_band"], shown["control_methods"]) == ("Feminine", "25-34", ["DebtBondage"])

    # Cases from before the facts were kept (their rows deleted here): none until the backfill runs;
    # then sex and age band from the person's data, or unknown once it was erased.
    kept = await open_case(stack, birthdate="1999-04-02", gender="TransgenderMasculine")
    with Session(stack.engine) as session:
        session.execute(delete(CaseFactsRecord).where(col(CaseFactsRecord.case_id).in_([erased, kept])))
        session.commit()
    missing = await facts(stack, kept)
    assert (missing["sex"], missing["age_band"], missing["updated_at"]) == ("NonSpecifiedUnknown", "unknown", None)
    assert keep_missing(stack.engine, stack.keyring, batch=1) >= 2  # in batches, until none is missing
    assert keep_missing(stack.engine, stack.keyring) == 0
    with Session(stack.engine) as session:
        rows = {
            r.case_id: r
            for r in session.exec(select(CaseFactsRecord).where(col(CaseFactsRecord.case_id).in_([erased, kept])))
        }
    assert (rows[kept].sex, rows[kept].age_band) == ("TransgenderMasculine", "25-34")
    assert (rows[erased].sex, rows[erased].age_band) == ("NonSpecifiedUnknown", "unknown")
    assert (await facts(stack, kept))["updated_at"] is not None


# --- Against the backfill, and a read model that lacks the identification date --------------------------


def drop_facts(stack: Stack, *case_ids: str) -> None:
    """Make these cases as if opened before the facts were kept."""
    with Session(stack.engine) as session:
        session.execute(delete(CaseFactsRecord).where(col(CaseFactsRecord.case_id).in_(case_ids)))
        session.commit()


async def test_the_backfill_never_overwrites_facts_written_while_it_read_the_vault(stack, monkeypatch):
    """A correction of the person commits between the backfill's read of the vault (the old gender) and
    its write: the correction's facts stay, the backfill goes on without an error. And a PUT on a case
    the backfill has not reached yet gives it its sex and age band from the vault, not "unknown"."""
    raced = await open_case(stack, victim={"control_methods": ["DebtBondage"]}, birthdate="1999-04-02")
    waiting = await open_case(stack, birthdate="2010-01-01", gender="Masculine")
    drop_facts(stack, raced, waiting)

    after = await put(stack, waiting, {"control_methods": ["FalsePromises"]})
    assert (after["sex"], after["age_band"], after["control_methods"]) == ("Masculine", "12-17", ["FalsePromises"])

    reads = []

    def corrected_meanwhile(session: Session, keyring: Any, *, case_id: str) -> Any:
        person = load_person(session, keyring, case_id=case_id)
        if case_id == raced and not reads:
            reads.append(case_id)
            with Session(stack.engine) as other:  # the correction, in its own transaction
                update_person_facts(other, raced, sex="Masculine", band=AgeBand.young_adult)
                other.commit()
        return person

    monkeypatch.setattr(case_facts, "load_person", corrected_meanwhile)
    keep_missing(stack.engine, stack.keyring)
    assert reads == [raced]
    shown = await facts(stack, raced)
    assert (shown["sex"], shown["age_band"]) == ("Masculine", "18-24")  # the correction's, not the vault's old
    shown = await facts(stack, waiting)
    assert (shown["sex"], shown["age_band"], shown["control_methods"]) == ("Masculine", "12-17", ["FalsePromises"])


async def test_the_backfill_gives_up_on_a_database_that_refuses_every_write(stack, monkeypatch):
    case_id = await open_case(stack)
    drop_facts(stack, case_id)
    commits = []

    class Refusing(Session):
        def commit(self) -> None:
            commits.append(1)
            raise OperationalError("INSERT INTO case_facts", {}, Exception("attempt to write a readonly database"))

    monkeypatch.setattr(case_facts, "Session", Refusing)
    with pytest.raises(OperationalError):
        keep_missing(stack.engine, stack.keyring)
    assert len(commits) == case_facts.ATTEMPTS  # not for ever
    monkeypatch.undo()
    assert keep_missing(stack.engine, stack.keyring) >= 1


async def test_a_read_model_without_the_identification_date_is_no_error(stack):
    """The age band cannot be told without the day of the identification: the backfill says unknown;
    a correction of the person keeps the band it has and still moves the sex."""
    corrected = await open_case(stack, birthdate="1999-04-02")
    backfilled = await open_case(stack, birthdate="1999-04-02")
    drop_facts(stack, backfilled)
    with Session(stack.engine) as session:
        for case in session.exec(select(CaseRecord).where(col(CaseRecord.case_id).in_([corrected, backfilled]))):
            case.facts = {k: v for k, v in case.facts.items() if k != "identified_on"}
            session.add(case)
        session.commit()
    assert keep_missing(stack.engine, stack.keyring) >= 1
    assert ((await facts(stack, backfilled))["sex"], (await facts(stack, backfilled))["age_band"]) == (
        "Feminine",
        "unknown",
    )
    r = await stack.http.get(f"/v1/cases/{corrected}/person", headers=cw(stack))
    r = await stack.http.patch(
        f"/v1/cases/{corrected}/person",
        json={"gender": "NonConforming"},
        headers={**cw(stack), "If-Match": r.headers["etag"]},
    )
    assert r.status_code == 200, r.text
    shown = await facts(stack, corrected)
    assert (shown["sex"], shown["age_band"]) == ("NonConforming", "25-34")
