"""Voluntary return: origin assessment, travel documents, travel plan, departure, and the hand-over on arrival."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.rules.builders import (
    CASEWORKER,
    CONSULATE,
    IDENTIFIED_ON,
    ORIGIN_OFFICE,
    RECEIVING_CASEWORKER,
    SHELTER,
    Case,
    arrived,
    assert_step_refused,
    departed,
    guaranteed,
    iso,
    origin_assessed,
    residing,
    returning,
    travel_ready,
)
from workflows import rules
from workflows.model import OriginAssessment, Stage, TaskStatus
from workflows.rules.dates import end_of, start_of


def safe_then_unsafe() -> Case:
    """Return: the travel plan made, then a new origin assessment finds return unsafe."""
    case = travel_ready()
    case.on(8).deliver("origin-assessment", ORIGIN_OFFICE, assessment="unsafe")
    return case


def unsafe_then_safe() -> Case:
    case = origin_assessed("unsafe")
    case.on(6).deliver("origin-assessment", ORIGIN_OFFICE, assessment="safe")
    return case


def planned_without_documents() -> Case:
    case = origin_assessed("safe")
    case.on(7).step("travel-plan")
    return case


def documents_unable() -> Case:
    case = planned_without_documents()
    task_id = case.assign("travel-documents", CONSULATE)
    case.complete(task_id, outcome="unable")
    return case


def assessment_unable() -> Case:
    case = returning()
    case.complete(case.assign("origin-assessment", ORIGIN_OFFICE), outcome="unable")
    return case


def reception_unable() -> Case:
    case = departed()
    (reception,) = case.tasks_of("reception")
    case.on(12).complete(reception.task_id, outcome="unable", notes="not at the address")
    return case


@pytest.mark.parametrize(
    ("build", "allowed"),
    [
        (returning, ["consent", "pathway", "withdraw-consent"]),
        (assessment_unable, ["consent", "pathway", "withdraw-consent"]),
        (lambda: origin_assessed("unsafe"), ["consent", "pathway", "withdraw-consent"]),
        (origin_assessed, ["consent", "pathway", "travel-plan", "withdraw-consent"]),
        (unsafe_then_safe, ["consent", "pathway", "travel-plan", "withdraw-consent"]),
        (planned_without_documents, ["consent", "pathway", "travel-plan", "withdraw-consent"]),
        (travel_ready, ["consent", "pathway", "travel-plan", "departure", "withdraw-consent"]),
        (safe_then_unsafe, ["consent", "pathway", "withdraw-consent"]),
        (departed, ["consent", "withdraw-consent"]),
        (reception_unable, ["consent", "withdraw-consent"]),
    ],
    ids=[
        "no-assessment",
        "assessment-unable",
        "unsafe",
        "safe",
        "unsafe-then-safe",
        "planned-without-documents",
        "ready",
        "safe-then-unsafe",
        "departed",
        "reception-unable",
    ],
)
def test_allowed_steps(build, allowed):
    case = build()
    assert case.state.stage == Stage.return_
    assert case.allowed == allowed


@pytest.mark.parametrize(
    ("build", "step", "reason"),
    [
        (residing, "travel-plan", "allowed in the return stage, and the case is in residence"),
        (returning, "travel-plan", "the origin assessment is not completed"),
        (assessment_unable, "travel-plan", "the origin assessment is not completed"),
        (lambda: origin_assessed("unsafe"), "travel-plan", "the origin assessment found return unsafe"),
        (safe_then_unsafe, "travel-plan", "the origin assessment found return unsafe"),
        (departed, "travel-plan", "the person has already left"),
        (guaranteed, "departure", "allowed in the return stage, and the case is in pathway"),
        (arrived, "departure", "allowed in the return stage, and the case is in reintegration"),
        (returning, "departure", "the travel plan comes first"),
        (origin_assessed, "departure", "the travel plan comes first"),
        (planned_without_documents, "departure", "the travel documents task is not completed"),
        (documents_unable, "departure", "the travel documents task is not completed"),
        (safe_then_unsafe, "departure", "the origin assessment found return unsafe"),
        (departed, "departure", "the departure is already recorded"),
    ],
    ids=[
        "plan-in-residence",
        "plan-without-assessment",
        "plan-after-assessment-unable",
        "plan-unsafe",
        "plan-safe-then-unsafe",
        "plan-after-departure",
        "departure-in-pathway",
        "departure-in-reintegration",
        "departure-without-plan",
        "departure-safe-without-plan",
        "departure-without-documents",
        "departure-documents-unable",
        "departure-safe-then-unsafe",
        "departure-twice",
    ],
)
def test_refusals(build, step, reason):
    assert_step_refused(build(), step, reason)


@pytest.mark.parametrize(
    ("step", "body", "detail"),
    [
        ("departure", {"departed_on": iso(-1)}, "the departure cannot be before the identification"),
        ("departure", {}, "invalid body: departed_on"),
        ("travel-plan", {"travel_date": iso(10), "route": "TEST-ROUTE"}, "invalid body: receiving_caseworker"),
        (
            "travel-plan",
            {"travel_date": iso(10), "route": "TEST-ROUTE", "receiving_caseworker": "two words"},
            "invalid body: receiving_caseworker",
        ),
    ],
    ids=["departure-before-identification", "departure-without-date", "plan-without-receiver", "plan-bad-receiver"],
)
def test_step_checks(step, body, detail):
    error = travel_ready().refusal(step, body)
    assert type(error) is rules.InvalidCommand and error.detail == detail


def test_a_departure_on_the_identification_day_is_accepted():
    case = travel_ready()
    case.step("departure", {"departed_on": iso(0)})
    assert case.state.departed_on == IDENTIFIED_ON


def test_the_travel_plan_names_the_receiving_caseworker():
    case = origin_assessed().on(7)
    events = case.step("travel-plan")
    state = case.state
    assert (state.travel_plan_on, state.travel_date.isoformat()) == (case.now.date(), iso(10))
    assert state.receiving_caseworker == RECEIVING_CASEWORKER
    assert [e.name for e in events] == ["travel-plan"] and state.stage == Stage.return_


def test_the_departure_is_recorded_and_the_case_waits_for_reception():
    case = travel_ready().on(10)
    events = case.step("departure")
    assert case.state.departed_on.isoformat() == iso(10)
    assert [e.name for e in events] == ["departure"] and case.state.stage == Stage.return_


# --- The stage's tasks --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "service", "completion", "error", "detail"),
    [
        (
            returning,
            "origin-assessment",
            {"outcome": "done"},
            rules.InvalidCommand,
            "an origin assessment completes with assessment safe or unsafe",
        ),
        (
            travel_ready,
            "reception",
            {"outcome": "done", "arrived_on": iso(11)},
            rules.StepNotAllowed,
            "reception is confirmed after the departure",
        ),
        (departed, "reception", {"outcome": "done"}, rules.InvalidCommand, "reception completes with arrived_on"),
        (
            departed,
            "reception",
            {"outcome": "done", "arrived_on": iso(9)},
            rules.InvalidCommand,
            "the arrival cannot be before the departure",
        ),
        (
            returning,
            "origin-assessment",
            {"outcome": "done", "assessment": "maybe"},
            rules.InvalidCommand,
            "invalid body: assessment",
        ),
    ],
    ids=[
        "assessment-without-answer",
        "reception-before-departure",
        "reception-without-arrival",
        "arrival-before-departure",
        "assessment-unknown-answer",
    ],
)
def test_completion_checks(build, service, completion, error, detail):
    case = build()
    tasks = [t for t in case.tasks_of(service) if t.is_open]
    task_id = tasks[0].task_id if tasks else case.assign(service, ORIGIN_OFFICE)
    case.task("accept", task_id=task_id)
    refused = case.task_refusal("complete", completion, task_id)
    assert type(refused) is error and refused.detail == detail
    if error is rules.StepNotAllowed:
        assert refused.allowed_steps == rules.allowed_steps(case.state)


@pytest.mark.parametrize("assessment", ["safe", "unsafe"])
def test_the_origin_assessment_keeps_its_answer(assessment):
    case = returning().on(5)
    task_id = case.assign("origin-assessment", ORIGIN_OFFICE)
    case.task("accept", task_id=task_id)
    events, _ = case.task("complete", {"outcome": "done", "assessment": assessment}, task_id)
    assert case.by_id(task_id).assessment == OriginAssessment(assessment)
    assert events[0].facts == {
        "service": "origin-assessment",
        "agency_id": ORIGIN_OFFICE,
        "assignment": 1,
        "outcome": "done",
        "assessment": assessment,
    }
    assert rules.latest_origin_assessment(case.state) == OriginAssessment(assessment)


@pytest.mark.parametrize(
    ("build", "latest"),
    [
        (returning, None),
        (assessment_unable, None),
        (unsafe_then_safe, OriginAssessment.safe),
        (safe_then_unsafe, OriginAssessment.unsafe),
    ],
    ids=["none", "unable", "unsafe-then-safe", "safe-then-unsafe"],
)
def test_the_latest_origin_assessment_counts(build, latest):
    assert rules.latest_origin_assessment(build().state) == latest


def test_only_an_origin_assessment_keeps_an_assessment():
    case = origin_assessed().on(6)
    task_id = case.assign("travel-documents", CONSULATE)
    case.task("accept", task_id=task_id)
    events, _ = case.task("complete", {"outcome": "done", "assessment": "unsafe"}, task_id)
    assert case.by_id(task_id).assessment is None
    assert "assessment" not in events[0].facts
    assert rules.latest_origin_assessment(case.state) == OriginAssessment.safe


def test_an_unable_reception_does_not_hand_over():
    case = reception_unable()
    state = case.state
    assert (state.stage, state.owner_country, state.arrived_on) == (Stage.return_, "ES", None)
    assert state.owner_caseworker == CASEWORKER.sub


def test_arrival_hands_the_case_over_to_the_country_of_origin():
    case = departed()
    family = case.assign("family-assessment", ORIGIN_OFFICE)
    shelter = case.assign("shelter", SHELTER)
    (reception,) = case.tasks_of("reception")
    case.task("accept", task_id=reception.task_id)
    case.on(11)
    events, _ = case.task("complete", {"outcome": "done", "arrived_on": iso(11)}, reception.task_id)
    state = case.state
    assert [(e.kind, e.name) for e in events] == [
        ("task", "completed"),
        ("case", "handed-over"),
        ("task", "cancelled"),
        ("stage", "reintegration"),
    ]
    assert events[1].facts == {"from_country": "ES", "to_country": "RO"}
    assert events[2].task_id == family and state.tasks[family].outcome_notes == "arrived in the country of origin"
    assert events[3].facts == {"from": "return"}
    assert (state.owner_country, state.owner_caseworker) == ("RO", RECEIVING_CASEWORKER)
    assert state.arrived_on == state.reintegration_started_on == IDENTIFIED_ON + timedelta(days=11)
    assert (state.stage, state.stage_runs) == (Stage.reintegration, 2)
    assert state.tasks[shelter].status == TaskStatus.assigned  # an immediate service is not the stage's
    assert state.destination_country == "ES"  # where the person was identified stays on record


def test_after_arrival_the_origin_country_delivers_every_service():
    state = arrived().state
    assert rules.service_country(state, "shelter") == "RO"
    assert rules.service_country(state, "reception") == "RO"


@pytest.mark.parametrize(
    ("service", "country"),
    [
        ("origin-assessment", "RO"),
        ("family-assessment", "RO"),
        ("reception", "RO"),
        ("travel-documents", "ES"),
        ("shelter", "ES"),
    ],
)
def test_where_a_service_is_delivered_before_arrival(service, country):
    assert rules.service_country(returning().state, service) == country


@pytest.mark.parametrize(
    ("build", "item"),
    [
        (returning, ("travel-plan", None, None)),
        (origin_assessed, ("travel-plan", None, None)),
        (
            travel_ready,
            ("departure", end_of(IDENTIFIED_ON + timedelta(days=10)), start_of(IDENTIFIED_ON + timedelta(7))),
        ),
    ],
    ids=["no-assessment", "safe", "ready"],
)
def test_open_steps(build, item):
    steps = [(i.name, i.due_at, i.since) for i in build().items() if i.kind == "step"]
    assert steps == [item]


@pytest.mark.parametrize("build", [departed, reception_unable], ids=["departed", "reception-unable"])
def test_no_open_step_after_the_departure(build):
    assert [i.name for i in build().items() if i.kind == "step"] == []
