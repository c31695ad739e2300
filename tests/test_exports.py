"""The HTCDS export: the region's cases as JSON lines or CSV, every HTCDS field the system records
under its name with its picklist's values (checked against the standard's field table), filtered by
identification date and country, personal fields only on request and audited."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import UTC, date, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from sqlalchemy import delete, select
from sqlalchemy.exc import OperationalError
from sqlmodel import Session

import api.exports
from api.exports import CASE_FIELDS, CSV_FIELDS, PERSON_FIELDS, csv_row
from reintegration import audit
from reintegration.db import AuditRecord, PersonRecord, TaskRecord, TransferRecord
from reintegration.htcds import SERVICE_PLAN_TYPES, incoming_referral_date, outgoing_referral, service_plan
from tests.conftest import Stack
from tests.journey import Journey, case_body, day
from workflows.model import OrgType, Service

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
    task = await es.assign("shelter", "shelter-es")
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
    assert record["service_plan"] == [
        {"spl_Type": "SocialCare", "spl_PlannedEndDate": task["due_on"], "spl_ActualEndDate": None}
    ]
    assert record["cas_ReferredOrganisation"] is None  # never transferred
    assert record["cas_IncomingReferralDate"] == day(0)  # referred by the police, no date of its own
    assert record["prs_Gender"] == "Feminine" and record["age_band"] == "25-34"
    assert [key for key in record if key.startswith("prs_")] == ["prs_Gender"]  # an anonymous fact
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
    assert summary.detail == {
        "cases": len(records),
        "format": "jsonl",
        "person": True,
        "countries": ["MT"],
        "filters": {"from": None, "to": None, "country": []},
    }
    assert sorted(r.case_id for r in per_case) == sorted(records)
    for row in per_case:
        assert (row.action, row.actor_sub, row.actor_role, row.status) == ("person.export", "sup-mt", "supervisor", 200)
        assert row.detail == {"format": "jsonl", "found": True} and row.request_id == summary.request_id
    # So the case's own trail shows who exported the person's data.
    r = await stack.http.get(f"/v1/cases/{j.case_id}/audit", headers=supervisor)
    assert [e["action"] for e in r.json()["items"]] == ["case.open", "person.export"]

    # A person's data gone: its fields are empty; the case's facts stay.
    with Session(stack.engine) as session:
        session.execute(delete(PersonRecord).where(PersonRecord.case_id == j.case_id))
        session.commit()
    before = last_audit_row(stack).seq
    _, body = await export(stack, supervisor, include="person")
    record = jsonl(body)[j.case_id]
    assert all(record[field] is None for field in PERSON_FIELDS)
    assert record["vic_TypeOfExploitation"] == ["ForcedLabour"] and record["prs_Gender"] == "Feminine"
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
    assert list(rows[0]) == CSV_FIELDS
    [row] = [r for r in rows if r["case_id"] == j.case_id]
    assert row["vic_TypeOfExploitation"] == "ForcedLabour" and row["con_Consent"] == "true"
    assert row["closed_at"] == "" and row["services"] == "" and row["owner_country"] == "CY"
    assert row["spl_Type"] == row["spl_PlannedEndDate"] == row["spl_ActualEndDate"] == ""
    assert "HYPERLINK" not in body and "Maria" not in body

    _, body = await export(stack, supervisor, format="csv", include="person")
    [row] = [r for r in csv.DictReader(io.StringIO(body)) if r["case_id"] == j.case_id]
    assert row["prs_FirstName"] == '\'=HYPERLINK("http://x.example")'  # never a live formula in a spreadsheet
    assert row["prs_Citizenship"] == "RO"
    assert last_audit_row(stack).detail["format"] == "csv"

    _, empty = await export(stack, stack.auth("supervisor", "sup-nowhere", countries=["IS"]), format="csv")
    assert empty.strip() == ",".join(CSV_FIELDS)


async def test_only_supervisors_export(stack: Stack):
    j = Journey(stack)
    for headers in (j.cw, j.partner("shelter-es"), stack.auth("admin", "admin-1")):
        r = await stack.http.get("/v1/exports/htcds", headers=headers)
        assert r.status_code == 403 and r.headers["content-type"] == "application/problem+json"
    assert (await stack.http.get("/v1/exports/htcds")).status_code == 401
    for params in ({"format": "xml"}, {"include": "everything"}, {"country": "Spain"}, {"country": ["ES", "es"]}):
        r = await stack.http.get("/v1/exports/htcds", headers=j.supervisor, params=params)
        assert r.status_code == 422, params


async def test_a_bad_period_is_refused_clearly_in_the_callers_language(stack: Stack):
    supervisor = stack.auth("supervisor", "sup-period")
    before = last_audit_row(stack).seq
    for params, english, spanish in (
        (
            {"from": "2026-02-30"},
            "from is not a date: give it as YYYY-MM-DD, for example 2026-01-31",
            "from no es una fecha: indíquela como AAAA-MM-DD, por ejemplo 2026-01-31",
        ),
        (
            {"to": "20260131", "include": "person"},
            "to is not a date: give it as YYYY-MM-DD, for example 2026-01-31",
            "to no es una fecha: indíquela como AAAA-MM-DD, por ejemplo 2026-01-31",
        ),
        (
            {"from": day(1), "to": day(0), "include": "person"},
            "the period is empty: from is after to",
            "el periodo está vacío: from es posterior a to",
        ),
    ):
        r = await stack.http.get("/v1/exports/htcds", headers=supervisor, params=params)
        assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json", params
        assert r.json()["detail"] == english
        r = await stack.http.get("/v1/exports/htcds", headers={**supervisor, "Accept-Language": "es"}, params=params)
        assert r.status_code == 422 and r.json()["detail"] == spanish
    assert last_audit_row(stack).seq == before  # refused before anything was read
    # One day is a period.
    r = await stack.http.get("/v1/exports/htcds", headers=supervisor, params={"from": day(0), "to": day(0)})
    assert r.status_code == 200


# --- Against the standard ----------------------------------------------------------------------------

# HTCDS 2.0's field table (IOM, CC BY 4.0), a copy of ../shared/reference/htcds/fields.csv kept with
# the tests so that they run from the repository alone.
FIELDS_CSV = Path(__file__).parent / "reference" / "htcds-fields.csv"
SHARED_FIELDS_CSV = Path(__file__).parents[2] / "shared" / "reference" / "htcds" / "fields.csv"
HTCDS_PREFIXES = ("org_", "prs_", "vic_", "per_", "cas_", "cco_", "hte_", "spl_", "con_")
PICKLISTS = ("Picklist", "Multiselect Picklist")

# Every HTCDS field the system records, so every one the export must have (and no other).
RECORDED = {
    "cas_Status",
    "cas_ReasonForCaseClosure",
    "cas_CaseOwner",
    "cas_ReferringOrganisation",
    "cas_IncomingReferralDate",
    "cas_ReferredOrganisation",
    "cas_OutgoingReferralDate",
    "cas_ReasonForOutgoingReferral",
    "prs_Gender",
    "vic_TraffickingStatus",
    "vic_TypeOfExploitation",
    "vic_MethodOfRecruitment",
    "vic_RecruitmentWebsitesAndApps",
    "vic_MethodsOfControl",
    "vic_TypeOfSexExploitation",
    "vic_ForcedLabourIndustry",
    "vic_RelationshipToTrafficker",
    "con_Consent",
    "spl_Type",
    "spl_PlannedEndDate",
    "spl_ActualEndDate",
}
# And the person's, with ?include=person only.
RECORDED_PERSONAL = {
    "prs_FirstName",
    "prs_SecondName",
    "prs_Birthdate",
    "prs_Citizenship",
    "prs_PrimaryLanguage",
    "prs_IdentityNumber",
    "prs_MobilePhone",
}
ISO_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")

VICTIM = {
    "recruitment_methods": ["ThroughOnlineSocialNetworks", "ThroughFriendsOrSocialEvents"],
    "recruitment_websites": ["Facebook", "4Sale"],
    "control_methods": ["DebtBondage", "WithholdsDocuments"],
    "sex_exploitation_types": ["Prostitution"],
    "forced_labour_industry": "A_AgricultureForestryAndFishing",
    "relationship_to_trafficker": "Unaquainted",
    "referred_on": day(-4),
}


def standard() -> dict[str, dict[str, Any]]:
    """The standard's fields by name: type and picklist values."""
    with FIELDS_CSV.open(newline="") as f:
        return {
            row["field"]: {"type": row["type"], "values": set(row["values"].split())}
            for row in csv.DictReader(f)
            if row["field"]
        }


