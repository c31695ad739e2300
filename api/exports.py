"""Exports: the cases of a supervisor's region as HTCDS records, streamed as JSON lines or CSV.

Every HTCDS 2.0 field the system records is exported under its name, with its picklist's values
(``cas_``, ``vic_``, ``con_``, ``spl_``, and ``prs_Gender``, an anonymous case fact that survives an
erasure); the project's own facts under snake_case names without an HTCDS prefix (stage, pathway,
dates, countries, services). Where the project's record needs translating (the service plan, the
referral dates) the rules are in ``reintegration/htcds.py``. Two choices:

- ``cas_ReferringOrganisation`` is, in HTCDS, a lookup to an organisation; the system records only
  the referrer's kind (its HTCDS ``org_Type``), which is exported there. It is not also exported as a
  column ``org_Type``: in a flat case record that name would not say whose type it is.
- The service plan is a list: in JSON lines ``service_plan``, a list of objects (``spl_Type``,
  ``spl_PlannedEndDate``, ``spl_ActualEndDate``); in CSV one column per ``spl_`` field, the values
  joined with ``;`` in the same order in each, so that the n-th value of each column is one service
  (an empty one is an empty place: ``;2027-01-10``).

Filters: ``from`` and ``to`` (dates, inclusive) on the identification date, and ``country`` (one or
more) within the caller's region. The person's other ``prs_`` fields only with ``?include=person``,
and that export is audited: a summary row (``export.htcds``, how many cases, the filters) before the
response starts, and a ``person.export`` row per case, appended a batch at a time before that batch
is streamed. If a batch's rows cannot be written the stream stops there, unfinished, without it.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from typing import Annotated, Any, TypeVar

import structlog
from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse
from sqlalchemy import func
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, col, select
from sqlmodel.sql.expression import SelectOfScalar

from api.audit import AuditorDep, with_client_request_id
from api.cases import htcds_status
from api.deps import EngineDep, SessionDep, keyring_of, require
from api.errors import Unprocessable, responses
from api.languages import N_
from api.supervision import region
from reintegration import audit, htcds
from reintegration.db import CaseFactsRecord, CaseRecord, TaskRecord, TransferRecord, aware
from reintegration.persons import load_person
from reintegration.tokens import Claims
from workflows.model import CountryCode, Role

log = structlog.get_logger("api")

router = APIRouter(prefix="/v1/exports", tags=["exports"])

BATCH = 200

T = TypeVar("T")

# The service plan's fields: one list of objects in JSON, one column each in CSV.
SERVICE_PLAN = "service_plan"
SERVICE_PLAN_FIELDS = ["spl_Type", "spl_PlannedEndDate", "spl_ActualEndDate"]

# A record's keys, in order (JSON lines); the CSV's columns are the same with the service plan's.
CASE_FIELDS = [
    "case_id",
    "reference",
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
    SERVICE_PLAN,
    "consent_data_sharing",
    "consent_withdrawn_on",
    "age_band",
    "stage",
    "status",
    "pathway",
    "is_minor",
    "owner_country",
    "origin_country",
    "destination_country",
    "identified_on",
    "opened_at",
    "closed_at",
    "risk_level",
    "departed_on",
    "arrived_on",
    "permit_valid_until",
    "monitoring_visits",
    "sustainability_score",
    "services",
]
CSV_FIELDS = [c for field in CASE_FIELDS for c in (SERVICE_PLAN_FIELDS if field == SERVICE_PLAN else [field])]
# HTCDS person field: the person vault's key. (prs_Gender is a case fact: in every record.)
PERSON_FIELDS = {
    "prs_FirstName": "first_name",
    "prs_SecondName": "second_name",
    "prs_Birthdate": "birthdate",
    "prs_Citizenship": "citizenship",
    "prs_PrimaryLanguage": "primary_language",
    "prs_IdentityNumber": "identity_number",
    "prs_MobilePhone": "mobile_phone",
}


@dataclass(frozen=True)
class Selection:
    """Which cases an export holds: those of these countries (``None``: every one), identified from
    ``identified_from`` to ``identified_to``, both days included (either may be open)."""

    countries: list[str] | None
    identified_from: date | None = None
    identified_to: date | None = None

    def applied(self, query: SelectOfScalar[T]) -> SelectOfScalar[T]:
        if self.countries is not None:
            query = query.where(col(CaseRecord.owner_country).in_(self.countries))
        # ISO dates compare as text, in SQLite's JSON and PostgreSQL's alike.
        identified = col(CaseRecord.facts)["identified_on"].as_string()
        if self.identified_from is not None:
            query = query.where(identified >= self.identified_from.isoformat())
        if self.identified_to is not None:
            query = query.where(identified <= self.identified_to.isoformat())
        return query


def htcds_record(
    case: CaseRecord,
    tasks: list[TaskRecord],
    kept: CaseFactsRecord | None = None,
    transfer: TransferRecord | None = None,
) -> dict[str, Any]:
    """The case's anonymous facts as an HTCDS record (no personal data): its row, its tasks, its
    anonymous facts (``kept``; none for a case not yet given them: those fields empty) and its latest
    accepted transfer to another country's office."""
    facts = case.facts or {}
    consent = facts.get("consent") or {}
    visits = facts.get("monitoring_visits") or []
    return {
        "case_id": case.case_id,
        "reference": case.reference,
        "cas_Status": htcds_status(case),
        "cas_ReasonForCaseClosure": case.closure_reason,
        "cas_CaseOwner": case.owner_caseworker,
        "cas_ReferringOrganisation": facts.get("referred_by"),
        "cas_IncomingReferralDate": htcds.incoming_referral_date(
            kept.referred_on if kept else None, facts.get("referred_by"), facts.get("identified_on")
        ),
        **htcds.outgoing_referral(transfer),
        "prs_Gender": kept.sex if kept else None,
        "vic_TraffickingStatus": facts.get("trafficking_status"),
        "vic_TypeOfExploitation": list(facts.get("exploitation_types") or []),
        "vic_MethodOfRecruitment": list(kept.recruitment_methods) if kept else [],
        "vic_RecruitmentWebsitesAndApps": list(kept.recruitment_websites) if kept else [],
        "vic_MethodsOfControl": list(kept.control_methods) if kept else [],
        "vic_TypeOfSexExploitation": list(kept.sex_exploitation_types) if kept else [],
        "vic_ForcedLabourIndustry": kept.forced_labour_industry if kept else None,
        "vic_RelationshipToTrafficker": kept.relationship_to_trafficker if kept else None,
        "con_Consent": bool(consent.get("assistance")) and not facts.get("consent_withdrawn_on") if consent else None,
        SERVICE_PLAN: htcds.service_plan(tasks),
        "consent_data_sharing": consent.get("data_sharing") if consent else None,
        "consent_withdrawn_on": facts.get("consent_withdrawn_on"),
        "age_band": kept.age_band if kept else None,
        "stage": case.stage,
        "status": "stalled" if case.stalled else case.status,
        "pathway": case.pathway,
        "is_minor": case.is_minor,
        "owner_country": case.owner_country,
        "origin_country": case.origin_country,
        "destination_country": case.destination_country,
        "identified_on": facts.get("identified_on"),
        "opened_at": aware(case.opened_at).isoformat(),
        "closed_at": aware(case.closed_at).isoformat() if case.closed_at else None,
        "risk_level": facts.get("risk_level"),
        "departed_on": facts.get("departed_on"),
        "arrived_on": facts.get("arrived_on"),
        "permit_valid_until": facts.get("permit_valid_until"),
        "monitoring_visits": len(visits),
        "sustainability_score": visits[-1].get("weighted_score") if visits else None,
        "services": [{"service": t.service, "agency_id": t.agency_id, "status": t.status} for t in tasks],
    }


