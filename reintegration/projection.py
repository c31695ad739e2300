"""The read model's projection: what a case workflow's state becomes in the database.

Idempotent by construction: a row moves only to a higher (or equal) version, checked inside the
UPDATE itself so that a slow, abandoned attempt cannot write over a newer one, and a timeline event
is written once. The ``project_case`` activity (activities/read_model.py) writes with it, and so
does ``reintegration reconcile --repair``.
"""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy import Insert, Table, Update, bindparam, insert, select, update
from sqlalchemy.engine import Connection, Engine
from sqlmodel import col

from reintegration import inbox
from reintegration.crypto import FREE_TEXT_KEYS, Keyring
from reintegration.db import (
    AgencyRecord,
    CaseRecord,
    DeliveryRecord,
    NotificationRecord,
    ReadModelChanges,
    StageVisitRecord,
    TaskRecord,
    TimelineRecord,
    TransferRecord,
    aware,
)
from workflows import rules
from workflows.model import DeliveryRequest, JourneyState, Projection, Step, TaskState

CASE_FACTS = {
    "identified_on",
    "exploitation_types",
    "trafficking_status",
    "referred_by",
    "consent",
    "consent_withdrawn_on",
    "risk_level",
    "risk_assessed_on",
    "safety_plan_on",
    "guardian_on",
    "security_guarantee_on",
    "pathway_decisions",
    "travel_plan_on",
    "travel_date",
    "receiving_caseworker",
    "departed_on",
    "arrived_on",
    "residence_applied_on",
    "residence_decisions",
    "appeal_filed_on",
    "permit_valid_until",
    "reintegration_started_on",
    "plan_agreed_on",
    "plan_revisions",
    "plan_revision_needed",
    "monitoring_visits",
    "closure_requested",
    "closure_requested_at",
    "closure_requested_by",
    "closure_rejections",
    "stage_entered_at",
}


def delivery_messages(projection: Projection) -> list[DeliveryRequest]:
    """The messages to agencies that this projection's task events call for."""
    messages = []
    for ev in projection.events:
        if ev.kind != "task" or ev.name not in ("assigned", "reassigned", "cancelled") or ev.task_id is None:
            continue
        assignment = int(ev.facts.get("assignment", 1))
        case_id = projection.state.case_id
        if ev.name == "reassigned":  # the previous agency is told the task is no longer theirs
            messages.append(
                DeliveryRequest(
                    delivery_id=f"{ev.task_id}.cancel.{assignment - 1}",
                    event="task.cancelled",
                    case_id=case_id,
                    task_id=ev.task_id,
                    agency_id=str(ev.facts["from_agency"]),
                    assignment=assignment - 1,
                )
            )
        if ev.name == "cancelled":
            delivery_id, event = f"{ev.task_id}.cancel.{assignment}", "task.cancelled"
        else:
            delivery_id, event = assignment_delivery_id(ev.task_id, assignment), "task.assigned"
        messages.append(
            DeliveryRequest(
                delivery_id=delivery_id,
                event=event,
                case_id=case_id,
                task_id=ev.task_id,
                agency_id=str(ev.facts["agency_id"]),
                assignment=assignment,
            )
        )
    return messages


def assignment_delivery_id(task_id: str, assignment: int) -> str:
    """The first delivery of a task carries its id; later assignments add their number."""
    return task_id if assignment == 1 else f"{task_id}.{assignment}"


