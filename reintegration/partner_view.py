"""What a partner agency sees of a task: the minimum its service needs.

No internal case id, no other agency, and the person's data only when the person consented to
data sharing, and then only the fields configured for the service, only while the task is open with
the agency and only while the agency is active. A cancelled task keeps no notes for the agency; a
task given to another agency is no longer the first one's to see at all.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from pydantic import BaseModel
from sqlmodel import Session, col, select

from reintegration import persons
from reintegration.crypto import Keyring
from reintegration.db import AgencyRecord, CaseRecord, PersonRecord, TaskRecord, aware
from reintegration.overdue import is_overdue


class PartnerTask(BaseModel):
    """A task as its agency sees it."""

    task_id: str
    case_reference: str
    service: str
    status: str
    assigned_at: datetime
    accept_by: datetime
    due_on: date
    overdue: bool
    notes: str
    outcome: str | None
    assessment: str | None
    decline_reason: str
    person: dict[str, Any] | None = None


def person_for_partner(
    session: Session, keyring: Keyring, task: TaskRecord, fields: dict[str, list[str]]
) -> dict[str, Any] | None:
    """The fields of the person this task's service needs, if the person consented to sharing."""
    case = session.get(CaseRecord, task.case_id)
    consent = (case.facts.get("consent") or {}) if case else {}
    if not consent.get("data_sharing") or task.status not in ("assigned", "accepted"):
        return None  # not before consent, and not once the agency declined, failed or finished
    agency = session.get(AgencyRecord, task.agency_id)
    if agency is None or not agency.active:
        return None  # a deactivated agency's partners see no one
    stored = persons.load_person(session, keyring, case_id=task.case_id)
    if stored is None:
        return None  # erased
    facts = {"travel_date": case.facts.get("travel_date")} if case else {}
    wanted = fields.get(task.service, [])
    return {f: stored.get(f, facts.get(f)) for f in wanted}


def prefetch(session: Session, tasks: list[TaskRecord]) -> None:
    """Load the cases, agencies and persons of a page of tasks in three queries, into the session
    (whose ``get`` then finds them without one query each per task). The session holds its objects
    weakly, so the rows are kept in ``session.info`` for the session's life: rows nobody refers to
    would be gone from it at once, and each ``get`` would query again (as it did: 50 tasks, 150
    more queries)."""
    case_ids = sorted({t.case_id for t in tasks})
    agency_ids = sorted({t.agency_id for t in tasks})
    if not case_ids:
        return
    kept: list[object] = session.info.setdefault("prefetched", [])
    kept += session.exec(select(CaseRecord).where(col(CaseRecord.case_id).in_(case_ids))).all()
    kept += session.exec(select(AgencyRecord).where(col(AgencyRecord.agency_id).in_(agency_ids))).all()
    kept += session.exec(select(PersonRecord).where(col(PersonRecord.case_id).in_(case_ids))).all()


# A task in these states is no longer the agency's to work on: its notes are not shown to it.
WITHDRAWN = frozenset({"cancelled", "delivery_failed"})


def partner_task(session: Session, keyring: Keyring, task: TaskRecord, fields: dict[str, list[str]]) -> PartnerTask:
    agency = session.get(AgencyRecord, task.agency_id)
    shows_notes = task.status not in WITHDRAWN and agency is not None and agency.active
    return PartnerTask(
        task_id=task.task_id,
        case_reference=task.case_reference,
        service=task.service,
        status=task.status,
        assigned_at=aware(task.assigned_at),
        accept_by=aware(task.accept_by),
        due_on=task.due_on,
        overdue=is_overdue(task),
        notes=keyring.open_field(task.case_id, "notes", task.notes) if shows_notes else "",
        outcome=task.outcome,
        assessment=task.assessment,
        decline_reason=keyring.open_field(task.case_id, "decline_reason", task.decline_reason)
        if task.status == "declined"
        else "",
        person=person_for_partner(session, keyring, task, fields),
    )
