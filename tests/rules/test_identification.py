"""Identification and informed consent: the opening, the consent gate before every step, and consent recorded again."""

from __future__ import annotations

import pytest

from tests.rules.builders import (
    CASEWORKER,
    OPENED_AT,
    POINTS,
    Case,
    Ids,
    assert_step_refused,
    at,
    consented,
    iso,
    opened,
    opening,
)
from workflows import rules
from workflows.model import CaseStatus, ConsentBody, Stage, Step

CONSENT_GATED = [s for s in Step if s not in (Step.consent, Step.withdraw_consent, *rules.SUPERVISOR_STEPS)]


def without_assistance() -> Case:
    """Identification: consent recorded, but not to assistance."""
    case = opened()
    case.step("consent", {"assistance": False, "data_sharing": False, "given_on": iso(0)})
    return case


def test_a_new_case_waits_for_consent():
    case = opened()
    state = case.state
    assert (state.stage, state.status, state.version) == (Stage.identification, CaseStatus.active, 1)
    assert state.stage_entered_at == state.last_activity_at == OPENED_AT
    assert state.destination_country == state.owner_country == "ES" and state.origin_country == "RO"
    assert case.allowed == ["consent", "withdraw-consent"]
    assert [(i.kind, i.name, i.due_at, i.turn) for i in case.items()] == [("step", "consent", None, "caseworker")]
    assert rules.allowed_services(state) == frozenset()


def test_the_opening_is_the_first_event():
    state = rules.new_journey(opening(minor=True), OPENED_AT)
    assert state.version == 0 and state.is_minor and state.consent is None
    entry = rules.opened_event(state, CASEWORKER, at(0), Ids())
    assert (entry.kind, entry.name, entry.seq, entry.actor_sub) == ("case", "opened", 1, CASEWORKER.sub)
    assert (entry.event_id, entry.facts) == ("id-1", {"country": "ES"})
    assert state.version == 1


@pytest.mark.parametrize("build", [opened, without_assistance], ids=["no-consent", "consent-without-assistance"])
@pytest.mark.parametrize("step", CONSENT_GATED, ids=str)
def test_every_step_waits_for_consent_to_assistance(build, step):
    case = build()
    assert_step_refused(case, step, "informed consent to assistance has not been recorded")
    assert case.allowed == ["consent", "withdraw-consent"]


@pytest.mark.parametrize("step", sorted(rules.SUPERVISOR_STEPS), ids=str)
def test_no_closure_decision_without_a_closure(step):
    assert_step_refused(opened(), step, "no closure is waiting for approval")


def test_consent_to_assistance_opens_protection():
    case = opened()
    events = case.step("consent")
    state = case.state
    assert state.stage == Stage.protection and state.stage_entered_at == case.now
    assert state.consent == ConsentBody(assistance=True, data_sharing=True, given_on=iso(0))
    assert [(e.kind, e.name) for e in events] == [("step", "consent"), ("stage", "protection")]
    assert events[0].facts == {"assistance": True, "data_sharing": True, "given_on": iso(0)}
    assert events[1].facts == {"from": "identification"}
    assert state.stage_runs == 0  # protection is held by the case workflow itself
    assert state.version == 2 and all(e.seq == 2 for e in events)


def test_consent_without_assistance_keeps_the_case_in_identification():
    case = without_assistance()
    assert case.state.stage == Stage.identification
    assert case.state.consent is not None and case.state.consent.assistance is False
    assert [i.name for i in case.items()] == ["consent"]
    case.step("consent")  # asked again, the person agrees
    assert case.state.stage == Stage.protection


OPEN_POINTS = [p for p in POINTS if p not in ("identification", "closure-requested", "closed", "withdrawn")]


@pytest.mark.parametrize("point", OPEN_POINTS)
def test_consent_can_be_recorded_again_in_every_open_stage(point):
    case = POINTS[point]()
    stage = case.state.stage
    assert "consent" in case.allowed
    events = case.step("consent", {"assistance": True, "data_sharing": False, "given_on": iso(4)})
    assert [e.name for e in events] == ["consent"]  # no stage change
    assert case.state.stage == stage
    assert case.state.consent == ConsentBody(assistance=True, data_sharing=False, given_on=iso(4))


@pytest.mark.parametrize("point", OPEN_POINTS)
def test_consent_to_assistance_is_not_removed_by_recording_consent(point):
    case = POINTS[point]()
    error = case.refusal("consent", {"assistance": False, "given_on": iso(4)})
    assert type(error) is rules.InvalidCommand
    assert error.detail == "consent to assistance cannot be removed here: use withdraw-consent"


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"given_on": iso(0)}, "assistance"),
        ({"assistance": True}, "given_on"),
        ({"assistance": True, "given_on": "1899-12-31"}, "given_on"),
        ({"assistance": True, "given_on": iso(0), "signature": "x"}, "signature"),
    ],
    ids=["no-assistance", "no-date", "date-too-early", "unknown-field"],
)
def test_a_consent_body_is_checked(body, fields):
    error = opened().refusal("consent", body)
    assert type(error) is rules.InvalidCommand and error.detail == f"invalid body: {fields}"


def test_consent_opens_the_immediate_services():
    assert rules.allowed_services(consented().state) == rules.IMMEDIATE_SERVICES