def person_fields(person: dict[str, Any] | None) -> dict[str, Any]:
    """The person's HTCDS ``prs_`` fields; all empty once the person's data was erased."""
    person = person or {}
    return {name: person.get(key) for name, key in PERSON_FIELDS.items()}


# Called with the session and each batch's (case id, whether the person's data was there) before the
# batch is given out: where reads of personal data are audited.
BeforeBatch = Callable[[Session, list[tuple[str, bool]]], None]


def records(
    session: Session, selection: Selection, *, person: bool, before_batch: BeforeBatch | None = None
) -> Iterator[dict[str, Any]]:
    """The records of the selected cases, oldest first, a batch at a time."""
    after: tuple[datetime, str] | None = None
    while True:
        query = selection.applied(select(CaseRecord))
        if after is not None:
            query = query.where(
                (col(CaseRecord.opened_at) > after[0])
                | ((col(CaseRecord.opened_at) == after[0]) & (col(CaseRecord.case_id) > after[1]))
            )
        cases = session.exec(query.order_by(col(CaseRecord.opened_at), col(CaseRecord.case_id)).limit(BATCH)).all()
        if not cases:
            return
        ids = [c.case_id for c in cases]
        tasks: dict[str, list[TaskRecord]] = defaultdict(list)
        for task in session.exec(
            select(TaskRecord)
            .where(col(TaskRecord.case_id).in_(ids))
            .order_by(col(TaskRecord.assigned_at), col(TaskRecord.task_id))
        ).all():
            tasks[task.case_id].append(task)
        kept = {
            f.case_id: f for f in session.exec(select(CaseFactsRecord).where(col(CaseFactsRecord.case_id).in_(ids)))
        }
        transfers: dict[str, TransferRecord] = {}
        for transfer in session.exec(
            select(TransferRecord)
            .where(col(TransferRecord.case_id).in_(ids), col(TransferRecord.status) == "accepted")
            .order_by(col(TransferRecord.requested_at), col(TransferRecord.transfer_id))
        ).all():
            transfers[transfer.case_id] = transfer  # the latest wins
        batch: list[dict[str, Any]] = []
        read: list[tuple[str, bool]] = []
        for case in cases:
            record = htcds_record(case, tasks[case.case_id], kept.get(case.case_id), transfers.get(case.case_id))
            if person:
                stored = load_person(session, keyring_of(session), case_id=case.case_id)
                record |= person_fields(stored)
                read.append((case.case_id, stored is not None))
            batch.append(record)
        after = (cases[-1].opened_at, cases[-1].case_id)
        if before_batch is not None:
            before_batch(session, read)
        session.expunge_all()  # keep memory flat over a large region
        yield from batch


