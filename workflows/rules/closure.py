"""Closure: the caseworker requests it when the reintegration is done (every scheduled visit, no
flagged revision, no open task) or for another reason; a supervisor other than the requester
approves or rejects it. Withdrawal of consent closes the case at any time, cancelling its tasks."""

from __future__ import annotations

from datetime import timedelta

from workflows.model import (
    Actor,
    ClosureReason,
    Day,
    JourneyState,
    Notes,
    OpenItem,
    Role,
    ShortText,
    Stage,
    Step,
    Strict,
    TimelineEvent,
)
from workflows.rules.base import Change, StepRule, stage_only, step_item
from workflows.rules.errors import N_, Forbidden, StepNotAllowed
from workflows.rules.events import close
from workflows.rules.tasks import cancel_tasks, open_tasks

SUPERVISOR_STEPS = frozenset({Step.approve_closure, Step.reject_closure})


class ClosureBody(Strict):
    reason: ClosureReason
    notes: Notes = ""


class ApproveClosureBody(Strict):
    notes: Notes = ""


class RejectClosureBody(Strict):
    reason: ShortText


class WithdrawConsentBody(Strict):
    withdrawn_on: Day
    notes: Notes = ""


def _why_not_closure(state: JourneyState) -> str | None:
    if state.stage != Stage.reintegration:
        return stage_only(state.stage, "reintegration")
    if state.plan_agreed_on is None:
        return N_("the reintegration plan comes first")
    if open_tasks(state):
        return N_("open tasks must be completed or cancelled first")
    return None


def _check_closure(state: JourneyState, body: ClosureBody, actor: Actor) -> None:
    if body.reason == ClosureReason.completed:
        if len(state.monitoring_visits) < len(state.config.monitoring_offsets_months):
            raise StepNotAllowed(N_("closure as completed needs every scheduled monitoring visit"))
        if state.plan_revision_needed:
            raise StepNotAllowed(N_("closure as completed needs the flagged plan revised first"))


def _check_approval(state: JourneyState, body: ApproveClosureBody, actor: Actor) -> None:
    if actor.sub == state.closure_requested_by:
        raise Forbidden(N_("a closure is approved by someone other than who requested it"))


def _apply_closure(state: JourneyState, body: ClosureBody, change: Change) -> list[TimelineEvent]:
    state.closure_requested, state.closure_requested_at = body.reason, change.now
    state.closure_requested_by = change.actor.sub
    return []


def _apply_approval(state: JourneyState, body: ApproveClosureBody, change: Change) -> list[TimelineEvent]:
    reason = state.closure_requested or ClosureReason.other
    state.closure_requested_by = None
    return [close(state, reason, change.now, change.new_id)]


def _apply_rejection(state: JourneyState, body: RejectClosureBody, change: Change) -> list[TimelineEvent]:
    state.closure_requested = state.closure_requested_at = state.closure_requested_by = None
    state.closure_rejections += 1
    return []


def _apply_withdrawal(state: JourneyState, body: WithdrawConsentBody, change: Change) -> list[TimelineEvent]:
    state.consent_withdrawn_on = body.withdrawn_on
    events = cancel_tasks(state, open_tasks(state), change.actor, change.now, change.new_id, "consent withdrawn")
    events.append(close(state, ClosureReason.withdrew, change.now, change.new_id))
    return events


# Approval, rejection and withdrawal have no condition of their own: ``rules.steps.why_not`` allows
# the first two while a closure waits, and withdrawal whenever the case is open.
STEPS = (
    StepRule(
        Step.closure,
        ClosureBody,
        _apply_closure,
        example={"reason": "completed"},
        why_not=_why_not_closure,
        check=_check_closure,
    ),
    StepRule(
        Step.approve_closure,
        ApproveClosureBody,
        _apply_approval,
        example={"notes": "Plan completed and sustainable."},
        check=_check_approval,
        roles=(Role.supervisor,),
    ),
    StepRule(
        Step.reject_closure,
        RejectClosureBody,
        _apply_rejection,
        example={"reason": "The 12-month visit is still due."},
        roles=(Role.supervisor,),
    ),
    StepRule(
        Step.withdraw_consent,
        WithdrawConsentBody,
        _apply_withdrawal,
        example={"withdrawn_on": "2026-11-25"},
    ),
)


def open_items(state: JourneyState) -> list[OpenItem]:
    """A requested closure waits for a supervisor's decision within the approval days."""
    if state.closure_requested is None or state.closure_requested_at is None:
        return []
    return [
        step_item(
            Step.approve_closure,
            state.closure_requested_at + timedelta(days=state.config.closure_approval_days),
            turn="supervisor",
            since=state.closure_requested_at,
        )
    ]
