"""What every stage module is made of: a step's rule (``StepRule``), the change a command makes
(``Change``), and how a stage names an open step (``step_item``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from workflows.model import Actor, JourneyState, OpenItem, Role, Step, Strict, TimelineEvent
from workflows.rules.dates import as_moment
from workflows.rules.errors import N_

NewId = Callable[[], str]
CASEWORK = (Role.caseworker, Role.supervisor)


@dataclass
class Change:
    """One command being applied: who, when, the id factory, and the step's own timeline entry."""

    actor: Actor
    now: datetime
    new_id: NewId
    entry: TimelineEvent


def _no_condition(state: JourneyState) -> str | None:
    return None


def _no_check(state: JourneyState, body: Any, actor: Actor) -> None:
    return None


@dataclass(frozen=True)
class StepRule:
    """One step of the journey, whole: who records it, its body, when it is allowed, what its body
    must satisfy in this state, what it changes, and an example for the API's documentation.

    ``why_not`` answers for this step alone, after the case-wide conditions (closed, a closure
    waiting, consent) that ``rules.steps.why_not`` checks for every step; ``check`` raises a
    ``JourneyRuleError``; ``apply`` changes the state and returns the timeline events it makes
    besides the step's own entry (``change.entry``)."""

    step: Step
    body: type[Strict]
    apply: Callable[[JourneyState, Any, Change], list[TimelineEvent]]
    example: dict[str, Any]
    why_not: Callable[[JourneyState], str | None] = _no_condition
    check: Callable[[JourneyState, Any, Actor], None] = _no_check
    roles: tuple[Role, ...] = CASEWORK


def step_item(
    name: Step, due: date | datetime | None, turn: str = "caseworker", since: date | datetime | None = None
) -> OpenItem:
    """An open step: due by the end of its due day, its deadline running from ``since``."""
    return OpenItem(
        kind="step",
        name=name.value,
        due_at=as_moment(due, end=True),
        turn=turn,
        since=as_moment(since, end=False),
    )


def stage_only(stage: object, wanted: str) -> str:
    value = getattr(stage, "value", stage)
    return N_("allowed in the {wanted} stage, and the case is in {stage}").format(wanted=wanted, stage=value)
