"""Residence: application, decision and appeal; their refusals, a granted permit starting reintegration, open items."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.rules.builders import (
    CASEWORKER,
    IDENTIFIED_ON,
    LEGAL_AID,
    SHELTER,
    Case,
    appealed,
    applied,
    assert_step_refused,
    granted,
    guaranteed,
    iso,
    rejected,
    residing,
    returning,
)
from workflows import rules
from workflows.model import ResidenceDecision, Stage, TaskStatus

REJECT = {"decision": "rejected", "decided_on": iso(60)}


def rejected_twice() -> Case:
    case = appealed()
    case.on(120).step("residence-decision", {"decision": "rejected", "decided_on": iso(120)})
    return case


@pytest.mark.parametrize(
    ("build", "allowed"),
    [
        (residing, ["consent", "residence-application", "withdraw-consent"]),
        (applied, ["consent", "residence-decision", "withdraw-consent"]),
        (rejected, ["consent", "pathway", "appeal", "withdraw-consent"]),
        (appealed, ["consent", "residence-decision", "withdraw-consent"]),
        (rejected_twice, ["consent", "pathway", "appeal", "withdraw-consent"]),
    ],
    ids=["residence", "applied", "rejected", "appealed", "rejected-after-appeal"],
)
def test_allowed_steps(build, allowed):
    case = build()
    assert case.state.stage == Stage.residence
    assert case.allowed == allowed


@pytest.mark.parametrize(
    ("build", "step", "reason"),
    [
        (returning, "residence-application", "allowed in the residence stage, and the case is in return"),
        (applied, "residence-application", "the application is already filed"),
        (rejected, "residence-application", "the application is already filed"),
        (granted, "residence-decision", "allowed in the residence stage, and the case is in reintegration"),
        (residing, "residence-decision", "the residence application comes first"),
        (rejected, "residence-decision", "a decision is recorded; a new one follows only an appeal"),
        (rejected_twice, "residence-decision", "a decision is recorded; a new one follows only an appeal"),
        (guaranteed, "appeal", "allowed in the residence stage, and the case is in pathway"),
        (residing, "appeal", "an appeal follows only a rejection"),
        (applied, "appeal", "an appeal follows only a rejection"),
        (appealed, "appeal", "an appeal is already pending"),
    ],
    ids=[
        "application-in-return",
        "application-twice",
        "application-after-decision",
        "decision-in-reintegration",
        "decision-before-application",
        "decision-twice",
        "decision-twice-after-appeal",
        "appeal-in-pathway",
        "appeal-before-application",
        "appeal-before-decision",
        "appeal-twice",
    ],
)
def test_refusals(build, step, reason):
    assert_step_refused(build(), step, reason)


@pytest.mark.parametrize(
    ("step", "body", "detail"),
    [
        ("residence-decision", {"decision": "granted", "decided_on": iso(60)}, "a granted permit needs valid_until"),
        ("residence-decision", {"decision": "pending", "decided_on": iso(60)}, "invalid body: decision"),
        ("residence-decision", {"decision": "rejected"}, "invalid body: decided_on"),
    ],
    ids=["granted-without-validity", "unknown-decision", "no-date"],
)
def test_decision_checks(step, body, detail):
    error = applied().refusal(step, body)
    assert type(error) is rules.InvalidCommand and error.detail == detail


def test_application_body_is_checked():
    error = residing().refusal("residence-application", {"filed_on": iso(5), "permit_type": ""})
    assert type(error) is rules.InvalidCommand
    assert error.detail == "invalid body: permit_type, authority_reference"


def test_the_application_is_recorded():
    case = residing().on(5)
    assert [e.name for e in case.step("residence-application")] == ["residence-application"]
    assert case.state.residence_applied_on == IDENTIFIED_ON + timedelta(days=5)


def test_a_rejection_keeps_the_case_in_residence():
    case = applied().on(60)
    events = case.step("residence-decision", REJECT)
    state = case.state
    assert [e.name for e in events] == ["residence-decision"]
    assert state.stage == Stage.residence and state.permit_valid_until is None
    assert state.residence_decisions == [
        ResidenceDecision(decision="rejected", decided_on=IDENTIFIED_ON + timedelta(60))
    ]


def test_an_appeal_is_recorded_and_a_new_decision_ends_it():
    case = appealed()
    assert case.state.appeal_filed_on == IDENTIFIED_ON + timedelta(days=65)
    case.on(120).step("residence-decision", {"decision": "rejected", "decided_on": iso(120)})
    assert case.state.appeal_filed_on is None
    assert [d.decision for d in case.state.residence_decisions] == ["rejected", "rejected"]


def granted_case(build) -> tuple[Case, list, str, str]:
    case = build()
    legal = case.assign("legal-assistance", LEGAL_AID)
    shelter = case.assign("shelter", SHELTER)
    case.on(130)
    body = {"decision": "granted", "decided_on": iso(128), "valid_until": iso(500)}
    return case, case.step("residence-decision", body), legal, shelter


@pytest.mark.parametrize("build", [applied, appealed], ids=["first-decision", "after-appeal"])
def test_a_granted_permit_starts_reintegration_where_the_person_is(build):
    case, events, legal, shelter = granted_case(build)
    state = case.state
    assert [(e.kind, e.name) for e in events] == [
        ("step", "residence-decision"),
        ("task", "cancelled"),
        ("stage", "reintegration"),
    ]
    assert events[1].task_id == legal and state.tasks[legal].outcome_notes == "permit granted"
    assert events[2].facts == {"from": "residence"}
    assert state.tasks[shelter].status == TaskStatus.assigned  # an immediate service is not the stage's
    assert (state.stage, state.stage_runs) == (Stage.reintegration, 2)
    assert state.permit_valid_until == IDENTIFIED_ON + timedelta(days=500)
    assert state.reintegration_started_on == IDENTIFIED_ON + timedelta(days=128)  # the decision's day, not today's
    assert state.appeal_filed_on is None and state.residence_decisions[-1].decision == "granted"
    assert (state.owner_country, state.owner_caseworker) == ("ES", CASEWORKER.sub)  # no hand-over


@pytest.mark.parametrize(
    ("build", "item"),
    [
        (residing, ("residence-application", "caseworker")),
        (applied, ("residence-decision", "authority")),
        (appealed, ("residence-decision", "authority")),
    ],
    ids=["residence", "applied", "appealed"],
)
def test_open_steps(build, item):
    (step,) = [i for i in build().items() if i.kind == "step"]
    assert (step.name, step.turn) == item
    assert step.due_at is None and step.since is None  # the authority's wait has no deadline of ours


@pytest.mark.parametrize("build", [rejected, rejected_twice], ids=["rejected", "rejected-after-appeal"])
def test_no_open_step_after_a_rejection(build):
    assert [i for i in build().items() if i.kind == "step"] == []


def test_the_stage_may_ask_for_legal_assistance():
    assert rules.allowed_services(residing().state) == rules.IMMEDIATE_SERVICES | {"legal-assistance"}
    case = residing()
    task_id = case.assign("legal-assistance", LEGAL_AID)
    assert case.by_id(task_id).stage == Stage.residence and case.by_id(task_id).stage_run == 1
