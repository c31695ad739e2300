"""What every step shares: who records it, If-Match, body parsing, recording; ownership, projection, dates."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from tests.rules.builders import (
    ADMIN,
    BODIES,
    CASEWORKER,
    ORCHESTRATOR,
    POINTS,
    SHELTER,
    SUPERVISOR,
    actor_for,
    assessed,
    closed,
    consented,
    iso,
    partner,
)
from workflows import rules
from workflows.model import Actor, ReassignOwner, Role, Step
from workflows.rules.protection import SafetyPlanBody

# --- Who records a step --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("step", "actor", "detail"),
    [
        ("consent", partner(SHELTER), "only caseworkers and supervisors record steps"),
        ("risk-assessment", ADMIN, "only caseworkers and supervisors record steps"),
        ("pathway", ORCHESTRATOR, "only caseworkers and supervisors record steps"),
        ("approve-closure", CASEWORKER, "approve-closure is a supervisor's decision"),
        ("reject-closure", partner(SHELTER), "reject-closure is a supervisor's decision"),
    ],
    ids=[
        "partner-consent",
        "admin-risk-assessment",
        "orchestrator-pathway",
        "caseworker-approval",
        "partner-rejection",
    ],
)
@pytest.mark.parametrize("point", ["protection", "closed"])
def test_the_caller_is_checked_before_anything_else(point, step, actor, detail):
    error = POINTS[point]().refusal(step, actor=actor)
    assert type(error) is rules.Forbidden and error.detail == detail


@pytest.mark.parametrize("step", ["consent", "risk-assessment", "withdraw-consent"])
def test_a_supervisor_may_record_a_caseworkers_step(step):
    case = consented()
    case.step(step, actor=SUPERVISOR)
    assert case.state.version == 3


# --- If-Match -------------------------------------------------------------------------------------------


def test_a_stale_version_is_refused():
    case = consented()
    error = case.refusal("risk-assessment", expected_version=case.state.version - 1)
    assert (
        type(error) is rules.VersionMismatch and error.detail == "the case moved on since that version; read it again"
    )


def test_the_current_version_is_accepted():
    case = consented()
    cmd = case.command("risk-assessment", expected_version=case.state.version)
    assert rules.check_step(case.state, cmd).level.value == "low"


def test_a_step_not_allowed_is_refused_before_the_version():
    case = consented()
    error = case.refusal("pathway", expected_version=0)
    assert type(error) is rules.StepNotAllowed


def test_the_version_is_checked_before_the_body():
    case = consented()
    error = case.refusal("risk-assessment", {}, expected_version=0)
    assert type(error) is rules.VersionMismatch


# --- Bodies ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "body", "detail"),
    [
        (SafetyPlanBody, {"agreed_on": iso(1), "measures": [{"measure": "x\x00"}]}, "invalid body: body"),
        (
            SafetyPlanBody,
            {"agreed_on": iso(1), "measures": [{"service": "shelter"}]},
            "invalid body: measures.0.measure",
        ),
        (SafetyPlanBody, {}, "invalid body: measures, agreed_on"),
        (SafetyPlanBody, {"agreed_on": "2200-01-01", "measures": [{"measure": "x"}]}, "invalid body: agreed_on"),
    ],
    ids=["control-character", "nested-field", "two-fields", "date-out-of-range"],
)
def test_a_body_names_its_wrong_fields(model, body, detail):
    with pytest.raises(rules.InvalidCommand) as info:
        rules.parse_body(model, body)
    assert info.value.detail == detail


@pytest.mark.parametrize("step", list(Step), ids=str)
def test_every_step_has_a_rule_and_its_example_is_a_valid_body(step):
    rule = rules.STEPS[step]
    assert rule.step == step
    rule.body.model_validate(rule.example)
    rule.body.model_validate(BODIES[step])


@pytest.mark.parametrize(
    "step", [Step.consent, Step.approve_closure, Step.reject_closure, Step.withdraw_consent], ids=str
)
@pytest.mark.parametrize("point", ["identification", "pathway", "reintegration-planned", "closure-requested"])
def test_steps_whose_conditions_are_all_case_wide_have_none_of_their_own(point, step):
    assert rules.STEPS[step].why_not(POINTS[point]().state) is None


def test_the_roles_of_each_step():
    supervisor_only = {s for s in Step if rules.STEPS[s].roles == (Role.supervisor,)}
    assert supervisor_only == set(rules.SUPERVISOR_STEPS) == {Step.approve_closure, Step.reject_closure}
    assert all(rules.STEPS[s].roles == (Role.caseworker, Role.supervisor) for s in set(Step) - supervisor_only)


# --- Recording a step -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "step", "body", "facts"),
    [
        (
            consented,
            "risk-assessment",
            {"level": "high", "threats": ["marker threat"], "assessed_on": iso(1)},
            {"level": "high", "assessed_on": iso(1)},
        ),
        (
            lambda: assessed("low"),
            "security-guarantee",
            {"confirmed_on": iso(2), "notes": "marker note"},
            {"confirmed_on": iso(2)},
        ),
        (consented, "withdraw-consent", {"withdrawn_on": iso(3), "notes": "marker note"}, {"withdrawn_on": iso(3)}),
    ],
    ids=["threats", "guarantee-notes", "withdrawal-notes"],
)
def test_a_step_is_recorded_without_its_free_text(build, step, body, facts):
    case = build().on(3)
    version = case.state.version
    entry, *_ = case.step(step, body, actor_for(step))
    assert (entry.kind, entry.name, entry.seq, entry.at) == ("step", step, version + 1, case.now)
    assert (entry.actor_sub, entry.actor_role) == (CASEWORKER.sub, Role.caseworker)
    assert entry.facts == facts
    assert case.state.version == version + 1 and case.state.last_activity_at == case.now


def test_every_event_gets_a_new_id():
    case = assessed("medium")
    events = case.step(
        "safety-plan", {"agreed_on": iso(1), "measures": [{"measure": "m", "service": "shelter", "agency_id": SHELTER}]}
    )
    ids = [e.event_id for e in events]
    assert len(set(ids)) == len(ids) == 2


# --- Ownership ------------------------------------------------------------------------------------------


def reassign(actor: Actor, caseworker: str = "cw-es-2") -> ReassignOwner:
    return ReassignOwner(caseworker=caseworker, actor=actor)


@pytest.mark.parametrize(
    ("build", "cmd", "error", "detail", "allowed"),
    [
        (consented, reassign(CASEWORKER), rules.Forbidden, "a supervisor reassigns a case", None),
        (closed, reassign(CASEWORKER), rules.Forbidden, "a supervisor reassigns a case", None),
        (closed, reassign(SUPERVISOR), rules.StepNotAllowed, "the case is closed", []),
        (
            consented,
            reassign(SUPERVISOR, CASEWORKER.sub),
            rules.InvalidCommand,
            "the case is already this caseworker's",
            None,
        ),
    ],
    ids=["by-a-caseworker", "closed-by-a-caseworker", "closed", "same-caseworker"],
)
def test_reassigning_the_owner_is_refused(build, cmd, error, detail, allowed):
    state = build().state
    with pytest.raises(rules.JourneyRuleError) as info:
        rules.check_reassign_owner(state, cmd)
    assert type(info.value) is error and info.value.detail == detail
    assert getattr(info.value, "allowed_steps", None) == allowed


def test_a_supervisor_gives_the_case_to_another_caseworker():
    case = consented()
    cmd = reassign(SUPERVISOR)
    rules.check_reassign_owner(case.state, cmd)
    version = case.state.version
    (event,) = rules.apply_reassign_owner(case.state, cmd, case.on(5).now, case.new_id)
    assert case.state.owner_caseworker == "cw-es-2" and case.state.version == version + 1
    assert (event.kind, event.name, event.actor_sub, event.seq) == ("case", "reassigned", SUPERVISOR.sub, version + 1)
    assert event.facts == {"from_caseworker": CASEWORKER.sub, "to_caseworker": "cw-es-2"}


def test_a_transfer_accepted_by_the_receiving_office_moves_the_case_and_keeps_its_history():
    case = consented()
    cmd = ReassignOwner(caseworker="cw-pt-1", country="PT", actor=CASEWORKER.model_copy(update={"sub": "cw-pt-1"}))
    rules.check_reassign_owner(case.state, cmd)  # a caseworker (of the receiving office) may
    (event,) = rules.apply_reassign_owner(case.state, cmd, case.on(5).now, case.new_id)
    assert (case.state.owner_country, case.state.owner_caseworker) == ("PT", "cw-pt-1")
    assert (event.kind, event.name) == ("case", "transferred")
    assert event.facts == {
        "from_country": "ES",
        "to_country": "PT",
        "from_caseworker": CASEWORKER.sub,
        "to_caseworker": "cw-pt-1",
    }
    with pytest.raises(rules.InvalidCommand, match="already managed in PT"):
        rules.check_reassign_owner(case.state, cmd)
    partner = Actor(sub="p-1", role=Role.partner, agency="clinic-es")
    with pytest.raises(rules.Forbidden):
        rules.check_reassign_owner(consented().state, cmd.model_copy(update={"actor": partner}))
    with pytest.raises(rules.StepNotAllowed):
        rules.check_reassign_owner(closed().state, cmd)


# --- The projection -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("point", "workflow"),
    [
        ("identification", "case-case-rules-test"),
        ("pathway", "case-case-rules-test"),
        ("return", "case-case-rules-test-return-1"),
        ("residence", "case-case-rules-test-residence-1"),
        ("reintegration", "case-case-rules-test-reintegration-2"),
        ("closed", "case-case-rules-test"),
    ],
)
def test_the_projection_shows_what_the_rules_say(point, workflow):
    case = POINTS[point]()
    projection = rules.project(case.state, [])
    assert projection.state == case.state and projection.events == []
    assert projection.allowed_steps == rules.allowed_steps(case.state)
    assert projection.open_items == rules.open_items(case.state)
    assert projection.active_workflow_id == workflow


# --- Dates ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("day", "months", "expected"),
    [
        (date(2026, 11, 20), 3, date(2027, 2, 20)),
        (date(2026, 11, 30), 3, date(2027, 2, 28)),
        (date(2027, 11, 30), 3, date(2028, 2, 29)),
        (date(2027, 1, 31), 1, date(2027, 2, 28)),
        (date(2026, 12, 15), 12, date(2027, 12, 15)),
        (date(2026, 10, 31), 14, date(2027, 12, 31)),
        (date(2026, 12, 31), 0, date(2026, 12, 31)),
    ],
    ids=["plain", "clamped", "leap-year", "january-end", "a-year", "over-a-year", "none"],
)
def test_add_months(day, months, expected):
    assert rules.add_months(day, months) == expected


@pytest.mark.parametrize(
    ("birth", "day", "age"),
    [
        (date(2010, 6, 15), date(2026, 6, 14), 15),
        (date(2010, 6, 15), date(2026, 6, 15), 16),
        (date(2008, 2, 29), date(2026, 2, 28), 17),
        (date(2008, 2, 29), date(2026, 3, 1), 18),
    ],
    ids=["day-before-birthday", "birthday", "leap-day-not-yet", "leap-day-passed"],
)
def test_age_on(birth, day, age):
    assert rules.age_on(birth, day) == age


def test_a_day_starts_and_ends_in_utc():
    assert rules.start_of(date(2026, 11, 20)) == datetime(2026, 11, 20, tzinfo=UTC)
    assert rules.end_of(date(2026, 11, 20)) == datetime(2026, 11, 20, 23, 59, 59, tzinfo=UTC)
