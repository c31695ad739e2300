"""Reintegration: the plan of services agreed with the person, its tasks, and the monitoring visits
on the configured schedule, each scored for sustainability; a visit below a threshold flags the plan
for revision. Closure follows (``rules.closure``). Held by ``ReintegrationStage``."""

from __future__ import annotations

from datetime import date, timedelta

from pydantic import Field

from workflows.model import (
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
    TimelineEvent,
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


class MonitoringBody(Strict):
    visited_on: Day
    economic: Score
    social: Score
    psychosocial: Score
    notes: Notes = ""


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


def _check_monitoring(state: JourneyState, body: MonitoringBody, actor: Actor) -> None:
    if state.plan_agreed_on and body.visited_on < state.plan_agreed_on:
        raise InvalidCommand(N_("a monitoring visit comes after the plan was agreed"))
    if (earliest := earliest_next_visit(state)) and body.visited_on < earliest:
        raise InvalidCommand(
            N_("the next scheduled monitoring visit can be recorded from {earliest}").format(earliest=earliest)
        )


def assess_sustainability(state: JourneyState, body: MonitoringBody) -> MonitoringVisit:
    scores = {"economic": body.economic, "social": body.social, "psychosocial": body.psychosocial}
    weights = state.config.sustainability_weights
    total = sum(weights.get(k, 0.0) for k in scores) or 1.0
    weighted = sum(scores[k] * weights.get(k, 0.0) for k in scores) / total
    below = [k for k, v in scores.items() if v < state.config.sustainability_thresholds.get(k, 0.0)]
    return MonitoringVisit(
        visited_on=body.visited_on, scores=scores, weighted_score=round(weighted, 4), below_threshold=below
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
    change.entry.facts.update(weighted_score=visit.weighted_score, below_threshold=visit.below_threshold)
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
        example={"visited_on": "2027-03-20", "economic": 0.6, "social": 0.7, "psychosocial": 0.8},
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