def csv_row(record: dict[str, Any]) -> dict[str, Any]:
    """A record as a CSV row: the service plan's entries spread over one column per ``spl_`` field,
    each a ``;``-joined list in the entries' order (an empty value an empty place)."""
    row = {k: v for k, v in record.items() if k != SERVICE_PLAN}
    for field in SERVICE_PLAN_FIELDS:
        row[field] = ";".join(entry[field] or "" for entry in record.get(SERVICE_PLAN) or [])
    return row


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ";".join(
            ":".join(str(v) for v in item.values()) if isinstance(item, dict) else str(item) for item in value
        )
    text = str(value)
    # A spreadsheet would run a cell that starts like a formula (names are free text).
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def as_jsonl(rows: Iterator[dict[str, Any]]) -> Iterator[str]:
    for row in rows:
        yield json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n"


def as_csv(rows: Iterator[dict[str, Any]], columns: list[str]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns)
    for record in rows:
        row = csv_row(record)
        writer.writerow([_cell(row.get(c)) for c in columns])
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    yield buffer.getvalue()  # the header alone when there is no case


ISO_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")


def period_day(value: str | None, parameter: str) -> date | None:
    """A ``from`` or ``to`` parameter as a date; a clear 422 if it is not one (``YYYY-MM-DD``)."""
    if value is None:
        return None
    try:
        if ISO_DATE.fullmatch(value):
            return date.fromisoformat(value)
    except ValueError:
        pass  # the form of a date, but no such day (2026-02-30)
    raise Unprocessable(
        N_("{parameter} is not a date: give it as YYYY-MM-DD, for example 2026-01-31"), params={"parameter": parameter}
    )


