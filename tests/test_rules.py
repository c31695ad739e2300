"""The pure deadline rules, checked directly where the arithmetic matters."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from workflows import rules
from workflows.model import Actor, CaseOpening, ConsentBody, OpenItem, Role, StepCommand


def _protected_case(now: datetime):
    actor = Actor(sub="cw", role=Role.caseworker)
    opening = CaseOpening(
        case_id="c-rules",
        reference="ES-R",
        owner_country="ES",
        owner_caseworker="cw",
        origin_country="RO",
        identified_on=now.date(),
        is_minor=False,
        opened_by=actor,
    )
    state = rules.new_journey(opening, now)
    consent = StepCommand(
        step="consent", body=ConsentBody(assistance=True, given_on=now.date()).model_dump(mode="json"), actor=actor
    )
    counter = iter(range(1000))
    new_id = lambda: f"e{next(counter)}"  # noqa: E731
    rules.apply_step(state, consent, rules.check_step(state, consent), now, new_id)
    return state, new_id


def test_escalation_is_never_before_the_deadline():
    due = datetime(2026, 12, 1, tzinfo=UTC)
    assert OpenItem(
        kind="step", name="x", due_at=due, since=due - timedelta(days=3), turn="caseworker"
    ).escalate_at == due + timedelta(days=3)
    late_start = OpenItem(kind="step", name="x", due_at=due, since=due + timedelta(days=5), turn="caseworker")
    assert late_start.escalate_at == due
    assert OpenItem(kind="step", name="x", due_at=due, turn="caseworker").escalate_at == due


def test_a_stall_found_by_the_clock_is_a_new_version_and_its_events_carry_it():
    now = datetime(2026, 11, 29, 9, tzinfo=UTC)
    state, new_id = _protected_case(now)
    version = state.version
    later = now + timedelta(days=4)  # the risk assessment was due after 3 days
    events = rules.evaluate_stall(state, later, new_id, by_clock=True)
    assert state.version == version + 1
    assert [e.name for e in events] == ["stalled"] and events[0].seq == state.version
    assert {r.name for r in state.stall} == {"risk-assessment"}
    assert rules.evaluate_stall(state, later + timedelta(minutes=1), new_id, by_clock=True) == []  # once
    # At twice the deadline (it ran from the start of the identification day), they are told again.
    events = rules.evaluate_stall(state, now + timedelta(days=8), new_id, by_clock=True)
    assert [e.name for e in events] == ["escalated"]
    assert rules.next_deadline(state, now + timedelta(days=8)) is not None
