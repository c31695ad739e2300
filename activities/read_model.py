"""Writes the journey's projection into the read model: cases, tasks and the timeline.

Idempotent by construction: a row moves only to a higher version and a timeline event is written
once, so a replayed or retried activity never duplicates a row or moves a case back.
"""

from __future__ import annotations

import asyncio

from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from temporalio import activity

from reintegration.db import CaseRecord, TaskRecord, TimelineRecord
from workflows.model import Projection


class ReadModelActivities:
    """Projection of case workflows into the database; the engine is injected by ``worker.py``."""

    def __init__(self, *, engine: Engine) -> None:
        self._engine = engine

    @activity.defn(name="project_case")
    async def project_case(self, projection: Projection) -> None:
        """Write the case, its changed tasks and its new timeline events."""
        await asyncio.to_thread(write_projection, self._engine, projection)


def write_projection(engine: Engine, projection: Projection) -> None:
    state = projection.state
    with Session(engine) as session:
        case = session.get(CaseRecord, state.case_id, with_for_update=True)
        if case is None:
            case = CaseRecord(case_id=state.case_id, opened_at=state.opened_at)
        if case.version > state.version:
            return  # a newer projection is already there
        _set_case(case, projection)
        session.add(case)

        stored = {
            t.task_id: t
            for t in session.exec(select(TaskRecord).where(TaskRecord.case_id == state.case_id))
        }
        for task in state.tasks.values():
            row = stored.get(task.task_id)
            if row is not None and row.version > task.version:
                continue
            row = row or TaskRecord(task_id=task.task_id, case_id=state.case_id)
            row.case_reference = state.reference
            row.owner_country = state.owner_country
            row.version = task.version
            for field in (
                "agency_id", "assigned_at", "accept_by", "due_on", "accepted_at", "completed_at",
                "declined_at", "notes", "outcome_notes", "decline_reason", "safety_plan",
            ):
                setattr(row, field, getattr(task, field))
            row.service, row.status, row.stage = task.service.value, task.status.value, task.stage.value
            row.outcome = task.outcome.value if task.outcome else None
            row.assessment = task.assessment.value if task.assessment else None
            row.previous_agencies = list(task.previous_agencies)
            session.add(row)

        if projection.events:
            ids = [e.event_id for e in projection.events]
            known = set(session.exec(select(TimelineRecord.event_id).where(TimelineRecord.event_id.in_(ids))))
            for index, ev in enumerate(projection.events):
                if ev.event_id in known:
                    continue
                session.add(
                    TimelineRecord(
                        event_id=ev.event_id,
                        case_id=state.case_id,
                        position=ev.seq * 1000 + index,
                        at=ev.at,
                        kind=ev.kind,
                        name=ev.name,
                        actor_sub=ev.actor_sub,
                        actor_role=ev.actor_role.value if ev.actor_role else None,
                        task_id=ev.task_id,
                        facts=ev.facts,
                    )
                )
        session.commit()


def _set_case(case: CaseRecord, projection: Projection) -> None:
    state = projection.state
    case.reference = state.reference
    case.version = state.version
    case.owner_country = state.owner_country
    case.owner_caseworker = state.owner_caseworker
    case.origin_country = state.origin_country
    case.destination_country = state.destination_country
    case.stage = state.stage.value
    case.status = state.status.value
    case.pathway = state.pathway.value if state.pathway else None
    case.is_minor = state.is_minor
    case.updated_at = state.last_activity_at or state.opened_at
    case.closed_at = state.closed_at
    case.closure_reason = state.closure_reason.value if state.closure_reason else None
    case.active_workflow_id = projection.active_workflow_id
    case.allowed_steps = [s.value for s in projection.allowed_steps]
    items = [i.model_dump(mode="json") for i in projection.open_items]
    case.open_items = items
    dues = [i.due_at for i in projection.open_items if i.due_at is not None]
    case.next_due_at = min(dues) if dues else None
    case.agencies = sorted({t.agency_id for t in state.tasks.values()})
    case.facts = state.model_dump(
        mode="json",
        include={
            "identified_on", "exploitation_types", "trafficking_status", "referred_by", "consent",
            "consent_withdrawn_on", "risk_level", "risk_assessed_on", "safety_plan_on", "guardian_on",
            "security_guarantee_on", "pathway_decisions", "travel_plan_on", "travel_date",
            "receiving_caseworker", "departed_on", "arrived_on", "residence_applied_on",
            "residence_decisions", "appeal_filed_on", "permit_valid_until", "reintegration_started_on",
            "plan_agreed_on", "plan_revisions", "plan_revision_needed", "monitoring_visits",
            "closure_requested", "closure_requested_at", "closure_requested_by", "closure_rejections",
            "stage_entered_at",
        },
    )
