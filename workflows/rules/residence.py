"""Residence in the destination country: legal assistance, the application, the authority's
decision, and an appeal after a refusal; a granted permit starts reintegration where the person is.
The wait for a decision can take months. Held by ``ResidenceStage``."""

from __future__ import annotations

from pydantic import Field

from workflows.model import (
    Actor,
    Day,
    JourneyState,
    OpenItem,
    ResidenceDecision,
    Service,
    ShortText,
    Stage,
    Step,
    Strict,
    TimelineEvent,
)
from workflows.rules.base import Change, StepRule, stage_only, step_item
from workflows.rules.errors import N_, InvalidCommand
from workflows.rules.events import enter
from workflows.rules.tasks import cancel_open_of

# Asked for in the residence stage only; cancelled when the stage ends.
SERVICES = frozenset({Service.legal_assistance})


class ResidenceApplicationBody(Strict):
    filed_on: Day
    permit_type: ShortText
    authority_reference: ShortText


class ResidenceDecisionBody(Strict):
    decision: str = Field(pattern="^(granted|rejected)$")
    decided_on: Day
    valid_until: Day | None = None


class AppealBody(Strict):
    filed_on: Day
    authority_reference: ShortText


def last_decision_rejected(state: JourneyState) -> bool:
    return bool(state.residence_decisions) and state.residence_decisions[-1].decision == "rejected"


def _why_not_application(state: JourneyState) -> str | None:
    if state.stage != Stage.residence:
        return stage_only(state.stage, "residence")
    return N_("the application is already filed") if state.residence_applied_on else None


def _why_not_decision(state: JourneyState) -> str | None:
    if state.stage != Stage.residence:
        return stage_only(state.stage, "residence")
    if state.residence_applied_on is None:
        return N_("the residence application comes first")
    if state.residence_decisions and state.appeal_filed_on is None:
        return N_("a decision is recorded; a new one follows only an appeal")
    return None


def _why_not_appeal(state: JourneyState) -> str | None:
    if state.stage != Stage.residence:
        return stage_only(state.stage, "residence")
    if not last_decision_rejected(state):
        return N_("an appeal follows only a rejection")
    return N_("an appeal is already pending") if state.appeal_filed_on else None


def _check_decision(state: JourneyState, body: ResidenceDecisionBody, actor: Actor) -> None:
    if body.decision == "granted" and body.valid_until is None:
        raise InvalidCommand(N_("a granted permit needs valid_until"))


def _apply_application(state: JourneyState, body: ResidenceApplicationBody, change: Change) -> list[TimelineEvent]:
    state.residence_applied_on = body.filed_on
    return []


def _apply_decision(state: JourneyState, body: ResidenceDecisionBody, change: Change) -> list[TimelineEvent]:
    state.residence_decisions.append(
        ResidenceDecision(decision=body.decision, decided_on=body.decided_on, valid_until=body.valid_until)
    )
    state.appeal_filed_on = None
    if body.decision != "granted":
        return []
    state.permit_valid_until = body.valid_until
    state.reintegration_started_on = body.decided_on
    # Only this stage's services can be open now: a return task was cancelled when the pathway
    # changed to residence.
    events = cancel_open_of(state, SERVICES, change.actor, change.now, change.new_id, "permit granted")
    events.append(enter(state, Stage.reintegration, change.now, change.new_id))
    return events


def _apply_appeal(state: JourneyState, body: AppealBody, change: Change) -> list[TimelineEvent]:
    state.appeal_filed_on = body.filed_on
    return []


STEPS = (
    StepRule(
        Step.residence_application,
        ResidenceApplicationBody,
        _apply_application,
        example={
            "filed_on": "2026-12-05",
            "permit_type": "victim-of-trafficking",
            "authority_reference": "EXT-2026-4411",
        },
        why_not=_why_not_application,
    ),
    StepRule(
        Step.residence_decision,
        ResidenceDecisionBody,
        _apply_decision,
        example={"decision": "granted", "decided_on": "2027-03-01", "valid_until": "2028-03-01"},
        why_not=_why_not_decision,
        check=_check_decision,
    ),
    StepRule(
        Step.appeal,
        AppealBody,
        _apply_appeal,
        example={"filed_on": "2027-03-10", "authority_reference": "REC-2027-0093"},
        why_not=_why_not_appeal,
    ),
)


def open_items(state: JourneyState) -> list[OpenItem]:
    """The application, then the authority's decision (its turn, with no deadline of ours)."""
    if state.stage != Stage.residence:
        return []
    if state.residence_applied_on is None:
        return [step_item(Step.residence_application, None)]
    if not state.residence_decisions or state.appeal_filed_on:
        return [step_item(Step.residence_decision, None, turn="authority")]
    return []
