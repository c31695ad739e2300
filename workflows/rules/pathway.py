"""The pathway decision: assisted voluntary return or residence, decided in the pathway stage after
the security guarantee; it can change from return (before departure) to residence, and from
residence after a refusal that is not under appeal. A change starts the new stage afresh."""

from __future__ import annotations

from datetime import timedelta

from workflows.model import (
    Actor,
    Day,
    JourneyState,
    Notes,
    OpenItem,
    Pathway,
    PathwayDecision,
    Stage,
    Step,
    Strict,
    TimelineEvent,
)
from workflows.rules import residence, voluntary_return
from workflows.rules.base import Change, StepRule, step_item
from workflows.rules.errors import N_, InvalidCommand
from workflows.rules.events import enter
from workflows.rules.tasks import cancel_open_of


class PathwayBody(Strict):
    pathway: Pathway
    decided_on: Day
    reason: Notes = ""


def _why_not_pathway(state: JourneyState) -> str | None:
    stage = state.stage
    if stage == Stage.pathway:
        if state.is_minor and state.guardian_on is None:
            return N_("a guardian must be appointed before a minor's pathway decision")
        return None
    if stage == Stage.return_:
        return N_("the person has already left") if state.departed_on else None
    if stage == Stage.residence:
        if not residence.last_decision_rejected(state):
            return N_("a change follows a residence refusal")
        return N_("an appeal is pending") if state.appeal_filed_on else None
    return N_("the pathway is decided after the security guarantee")


def _check_pathway(state: JourneyState, body: PathwayBody, actor: Actor) -> None:
    if state.pathway is not None and body.pathway == state.pathway:
        raise InvalidCommand(N_("the pathway is already {pathway}").format(pathway=body.pathway.value))
    if state.stage == Stage.return_ and body.pathway != Pathway.residence:
        raise InvalidCommand(N_("from the return stage the pathway can change only to residence"))


def _apply_pathway(state: JourneyState, body: PathwayBody, change: Change) -> list[TimelineEvent]:
    state.pathway = body.pathway
    state.pathway_decisions.append(
        PathwayDecision(pathway=body.pathway, decided_on=body.decided_on, reason=body.reason)
    )
    events = cancel_open_of(
        state,
        voluntary_return.SERVICES | residence.SERVICES,
        change.actor,
        change.now,
        change.new_id,
        "pathway changed",
    )
    state.travel_plan_on = state.travel_date = None
    state.residence_applied_on = state.appeal_filed_on = None
    state.residence_decisions = []
    next_stage = Stage.return_ if body.pathway == Pathway.voluntary_return else Stage.residence
    events.append(enter(state, next_stage, change.now, change.new_id))
    return events


STEPS = (
    StepRule(
        Step.pathway,
        PathwayBody,
        _apply_pathway,
        example={"pathway": "voluntary_return", "decided_on": "2026-12-01"},
        why_not=_why_not_pathway,
        check=_check_pathway,
    ),
)


def open_items(state: JourneyState) -> list[OpenItem]:
    """The decision is due by the end of the reflection period."""
    if state.stage != Stage.pathway:
        return []
    identified = state.protection_from or state.identified_on  # or the reopening's day
    return [step_item(Step.pathway, identified + timedelta(days=state.config.reflection_days), since=identified)]
