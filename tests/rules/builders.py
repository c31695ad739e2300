"""Cases driven to any point of the journey through the real rules, with a fixed clock and fixed ids.

Every builder goes through ``check_step``/``apply_step`` and ``check_task``/``apply_task`` as the
workflows do, so a state built here is one the journey can reach. Days count from the identification
day (``day(3)`` is three days after it); the clock moves forward with the builders (``Case.on``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from workflows import rules
from workflows.model import (
    Actor,
    CaseOpening,
    JourneyConfig,
    JourneyState,
    OpenItem,
    Role,
    Service,
    Step,
    StepCommand,
    SurveyIndicator,
    TaskAction,
    TaskCommand,
    TaskState,
    TaskStatus,
    TimelineEvent,
)
from workflows.rules.task_actions import CASEWORKER_ACTIONS

OPENED_AT = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
IDENTIFIED_ON = OPENED_AT.date()

CASEWORKER = Actor(sub="cw-es-1", role=Role.caseworker)
SUPERVISOR = Actor(sub="sup-1", role=Role.supervisor)
SECOND_SUPERVISOR = Actor(sub="sup-2", role=Role.supervisor)
ADMIN = Actor(sub="admin-1", role=Role.admin)
ORCHESTRATOR = Actor(sub="orchestrator", role=Role.system)
RECEIVING_CASEWORKER = "cw-ro-1"

# Fake partner agencies.
SHELTER = "shelter-es"
CLINIC = "clinic-es"
LEGAL_AID = "legal-aid-es"
CONSULATE = "consulate-ro"
ORIGIN_OFFICE = "origin-office-ro"
PARTNER_RO = "reintegration-partner-ro"

PLAN_DAY = 70  # the reintegration plan of ``planned()``


def day(offset: int) -> date:
    """The day ``offset`` days after the identification."""
    return IDENTIFIED_ON + timedelta(days=offset)


def iso(offset: int) -> str:
    return day(offset).isoformat()


def at(offset: float) -> datetime:
    """The moment ``offset`` days after the case was opened (09:00 UTC)."""
    return OPENED_AT + timedelta(days=offset)


def partner(agency: str) -> Actor:
    return Actor(sub=f"partner-{agency}", role=Role.partner, agency=agency)


# A valid body for every step (dates relative to the identification): the refusal tables use them, so
# that a refusal comes from the state and not from the body.
BODIES: dict[Step, dict[str, Any]] = {
    Step.consent: {"assistance": True, "data_sharing": True, "given_on": iso(0)},
    Step.risk_assessment: {"level": "low", "threats": ["marker threat"], "assessed_on": iso(1)},
    Step.safety_plan: {"agreed_on": iso(1), "measures": [{"measure": "new phone number"}]},
    Step.guardian: {"guardian_type": "legal_guardian", "authority_reference": "GUARD-TEST-1", "appointed_on": iso(1)},
    Step.security_guarantee: {"confirmed_on": iso(2)},
    Step.pathway: {"pathway": "residence", "decided_on": iso(3)},
    Step.travel_plan: {"travel_date": iso(10), "route": "TEST-ROUTE", "receiving_caseworker": RECEIVING_CASEWORKER},
    Step.departure: {"departed_on": iso(10)},
    Step.residence_application: {
        "filed_on": iso(5),
        "permit_type": "victim-of-trafficking",
        "authority_reference": "A1",
    },
    Step.residence_decision: {"decision": "rejected", "decided_on": iso(60)},
    Step.appeal: {"filed_on": iso(65), "authority_reference": "APPEAL-1"},
    Step.reintegration_plan: {
        "agreed_on": iso(PLAN_DAY),
        "services": [{"service": "housing", "agency_id": PARTNER_RO}],
    },
    Step.monitoring: {"visited_on": iso(PLAN_DAY + 92), "economic": 0.7, "social": 0.7, "psychosocial": 0.7},
    Step.closure: {"reason": "lost-contact"},
    Step.approve_closure: {},
    Step.reject_closure: {"reason": "the last visit is still due"},
    Step.withdraw_consent: {"withdrawn_on": iso(4)},
}


class Ids:
    """Numbered ids, ``id-1``, ``id-2``...: the same on every run."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> str:
        self.count += 1
        return f"id-{self.count}"


