"""Protection: risk assessment, safety plan, guardian and security guarantee; their refusals, effects and deadlines."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.rules.builders import (
    CLINIC,
    IDENTIFIED_ON,
    SHELTER,
    Case,
    assert_step_refused,
    assessed,
    consented,
    granted,
    guaranteed,
    iso,
    residing,
    returning,
    safety_planned,
)
from workflows import rules
from workflows.model import JourneyConfig, RiskLevel, Service, Stage, TaskStatus
from workflows.rules.dates import end_of, start_of

SHELTER_TASK = {"measure": "shelter placement", "service": "shelter", "agency_id": SHELTER}
OWN_MEASURE = {"measure": "new phone number"}


def minor_returning() -> Case:
    case = guaranteed(minor=True)
    case.step("pathway", {"pathway": "voluntary_return", "decided_on": iso(3)})
    return case


def plan_tasks_done() -> Case:
    case = safety_planned("high", SHELTER_TASK, {**SHELTER_TASK, "service": "police-protection"})
    case.on(2).complete_open_tasks()
    return case


def plan_task_unable() -> Case:
    case = safety_planned("medium")
    (task,) = rules.open_tasks(case.state)
    case.on(2).complete(task.task_id, outcome="unable", notes="no place free")
    return case


def plan_task_cancelled() -> Case:
    case = safety_planned("medium")
    (task,) = rules.open_tasks(case.state)
    case.task("cancel", {"reason": "a family placement was found"}, task.task_id)
    return case


BASE = ["consent", "risk-assessment"]


@pytest.mark.parametrize(
    ("build", "allowed"),
    [
        (consented, [*BASE, "withdraw-consent"]),
        (lambda: consented(minor=True), [*BASE, "guardian", "withdraw-consent"]),
        (lambda: assessed("low"), [*BASE, "safety-plan", "security-guarantee", "withdraw-consent"]),
        (lambda: assessed("medium"), [*BASE, "safety-plan", "withdraw-consent"]),
        (lambda: assessed("high"), [*BASE, "safety-plan", "withdraw-consent"]),
        (
            lambda: assessed("low", minor=True),
            [*BASE, "safety-plan", "guardian", "security-guarantee", "withdraw-consent"],
        ),
        (lambda: safety_planned("medium"), [*BASE, "safety-plan", "withdraw-consent"]),
        (lambda: safety_planned("high", OWN_MEASURE), [*BASE, "safety-plan", "security-guarantee", "withdraw-consent"]),
        (plan_tasks_done, [*BASE, "safety-plan", "security-guarantee", "withdraw-consent"]),
        (plan_task_unable, [*BASE, "safety-plan", "security-guarantee", "withdraw-consent"]),
        (plan_task_cancelled, [*BASE, "safety-plan", "security-guarantee", "withdraw-consent"]),
        (guaranteed, [*BASE, "safety-plan", "pathway", "withdraw-consent"]),
        (lambda: guaranteed(minor=True, guardian=False), [*BASE, "safety-plan", "guardian", "withdraw-consent"]),
        (lambda: guaranteed(minor=True), [*BASE, "safety-plan", "guardian", "pathway", "withdraw-consent"]),
    ],
    ids=[
        "no-risk-assessment",
        "minor-no-risk-assessment",
        "low-risk",
        "medium-risk-no-plan",
        "high-risk-no-plan",
        "minor-low-risk",
        "medium-risk-plan-task-open",
        "high-risk-plan-without-tasks",
        "plan-tasks-done",
        "plan-task-unable",
        "plan-task-cancelled",
        "pathway-stage",
        "pathway-stage-minor-without-guardian",
        "pathway-stage-minor-with-guardian",
    ],
)
def test_allowed_steps(build, allowed):
    assert build().allowed == allowed


@pytest.mark.parametrize(
    ("build", "step", "reason"),
    [
        (consented, "safety-plan", "the risk assessment comes first"),
        (consented, "security-guarantee", "the risk assessment comes first"),
        (consented, "guardian", "a guardian is appointed only for a minor"),
        (guaranteed, "guardian", "a guardian is appointed only for a minor"),
        (returning, "guardian", "a guardian is appointed only for a minor"),
        (lambda: assessed("medium"), "security-guarantee", "a safety plan is required for medium risk"),
        (lambda: assessed("high"), "security-guarantee", "a safety plan is required for high risk"),
        (lambda: safety_planned("medium"), "security-guarantee", "the safety plan's tasks are not all completed"),
        (guaranteed, "security-guarantee", "allowed in the protection stage, and the case is in pathway"),
        (returning, "risk-assessment", "allowed in the protection stage, and the case is in return"),
        (returning, "safety-plan", "allowed in the protection stage, and the case is in return"),
        (minor_returning, "guardian", "allowed in the protection stage, and the case is in return"),
        (residing, "security-guarantee", "allowed in the protection stage, and the case is in residence"),
        (granted, "risk-assessment", "allowed in the protection stage, and the case is in reintegration"),
    ],
    ids=[
        "plan-before-assessment",
        "guarantee-before-assessment",
        "guardian-for-an-adult",
        "guardian-for-an-adult-in-pathway",
        "guardian-for-an-adult-in-return",
        "guarantee-medium-risk-without-plan",
        "guarantee-high-risk-without-plan",
        "guarantee-with-plan-task-open",
        "guarantee-twice",
        "risk-assessment-in-return",
        "safety-plan-in-return",
        "guardian-for-a-minor-in-return",
        "guarantee-in-residence",
        "risk-assessment-in-reintegration",
    ],
)
def test_refusals(build, step, reason):
    assert_step_refused(build(), step, reason)


@pytest.mark.parametrize(
    ("measures", "error", "detail"),
    [
        (
            [{"measure": "escort home", "service": "reception", "agency_id": SHELTER}],
            rules.InvalidCommand,
            "a safety measure's service is one of: legal, medical, police-protection, psychosocial, shelter",
        ),
        (
            [OWN_MEASURE, {"measure": "shelter placement", "service": "shelter"}],
            rules.InvalidCommand,
            "every partner task of a plan names its agency",
        ),
        ([], rules.InvalidCommand, "invalid body: measures"),
        ([{"service": "shelter", "agency_id": SHELTER}], rules.InvalidCommand, "invalid body: measures.0.measure"),
    ],
    ids=["service-not-immediate", "task-without-agency", "no-measures", "measure-without-words"],
)
def test_safety_plan_checks(measures, error, detail):
    refused = assessed("medium").refusal("safety-plan", {"agreed_on": iso(1), "measures": measures})
    assert type(refused) is error and refused.detail == detail


def test_risk_assessment_body_is_checked():
    refused = consented().refusal("risk-assessment", {"level": "extreme", "assessed_on": iso(1)})
    assert type(refused) is rules.InvalidCommand and refused.detail == "invalid body: level"


def test_the_risk_assessment_records_the_level_and_not_the_threats():
    case = consented().on(1)
    events = case.step("risk-assessment", {"level": "high", "threats": ["marker threat"], "assessed_on": iso(1)})
    assert (case.state.risk_level, case.state.risk_assessed_on.isoformat()) == (RiskLevel.high, iso(1))
    assert [e.name for e in events] == ["risk-assessment"]
    assert events[0].facts == {"level": "high", "assessed_on": iso(1)}  # threats are free text


def test_a_new_risk_assessment_replaces_the_level():
    case = assessed("high")
    case.step("risk-assessment", {"level": "low", "assessed_on": iso(2)})
    assert case.state.risk_level == RiskLevel.low
    assert "security-guarantee" in case.allowed  # low risk needs no safety plan


def test_the_safety_plan_gives_its_partner_measures_to_agencies():
    case = assessed("high").on(1)
    events = case.step(
        "safety-plan",
        {
            "agreed_on": iso(1),
            "measures": [
                SHELTER_TASK,
                {"measure": "police escort", "service": "police-protection", "agency_id": CLINIC, "due_date": iso(4)},
                OWN_MEASURE,
            ],
        },
    )
    state = case.state
    assert state.safety_plan_on.isoformat() == iso(1)
    assert [(e.kind, e.name) for e in events] == [("step", "safety-plan"), ("task", "assigned"), ("task", "assigned")]
    assert events[0].facts == {"agreed_on": iso(1)}  # the measures are free text
    shelter, police = state.tasks.values()
    assert (shelter.service, shelter.agency_id, shelter.safety_plan) == (Service.shelter, SHELTER, True)
    assert shelter.due_on == case.now.date() + timedelta(days=14) and shelter.stage == Stage.protection
    assert (police.service, police.agency_id, police.due_on.isoformat()) == (Service.police_protection, CLINIC, iso(4))
    assert all(t.status == TaskStatus.assigned and not t.plan_item for t in state.tasks.values())
    assert [e.task_id for e in events[1:]] == [shelter.task_id, police.task_id]


def test_the_guardian_is_recorded():
    case = consented(minor=True)
    assert [e.name for e in case.step("guardian")] == ["guardian"]
    assert case.state.guardian_on.isoformat() == iso(1)
    assert "guardian" in case.allowed  # a new appointment can be recorded


def test_the_security_guarantee_opens_the_pathway_decision():
    case = assessed("low").on(2)
    events = case.step("security-guarantee")
    state = case.state
    assert state.stage == Stage.pathway and state.security_guarantee_on.isoformat() == iso(2)
    assert [(e.kind, e.name, e.facts) for e in events[1:]] == [("stage", "pathway", {"from": "protection"})]
    assert state.stage_entered_at == case.now and state.stage_runs == 0


IDENTIFIED = start_of(IDENTIFIED_ON)


def day_end(offset: int):
    return end_of(IDENTIFIED.date() + timedelta(days=offset))


@pytest.mark.parametrize(
    ("build", "items"),
    [
        (consented, [("risk-assessment", 3), ("security-guarantee", 14)]),
        (lambda: consented(minor=True), [("risk-assessment", 3), ("guardian", 30), ("security-guarantee", 14)]),
        (lambda: assessed("low"), [("security-guarantee", 14)]),
        (lambda: assessed("medium"), [("safety-plan", 14), ("security-guarantee", 14)]),
        (lambda: assessed("high"), [("safety-plan", 14), ("security-guarantee", 14)]),
        (lambda: safety_planned("high", OWN_MEASURE), [("security-guarantee", 14)]),
        (lambda: guaranteed(minor=True, guardian=False), [("guardian", 30), ("pathway", 30)]),
        (guaranteed, [("pathway", 30)]),
    ],
    ids=[
        "fresh",
        "fresh-minor",
        "low-risk",
        "medium-risk",
        "high-risk",
        "plan-agreed",
        "pathway-minor-without-guardian",
        "pathway",
    ],
)
def test_deadlines_run_from_the_identification(build, items):
    steps = [i for i in build().items() if i.kind == "step"]
    assert [(i.name, i.due_at, i.since, i.turn) for i in steps] == [
        (name, day_end(days), IDENTIFIED, "caseworker") for name, days in items
    ]


def test_deadlines_follow_the_configuration():
    config = JourneyConfig(risk_assessment_days=5, security_guarantee_days=10, reflection_days=45)
    case = consented(minor=True, config=config)
    assert [(i.name, i.due_at) for i in case.items()] == [
        ("risk-assessment", day_end(5)),
        ("guardian", day_end(45)),
        ("security-guarantee", day_end(10)),
    ]


def test_safety_plan_tasks_are_open_items_of_the_agency():
    case = safety_planned("medium")
    (task,) = rules.open_tasks(case.state)
    (item,) = [i for i in case.items() if i.kind == "task"]
    assert (item.name, item.task_id, item.agency_id, item.turn) == ("shelter", task.task_id, SHELTER, "agency")
    assert item.due_at == task.accept_by  # accepting comes first


@pytest.mark.parametrize("build", [returning, residing, granted], ids=["return", "residence", "reintegration"])
def test_no_protection_items_after_the_pathway(build):
    names = {i.name for i in build().items()}
    assert not names & {"risk-assessment", "safety-plan", "guardian", "security-guarantee"}
