"""Reintegration: the plan of services agreed with the person, its tasks, and the monitoring visits
on the configured schedule, each scored for sustainability; a visit below a threshold flags the plan
for revision. Closure follows (``rules.closure``). Held by ``ReintegrationStage``.

A visit is scored from the answers to IOM's Reintegration Sustainability Survey (``SurveyAnswers``:
15 indicators, five per dimension, each 1..5 or not applicable): a dimension's score is the
weighted mean of its answers put on 0..1, ``(answer - 1) / 4``, with the indicators' weights of
``JourneyConfig.survey_indicator_weights``. The three scores typed in directly, as before the
survey, are still taken: old clients send them, and every stored history carries them."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, timedelta
from typing import Any

from pydantic import Field

from workflows.model import (
    SURVEY_INDICATORS,
    SURVEY_MIN_ANSWERS,
    Actor,
    Day,
    Identifier,
    JourneyState,
    MonitoringVisit,
    Notes,
    OpenItem,
    Score,
    Service,
    Stage,
    Step,
    Strict,
    SurveyAnswer,
    SurveyIndicator,
    SustainabilityDimension,
    TimelineEvent,
    indicators_of,
)
from workflows.rules.base import Change, StepRule, stage_only, step_item
from workflows.rules.dates import add_months
from workflows.rules.errors import N_, InvalidCommand
from workflows.rules.events import task_event
from workflows.rules.tasks import new_task

# A plan's services; the immediate ones (medical, psychosocial, legal among them) stay available too.
SERVICES = frozenset(
    {
        Service.medical,
        Service.psychosocial,
        Service.legal,
        Service.job_orientation,
        Service.education,
        Service.housing,
        Service.financial,
        Service.family,
        Service.security_follow_up,
    }
)


class PlannedService(Strict):
    service: Service
    agency_id: Identifier | None = Field(default=None, description="Default: the service's default agency")
    due_date: Day | None = None
    notes: Notes = ""


class ReintegrationPlanBody(Strict):
    services: list[PlannedService] = Field(min_length=1, max_length=20)
    agreed_on: Day


def _answer(dimension: str, words: str) -> Any:
    return Field(default=None, description=f"{dimension}: {words}. 1 (the worst) to 5 (the best); null: not applicable")


class SurveyAnswers(Strict):
    """The answers to IOM's Reintegration Sustainability Survey, one per indicator (``SurveyIndicator``,
    in its order): 1, the worst situation, to 5, the best; null or left out: not applicable, or the
    person declined to answer. Each dimension needs at least three answers."""

    economic_satisfaction: SurveyAnswer | None = _answer("Economic", "satisfaction with the current economic situation")
    food_security: SurveyAnswer | None = _answer("Economic", "how often the household had to reduce food (5: never)")
    ability_to_borrow: SurveyAnswer | None = _answer("Economic", "could borrow money if needed")
    debt_to_spending: SurveyAnswer | None = _answer("Economic", "debt repayments small relative to spending")
    employment: SurveyAnswer | None = _answer("Economic", "working or in training, or a regular source of income")
    housing: SurveyAnswer | None = _answer("Social", "access to and standard of housing")
    education: SurveyAnswer | None = _answer("Social", "the household's school-age children attend school")
    justice: SurveyAnswer | None = _answer("Social", "access to justice and law enforcement")
    documentation: SurveyAnswer | None = _answer("Social", "holds identity documents")
    public_services: SurveyAnswer | None = _answer("Social", "access to health care and drinking water")
    social_participation: SurveyAnswer | None = _answer("Psychosocial", "takes part in community activities")
    support_network: SurveyAnswer | None = _answer("Psychosocial", "has people to rely on")
    discrimination: SurveyAnswer | None = _answer("Psychosocial", "does not experience discrimination")
    wellbeing: SurveyAnswer | None = _answer("Psychosocial", "rarely shows signs of distress")
    physical_safety: SurveyAnswer | None = _answer("Psychosocial", "feels physically safe where they live")

    def answers(self) -> dict[SurveyIndicator, int | None]:
        """Every indicator's answer, in the survey's order (None: not applicable)."""
        return {i: getattr(self, i.value) for i in SURVEY_INDICATORS}


class MonitoringBody(Strict):
    """A monitoring visit, scored for sustainability from the answers to the sustainability survey
    (``survey``); or, as before the survey, from the three dimensions' scores typed in (``economic``,
    ``social`` and ``psychosocial``, 0 to 1). One of the two: the survey, or all three scores."""

    visited_on: Day
    economic: Score | None = Field(default=None, description="Without a survey: the economic score, 0 to 1")
    social: Score | None = Field(default=None, description="Without a survey: the social score, 0 to 1")
    psychosocial: Score | None = Field(default=None, description="Without a survey: the psychosocial score, 0 to 1")
    survey: SurveyAnswers | None = None
    notes: Notes = ""

    @property
    def typed_scores(self) -> dict[str, float | None]:
        return {"economic": self.economic, "social": self.social, "psychosocial": self.psychosocial}


def _why_not_plan(state: JourneyState) -> str | None:
    if state.stage != Stage.reintegration:
        return stage_only(state.stage, "reintegration")
    if state.plan_agreed_on and not state.plan_revision_needed:
        return N_("the plan is agreed; it is revised when monitoring flags it")
    return None


def _why_not_monitoring(state: JourneyState) -> str | None:
    if state.stage != Stage.reintegration:
        return stage_only(state.stage, "reintegration")
    return None if state.plan_agreed_on else N_("the reintegration plan comes first")


def _check_plan(state: JourneyState, body: ReintegrationPlanBody, actor: Actor) -> None:
    if any(not i.agency_id for i in body.services):
        raise InvalidCommand(N_("every partner task of a plan names its agency"))
    if any(i.service not in SERVICES for i in body.services):
        raise InvalidCommand(
            N_("a reintegration service is one of: {services}").format(
                services=", ".join(sorted(s.value for s in SERVICES))
            )
        )


def earliest_next_visit(state: JourneyState) -> date | None:
    """A scheduled visit can be recorded from its grace period before its date; extra visits any time."""
    done, offsets = len(state.monitoring_visits), state.config.monitoring_offsets_months
    if state.plan_agreed_on is None or done >= len(offsets):
        return None
    scheduled = add_months(state.plan_agreed_on, offsets[done])
    return scheduled - timedelta(days=state.config.monitoring_grace_days)


def short_dimensions(answers: Mapping[SurveyIndicator, int | None]) -> list[SustainabilityDimension]:
    """The dimensions with fewer answers than their score needs (``SURVEY_MIN_ANSWERS``)."""
    return [
        dimension
        for dimension in SustainabilityDimension
        if sum(answers.get(i) is not None for i in indicators_of(dimension)) < SURVEY_MIN_ANSWERS
    ]


def dimension_scores(answers: Mapping[SurveyIndicator, int | None], weights: Mapping[str, float]) -> dict[str, float]:
    """Each dimension's score, 0..1: the weighted mean of its answers put on 0..1, ``(answer - 1) / 4``,
    over the indicators answered (an indicator the weights do not name weighs 1.0), to four decimals.
    Every dimension has its three answers (``short_dimensions``) and the configuration lets no three
    weigh nothing together (``JourneyConfig``), so no total weight is 0."""
    scores = {}
    for dimension in SustainabilityDimension:
        answered = [
            (weights.get(i.value, 1.0), answer)
            for i in indicators_of(dimension)
            if (answer := answers.get(i)) is not None
        ]
        total = sum(w for w, _ in answered)
        scores[dimension.value] = round(sum(w * (a - 1) / 4 for w, a in answered) / total, 4)
    return scores


def _check_monitoring_scores(body: MonitoringBody) -> None:
    """The survey or all three scores typed in, one of the two; and each dimension of a survey answered enough."""
    typed = [v for v in body.typed_scores.values() if v is not None]
    by_survey = body.survey is not None and not typed
    by_scores = body.survey is None and len(typed) == len(body.typed_scores)
    if not (by_survey or by_scores):
        raise InvalidCommand(
            N_(
                "a monitoring visit is scored either by the survey's answers (survey) or by all three scores "
                "(economic, social and psychosocial), one of the two"
            )
        )
    if body.survey is not None and (short := short_dimensions(body.survey.answers())):
        raise InvalidCommand(
            N_("the survey needs at least {minimum} answers in each dimension; too few in: {dimensions}").format(
                minimum=SURVEY_MIN_ANSWERS, dimensions=", ".join(d.value for d in short)
            )
        )


def _check_monitoring(state: JourneyState, body: MonitoringBody, actor: Actor) -> None:
    _check_monitoring_scores(body)
    if state.plan_agreed_on and body.visited_on < state.plan_agreed_on:
        raise InvalidCommand(N_("a monitoring visit comes after the plan was agreed"))
    if (earliest := earliest_next_visit(state)) and body.visited_on < earliest:
        raise InvalidCommand(
            N_("the next scheduled monitoring visit can be recorded from {earliest}").format(earliest=earliest)
        )


def assess_sustainability(state: JourneyState, body: MonitoringBody) -> MonitoringVisit:
    """The visit scored: each dimension's score (from the survey's answers, or as typed in), their
    weighted mean by ``sustainability_weights``, and the dimensions below ``sustainability_thresholds``."""
    cfg = state.config
    answers: dict[SurveyIndicator, int | None] = {}
    if body.survey is not None:
        answers = body.survey.answers()
        scores = dimension_scores(answers, cfg.survey_indicator_weights)
    else:
        scores = {k: v for k, v in body.typed_scores.items() if v is not None}
    weights = cfg.sustainability_weights
    total = sum(weights.get(k, 0.0) for k in scores) or 1.0
    weighted = sum(scores[k] * weights.get(k, 0.0) for k in scores) / total
    below = [k for k, v in scores.items() if v < cfg.sustainability_thresholds.get(k, 0.0)]
    return MonitoringVisit(
        visited_on=body.visited_on,
        scores=scores,
        weighted_score=round(weighted, 4),
        below_threshold=below,
        survey={i.value: a for i, a in answers.items()},
    )


def _apply_plan(state: JourneyState, body: ReintegrationPlanBody, change: Change) -> list[TimelineEvent]:
    if state.plan_agreed_on is None:
        state.plan_agreed_on = body.agreed_on
    else:
        state.plan_revisions += 1
    state.plan_revision_needed, state.plan_revision_flagged_on = False, None
    events = []
    for item in body.services:
        task = new_task(state, item.service, item.agency_id or "", item.due_date, item.notes, change.now, change.new_id)
        task.plan_item = True
        events.append(task_event(state, task, "assigned", change.actor, change.now, change.new_id))
    return events


def _apply_monitoring(state: JourneyState, body: MonitoringBody, change: Change) -> list[TimelineEvent]:
    visit = assess_sustainability(state, body)
    state.monitoring_visits.append(visit)
    if visit.below_threshold and not state.plan_revision_needed:
        state.plan_revision_needed, state.plan_revision_flagged_on = True, visit.visited_on
    # The step's entry says the dimensions' scores, typed in or computed from the survey (whose
    # answers the visit keeps; the entry of a body with the scores, null "survey" and all, is as before).
    facts = change.entry.facts
    facts.pop("survey", None)
    if visit.survey:
        facts.update(visit.scores)
    facts.update(weighted_score=visit.weighted_score, below_threshold=visit.below_threshold)
    return []


STEPS = (
    StepRule(
        Step.reintegration_plan,
        ReintegrationPlanBody,
        _apply_plan,
        example={
            "agreed_on": "2026-12-20",
            "services": [
                {"service": "medical", "agency_id": "reintegration-partner-ro"},
                {"service": "job-orientation", "agency_id": "reintegration-partner-ro", "due_date": "2027-01-31"},
            ],
        },
        why_not=_why_not_plan,
        check=_check_plan,
    ),
    StepRule(
        Step.monitoring,
        MonitoringBody,
        _apply_monitoring,
        example={
            "visited_on": "2027-03-20",
            "survey": {
                "economic_satisfaction": 3,
                "food_security": 4,
                "ability_to_borrow": 2,
                "debt_to_spending": None,
                "employment": 4,
                "housing": 4,
                "education": None,
                "justice": 3,
                "documentation": 5,
                "public_services": 4,
                "social_participation": 3,
                "support_network": 4,
                "discrimination": 4,
                "wellbeing": 3,
                "physical_safety": 5,
            },
        },
        why_not=_why_not_monitoring,
        check=_check_monitoring,
    ),
)


def revision_runs_from(state: JourneyState) -> date:
    """The day a needed revision's deadline runs from: the visit that flagged the plan, which later
    visits do not move. Without the patch ``revision-due-from-flagging-visit`` (histories and runs
    from before it), and for a revision flagged in a state handed over by a run of the code before
    it (which did not note the flagging visit), the latest visit, as before."""
    flagged = state.plan_revision_flagged_on
    if state.revision_due_from_flagging_visit and flagged is not None:
        return flagged
    return state.monitoring_visits[-1].visited_on


def open_items(state: JourneyState) -> list[OpenItem]:
    """The plan within its days of the stage's start (or of the visit that flagged it), then each
    scheduled visit by its date plus the grace period; nothing while a closure waits."""
    if state.stage != Stage.reintegration or state.closure_requested is not None:
        return []
    cfg = state.config
    started = state.reintegration_started_on or (state.stage_entered_at or state.opened_at).date()
    if state.plan_agreed_on is None:
        return [
            step_item(Step.reintegration_plan, started + timedelta(days=cfg.reintegration_plan_days), since=started)
        ]
    items = []
    if state.plan_revision_needed:
        since = revision_runs_from(state)
        due = since + timedelta(days=cfg.reintegration_plan_days)
        items.append(step_item(Step.reintegration_plan, due, since=since))
    done = len(state.monitoring_visits)
    if done < len(cfg.monitoring_offsets_months):
        scheduled = add_months(state.plan_agreed_on, cfg.monitoring_offsets_months[done])
        items.append(step_item(Step.monitoring, scheduled + timedelta(days=cfg.monitoring_grace_days), since=scheduled))
    return items
