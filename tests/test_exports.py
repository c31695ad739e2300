"""The HTCDS export: the region's cases as JSON lines or CSV, personal fields only on request and audited."""

from __future__ import annotations

import csv
import io
import json
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from sqlalchemy import delete, select
from sqlalchemy.exc import OperationalError
from sqlmodel import Session

import api.exports
from api.exports import CASE_FIELDS, PERSON_FIELDS
from reintegration import audit
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


def audit_rows_after(stack: Stack, seq: int) -> list[AuditRecord]:
    with Session(stack.engine) as session:
        return list(
            session.execute(select(AuditRecord).where(AuditRecord.seq > seq).order_by(AuditRecord.seq)).scalars()
        )


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
    before = last_audit_row(stack).seq
    _, body = await export(stack, supervisor, include="person")
    records = jsonl(body)
    record = records[j.case_id]
    assert list(record) == CASE_FIELDS + list(PERSON_FIELDS)
    assert record["prs_FirstName"] == "Maria" and record["prs_SecondName"] == "Ionescu"
    assert record["prs_Birthdate"] == "1998-03-14" and record["prs_Citizenship"] == ["RO"]
    assert record["prs_Gender"] == "Feminine" and record["prs_PrimaryLanguage"] == "ro"
    # A summary row, then a row per exported case, all under the export's request id.
    summary, *per_case = audit_rows_after(stack, before)
    assert (summary.action, summary.actor_sub, summary.actor_role, summary.case_id) == (
        "export.htcds",
        "sup-mt",
        "supervisor",
        None,
    )
    assert summary.detail == {"cases": len(records), "format": "jsonl", "person": True, "countries": ["MT"]}
    assert sorted(r.case_id for r in per_case) == sorted(records)
    for row in per_case:
        assert (row.action, row.actor_sub, row.actor_role, row.status) == ("person.export", "sup-mt", "supervisor", 200)
        assert row.detail == {"format": "jsonl", "found": True} and row.request_id == summary.request_id
    # So the case's own trail shows who exported the person's data.
    r = await stack.http.get(f"/v1/cases/{j.case_id}/audit", headers=supervisor)
    assert [e["action"] for e in r.json()["items"]] == ["case.open", "person.export"]

    # An erased person's fields are empty; the case's facts stay.
    with Session(stack.engine) as session:
        session.execute(delete(PersonRecord).where(PersonRecord.case_id == j.case_id))
        session.commit()
    before = last_audit_row(stack).seq
    _, body = await export(stack, supervisor, include="person")
    record = jsonl(body)[j.case_id]
    assert all(record[field] is None for field in PERSON_FIELDS)
    assert record["vic_TypeOfExploitation"] == ["ForcedLabour"]
    [row] = [r for r in audit_rows_after(stack, before) if r.case_id == j.case_id]
    assert row.action == "person.export" and row.detail == {"format": "jsonl", "found": False}


async def test_each_batch_is_audited_before_it_is_streamed(stack: Stack, monkeypatch: pytest.MonkeyPatch):
    journeys = [Journey(stack, caseworker="cw-lu-export", countries=["LU"]) for _ in range(3)]
    for j in journeys:
        await j.open(country="LU")
    supervisor = stack.auth("supervisor", "sup-lu", countries=["LU"])
    monkeypatch.setattr(api.exports, "BATCH", 1)  # a batch per case
    before = last_audit_row(stack).seq
    seen: list[str] = []
    async with stack.http.stream("GET", "/v1/exports/htcds", headers=supervisor, params={"include": "person"}) as r:
        assert r.status_code == 200
        async for line in r.aiter_lines():
            case_id = json.loads(line)["case_id"]
            # By the time a record arrives, its case's row is in the trail.
            assert case_id in {row.case_id for row in audit_rows_after(stack, before)}
            seen.append(case_id)
    assert seen == [j.case_id for j in journeys]
    rows = audit_rows_after(stack, before)
    assert [r.action for r in rows] == ["export.htcds"] + ["person.export"] * 3
    assert [r.case_id for r in rows[1:]] == seen
    assert audit.verify(stack.engine, stack.keyring).ok

    # A batch whose rows cannot be written is not sent: the stream stops there, unfinished.
    calls = []

    def append_until_the_second_batch(*args: Any, **kw: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:
            raise OperationalError("INSERT INTO audit_trail", {}, Exception("the database went away"))
        return audit.append(*args, **kw)

    monkeypatch.setattr(api.exports, "audit", SimpleNamespace(Entry=audit.Entry, append=append_until_the_second_batch))
    before = last_audit_row(stack).seq
    received: list[str] = []
    with pytest.raises(httpx.RemoteProtocolError):
        async with stack.http.stream("GET", "/v1/exports/htcds", headers=supervisor, params={"include": "person"}) as r:
            async for line in r.aiter_lines():
                received.append(line)
    assert [json.loads(line)["case_id"] for line in received] == seen[:1]
    assert [r.case_id for r in audit_rows_after(stack, before) if r.case_id] == seen[:1]


async def test_csv_with_one_column_per_field(stack: Stack):
    j = Journey(stack, caseworker="cw-csv", countries=["CY"])
    await j.open(country="CY", first_name='=HYPERLINK("http://x.example")')
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
    assert row["prs_FirstName"] == '\'=HYPERLINK("http://x.example")'  # never a live formula in a spreadsheet
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