def conforms(name: str, values: list[Any], fields: dict[str, dict[str, Any]]) -> list[str]:
    """What is wrong with a column's values: a name with an HTCDS prefix must be the standard's, and
    its values of its type (a picklist's among its values; a date a day; a checkbox a yes or no)."""
    if not name.startswith(HTCDS_PREFIXES):
        return []
    if name not in fields:
        return [f"{name} is not an HTCDS field"]
    field = fields[name]
    problems = []
    for value in values:
        if value is None or value == "":
            continue
        if isinstance(value, list | dict):  # one value, or a Multiselect Picklist's values one by one
            problems.append(f"{name}: {value!r} is not one value")
            continue
        if field["type"] in PICKLISTS and field["values"] and value not in field["values"]:
            problems.append(f"{name}: {value!r} is not in its picklist")
        if field["type"] == "Date" and not (isinstance(value, str) and ISO_DAY.fullmatch(value)):
            problems.append(f"{name}: {value!r} is not a date")
        if field["type"] == "Checkbox" and value not in (True, False, "true", "false"):
            problems.append(f"{name}: {value!r} is not a checkbox's")
    return problems


def json_columns(record: dict[str, Any]) -> dict[str, list[Any]]:
    """A JSON record's fields and their values: a Multiselect Picklist's items one by one (any other
    list as one value, which ``conforms`` refuses), and the service plan's entries' fields."""
    fields = standard()
    columns: dict[str, list[Any]] = {}
    for key, value in record.items():
        if key == "service_plan":
            for entry in value:
                for name, v in entry.items():
                    columns.setdefault(name, []).append(v)
        multiselect = fields.get(key, {}).get("type") == "Multiselect Picklist"
        columns.setdefault(key, []).extend(value if multiselect and value is not None else [value])
    return columns


