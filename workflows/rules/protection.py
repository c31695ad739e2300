"""Protection: the risk assessment, a safety plan where the risk calls for one, a guardian for a
minor, and the security guarantee, which opens the pathway decision. The immediate services
(shelter, medical, police protection, psychosocial, legal) can be asked for from consent on.

The risk, safety-plan and guardian steps stay open in the pathway stage too (``rules.pathway``).
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field

from workflows.model import (
    Actor,
    Day,
    Identifier,
    JourneyState,
    Notes,
    OpenItem,
    RiskLevel,
    Service,
    ShortText,
    Stage,
    Step,
    Strict,
    TimelineEvent,
)
from workflows.rules.base import Change, StepRule, stage_only, step_item
from workflows.rules.errors import N_, InvalidCommand
from workflows.rules.events import enter, task_event
from workflows.rules.tasks import new_task, open_tasks

# Asked for from consent on, in every stage; a safety measure's partner task is one of these.
IMMEDIATE_SERVICES = frozenset(
    {Service.shelter, Service.medical, Service.police_protection, Service.psychosocial, Service.legal}
)
# The stages in which the protection steps can be recorded.
PROTECTION_STAGES = (Stage.protection, Stage.pathway)


# --- Bodies -------------------------------------------------------------------------------------


class RiskAssessmentBody(Strict):
    level: RiskLevel
    threats: list[ShortText] = Field(default_factory=list, max_length=20)
    assessed_on: Day


class SafetyMeasure(Strict):
    measure: ShortText
    service: Service | None = Field(
        default=None, description="Set when a partner carries the measure out: it becomes a task."
    )
    agency_id: Identifier | None = Field(default=None, description="Default: the service's default agency")
    due_date: Day | None = None
    notes: Notes = ""


class SafetyPlanBody(Strict):
    measures: list[SafetyMeasure] = Field(min_length=1, max_length=20)
    agreed_on: Day


class GuardianBody(Strict):
    guardian_type: ShortText = Field(examples=["legal_guardian"])
    authority_reference: ShortText
    appointed_on: Day


class SecurityGuaranteeBody(Strict):
    confirmed_on: Day
    notes: Notes = ""


# --- When each step is allowed ------------------------------------------------------------------


def _why_not_risk_assessment(state: JourneyState) -> str | None:
    return None if state.stage in PROTECTION_STAGES else stage_only(state.stage, "protection")


def _why_not_safety_plan(state: JourneyState) -> str | None:
    if state.stage not in PROTECTION_STAGES:
        return stage_only(state.stage, "protection")
    return None if state.risk_level else N_("the risk assessment comes first")


def _why_not_guardian(state: JourneyState) -> str | None:
    if not state.is_minor:
        return N_("a guardian is appointed only for a minor")
    if state.stage not in PROTECTION_STAGES:
        return stage_only(state.stage, "protection")
    return None


def _why_not_security_guarantee(state: JourneyState) -> str | None:
    if state.stage != Stage.protection:
        return stage_only(state.stage, "protection")
    if state.risk_level is None:
        return N_("the risk assessment comes first")
    if state.risk_level in (RiskLevel.medium, RiskLevel.high):
        if state.safety_plan_on is None:
            return N_("a safety plan is required for {level} risk").format(level=state.risk_level.value)
        if any(t.safety_plan for t in open_tasks(state)):
            return N_("the safety plan's tasks are not all completed")
    return None


# --- What each body must satisfy, and what each step changes ------------------------------------


def _check_safety_plan(state: JourneyState, body: SafetyPlanBody, actor: Actor) -> None:
    if any(m.service and m.service not in IMMEDIATE_SERVICES for m in body.measures):
        raise InvalidCommand(
            N_("a safety measure's service is one of: {services}").format(
                services=", ".join(sorted(s.value for s in IMMEDIATE_SERVICES))
            )
        )
    if any(m.service and not m.agency_id for m in body.measures):
        raise InvalidCommand(N_("every partner task of a plan names its agency"))


def _apply_risk_assessment(state: JourneyState, body: RiskAssessmentBody, change: Change) -> list[TimelineEvent]:
    state.risk_level, state.risk_assessed_on = body.level, body.assessed_on
    return []


def _apply_safety_plan(state: JourneyState, body: SafetyPlanBody, change: Change) -> list[TimelineEvent]:
    state.safety_plan_on = body.agreed_on
    events = []
    for measure in body.measures:
        if measure.service and measure.agency_id:
            task = new_task(
                state, measure.service, measure.agency_id, measure.due_date, measure.notes, change.now, change.new_id
            )
            task.safety_plan = True
            events.append(task_event(state, task, "assigned", change.actor, change.now, change.new_id))
    return events


def _apply_guardian(state: JourneyState, body: GuardianBody, change: Change) -> list[TimelineEvent]:
    state.guardian_on = body.appointed_on
    return []


def _apply_security_guarantee(state: JourneyState, body: SecurityGuaranteeBody, change: Change) -> list[TimelineEvent]:
    state.security_guarantee_on = body.confirmed_on
    return [enter(state, Stage.pathway, change.now, change.new_id)]


STEPS = (
    StepRule(
        Step.risk_assessment,
        RiskAssessmentBody,
        _apply_risk_assessment,
        example={"level": "medium", "threats": ["trafficker knows the family's address"], "assessed_on": "2026-11-21"},
        why_not=_why_not_risk_assessment,
    ),
    StepRule(
        Step.safety_plan,
        SafetyPlanBody,
        _apply_safety_plan,
        example={
            "agreed_on": "2026-11-22",
            "measures": [
                {
                    "measure": "shelter placement",
                    "service": "shelter",
                    "agency_id": "shelter-es",
                    "due_date": "2026-11-29",
                },
                {"measure": "new phone number", "notes": "given by the caseworker"},
            ],
        },
        why_not=_why_not_safety_plan,
        check=_check_safety_plan,
    ),
    StepRule(
        Step.guardian,
        GuardianBody,
        _apply_guardian,
        example={
            "guardian_type": "legal_guardian",
            "authority_reference": "JUZ-MAD-2026-118",
            "appointed_on": "2026-11-23",
        },
        why_not=_why_not_guardian,
    ),
    StepRule(
        Step.security_guarantee,
        SecurityGuaranteeBody,
        _apply_security_guarantee,
        example={"confirmed_on": "2026-11-30"},
        why_not=_why_not_security_guarantee,
    ),
)


# --- Deadlines ----------------------------------------------------------------------------------


def open_items(state: JourneyState) -> list[OpenItem]:
    """Risk assessment within days of identification, the safety plan and the security guarantee
    within the guarantee's days, a minor's guardian within the reflection period."""
    if state.stage not in PROTECTION_STAGES:
        return []
    # Counted from the identification, or from the reopening that asked them again (``rules.reopening``).
    cfg, identified = state.config, state.protection_from or state.identified_on
    items = []
    if state.risk_level is None:
        items.append(
            step_item(Step.risk_assessment, identified + timedelta(days=cfg.risk_assessment_days), since=identified)
        )
    guarantee_due = identified + timedelta(days=cfg.security_guarantee_days)
    if state.risk_level in (RiskLevel.medium, RiskLevel.high) and state.safety_plan_on is None:
        items.append(step_item(Step.safety_plan, guarantee_due, since=identified))
    if state.is_minor and state.guardian_on is None:
        items.append(step_item(Step.guardian, identified + timedelta(days=cfg.reflection_days), since=identified))
    if state.stage == Stage.protection:
        items.append(step_item(Step.security_guarantee, guarantee_due, since=identified))
    return items