def write_projection(
    engine: Engine, projection: Projection, keyring: Keyring, *, all_tasks: bool = False, mail: bool = False
) -> list[DeliveryRequest]:
    """Write the projection in one transaction, with an outbox row per message to a webhook agency.

    Free text (notes, reasons, references) is sealed with the case's key on the way in. With
    ``all_tasks`` every task of the case is written, not only those this change touched: what
    ``reintegration reconcile --repair`` uses to rewrite a case's rows from its workflow's state.
    With ``mail`` (a mail server is configured) the people told of the events who chose e-mail at
    once get one (``reintegration/inbox.py``); without it, the inbox and the digests only.
    """
    state = projection.state

    def seal(value: Any) -> Any:
        return keyring.seal_fields(state.case_id, value, FREE_TEXT_KEYS)

    messages: list[DeliveryRequest] = []
    with engine.begin() as conn:
        # Whose the case was before this change: the sending caseworker of a hand-over is told too.
        previous_owner = (
            conn.scalar(_OWNER, {"case_id": state.case_id})
            if any(ev.kind == "case" and ev.name == "handed-over" for ev in projection.events)
            else None
        )
        _upsert(conn, CaseRecord, CaseRecord.case_id, state.case_id, state.version, seal(case_values(projection)))
        # Only the tasks this change touched (``rules.touched_tasks``; the workflow sends no others).
        tasks = state.tasks if all_tasks else rules.touched_tasks(state, projection.events)
        for task in tasks.values():
            _upsert(conn, TaskRecord, TaskRecord.task_id, task.task_id, task.version, seal(task_values(state, task)))
        if projection.events:
            ids = [e.event_id for e in projection.events]
            known = set(conn.scalars(_KNOWN_EVENTS, {"ids": ids}))
            rows = [
                {
                    "event_id": ev.event_id,
                    "case_id": state.case_id,
                    "position": ev.seq * 1000 + index,
                    "at": ev.at,
                    "kind": ev.kind,
                    "name": ev.name,
                    "actor_sub": ev.actor_sub,
                    "actor_role": ev.actor_role.value if ev.actor_role else None,
                    "task_id": ev.task_id,
                    "facts": seal(ev.facts),
                }
                for index, ev in enumerate(projection.events)
                if ev.event_id not in known
            ]
            if rows:
                conn.execute(_INSERT_EVENTS, rows)
        _record_stage_visits(conn, projection)
        _settle_transfers(conn, projection)
        notifications = _record_notifications(conn, projection) + inbox.record(
            conn, projection, previous_owner, mail=mail
        )
        for message in delivery_messages(projection):
            webhook = conn.scalar(_WEBHOOK, {"agency_id": message.agency_id})
            if not webhook:
                continue  # this agency works from the API
            messages.append(message)
            if conn.scalar(_DELIVERY, {"delivery_id": message.delivery_id}) is None:
                conn.execute(
                    insert(DeliveryRecord).values(
                        delivery_id=message.delivery_id,
                        task_id=message.task_id,
                        case_id=message.case_id,
                        agency_id=message.agency_id,
                        event=message.event,
                        status="pending",
                        created_at=projection.events[0].at if projection.events else state.opened_at,
                    )
                )
        count_write(conn)
    return messages + notifications


def count_write(conn: Connection) -> None:
    """Count one more write of the read model's cases, tasks or stays (``ReadModelChanges``), in the
    writer's transaction: whatever was computed at the count before is computed again. Every such
    writer calls it, last (on PostgreSQL the row is then held only for the commit: writers queue on
    it, one commit each)."""
    conn.execute(_COUNT_WRITE)


# The statements every projection runs, built once: building one (its clauses, then its cache key)
# cost more CPU than running it on SQLite (``make bench``: the writer's samples with the GIL held).
_OWNER = select(col(CaseRecord.owner_caseworker)).where(col(CaseRecord.case_id) == bindparam("case_id"))
_KNOWN_EVENTS = select(col(TimelineRecord.event_id)).where(
    col(TimelineRecord.event_id).in_(bindparam("ids", expanding=True))
)
_INSERT_EVENTS = insert(TimelineRecord)
_WEBHOOK = select(col(AgencyRecord.webhook_url)).where(col(AgencyRecord.agency_id) == bindparam("agency_id"))
_DELIVERY = select(col(DeliveryRecord.delivery_id)).where(col(DeliveryRecord.delivery_id) == bindparam("delivery_id"))
_COUNT_WRITE = (
    update(ReadModelChanges).where(col(ReadModelChanges.id) == 1).values(changes=ReadModelChanges.changes + 1)
)
_VISIT = select(col(StageVisitRecord.visit_id)).where(col(StageVisitRecord.visit_id) == bindparam("visit_id"))
_OPEN_VISIT = select(col(StageVisitRecord.visit_id), col(StageVisitRecord.entered_at)).where(
    col(StageVisitRecord.case_id) == bindparam("case_id"), col(StageVisitRecord.left_at).is_(None)
)


