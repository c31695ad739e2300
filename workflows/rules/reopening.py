"""Reopening: a supervisor reopens a closed case (re-trafficking, a new need) in the protection or
the reintegration stage, with a reason. The journey goes on from the closed run's state, its history
kept: what the chosen stage decides is asked again (protection: the risk, the security guarantee and
the pathway; reintegration: a new plan and its visits); what happened before stays in the timeline.
Not after the person withdrew consent: a new case is opened with their new consent.
"""

from __future__ import annotations

from datetime import datetime

from workflows.model import CaseStatus, JourneyState, Reopening, Role, Stage, TimelineEvent
from workflows.rules.base import NewId
from workflows.rules.errors import N_, Forbidden, InvalidCommand, StepNotAllowed
from workflows.rules.events import enter, event

REOPEN_STAGES = (Stage.protection, Stage.reintegration)


def check_reopen(state: JourneyState, cmd: Reopening) -> None:
    if cmd.actor.role != Role.supervisor:
        raise Forbidden(N_("a supervisor reopens a case"))
    if state.status != CaseStatus.closed:
        raise StepNotAllowed(N_("only a closed case is reopened"), [])
    if state.consent_withdrawn_on is not None:
        raise StepNotAllowed(N_("the person withdrew consent: open a new case with their new consent"), [])
    if cmd.stage not in REOPEN_STAGES:
        raise InvalidCommand(N_("a case is reopened in the protection or the reintegration stage"))


def _new_reintegration(state: JourneyState, started_on: datetime | None) -> None:
    state.reintegration_started_on = started_on.date() if started_on is not None else None
    state.plan_agreed_on = None
    state.plan_revision_needed = False
    state.plan_revision_flagged_on = None
    state.monitoring_visits = []


def apply_reopen(state: JourneyState, cmd: Reopening, now: datetime, new_id: NewId) -> list[TimelineEvent]:
    state.version += 1
    state.reopenings += 1
    reopened = event(
        state,
        now,
        new_id,
        "case",
        "reopened",
        cmd.actor,
        facts={"stage": cmd.stage.value, "reason": cmd.reason, "reopening": state.reopenings},
    )
    state.status, state.closure_reason, state.closed_at = CaseStatus.active, None, None
    state.closure_requested = state.closure_requested_at = state.closure_requested_by = None
    state.stall, state.stalled_since = [], None
    if cmd.stage == Stage.protection:  # the person's safety is assessed again, and the way ahead decided again
        state.risk_level = state.risk_assessed_on = state.safety_plan_on = state.security_guarantee_on = None
        state.pathway = None
        state.travel_plan_on = state.travel_date = state.departed_on = state.arrived_on = None
        state.receiving_caseworker = None
        state.residence_applied_on = state.appeal_filed_on = state.permit_valid_until = None
        state.residence_decisions = []
        state.protection_from = now.date()  # their deadlines count from today, not the identification
        _new_reintegration(state, None)
    else:  # a new need: a new plan, its services and visits
        _new_reintegration(state, now)
    return [reopened, enter(state, cmd.stage, now, new_id)]