def csv_columns(row: dict[str, str]) -> dict[str, list[str]]:
    return {name: value.split(";") for name, value in row.items()}


def check_against_the_standard(columns: list[dict[str, list[Any]]], *, personal: bool = False) -> None:
    """Every record's HTCDS names and values are the standard's, and the export has exactly the
    HTCDS fields the system records (``columns``: each record's fields and their values)."""
    fields = standard()
    assert columns
    problems = sorted(
        {p for record in columns for name, values in record.items() for p in conforms(name, values, fields)}
    )
    assert not problems, problems
    # (The service plan's fields in JSON are those of its entries: the export needs one at least.)
    htcds = {name for record in columns for name in record if name.startswith(HTCDS_PREFIXES)}
    assert htcds == RECORDED | (RECORDED_PERSONAL if personal else set()), htcds ^ RECORDED
    # cas_ReferringOrganisation is a lookup; the system records the referrer's org_Type there.
    assert {v for r in columns for v in r.get("cas_ReferringOrganisation", []) if v} <= fields["org_Type"]["values"]


def test_the_reference_copy_is_the_standards():
    assert standard()["prs_Gender"]["values"] >= {"Feminine", "NonSpecifiedUnknown"}  # the control
    if SHARED_FIELDS_CSV.exists():  # in the project's workspace: the copy has not drifted
        assert FIELDS_CSV.read_bytes() == SHARED_FIELDS_CSV.read_bytes()


def test_the_checks_catch_what_is_not_the_standards():
    fields = standard()
    assert conforms("vic_MethodsOfControl", ["DebtBondage", "Coercion"], fields) == [
        "vic_MethodsOfControl: 'Coercion' is not in its picklist"
    ]
    assert conforms("cas_Reason", ["x"], fields) == ["cas_Reason is not an HTCDS field"]
    assert conforms("spl_PlannedEndDate", ["2026-1-5"], fields) == ["spl_PlannedEndDate: '2026-1-5' is not a date"]
    assert conforms("con_Consent", ["yes"], fields) == ["con_Consent: 'yes' is not a checkbox's"]
    assert conforms("prs_Gender", [["Feminine"]], fields)  # a list where one value goes
    assert json_columns({"prs_Gender": ["Feminine"], "vic_MethodsOfControl": ["DebtBondage", "Other"]}) == {
        "prs_Gender": [["Feminine"]],
        "vic_MethodsOfControl": ["DebtBondage", "Other"],
    }
    assert conforms("case_status", ["anything"], fields) == []  # the project's own name
    with pytest.raises(AssertionError):  # one field too few
        check_against_the_standard([{name: [] for name in RECORDED - {"spl_Type"}}])