def _record_stage_visits(conn: Connection, projection: Projection) -> None:
    """A stage event closes the case's open stay and opens the next: for days-per-stage statistics."""
    for ev in projection.events:
        if (
            not (ev.kind == "stage" or (ev.kind, ev.name) == ("case", "opened"))
            or conn.scalar(_VISIT, {"visit_id": ev.event_id}) is not None
        ):
            continue
        stage = "identification" if ev.kind == "case" else ev.name
        open_visit = conn.execute(_OPEN_VISIT, {"case_id": projection.state.case_id}).first()
        if open_visit is not None:
            entered = aware(open_visit.entered_at)
            conn.execute(
                update(StageVisitRecord)
                .where(col(StageVisitRecord.visit_id) == open_visit.visit_id)
                .values(left_at=ev.at, days=(ev.at - entered).total_seconds() / 86400)
            )
        if stage != "closed":
            conn.execute(
                insert(StageVisitRecord).values(
                    visit_id=ev.event_id,
                    case_id=projection.state.case_id,
                    stage=stage,
                    entered_at=ev.at,
                    country=projection.state.owner_country,
                )
            )


OPEN_TRANSFER = ("pending", "accepting")


def _settle_transfers(conn: Connection, projection: Projection) -> None:
    """The case's offers to other offices, as its journey settles them, in the journey's own
    transaction: the transfer it carried out is accepted (whatever happened to the API request that
    asked for it); a hand-over on arrival or the case's closure withdraws any other still open."""
    case_id = projection.state.case_id
    for ev in projection.events:
        if (ev.kind, ev.name) == ("case", "transferred"):
            conn.execute(
                update(TransferRecord)
                .where(
                    col(TransferRecord.case_id) == case_id,
                    col(TransferRecord.status).in_(OPEN_TRANSFER),
                    col(TransferRecord.to_country) == ev.facts.get("to_country"),
                )
                .values(
                    status="accepted",
                    decided_by=ev.actor_sub,
                    decided_at=ev.at,
                    to_caseworker=ev.facts.get("to_caseworker"),
                )
            )
        elif (ev.kind, ev.name) in (("case", "handed-over"), ("stage", "closed")):
            conn.execute(
                update(TransferRecord)
                .where(col(TransferRecord.case_id) == case_id, col(TransferRecord.status).in_(OPEN_TRANSFER))
                .values(status="withdrawn", decided_at=ev.at)
            )


def _record_notifications(conn: Connection, projection: Projection) -> list[DeliveryRequest]:
    """Outbox rows for the supervisors' notifications this projection makes; each is sent once."""
    state, starts = projection.state, []
    for ev in projection.events:
        if ev.kind != "supervision" or "notification" not in ev.facts:
            continue
        notification_id = str(ev.facts["notification"])
        starts.append(
            DeliveryRequest(
                delivery_id=notification_id,
                event="supervision.notify",
                case_id=state.case_id,
                task_id=ev.task_id or "",
                agency_id="",
            )
        )
        if (
            conn.scalar(
                select(col(NotificationRecord.notification_id)).where(
                    col(NotificationRecord.notification_id) == notification_id
                )
            )
            is not None
        ):
            continue
        conn.execute(
            insert(NotificationRecord).values(
                notification_id=notification_id,
                case_id=state.case_id,
                country=state.owner_country,
                kind=ev.name,
                created_at=ev.at,
                payload={
                    "case_reference": state.reference,
                    "case_id": state.case_id,
                    "country": state.owner_country,
                    "stage": state.stage.value,
                    "caseworker": state.owner_caseworker,
                    "kind": ev.name,
                    "item": ev.facts.get("name"),
                    "turn": ev.facts.get("turn"),
                    "due_at": ev.facts.get("due_at"),
                    "level": ev.facts.get("level"),
                    "at": ev.at.isoformat(),
                },
            )
        )
    return starts