def selection_of(
    user: Claims, countries: list[str] | None, identified_from: str | None, identified_to: str | None
) -> Selection:
    """What the caller asked for, within their region: a country outside it selects nothing (as the
    supervision's figures); no country asked, the whole region. A 422 for a bad period."""
    start, end = period_day(identified_from, "from"), period_day(identified_to, "to")
    if start is not None and end is not None and start > end:
        raise Unprocessable(N_("the period is empty: from is after to"))
    if countries:
        scope: list[str] | None = sorted({c for asked in countries for c in region(user, asked) or []})
    else:
        scope = user.country_scope
    return Selection(scope, start, end)


EXAMPLE: dict[str, Any] = {
    "case_id": "0b9c1f7e-2d1a-4c57-9a43-5f0e6c1d2a9b",
    "reference": "ES-2026-4F1A2B",
    "cas_Status": "Active",
    "cas_ReasonForCaseClosure": None,
    "cas_CaseOwner": "cw-es-1",
    "cas_ReferringOrganisation": "LawEnforcement",
    "cas_IncomingReferralDate": "2026-11-19",
    "cas_ReferredOrganisation": None,
    "cas_OutgoingReferralDate": None,
    "cas_ReasonForOutgoingReferral": None,
    "prs_Gender": "Feminine",
    "vic_TraffickingStatus": "PossibleVictimOfTrafficking",
    "vic_TypeOfExploitation": ["ForcedLabour"],
    "vic_MethodOfRecruitment": ["ThroughFriendsOrSocialEvents"],
    "vic_RecruitmentWebsitesAndApps": [],
    "vic_MethodsOfControl": ["DebtBondage", "WithholdsDocuments"],
    "vic_TypeOfSexExploitation": [],
    "vic_ForcedLabourIndustry": "A_AgricultureForestryAndFishing",
    "vic_RelationshipToTrafficker": None,
    "con_Consent": True,
    "service_plan": [
        {"spl_Type": "SocialCare", "spl_PlannedEndDate": "2026-12-04", "spl_ActualEndDate": "2026-11-30"},
        {"spl_Type": "Health", "spl_PlannedEndDate": "2026-12-11", "spl_ActualEndDate": None},
    ],
    "consent_data_sharing": True,
    "consent_withdrawn_on": None,
    "age_band": "25-34",
    "stage": "protection",
    "status": "active",
    "pathway": None,
    "is_minor": False,
    "owner_country": "ES",
    "origin_country": "RO",
    "destination_country": "ES",
    "identified_on": "2026-11-20",
    "opened_at": "2026-11-20T10:02:11.120000Z",
    "closed_at": None,
    "risk_level": "medium",
    "departed_on": None,
    "arrived_on": None,
    "permit_valid_until": None,
    "monitoring_visits": 0,
    "sustainability_score": None,
    "services": [
        {"service": "shelter", "agency_id": "shelter-es", "status": "completed"},
        {"service": "medical", "agency_id": "clinic-es", "status": "accepted"},
    ],
}
CSV_EXAMPLE = "".join(as_csv(iter([EXAMPLE]), CSV_FIELDS))