def test_every_service_has_its_place_in_the_service_plan():
    spl_types = standard()["spl_Type"]["values"]
    assert set(SERVICE_PLAN_TYPES) == set(Service)
    assert {t for t in SERVICE_PLAN_TYPES.values() if t} <= spl_types
    assert {s.value: t for s, t in SERVICE_PLAN_TYPES.items()} == {
        "medical": "Health",
        "psychosocial": "Health",
        "legal": "Legal",
        "legal-assistance": "Legal",
        "job-orientation": "Livelihood",
        "education": "Education",
        "financial": "Financial",
        "housing": "SocialCare",
        "family": "SocialCare",
        "shelter": "SocialCare",
        "security-follow-up": "SocialCare",
        "police-protection": None,
        "origin-assessment": None,
        "travel-documents": None,
        "family-assessment": None,
        "reception": None,
    }


def a_task(service: str, status: str, outcome: str | None = None, completed: datetime | None = None) -> TaskRecord:
    now = datetime(2026, 11, 20, 23, 30)  # as SQLite gives it back: no zone, UTC
    return TaskRecord(
        task_id=f"t-{service}-{status}",
        case_id="c",
        case_reference="ES-2026-1",
        owner_country="ES",
        service=service,
        agency_id="a",
        status=status,
        stage="protection",
        assigned_at=now,
        accept_by=now,
        due_on=date(2026, 12, 4),
        completed_at=completed,
        outcome=outcome,
    )


def test_the_service_plan_has_an_entry_per_service_planned_and_its_end_when_done():
    tasks = [
        a_task("shelter", "completed", "done", datetime(2026, 11, 30, 23, 30)),
        a_task("reception", "completed", "done", datetime(2026, 11, 30)),  # not in the plan
        a_task("medical", "accepted"),
        a_task("legal", "completed", "unable", datetime(2026, 11, 29)),
        a_task("education", "cancelled"),
        a_task("financial", "declined"),
    ]
    plan = service_plan(tasks)
    assert plan == [
        {"spl_Type": "SocialCare", "spl_PlannedEndDate": "2026-12-04", "spl_ActualEndDate": "2026-11-30"},
        {"spl_Type": "Health", "spl_PlannedEndDate": "2026-12-04", "spl_ActualEndDate": None},
        {"spl_Type": "Legal", "spl_PlannedEndDate": "2026-12-04", "spl_ActualEndDate": None},
        {"spl_Type": "Financial", "spl_PlannedEndDate": "2026-12-04", "spl_ActualEndDate": None},
    ]
    # In CSV, a column per field, the n-th value of each one service.
    row = csv_row({"case_id": "c", "service_plan": plan})
    assert row == {
        "case_id": "c",
        "spl_Type": "SocialCare;Health;Legal;Financial",
        "spl_PlannedEndDate": "2026-12-04;2026-12-04;2026-12-04;2026-12-04",
        "spl_ActualEndDate": "2026-11-30;;;",
    }
    assert csv_row({"service_plan": []}) == {"spl_Type": "", "spl_PlannedEndDate": "", "spl_ActualEndDate": ""}


def test_the_referrals_dates_and_reasons():
    assert incoming_referral_date(date(2026, 11, 19), "NGO", "2026-11-20") == "2026-11-19"
    assert incoming_referral_date(None, "NGO", "2026-11-20") == "2026-11-20"  # the referral reached the office
    assert incoming_referral_date(None, None, "2026-11-20") is None  # not referred
    assert incoming_referral_date(date(2026, 11, 19), None, "2026-11-20") == "2026-11-19"
    assert outgoing_referral(None) == dict.fromkeys(
        ("cas_ReferredOrganisation", "cas_OutgoingReferralDate", "cas_ReasonForOutgoingReferral")
    )
    transfer = TransferRecord(
        transfer_id="t",
        case_id="c",
        case_reference="ES-2026-1",
        from_country="ES",
        to_country="PT",
        status="accepted",
        requested_by="cw",
        requested_at=datetime(2026, 11, 20, 23, 30, tzinfo=UTC),
    )
    assert outgoing_referral(transfer) == {
        "cas_ReferredOrganisation": "PT",
        "cas_OutgoingReferralDate": "2026-11-20",
        "cas_ReasonForOutgoingReferral": "MigrationOrChangeOfLocation",
    }
    assert {"MigrationOrChangeOfLocation"} <= standard()["cas_ReasonForOutgoingReferral"]["values"]
    assert {o.value for o in OrgType} == standard()["org_Type"]["values"]


