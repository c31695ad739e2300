"""The pathway decision: when it may be taken or changed, what a change cancels and resets, and its deadline."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.rules.builders import (
    CONSULATE,
    IDENTIFIED_ON,
    LEGAL_AID,
    ORIGIN_OFFICE,
    SHELTER,
    Case,
    appealed,
    applied,
    arrived,
    assert_step_refused,
    consented,
    departed,
    granted,
    guaranteed,
    iso,
    origin_assessed,
    planned,
    rejected,
    residing,
    returning,
    travel_ready,
)
from workflows import rules
from workflows.model import JourneyConfig, Pathway, PathwayDecision, Stage, TaskStatus
from workflows.rules.dates import end_of, start_of

TO_RETURN = {"pathway": "voluntary_return", "decided_on": iso(3)}
TO_RESIDENCE = {"pathway": "residence", "decided_on": iso(3)}


@pytest.mark.parametrize(
    "build",
    [
        guaranteed,
        lambda: guaranteed(minor=True),
        returning,
        lambda: origin_assessed("unsafe"),
        travel_ready,
        rejected,
    ],
    ids=["pathway-stage", "minor-with-guardian", "return", "return-unsafe", "return-ready", "residence-rejected"],
)
def test_the_pathway_is_decided_or_changed(build):
    case = build()
    assert rules.why_not(case.state, "pathway") is None and "pathway" in case.allowed


@pytest.mark.parametrize(
    ("build", "reason"),
    [
        (consented, "the pathway is decided after the security guarantee"),
        (granted, "the pathway is decided after the security guarantee"),
        (planned, "the pathway is decided after the security guarantee"),
        (arrived, "the pathway is decided after the security guarantee"),
        (
            lambda: guaranteed(minor=True, guardian=False),
            "a guardian must be appointed before a minor's pathway decision",
        ),
        (departed, "the person has already left"),
        (residing, "a change follows a residence refusal"),
        (applied, "a change follows a residence refusal"),
        (appealed, "an appeal is pending"),
    ],
    ids=[
        "protection",
        "reintegration",
        "reintegration-planned",
        "reintegration-after-return",
        "minor-without-guardian",
        "return-departed",
        "residence",
        "residence-applied",
        "residence-appealed",
    ],
)
def test_refusals(build, reason):
    assert_step_refused(build(), "pathway", reason)


@pytest.mark.parametrize(
    ("build", "body", "detail"),
    [
        (returning, TO_RETURN, "the pathway is already voluntary_return"),
        (travel_ready, TO_RETURN, "the pathway is already voluntary_return"),
        (rejected, TO_RESIDENCE, "the pathway is already residence"),
        (guaranteed, {"pathway": "stay", "decided_on": iso(3)}, "invalid body: pathway"),
        (guaranteed, {"pathway": "residence"}, "invalid body: decided_on"),
    ],
    ids=["return-to-return", "return-ready-to-return", "residence-to-residence", "unknown-pathway", "no-date"],
)
def test_checks(build, body, detail):
    error = build().refusal("pathway", body)
    assert type(error) is rules.InvalidCommand and error.detail == detail


def test_the_return_stage_guard_without_a_recorded_pathway():
    # Unreachable through the rules (entering the return stage records the pathway, so the "already"
    # check answers first); the guard itself still holds on a hand-made state.
    case = returning()
    case.state.pathway = None
    error = case.refusal("pathway", TO_RETURN)
    assert type(error) is rules.InvalidCommand
    assert error.detail == "from the return stage the pathway can change only to residence"


@pytest.mark.parametrize(
    ("body", "stage", "pathway"),
    [(TO_RETURN, Stage.return_, Pathway.voluntary_return), (TO_RESIDENCE, Stage.residence, Pathway.residence)],
    ids=["voluntary-return", "residence"],
)
def test_the_decision_starts_its_stage(body, stage, pathway):
    case = guaranteed().on(3)
    events = case.step("pathway", body)
    state = case.state
    assert (state.stage, state.pathway, state.stage_runs) == (stage, pathway, 1)
    assert state.pathway_decisions == [PathwayDecision(pathway=pathway, decided_on=IDENTIFIED_ON + timedelta(days=3))]
    assert [(e.kind, e.name, e.facts) for e in events] == [
        ("step", "pathway", body),
        ("stage", stage.value, {"from": "pathway"}),
    ]
    assert state.stage_entered_at == case.now
    assert rules.project(state, events).active_workflow_id == f"case-{state.case_id}-{stage.value}-1"


def return_with_tasks_open() -> Case:
    """Return: safe, the travel plan made, a family assessment and a shelter still open."""
    case = travel_ready()
    case.assign("family-assessment", ORIGIN_OFFICE)
    case.assign("reception", ORIGIN_OFFICE)
    case.assign("shelter", SHELTER)
    return case


def test_a_change_from_return_to_residence_cancels_the_return():
    case = return_with_tasks_open().on(8)
    open_before = {t.task_id: t.service.value for t in rules.open_tasks(case.state)}
    events = case.step("pathway", {"pathway": "residence", "decided_on": iso(8), "reason": "changed her mind"})
    state = case.state
    assert (state.stage, state.pathway, state.stage_runs) == (Stage.residence, Pathway.residence, 2)
    assert [d.pathway for d in state.pathway_decisions] == [Pathway.voluntary_return, Pathway.residence]
    assert state.pathway_decisions[-1].reason == "changed her mind"
    assert (state.travel_plan_on, state.travel_date) == (None, None)
    cancelled = {e.task_id for e in events if e.name == "cancelled"}
    assert {open_before[t] for t in cancelled} == {"family-assessment", "reception"}
    assert all(state.tasks[t].outcome_notes == "pathway changed" for t in cancelled)
    assert [t.service.value for t in rules.open_tasks(state)] == ["shelter"]  # an immediate service stays
    assert [e.name for e in events][-1] == "residence"
    # Completed return tasks are history, not cancelled.
    assert {t.service.value for t in state.tasks.values() if t.status == TaskStatus.completed} == {
        "origin-assessment",
        "travel-documents",
    }


def test_a_change_after_a_refusal_cancels_the_residence():
    case = rejected()
    legal = case.assign("legal-assistance", LEGAL_AID)
    case.on(61).step("pathway", {"pathway": "voluntary_return", "decided_on": iso(61), "reason": "refused"})
    state = case.state
    assert (state.stage, state.pathway, state.stage_runs) == (Stage.return_, Pathway.voluntary_return, 2)
    assert state.tasks[legal].status == TaskStatus.cancelled
    assert (state.residence_applied_on, state.appeal_filed_on, state.residence_decisions) == (None, None, [])
    assert case.allowed == ["consent", "pathway", "withdraw-consent"]


def test_a_return_after_a_change_of_pathway_starts_afresh():
    case = origin_assessed("safe")
    case.on(6).deliver("travel-documents", CONSULATE)
    case.step("pathway", {"pathway": "residence", "decided_on": iso(6)})
    case.on(7).step("residence-application")
    case.on(30).step("residence-decision", {"decision": "rejected", "decided_on": iso(30)})
    case.on(31).step("pathway", {"pathway": "voluntary_return", "decided_on": iso(31)})
    assert case.state.stage_runs == 3
    assert rules.latest_origin_assessment(case.state) is None  # the first run's assessment is stale
    assert_step_refused(case, "travel-plan", "the origin assessment is not completed")


def test_the_decision_is_due_at_the_end_of_the_reflection_period():
    item = guaranteed().item("pathway")
    assert (item.kind, item.turn) == ("step", "caseworker")
    assert (item.due_at, item.since) == (end_of(IDENTIFIED_ON + timedelta(days=30)), start_of(IDENTIFIED_ON))
    item = guaranteed(config=JourneyConfig(reflection_days=45)).item("pathway")
    assert item.due_at == end_of(IDENTIFIED_ON + timedelta(days=45))


@pytest.mark.parametrize(
    "build", [consented, returning, rejected, granted], ids=["protection", "return", "residence", "reintegration"]
)
def test_no_pathway_item_outside_the_pathway_stage(build):
    assert "pathway" not in [i.name for i in build().items()]