def _upsert(conn: Connection, table: Any, key_column: Any, key: str, version: int, values: dict[str, Any]) -> None:
    """Update the row if ours is not older; insert it if there is none. A race ends in a retry.

    The statements are built once per table and given the row as parameters: building an UPDATE
    with thirty values (and its cache key) at every projection cost more CPU than the database's
    own work (measured: 0.67 ms of CPU per case row before, see ``_row_statements``)."""
    update_row, insert_row = _row_statements(table.__table__, key_column.key)
    row = {**values, "version": version}
    result = conn.execute(update_row, {**row, "_key": key, "_version": version})
    if result.rowcount == 0 and conn.scalar(select(key_column).where(key_column == key)) is None:
        conn.execute(insert_row, {**row, key_column.key: key})


@functools.cache
def _row_statements(table: Table, key: str) -> tuple[Update, Insert]:
    """The UPDATE (if the row's version is not newer) and the INSERT of a row of ``table``; their SET
    and VALUES clauses name the columns of the parameters they are executed with."""
    return (
        update(table).where(table.c[key] == bindparam("_key"), table.c.version <= bindparam("_version")),
        insert(table),
    )


def case_values(projection: Projection) -> dict[str, Any]:
    """What the case's row holds for this projection (free text unsealed; ``version`` aside).

    The one definition of the row: the activity writes it, ``reintegration reconcile`` checks it.
    """
    state = projection.state
    dues = [i.due_at for i in projection.open_items if i.due_at is not None]
    return {
        "reference": state.reference,
        "owner_country": state.owner_country,
        "owner_caseworker": state.owner_caseworker,
        "origin_country": state.origin_country,
        "destination_country": state.destination_country,
        "stage": state.stage.value,
        "status": state.status.value,
        "pathway": state.pathway.value if state.pathway else None,
        "is_minor": state.is_minor,
        "opened_at": state.opened_at,
        "updated_at": state.last_activity_at or state.opened_at,
        "closed_at": state.closed_at,
        "closure_reason": state.closure_reason.value if state.closure_reason else None,
        "next_due_at": min(dues) if dues else None,
        "active_workflow_id": projection.active_workflow_id,
        "allowed_steps": [s.value for s in projection.allowed_steps],
        "open_items": [i.model_dump(mode="json") for i in projection.open_items],
        "agencies": projection.agencies if projection.agencies is not None else rules.case_agencies(state),
        "stalled": bool(state.stall),
        "stalled_since": state.stalled_since,
        "most_overdue_at": min((r.due_at for r in state.stall), default=None),
        "stall_reasons": [r.model_dump(mode="json") for r in state.stall],
        "stage_entered_at": state.stage_entered_at,
        "awaiting_approval": Step.approve_closure in projection.allowed_steps,
        "facts": state.model_dump(mode="json", include=CASE_FACTS),
    }


def task_values(state: JourneyState, task: TaskState) -> dict[str, Any]:
    """What a task's row holds (free text unsealed; ``version`` aside), as ``case_values``."""
    return {
        "case_id": state.case_id,
        "case_reference": state.reference,
        "owner_country": state.owner_country,
        "service": task.service.value,
        "agency_id": task.agency_id,
        "status": task.status.value,
        "stage": task.stage.value,
        "safety_plan": task.safety_plan,
        "assigned_at": task.assigned_at,
        "accept_by": task.accept_by,
        "due_on": task.due_on,
        "accepted_at": task.accepted_at,
        "completed_at": task.completed_at,
        "declined_at": task.declined_at,
        "outcome": task.outcome.value if task.outcome else None,
        "assessment": task.assessment.value if task.assessment else None,
        "notes": task.notes,
        "outcome_notes": task.outcome_notes,
        "decline_reason": task.decline_reason,
        "previous_agencies": list(task.previous_agencies),
    }
