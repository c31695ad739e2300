"""Steps: when each is allowed, checking a step command, and recording it. The case-wide conditions
are here; each step's own are in its stage's module (``rules.registry`` says which)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from workflows.model import CaseStatus, JourneyState, Role, Step, StepCommand, TimelineEvent
from workflows.rules.base import Change, NewId
from workflows.rules.errors import N_, Forbidden, InvalidCommand, StepNotAllowed, VersionMismatch
from workflows.rules.events import event, step_facts
from workflows.rules.registry import STEPS, SUPERVISOR_STEPS

_Body = TypeVar("_Body", bound=BaseModel)


def why_not(state: JourneyState, step: Step) -> str | None:
    """None when the step is allowed now, otherwise why not, in words a caseworker understands."""
    if state.status == CaseStatus.closed:
        return N_("the case is closed")
    closure_pending = state.closure_requested is not None
    if step == Step.withdraw_consent:
        return None
    if step in SUPERVISOR_STEPS:
        return None if closure_pending else N_("no closure is waiting for approval")
    if closure_pending:
        return N_("a closure is waiting for a supervisor's decision")
    if step == Step.consent:
        return None
    if state.consent is None or not state.consent.assistance:
        return N_("informed consent to assistance has not been recorded")
    return STEPS[step].why_not(state)


def allowed_steps(state: JourneyState) -> list[Step]:
    return [step for step in Step if why_not(state, step) is None]


def parse_body(model: type[_Body], body: dict[str, Any]) -> _Body:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        fields = ", ".join(".".join(str(p) for p in e["loc"]) or "body" for e in exc.errors())
        raise InvalidCommand(N_("invalid body: {fields}").format(fields=fields)) from None


def check_step(state: JourneyState, cmd: StepCommand) -> Any:
    """Raise if the step may not be recorded now; return its parsed body."""
    rule = STEPS[cmd.step]
    if cmd.actor.role not in rule.roles:
        if rule.roles == (Role.supervisor,):
            raise Forbidden(N_("{step} is a supervisor's decision").format(step=cmd.step.value))
        raise Forbidden(N_("only caseworkers and supervisors record steps"))
    reason = why_not(state, cmd.step)
    if reason:
        raise StepNotAllowed(
            N_("{step} is not allowed now: {reason}").format(step=cmd.step.value, reason=reason), allowed_steps(state)
        )
    if cmd.expected_version is not None and cmd.expected_version != state.version:
        raise VersionMismatch(N_("the case moved on since that version; read it again"))
    body = parse_body(rule.body, cmd.body)
    try:
        rule.check(state, body, cmd.actor)
    except StepNotAllowed as exc:
        if exc.allowed_steps is None:
            exc.allowed_steps = allowed_steps(state)
        raise
    return body


def apply_step(state: JourneyState, cmd: StepCommand, body: Any, now: datetime, new_id: NewId) -> list[TimelineEvent]:
    """Record a checked step; return the timeline events it makes."""
    state.version += 1
    entry = event(state, now, new_id, "step", cmd.step.value, cmd.actor, facts=step_facts(cmd.body))
    return [entry, *STEPS[cmd.step].apply(state, body, Change(cmd.actor, now, new_id, entry))]