@dataclass
class Case:
    """One case's pure state, with its clock and id factory; commands go through the real rules."""

    state: JourneyState
    now: datetime = OPENED_AT
    new_id: Ids = field(default_factory=Ids)

    # --- The clock --------------------------------------------------------------------------------

    def on(self, offset: float) -> Case:
        """Move the clock to ``offset`` days after the opening."""
        self.now = at(offset)
        return self

    # --- Steps ------------------------------------------------------------------------------------

    def command(
        self, step: Step | str, body: dict[str, Any] | None = None, actor: Actor = CASEWORKER, **kw: Any
    ) -> StepCommand:
        step = Step(step)
        return StepCommand(step=step, body=BODIES[step] if body is None else body, actor=actor, **kw)

    def step(
        self, step: Step | str, body: dict[str, Any] | None = None, actor: Actor = CASEWORKER
    ) -> list[TimelineEvent]:
        cmd = self.command(step, body, actor)
        return rules.apply_step(self.state, cmd, rules.check_step(self.state, cmd), self.now, self.new_id)

    def refusal(
        self, step: Step | str, body: dict[str, Any] | None = None, actor: Actor = CASEWORKER, **kw: Any
    ) -> rules.JourneyRuleError:
        """The error ``check_step`` raises for this command; the state is left as it was."""
        before = self.state.model_copy(deep=True)
        with pytest.raises(rules.JourneyRuleError) as info:
            rules.check_step(self.state, self.command(step, body, actor, **kw))
        assert self.state == before
        return info.value

    # --- Tasks ------------------------------------------------------------------------------------

    def task_command(
        self,
        action: TaskAction | str,
        body: dict[str, Any] | None = None,
        task_id: str | None = None,
        actor: Actor | None = None,
    ) -> TaskCommand:
        action = TaskAction(action)
        if actor is None:
            if action == TaskAction.delivery_failed:
                actor = ORCHESTRATOR
            elif action in CASEWORKER_ACTIONS:
                actor = CASEWORKER
            else:
                actor = partner(self.state.tasks[task_id or ""].agency_id)
        return TaskCommand(action=action, task_id=task_id, body=body or {}, actor=actor)

    def task(
        self,
        action: TaskAction | str,
        body: dict[str, Any] | None = None,
        task_id: str | None = None,
        actor: Actor | None = None,
    ) -> tuple[list[TimelineEvent], str]:
        cmd = self.task_command(action, body, task_id, actor)
        checked = rules.check_task(self.state, cmd, self.now)
        return rules.apply_task(self.state, cmd, checked, self.now, self.new_id)

    def task_refusal(
        self,
        action: TaskAction | str,
        body: dict[str, Any] | None = None,
        task_id: str | None = None,
        actor: Actor | None = None,
    ) -> rules.JourneyRuleError:
        """The error ``check_task`` raises for this action; the state is left as it was."""
        before = self.state.model_copy(deep=True)
        with pytest.raises(rules.JourneyRuleError) as info:
            rules.check_task(self.state, self.task_command(action, body, task_id, actor), self.now)
        assert self.state == before
        return info.value

    def assign(self, service: Service | str, agency: str, **body: Any) -> str:
        return self.task("assign", {"service": Service(service).value, "agency_id": agency, **body})[1]

    def complete(self, task_id: str, outcome: str = "done", **body: Any) -> list[TimelineEvent]:
        """The agency accepts the task (if it has not) and completes it."""
        if self.state.tasks[task_id].status == TaskStatus.assigned:
            self.task("accept", task_id=task_id)
        return self.task("complete", {"outcome": outcome, **body}, task_id)[0]

    def deliver(self, service: Service | str, agency: str, **completion: Any) -> str:
        """A task assigned, accepted and completed with outcome done."""
        task_id = self.assign(service, agency)
        self.complete(task_id, **completion)
        return task_id

    def complete_open_tasks(self) -> None:
        for task in rules.open_tasks(self.state):
            self.complete(task.task_id)

    # --- What the state says ----------------------------------------------------------------------

    @property
    def allowed(self) -> list[str]:
        return [s.value for s in rules.allowed_steps(self.state)]

    def items(self) -> list[OpenItem]:
        return rules.open_items(self.state)

    def item(self, name: str) -> OpenItem:
        (found,) = [i for i in self.items() if i.name == name]
        return found

    def tasks_of(self, service: Service | str) -> list[TaskState]:
        return [t for t in self.state.tasks.values() if t.service == Service(service)]

    def by_id(self, task_id: str) -> TaskState:
        return self.state.tasks[task_id]


