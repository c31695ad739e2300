"""Assisted voluntary return: the origin assessment (is return safe?), travel documents, the family
assessment, the travel plan and departure; reception in the country of origin confirms the arrival
and hands the case over to that country's caseworker for reintegration. Held by ``ReturnStage``."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from pydantic import Field

from workflows.model import (
    Actor,
    CompleteTaskBody,
    Day,
    Identifier,
    JourneyState,
    OpenItem,
    OriginAssessment,
    Service,
    ShortText,
    Stage,
    Step,
    Strict,
    TaskOutcome,
    TaskState,
    TimelineEvent,
)
from workflows.rules.base import Change, NewId, StepRule, stage_only, step_item
from workflows.rules.errors import N_, InvalidCommand, StepNotAllowed
from workflows.rules.events import enter, event
from workflows.rules.tasks import cancel_open_of, latest_origin_assessment, task_done

# Asked for in the return stage only; cancelled when the stage ends.
SERVICES = frozenset(
    {Service.origin_assessment, Service.travel_documents, Service.family_assessment, Service.reception}
)
# Delivered in the country of origin; every other service is delivered where the case is owned.
ORIGIN_SERVICES = frozenset({Service.origin_assessment, Service.family_assessment, Service.reception})


class TravelPlanBody(Strict):
    travel_date: Day
    route: ShortText
    escort: bool = False
    receiving_caseworker: Identifier = Field(
        description="User id of the caseworker in the country of origin who takes the case on arrival."
    )


class DepartureBody(Strict):
    departed_on: Day


def _origin_block(state: JourneyState) -> str | None:
    assessment = latest_origin_assessment(state)
    if assessment is None:
        return N_("the origin assessment is not completed")
    if assessment == OriginAssessment.unsafe:
        return N_("the origin assessment found return unsafe")
    return None


def _why_not_travel_plan(state: JourneyState) -> str | None:
    if state.stage != Stage.return_:
        return stage_only(state.stage, "return")
    if state.departed_on:
        return N_("the person has already left")
    return _origin_block(state)


def _why_not_departure(state: JourneyState) -> str | None:
    if state.stage != Stage.return_:
        return stage_only(state.stage, "return")
    if state.departed_on:
        return N_("the departure is already recorded")
    if state.travel_plan_on is None:
        return N_("the travel plan comes first")
    if not task_done(state, Service.travel_documents):
        return N_("the travel documents task is not completed")
    return _origin_block(state)


def _check_departure(state: JourneyState, body: DepartureBody, actor: Actor) -> None:
    if body.departed_on < state.identified_on:
        raise InvalidCommand(N_("the departure cannot be before the identification"))


def _apply_travel_plan(state: JourneyState, body: TravelPlanBody, change: Change) -> list[TimelineEvent]:
    state.travel_plan_on, state.travel_date = change.now.date(), body.travel_date
    state.receiving_caseworker = body.receiving_caseworker
    return []


def _apply_departure(state: JourneyState, body: DepartureBody, change: Change) -> list[TimelineEvent]:
    state.departed_on = body.departed_on
    return []


STEPS = (
    StepRule(
        Step.travel_plan,
        TravelPlanBody,
        _apply_travel_plan,
        example={
            "travel_date": "2026-12-10",
            "route": "MAD-OTP by air",
            "escort": True,
            "receiving_caseworker": "cw-ro-1",
        },
        why_not=_why_not_travel_plan,
    ),
    StepRule(
        Step.departure,
        DepartureBody,
        _apply_departure,
        example={"departed_on": "2026-12-10"},
        why_not=_why_not_departure,
        check=_check_departure,
    ),
)


def open_items(state: JourneyState) -> list[OpenItem]:
    """The travel plan, then the departure on the planned travel date."""
    if state.stage != Stage.return_:
        return []
    if state.travel_plan_on is None:
        return [step_item(Step.travel_plan, None)]
    if state.departed_on is None:
        return [step_item(Step.departure, state.travel_date, since=state.travel_plan_on)]
    return []


# --- The stage's tasks: the origin assessment's answer, and reception ---------------------------


def check_completion(state: JourneyState, task: TaskState, body: CompleteTaskBody) -> None:
    """An origin assessment says whether return is safe; reception confirms an arrival after the
    departure."""
    if task.service == Service.origin_assessment and body.outcome == TaskOutcome.done:
        if body.assessment is None:
            raise InvalidCommand(N_("an origin assessment completes with assessment safe or unsafe"))
    if task.service == Service.reception and body.outcome == TaskOutcome.done:
        if state.departed_on is None:
            raise StepNotAllowed(N_("reception is confirmed after the departure"))
        if body.arrived_on is None:
            raise InvalidCommand(N_("reception completes with arrived_on"))
        if body.arrived_on < state.departed_on:
            raise InvalidCommand(N_("the arrival cannot be before the departure"))


def record_completion(task: TaskState, body: CompleteTaskBody) -> dict[str, Any]:
    """Keep an origin assessment's answer on its task; the facts it adds to the timeline entry."""
    task.assessment = body.assessment if task.service == Service.origin_assessment else None
    return {"assessment": body.assessment.value} if task.assessment and body.assessment else {}


def after_completion(
    state: JourneyState, task: TaskState, body: CompleteTaskBody, actor: Actor, now: datetime, new_id: NewId
) -> list[TimelineEvent]:
    if task.service == Service.reception and body.outcome == TaskOutcome.done:
        return _hand_over_to_origin(state, body.arrived_on or now.date(), actor, now, new_id)
    return []


def _hand_over_to_origin(
    state: JourneyState, arrived_on: date, actor: Actor, now: datetime, new_id: NewId
) -> list[TimelineEvent]:
    """Arrival hands the case to the country of origin; its history stays with it."""
    previous = state.owner_country
    state.arrived_on = arrived_on
    state.owner_country = state.origin_country
    state.owner_caseworker = state.receiving_caseworker
    state.reintegration_started_on = arrived_on
    events = [
        event(
            state,
            now,
            new_id,
            "case",
            "handed-over",
            actor,
            facts={"from_country": previous, "to_country": state.owner_country},
        )
    ]
    # Only this stage's services can be open now: a residence task was cancelled when the pathway
    # changed to return.
    events += cancel_open_of(state, SERVICES, actor, now, new_id, "arrived in the country of origin")
    events.append(enter(state, Stage.reintegration, now, new_id))
    return events
