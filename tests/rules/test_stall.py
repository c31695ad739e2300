"""Stalled cases: overdue items and inactivity, the next deadline, notices once and again at twice the deadline."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.rules.builders import (
    CLINIC,
    IDENTIFIED_ON,
    OPENED_AT,
    SHELTER,
    assessed,
    at,
    closed,
    consented,
    iso,
    opened,
    withdrawn,
)
from workflows import rules
from workflows.model import StallReason
from workflows.rules.dates import end_of, start_of

RISK_DUE = end_of(IDENTIFIED_ON + timedelta(days=3))
GUARANTEE_DUE = end_of(IDENTIFIED_ON + timedelta(days=14))


def with_shelter_task():
    case = consented()
    case.assign("shelter", SHELTER)
    return case


@pytest.mark.parametrize(
    ("build", "offset", "keys"),
    [
        (consented, 0, []),
        (consented, 3.5, []),  # due by the end of the day
        (consented, 4, ["step:risk-assessment"]),
        (consented, 15, ["step:risk-assessment", "step:security-guarantee"]),
        (with_shelter_task, 2.9, []),
        (with_shelter_task, 3.1, ["task:shelter"]),  # not accepted within 3 days
        (with_shelter_task, 4, ["task:shelter", "step:risk-assessment"]),
        (opened, 29.9, []),  # consent has no deadline of its own
        (opened, 30, ["inactivity"]),
        (lambda: assessed("low"), 20, ["step:security-guarantee"]),
    ],
    ids=[
        "on-time",
        "due-day",
        "risk-assessment-overdue",
        "two-steps-overdue",
        "task-on-time",
        "task-unaccepted",
        "task-and-step",
        "quiet-29-days",
        "quiet-30-days",
        "guarantee-overdue",
    ],
)
def test_why_a_case_is_stalled(build, offset, keys):
    state = build().state
    reasons = rules.stall_reasons(state, at(offset))
    assert [f"task:{state.tasks[r.task_id].service}" if r.task_id else r.key for r in reasons] == keys


def test_an_overdue_step_says_whose_turn_and_when_it_escalates():
    (reason,) = rules.stall_reasons(consented().state, at(4))
    assert reason == StallReason(
        key="step:risk-assessment",
        kind="step",
        name="risk-assessment",
        turn="caseworker",
        due_at=RISK_DUE,
        escalate_at=RISK_DUE + (RISK_DUE - start_of(IDENTIFIED_ON)),  # twice the deadline
    )


def test_inactivity_escalates_after_twice_its_limit():
    (reason,) = rules.stall_reasons(opened().state, at(31))
    due = OPENED_AT + timedelta(days=30)
    assert reason == StallReason(
        key="inactivity",
        kind="inactivity",
        name="no activity",
        turn="caseworker",
        due_at=due,
        escalate_at=due + timedelta(days=30),
    )


def test_an_overdue_task_names_its_agency():
    case = with_shelter_task()
    (task,) = case.state.tasks
    (reason,) = rules.stall_reasons(case.state, at(3.1))
    assert (reason.key, reason.kind, reason.name, reason.task_id) == (f"task:{task}", "task", "shelter", task)
    assert (reason.agency_id, reason.turn, reason.due_at) == (SHELTER, "agency", at(3))


@pytest.mark.parametrize("build", [closed, withdrawn], ids=["approved", "withdrawn"])
def test_a_closed_case_is_never_stalled(build):
    state = build().state
    assert rules.stall_reasons(state, state.closed_at + timedelta(days=1000)) == []
    assert rules.next_deadline(state, state.closed_at) is None


@pytest.mark.parametrize(
    ("build", "offset", "expected"),
    [
        (consented, 0, RISK_DUE),
        (lambda: assessed("low"), 1, GUARANTEE_DUE),
        (lambda: assessed("low"), 15, at(1) + timedelta(days=30)),  # then only inactivity is ahead
        (opened, 0, OPENED_AT + timedelta(days=30)),
        (opened, 100, None),  # everything is past, and no notice is waiting for its escalation
    ],
    ids=["risk-assessment", "guarantee", "inactivity-next", "inactivity", "nothing-ahead"],
)
def test_the_next_deadline(build, offset, expected):
    assert rules.next_deadline(build().state, at(offset)) == expected


def test_an_escalation_ahead_is_a_deadline():
    case = consented()
    rules.evaluate_stall(case.state, at(4), case.new_id)
    assert rules.next_deadline(case.state, at(4)) == RISK_DUE + (RISK_DUE - start_of(IDENTIFIED_ON))


def test_a_stall_notifies_once_escalates_once_and_clears_when_the_step_is_done():
    case = consented()
    version, last_activity = case.state.version, case.state.last_activity_at
    events = rules.evaluate_stall(case.state, at(4), case.new_id)
    assert [(e.kind, e.name) for e in events] == [("supervision", "stalled")]
    mark = f"step:risk-assessment@{RISK_DUE.isoformat()}:1"
    assert events[0].facts == {
        "item": "step:risk-assessment",
        "name": "risk-assessment",
        "turn": "caseworker",
        "level": 1,
        "due_at": RISK_DUE.isoformat(),
        "notification": f"case-rules-test:{mark}",
    }
    state = case.state
    assert (state.version, state.last_activity_at) == (version, last_activity)  # noticing is not activity
    assert state.notified == [mark] and state.stalled_since == at(4)
    assert [r.key for r in state.stall] == ["step:risk-assessment"]

    assert rules.evaluate_stall(state, at(5), case.new_id) == []  # told once
    events = rules.evaluate_stall(state, at(8), case.new_id)
    assert [(e.name, e.facts["level"]) for e in events] == [("escalated", 2)]
    assert rules.evaluate_stall(state, at(8.5), case.new_id) == []

    case.on(9).step("risk-assessment", {"level": "low", "assessed_on": iso(9)})
    events = rules.evaluate_stall(state, at(9), case.new_id)
    assert [e.name for e in events] == ["stall-cleared"]
    assert (state.stall, state.stalled_since) == ([], None)
    assert rules.evaluate_stall(state, at(9), case.new_id) == []


def test_a_new_reason_keeps_the_stall_running_since_the_first():
    case = consented()
    rules.evaluate_stall(case.state, at(4), case.new_id)
    events = rules.evaluate_stall(case.state, at(15), case.new_id)
    assert [(e.name, e.facts["item"]) for e in events] == [
        ("escalated", "step:risk-assessment"),
        ("stalled", "step:security-guarantee"),
    ]
    assert case.state.stalled_since == at(4)


def test_a_stall_found_by_the_clock_is_a_new_version():
    case = consented()
    version = case.state.version
    events = rules.evaluate_stall(case.state, at(4), case.new_id, by_clock=True)
    assert case.state.version == version + 1 and [e.seq for e in events] == [version + 1]
    assert rules.evaluate_stall(case.state, at(4), case.new_id, by_clock=True) == []
    assert case.state.version == version + 1


def test_an_item_due_before_it_opened_is_told_once_and_never_escalated():
    case = consented()
    case.assign("medical", CLINIC, due_date=iso(-1))  # a due day already past when assigned
    (item,) = [i for i in case.items() if i.kind == "task"]
    assert item.escalate_at == item.due_at
    events = rules.evaluate_stall(case.state, at(0), case.new_id)
    assert [e.name for e in events] == ["stalled"]
    assert rules.evaluate_stall(case.state, at(1), case.new_id) == []