# --- The journey's points ---------------------------------------------------------------------------


def opening(*, minor: bool = False, config: JourneyConfig | None = None) -> CaseOpening:
    """The non-identifying facts of a test case, identified on ``IDENTIFIED_ON``."""
    return CaseOpening(
        case_id="case-rules-test",
        reference="TEST-0001",
        owner_country="ES",
        owner_caseworker=CASEWORKER.sub,
        origin_country="RO",
        identified_on=IDENTIFIED_ON,
        is_minor=minor,
        opened_by=CASEWORKER,
        config=config or JourneyConfig(),
    )


def opened(*, minor: bool = False, config: JourneyConfig | None = None) -> Case:
    """Identification: the case is open, no consent yet; following every patched rule, as a case
    whose workflows started since the patches do (``JourneyWorkflowBase.follow_patches``)."""
    case = Case(rules.new_journey(opening(minor=minor, config=config), OPENED_AT))
    case.state.revision_due_from_flagging_visit = True
    rules.opened_event(case.state, CASEWORKER, case.now, case.new_id)
    return case


def consented(*, minor: bool = False, config: JourneyConfig | None = None) -> Case:
    """Protection: consent to assistance and data sharing given on the identification day."""
    case = opened(minor=minor, config=config)
    case.step("consent")
    return case


def assessed(level: str = "low", *, minor: bool = False) -> Case:
    """Protection, with the risk assessed on day 1."""
    case = consented(minor=minor)
    case.on(1).step("risk-assessment", {"level": level, "assessed_on": iso(1)})
    return case


def safety_planned(level: str = "medium", *measures: dict[str, Any]) -> Case:
    """Protection, a safety plan agreed on day 1 (by default one shelter task and one measure of our own)."""
    case = assessed(level)
    measures = measures or (
        {"measure": "shelter placement", "service": "shelter", "agency_id": SHELTER},
        {"measure": "new phone number"},
    )
    case.step("safety-plan", {"agreed_on": iso(1), "measures": list(measures)})
    return case


def guaranteed(*, minor: bool = False, guardian: bool = True, config: JourneyConfig | None = None) -> Case:
    """Pathway: low risk, the security guarantee on day 2 (a minor's guardian first, unless not)."""
    case = consented(minor=minor, config=config)
    case.on(1).step("risk-assessment")
    if minor and guardian:
        case.step("guardian")
    case.on(2).step("security-guarantee")
    return case


def returning(*, config: JourneyConfig | None = None) -> Case:
    """Return: voluntary return decided on day 3."""
    case = guaranteed(config=config)
    case.on(3).step("pathway", {"pathway": "voluntary_return", "decided_on": iso(3)})
    return case


def origin_assessed(assessment: str = "safe") -> Case:
    """Return, the origin assessment done on day 5."""
    case = returning()
    case.on(5).deliver("origin-assessment", ORIGIN_OFFICE, assessment=assessment)
    return case


def travel_ready() -> Case:
    """Return: return found safe, travel documents done (day 6), the travel plan made on day 7."""
    case = origin_assessed("safe")
    case.on(6).deliver("travel-documents", CONSULATE)
    case.on(7).step("travel-plan")
    return case


def departed() -> Case:
    """Return: the person left on day 10; reception is assigned and not yet confirmed."""
    case = travel_ready()
    case.on(10).step("departure")
    case.assign("reception", ORIGIN_OFFICE)
    return case


def arrived() -> Case:
    """Reintegration after a return: reception confirmed the arrival on day 11."""
    case = departed()
    (reception,) = case.tasks_of("reception")
    case.on(11).complete(reception.task_id, arrived_on=iso(11))
    return case


def residing() -> Case:
    """Residence: decided on day 3."""
    case = guaranteed()
    case.on(3).step("pathway", {"pathway": "residence", "decided_on": iso(3)})
    return case


def applied() -> Case:
    """Residence: the application filed on day 5."""
    case = residing()
    case.on(5).step("residence-application")
    return case


def rejected() -> Case:
    """Residence: the application rejected on day 60."""
    case = applied()
    case.on(60).step("residence-decision", {"decision": "rejected", "decided_on": iso(60)})
    return case


def appealed() -> Case:
    """Residence: the rejection appealed on day 65."""
    case = rejected()
    case.on(65).step("appeal")
    return case


