"""Exports: the cases of a supervisor's region as HTCDS records, streamed as JSON lines or CSV.

HTCDS field names wherever the case records the same fact (``cas_``, ``vic_``, ``con_``, ``prs_``);
the project's own snake_case names for the rest (stage, pathway, dates, countries, services). The
person's ``prs_`` fields only with ``?include=person``, and that export is audited: a summary row
(``export.htcds``, how many cases) before the response starts, and a ``person.export`` row per case,
appended a batch at a time before that batch is streamed. If a batch's rows cannot be written the
stream stops there, unfinished, without that batch.
"""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import datetime
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
from api.errors import responses
from reintegration import audit
from reintegration.db import CaseRecord, TaskRecord, aware
from reintegration.persons import load_person
from reintegration.tokens import Claims
from workflows.model import Role

log = structlog.get_logger("api")

router = APIRouter(prefix="/v1/exports", tags=["exports"])

BATCH = 200

T = TypeVar("T")

CASE_FIELDS = [
    "case_id",
    "reference",
    "cas_Status",
    "cas_ReasonForCaseClosure",
    "cas_CaseOwner",
    "cas_ReferringOrganisation",
    "cas_ReferredOrganisation",
    "vic_TraffickingStatus",
    "vic_TypeOfExploitation",
    "con_Consent",
    "consent_data_sharing",
    "consent_withdrawn_on",
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
# HTCDS person field: the person vault's key.
PERSON_FIELDS = {
    "prs_FirstName": "first_name",
    "prs_SecondName": "second_name",
    "prs_Birthdate": "birthdate",
    "prs_Gender": "gender",
    "prs_Citizenship": "citizenship",
    "prs_PrimaryLanguage": "primary_language",
    "prs_IdentityNumber": "identity_number",
    "prs_MobilePhone": "mobile_phone",
}

EXAMPLE = {
    "case_id": "0b9c1f7e-2d1a-4c57-9a43-5f0e6c1d2a9b",
    "reference": "ES-2026-4F1A2B",
    "cas_Status": "Active",
    "cas_ReasonForCaseClosure": None,
    "cas_CaseOwner": "cw-es-1",
    "cas_ReferringOrganisation": "LawEnforcement",
    "cas_ReferredOrganisation": ["shelter-es"],
    "vic_TraffickingStatus": "PossibleVictimOfTrafficking",
    "vic_TypeOfExploitation": ["ForcedLabour"],
    "con_Consent": True,
    "consent_data_sharing": True,
    "consent_withdrawn_on": None,
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
    "services": [{"service": "shelter", "agency_id": "shelter-es", "status": "accepted"}],
}
CSV_EXAMPLE = (
    ",".join(CASE_FIELDS)
    + "\r\n"
    + (
        "0b9c1f7e-2d1a-4c57-9a43-5f0e6c1d2a9b,ES-2026-4F1A2B,Active,,cw-es-1,LawEnforcement,shelter-es,"
        "PossibleVictimOfTrafficking,ForcedLabour,true,true,,protection,active,,false,ES,RO,ES,2026-11-20,"
        "2026-11-20T10:02:11.120000Z,,medium,,,,0,,shelter:shelter-es:accepted\r\n"
    )
)


def htcds_record(case: CaseRecord, tasks: list[TaskRecord]) -> dict[str, Any]:
    """The case's anonymous facts as an HTCDS record (no personal data)."""
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
        "cas_ReferredOrganisation": sorted({t.agency_id for t in tasks}),
        "vic_TraffickingStatus": facts.get("trafficking_status"),
        "vic_TypeOfExploitation": list(facts.get("exploitation_types") or []),
        "con_Consent": bool(consent.get("assistance")) and not facts.get("consent_withdrawn_on") if consent else None,
        "consent_data_sharing": consent.get("data_sharing") if consent else None,
        "consent_withdrawn_on": facts.get("consent_withdrawn_on"),
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


def _scope(query: SelectOfScalar[T], countries: list[str] | None) -> SelectOfScalar[T]:
    return query.where(col(CaseRecord.owner_country).in_(countries)) if countries is not None else query


# Called with the session and each batch's (case id, whether the person's data was there) before the
# batch is given out: where reads of personal data are audited.
BeforeBatch = Callable[[Session, list[tuple[str, bool]]], None]


def records(
    session: Session, countries: list[str] | None, *, person: bool, before_batch: BeforeBatch | None = None
) -> Iterator[dict[str, Any]]:
    """The records of the cases in these countries (all if ``None``), oldest first, a batch at a time."""
    after: tuple[datetime, str] | None = None
    while True:
        query = _scope(select(CaseRecord), countries)
        if after is not None:
            query = query.where(
                (col(CaseRecord.opened_at) > after[0])
                | ((col(CaseRecord.opened_at) == after[0]) & (col(CaseRecord.case_id) > after[1]))
            )
        cases = session.exec(query.order_by(col(CaseRecord.opened_at), col(CaseRecord.case_id)).limit(BATCH)).all()
        if not cases:
            return
        tasks: dict[str, list[TaskRecord]] = defaultdict(list)
        for task in session.exec(
            select(TaskRecord)
            .where(col(TaskRecord.case_id).in_([c.case_id for c in cases]))
            .order_by(col(TaskRecord.assigned_at), col(TaskRecord.task_id))
        ).all():
            tasks[task.case_id].append(task)
        batch: list[dict[str, Any]] = []
        read: list[tuple[str, bool]] = []
        for case in cases:
            record = htcds_record(case, tasks[case.case_id])
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
    for row in rows:
        writer.writerow([_cell(row.get(c)) for c in columns])
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    yield buffer.getvalue()  # the header alone when there is no case


@router.get(
    "/htcds",
    response_class=StreamingResponse,
    summary="The cases in scope as HTCDS records",
    description=(
        "Every case of the caller's region, oldest first, one HTCDS record each: JSON lines (default) or "
        "CSV (lists joined with `;`, a service as `service:agency:status`). The person's `prs_` fields "
        "only with `?include=person`, which is audited (a `person.export` row per case, written before "
        "its record is sent); an erased person's are empty."
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
) -> StreamingResponse:
    person = include == "person"
    if person:  # audited before the first record leaves; no row, no export
        cases = session.exec(_scope(select(func.count()).select_from(CaseRecord), user.country_scope)).one()
        auditor.record(
            "export.htcds", detail={"cases": cases, "format": format_, "person": True, "countries": user.countries}
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
            rows = records(own, user.country_scope, person=person, before_batch=audit_batch if person else None)
            columns = CASE_FIELDS + (list(PERSON_FIELDS) if person else [])
            yield from (as_csv(rows, columns) if format_ == "csv" else as_jsonl(rows))

    media = "text/csv; charset=utf-8" if format_ == "csv" else "application/x-ndjson"
    filename = f"htcds-export.{'csv' if format_ == 'csv' else 'jsonl'}"
    return StreamingResponse(
        stream(), media_type=media, headers={"Content-Disposition": f'attachment; filename="{filename}"'}
    )