async def open_case(j: Journey, *, identified: str, victim: dict[str, Any] | None = None, **person: Any) -> None:
    """Open a case identified on that day, with what was learnt of the exploitation if given."""
    body = case_body(**person)
    body["identification"]["identified_on"] = identified
    body["consent"]["given_on"] = identified
    if victim is not None:
        body["victim"] = victim
    r = await j.http.post("/v1/cases", json=body, headers=j.cw)
    assert r.status_code == 201, r.text
    j.case, j.case_id = r.json(), r.json()["case_id"]


async def test_every_recorded_htcds_field_with_the_standards_values_filtered_by_period_and_country(stack: Stack):
    # Identified in the period, with the recruitment and control recorded at opening; a service done,
    # one under way, one that is no service-plan entry.
    assisted = Journey(stack, caseworker="cw-es-htcds")
    await open_case(assisted, identified=day(-2), victim=VICTIM)
    await assisted.step("risk-assessment", {"level": "medium", "assessed_on": day(-1)})
    done = await assisted.deliver("shelter", "shelter-es")
    medical = await assisted.assign("medical", "clinic-es")
    await assisted.assign("police-protection", "shelter-es")
    # Identified before the period.
    earlier = Journey(stack, caseworker="cw-es-htcds")
    await open_case(earlier, identified=day(-40))
    # Moved to Portugal's office: an outgoing referral.
    moved = Journey(stack, caseworker="cw-es-htcds")
    await open_case(moved, identified=day(-1), victim={"control_methods": ["PhysicalThreats"]})
    await moved.assign("shelter", "shelter-es")  # moves with the case
    stack.token("caseworker", "cw-pt-htcds", countries=["PT"])
    r = await stack.http.post(
        f"/v1/cases/{moved.case_id}/transfers",
        json={"to_country": "PT", "to_caseworker": "cw-pt-htcds", "reason": "moved to Porto"},
        headers=moved.cw,
    )
    assert r.status_code == 201, r.text
    offer = r.json()
    pt = stack.auth("caseworker", "cw-pt-htcds", countries=["PT"])
    r = await stack.http.post(f"/v1/transfers/{offer['transfer_id']}/accept", json={}, headers=pt)
    assert r.status_code == 200, r.text
    offered_on = datetime.fromisoformat(offer["requested_at"]).astimezone(UTC).date().isoformat()
    # Erased: consent withdrawn (which closes the case), then the person's data erased.
    erased = Journey(stack, caseworker="cw-es-htcds")
    await open_case(erased, identified=day(-2), victim=VICTIM, gender="Masculine")
    await erased.step("withdraw-consent", {"withdrawn_on": day(0)})
    r = await stack.http.delete(f"/v1/cases/{erased.case_id}/personal-data", headers=stack.auth("admin", "admin-1"))
    assert r.status_code == 200, r.text

    es = stack.auth("supervisor", "sup-es-htcds", countries=["ES"])
    period = {"from": day(-10), "to": day(0)}
    _, body = await export(stack, es, **period)
    records = jsonl(body)
    assert {assisted.case_id, erased.case_id} <= set(records)
    assert earlier.case_id not in records and moved.case_id not in records  # out of the period; not ES's now
    assert all(period["from"] <= r["identified_on"] <= period["to"] for r in records.values())
    check_against_the_standard([json_columns(r) for r in records.values()])

    record = records[assisted.case_id]
    assert (record["vic_MethodOfRecruitment"], record["vic_RecruitmentWebsitesAndApps"]) == (
        ["ThroughOnlineSocialNetworks", "ThroughFriendsOrSocialEvents"],  # in the picklist's order
        ["Facebook", "4Sale"],
    )
    assert record["vic_MethodsOfControl"] == ["DebtBondage", "WithholdsDocuments"]
    assert record["vic_TypeOfSexExploitation"] == ["Prostitution"]
    assert record["vic_ForcedLabourIndustry"] == "A_AgricultureForestryAndFishing"
    assert record["vic_RelationshipToTrafficker"] == "Unaquainted"
    assert record["cas_IncomingReferralDate"] == day(-4) and record["cas_ReferringOrganisation"] == "LawEnforcement"
    assert record["prs_Gender"] == "Feminine" and record["age_band"] == "25-34"
    done = (await stack.http.get(f"/v1/tasks/{done['task_id']}", headers=assisted.cw)).json()
    completed_on = datetime.fromisoformat(done["completed_at"]).astimezone(UTC).date().isoformat()
    assert record["service_plan"] == [
        {"spl_Type": "SocialCare", "spl_PlannedEndDate": done["due_on"], "spl_ActualEndDate": completed_on},
        {
            "spl_Type": "Health",
            "spl_PlannedEndDate": medical["due_on"],
            "spl_ActualEndDate": None,
        },
    ]
    assert [s["service"] for s in record["services"]] == ["shelter", "medical", "police-protection"]
    assert record["cas_ReferredOrganisation"] is record["cas_OutgoingReferralDate"] is None

    # The erased person's sex and the exploitation's facts stay: anonymous, outside the vault.
    gone = records[erased.case_id]
    assert (gone["prs_Gender"], gone["cas_Status"], gone["cas_ReasonForCaseClosure"]) == (
        "Masculine",
        "Closed",
        "withdrew",
    )
    assert gone["vic_MethodsOfControl"] == ["DebtBondage", "WithholdsDocuments"] and gone["con_Consent"] is False
    _, body = await export(stack, es, include="person", **period)
    personal = jsonl(body)
    assert all(personal[erased.case_id][field] is None for field in PERSON_FIELDS)
    assert personal[erased.case_id]["prs_Gender"] == "Masculine"
    assert personal[erased.case_id]["vic_ForcedLabourIndustry"] == "A_AgricultureForestryAndFishing"
    assert personal[assisted.case_id]["prs_FirstName"] == "Maria"
    check_against_the_standard([json_columns(r) for r in personal.values()], personal=True)
    summary = [r for r in audit_rows_after(stack, 0) if r.action == "export.htcds"][-1]
    assert summary.detail["filters"] == {"from": day(-10), "to": day(0), "country": []}
    assert summary.detail["cases"] == len(personal)

    # The same in CSV: a column per field, the service plan's lists in step.
    _, body = await export(stack, es, format="csv", **period)
    rows = {r["case_id"]: r for r in csv.DictReader(io.StringIO(body))}
    assert set(rows) == set(records)
    check_against_the_standard([csv_columns(r) for r in rows.values()])
    row = rows[assisted.case_id]
    assert row["spl_Type"] == "SocialCare;Health"
    assert row["spl_ActualEndDate"] == f"{completed_on};"
    assert row["vic_MethodsOfControl"] == "DebtBondage;WithholdsDocuments" and row["prs_Gender"] == "Feminine"

    # By country: the case moved is Portugal's now, with its outgoing referral.
    everywhere = stack.auth("supervisor", "sup-1")
    _, body = await export(stack, everywhere, country="PT", **period)
    records = jsonl(body)
    assert moved.case_id in records and assisted.case_id not in records
    assert {r["owner_country"] for r in records.values()} == {"PT"}
    check_against_the_standard([json_columns(r) for r in records.values()])
    assert {k: v for k, v in records[moved.case_id].items() if k.startswith("cas_Referr") or "Outgoing" in k} == {
        "cas_ReferringOrganisation": "LawEnforcement",
        "cas_ReferredOrganisation": "PT",
        "cas_OutgoingReferralDate": offered_on,
        "cas_ReasonForOutgoingReferral": "MigrationOrChangeOfLocation",
    }
    r = await stack.http.get("/v1/exports/htcds", headers=everywhere, params={"country": ["ES", "PT"], **period})
    assert {assisted.case_id, moved.case_id} <= set(jsonl(r.text))
    _, body = await export(stack, everywhere, to=day(-30))
    assert earlier.case_id in jsonl(body) and assisted.case_id not in jsonl(body)
    # A country outside the region: nothing, as the supervision's figures.
    _, body = await export(stack, es, country="PT")
    assert body == ""
    r = await stack.http.get("/v1/exports/htcds", headers=es, params={"country": ["PT", "ES"], **period})
    inside = jsonl(r.text)
    assert assisted.case_id in inside and {rec["owner_country"] for rec in inside.values()} == {"ES"}