@router.get(
    "/htcds",
    response_class=StreamingResponse,
    summary="The cases in scope as HTCDS records",
    description=(
        "Every case of the caller's region, oldest first, one HTCDS record each: JSON lines (default) or "
        "CSV (lists joined with `;`, a service as `service:agency:status`; the service plan as one column "
        "per `spl_` field, the n-th value of each one service). `from` and `to` (YYYY-MM-DD, both days "
        "included) keep the cases identified in that period; `country` (repeatable) those of these "
        "countries of the region (one outside it: none). The person's `prs_` fields (but `prs_Gender`, "
        "an anonymous fact in every record) only with `?include=person`, which is audited (a summary row "
        "with the filters, then a `person.export` row per case, written before its record is sent); an "
        "erased person's are empty."
    ),
    responses={
        200: {
            "description": "The records, streamed",
            "content": {
                "application/x-ndjson": {"schema": {"type": "string"}, "example": json.dumps(EXAMPLE) + "\n"},
                "text/csv": {"schema": {"type": "string"}, "example": CSV_EXAMPLE},
            },
        },
        **responses(401, 403, 422, 503),
    },
)
def export_htcds(
    user: Annotated[Claims, require(Role.supervisor)],
    engine: EngineDep,
    session: SessionDep,
    auditor: AuditorDep,
    format_: Annotated[str, Query(alias="format", pattern="^(jsonl|csv)$", description="`jsonl` or `csv`")] = "jsonl",
    include: Annotated[str | None, Query(pattern="^person$", description="`person` to add the person's data")] = None,
    identified_from: Annotated[
        str | None, Query(alias="from", description="The first identification date, YYYY-MM-DD")
    ] = None,
    identified_to: Annotated[
        str | None, Query(alias="to", description="The last identification date, YYYY-MM-DD")
    ] = None,
    country: Annotated[
        list[CountryCode] | None, Query(max_length=300, description="Only the cases of these countries (repeatable)")
    ] = None,
) -> StreamingResponse:
    selection = selection_of(user, country, identified_from, identified_to)
    person = include == "person"
    if person:  # audited before the first record leaves; no row, no export
        cases = session.exec(selection.applied(select(func.count()).select_from(CaseRecord))).one()
        filters = {
            "from": selection.identified_from.isoformat() if selection.identified_from else None,
            "to": selection.identified_to.isoformat() if selection.identified_to else None,
            "country": sorted(set(country or [])),
        }
        auditor.record(
            "export.htcds",
            detail={"cases": cases, "format": format_, "person": True, "countries": user.countries, "filters": filters},
        )
    info = dict(session.info)  # the API session's keyring, for the person vault and the audit trail
    request_id = auditor.request_id

    def audit_batch(own: Session, read: list[tuple[str, bool]]) -> None:
        """A row per case whose person's fields are about to leave, committed before they do."""
        entries = [
            audit.Entry("person.export", case_id=case_id, status=200, detail={"format": format_, "found": found})
            for case_id, found in read
        ]
        try:
            audit.append(
                own,
                actor=user,
                request_id=request_id,
                entries=with_client_request_id(entries, auditor.client_request_id),
            )
            own.commit()
        except SQLAlchemyError as exc:
            try:
                own.rollback()
            except SQLAlchemyError:
                pass  # the database is gone; the session is closed with the stream
            log.error("audit trail unavailable; export stopped", error=type(exc).__name__, request_id=request_id)
            raise  # the stream ends here, unfinished, and this batch is not sent

    def stream() -> Iterator[str]:
        with Session(engine, info=info) as own:  # the request's session may close before the stream ends
            rows = records(own, selection, person=person, before_batch=audit_batch if person else None)
            columns = CSV_FIELDS + (list(PERSON_FIELDS) if person else [])
            yield from (as_csv(rows, columns) if format_ == "csv" else as_jsonl(rows))

    media = "text/csv; charset=utf-8" if format_ == "csv" else "application/x-ndjson"
    filename = f"htcds-export.{'csv' if format_ == 'csv' else 'jsonl'}"
    return StreamingResponse(
        stream(), media_type=media, headers={"Content-Disposition": f'attachment; filename="{filename}"'}
    )
