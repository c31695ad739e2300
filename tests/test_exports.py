"""The HTCDS export: the region's cases as JSON lines or CSV, personal fields only on request and audited."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from sqlalchemy import delete, select
from sqlmodel import Session

from api.exports import CASE_FIELDS, PERSON_FIELDS
from reintegration.db import AuditRecord, PersonRecord
from tests.conftest import Stack
from tests.journey import Journey, day

MARKERS = ("Maria", "Ionescu", "1998-03-14")


async def export(stack: Stack, headers: dict[str, str], **params: str) -> tuple[Any, str]:
    r = await stack.http.get("/v1/exports/htcds", headers=headers, params=params)
    assert r.status_code == 200, r.text
    return r, r.text


def jsonl(body: str) -> dict[str, dict[str, Any]]:
    records = [json.loads(line) for line in body.splitlines()]
    return {r["case_id"]: r for r in records}


def last_audit_row(stack: Stack) -> AuditRecord:
    with Session(stack.engine) as session:
        return session.execute(select(AuditRecord).order_by(AuditRecord.seq.desc()).limit(1)).scalars().one()


async def test_the_regions_cases_as_htcds_records_without_personal_data(stack: Stack):
    es = Journey(stack)
    await es.open()
    await es.step("risk-assessment", {"level": "medium", "assessed_on": day(1)})
    await es.assign("shelter", "shelter-es")
    pt = Journey(stack, caseworker="cw-pt-export", countries=["PT"])
    await pt.open(country="PT")
    before = last_audit_row(stack).seq

    r, body = await export(stack, stack.auth("supervisor", "sup-es-export", countries=["ES"]))
    assert r.headers["content-type"].startswith("application/x-ndjson")
    assert "attachment" in r.headers["content-disposition"]
    records = jsonl(body)
    assert es.case_id in records and pt.case_id not in records
    assert {rec["owner_country"] for rec in records.values()} == {"ES"}
    record = records[es.case_id]
    assert list(record) == CASE_FIELDS
    assert record["cas_Status"] == "Active" and record["stage"] == "protection" and record["status"] == "active"
    assert record["vic_TypeOfExploitation"] == ["ForcedLabour"]
    assert record["vic_TraffickingStatus"] == "PossibleVictimOfTrafficking"
    assert record["cas_ReferringOrganisation"] == "LawEnforcement" and record["cas_CaseOwner"] == "cw-es-1"
    assert record["con_Consent"] is True and record["consent_data_sharing"] is True
    assert record["origin_country"] == "RO" and record["risk_level"] == "medium"
    assert record["identified_on"] == day(0) and record["is_minor"] is False
    assert record["services"] == [{"service": "shelter", "agency_id": "shelter-es", "status": "assigned"}]
    assert record["cas_ReferredOrganisation"] == ["shelter-es"]
    assert not any(key.startswith("prs_") for key in record)
    assert not any(marker in body for marker in MARKERS)
    assert last_audit_row(stack).seq == before  # no personal data: not audited

    _, everything = await export(stack, stack.auth("supervisor", "sup-1"))
    assert {es.case_id, pt.case_id} <= set(jsonl(everything))
    _, nothing = await export(stack, stack.auth("supervisor", "sup-nowhere", countries=["IS"]))
    assert nothing == ""


async def test_personal_fields_only_on_request_and_each_such_export_is_audited(stack: Stack):
    j = Journey(stack, caseworker="cw-export", countries=["MT"])
    await j.open(country="MT")
    supervisor = stack.auth("supervisor", "sup-mt", countries=["MT"])
    _, body = await export(stack, supervisor, include="person")
    records = jsonl(body)
    record = records[j.case_id]
    assert list(record) == CASE_FIELDS + list(PERSON_FIELDS)
    assert record["prs_FirstName"] == "Maria" and record["prs_SecondName"] == "Ionescu"
    assert record["prs_Birthdate"] == "1998-03-14" and record["prs_Citizenship"] == ["RO"]
    assert record["prs_Gender"] == "Feminine" and record["prs_PrimaryLanguage"] == "ro"
    row = last_audit_row(stack)
    assert (row.action, row.actor_sub, row.actor_role, row.case_id) == ("export.htcds", "sup-mt", "supervisor", None)
    assert row.detail == {"cases": len(records), "format": "jsonl", "person": True, "countries": ["MT"]}

    # An erased person's fields are empty; the case's facts stay.
    with Session(stack.engine) as session:
        session.execute(delete(PersonRecord).where(PersonRecord.case_id == j.case_id))
        session.commit()
    _, body = await export(stack, supervisor, include="person")
    record = jsonl(body)[j.case_id]
    assert all(record[field] is None for field in PERSON_FIELDS)
    assert record["vic_TypeOfExploitation"] == ["ForcedLabour"]


async def test_csv_with_one_column_per_field(stack: Stack):
    j = Journey(stack, caseworker="cw-csv", countries=["CY"])
    await j.open(country="CY", first_name="=HYPERLINK(\"http://x.example\")")
    await j.assign("shelter", "shelter-es", expect=422)  # not in CY: nothing assigned
    supervisor = stack.auth("supervisor", "sup-cy", countries=["CY"])
    r, body = await export(stack, supervisor, format="csv")
    assert r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(body)))
    assert list(rows[0]) == CASE_FIELDS
    [row] = [r for r in rows if r["case_id"] == j.case_id]
    assert row["vic_TypeOfExploitation"] == "ForcedLabour" and row["con_Consent"] == "true"
    assert row["closed_at"] == "" and row["services"] == "" and row["owner_country"] == "CY"
    assert "HYPERLINK" not in body and "Maria" not in body

    _, body = await export(stack, supervisor, format="csv", include="person")
    [row] = [r for r in csv.DictReader(io.StringIO(body)) if r["case_id"] == j.case_id]
    assert row["prs_FirstName"] == "'=HYPERLINK(\"http://x.example\")"  # never a live formula in a spreadsheet
    assert row["prs_Citizenship"] == "RO"
    assert last_audit_row(stack).detail["format"] == "csv"

    _, empty = await export(stack, stack.auth("supervisor", "sup-nowhere", countries=["IS"]), format="csv")
    assert empty.strip() == ",".join(CASE_FIELDS)


async def test_only_supervisors_export(stack: Stack):
    j = Journey(stack)
    for headers in (j.cw, j.partner("shelter-es"), stack.auth("admin", "admin-1")):
        r = await stack.http.get("/v1/exports/htcds", headers=headers)
        assert r.status_code == 403 and r.headers["content-type"] == "application/problem+json"
    assert (await stack.http.get("/v1/exports/htcds")).status_code == 401
    for params in ({"format": "xml"}, {"include": "everything"}):
        r = await stack.http.get("/v1/exports/htcds", headers=j.supervisor, params=params)
        assert r.status_code == 422, params