def granted(*, config: JourneyConfig | None = None) -> Case:
    """Reintegration in the destination country: a permit granted on day 60."""
    case = guaranteed(config=config)
    case.on(3).step("pathway", {"pathway": "residence", "decided_on": iso(3)})
    case.on(5).step("residence-application")
    case.on(60).step("residence-decision", {"decision": "granted", "decided_on": iso(60), "valid_until": iso(425)})
    return case


def planned(*, tasks_done: bool = True, config: JourneyConfig | None = None) -> Case:
    """Reintegration: the plan agreed on ``PLAN_DAY`` with one housing task (done unless not)."""
    case = granted(config=config)
    case.on(PLAN_DAY).step("reintegration-plan")
    if tasks_done:
        case.on(PLAN_DAY + 5).complete_open_tasks()
    return case


def visit(case: Case, number: int, score: float = 0.7, **scores: float) -> list[TimelineEvent]:
    """Record the ``number``-th scheduled monitoring visit on its scheduled day."""
    months = case.state.config.monitoring_offsets_months[number - 1]
    visited_on = rules.add_months(case.state.plan_agreed_on, months)
    case.now = datetime.combine(visited_on, OPENED_AT.timetz())
    body = {"visited_on": visited_on.isoformat(), "economic": score, "social": score, "psychosocial": score}
    return case.step("monitoring", {**body, **scores})


def survey(answer: int | None = 4, **answers: int | None) -> dict[str, int | None]:
    """The sustainability survey's answers: ``answer`` to every question but those named."""
    return {i.value: answers.get(i.value, answer) for i in SurveyIndicator}


def surveyed(case: Case, number: int, answers: dict[str, int | None] | None = None) -> list[TimelineEvent]:
    """Record the ``number``-th scheduled monitoring visit on its scheduled day, scored from the survey."""
    months = case.state.config.monitoring_offsets_months[number - 1]
    visited_on = rules.add_months(case.state.plan_agreed_on, months)
    case.now = datetime.combine(visited_on, OPENED_AT.timetz())
    body = {"visited_on": visited_on.isoformat(), "survey": survey() if answers is None else answers}
    return case.step("monitoring", body)


def monitored(visits: int = 3) -> Case:
    """Reintegration: the plan's tasks done and the first ``visits`` scheduled visits recorded, all sustainable."""
    case = planned()
    for number in range(1, visits + 1):
        visit(case, number)
    return case


def closure_requested(reason: str = "lost-contact", actor: Actor = CASEWORKER) -> Case:
    """Reintegration, a closure waiting for a supervisor (every visit done)."""
    case = monitored()
    case.step("closure", {"reason": reason}, actor)
    return case


def closed(reason: str = "completed") -> Case:
    """Closed by a supervisor's approval."""
    case = closure_requested(reason)
    case.step("approve-closure", {}, SUPERVISOR)
    return case


def withdrawn() -> Case:
    """Closed: consent withdrawn in protection, with a shelter task open."""
    case = consented()
    case.assign("shelter", SHELTER)
    case.on(4).step("withdraw-consent")
    return case


# Named points of the journey, for tables that run over all of them.
POINTS: dict[str, Callable[[], Case]] = {
    "identification": opened,
    "protection": consented,
    "protection-low-risk": assessed,
    "pathway": guaranteed,
    "return": returning,
    "return-safe": origin_assessed,
    "return-ready": travel_ready,
    "return-departed": departed,
    "residence": residing,
    "residence-applied": applied,
    "residence-rejected": rejected,
    "residence-appealed": appealed,
    "reintegration": granted,
    "reintegration-planned": planned,
    "reintegration-monitored": monitored,
    "closure-requested": closure_requested,
    "closed": closed,
    "withdrawn": withdrawn,
}


# --- Refusals ---------------------------------------------------------------------------------------


def actor_for(step: Step | str) -> Actor:
    """Who records the step: a supervisor decides on a closure, a caseworker records the rest."""
    return SUPERVISOR if Step(step) in rules.SUPERVISOR_STEPS else CASEWORKER


def assert_step_refused(case: Case, step: Step | str, reason: str) -> None:
    """``why_not`` gives ``reason``, and ``check_step`` refuses with it and the steps allowed instead."""
    step = Step(step)
    assert rules.why_not(case.state, step) == reason
    error = case.refusal(step, actor=actor_for(step))
    assert type(error) is rules.StepNotAllowed
    assert error.detail == f"{step.value} is not allowed now: {reason}"
    assert error.allowed_steps == rules.allowed_steps(case.state)
    assert step not in error.allowed_steps
