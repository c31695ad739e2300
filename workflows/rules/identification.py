"""Identification and informed consent: the case opens, and with consent to assistance it enters
protection. Consent can be recorded again later (data sharing changes); withdrawing it closes the
case (``rules.closure``)."""

from __future__ import annotations

from datetime import datetime

from workflows.model import (
    Actor,
    CaseOpening,
    ConsentBody,
    JourneyState,
    OpenItem,
    Stage,
    Step,
    TimelineEvent,
)
from workflows.rules.base import Change, NewId, StepRule, step_item
from workflows.rules.errors import N_, InvalidCommand
from workflows.rules.events import enter, event


def new_journey(opening: CaseOpening, now: datetime) -> JourneyState:
    return JourneyState(
        case_id=opening.case_id,
        reference=opening.reference,
        config=opening.config,
        opened_at=now,
        identified_on=opening.identified_on,
        owner_country=opening.owner_country,
        owner_caseworker=opening.owner_caseworker,
        origin_country=opening.origin_country,
        destination_country=opening.owner_country,
        is_minor=opening.is_minor,
        exploitation_types=opening.exploitation_types,
        trafficking_status=opening.trafficking_status,
        referred_by=opening.referred_by,
        stage=Stage.identification,
        stage_entered_at=now,
        last_activity_at=now,
    )


def opened_event(state: JourneyState, actor: Actor, now: datetime, new_id: NewId) -> TimelineEvent:
    state.version += 1
    return event(state, now, new_id, "case", "opened", actor, facts={"country": state.owner_country})


def _check_consent(state: JourneyState, body: ConsentBody, actor: Actor) -> None:
    if state.stage != Stage.identification and not body.assistance:
        raise InvalidCommand(N_("consent to assistance cannot be removed here: use withdraw-consent"))


def _apply_consent(state: JourneyState, body: ConsentBody, change: Change) -> list[TimelineEvent]:
    state.consent = body
    if state.stage == Stage.identification and body.assistance:
        return [enter(state, Stage.protection, change.now, change.new_id)]
    return []


# Consent is allowed in every stage of an open case (``rules.steps.why_not``): no condition of its own.
STEPS = (
    StepRule(
        Step.consent,
        ConsentBody,
        _apply_consent,
        example={"assistance": True, "data_sharing": True, "given_on": "2026-11-20"},
        check=_check_consent,
    ),
)


def open_items(state: JourneyState) -> list[OpenItem]:
    return [step_item(Step.consent, None)] if state.stage == Stage.identification else []
