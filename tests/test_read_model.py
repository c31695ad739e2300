"""The projection activity on the real databases: retries and late attempts never move a case back."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlmodel import Session, select

from reintegration import drift
from reintegration.db import CaseRecord, ReadModelChanges, TaskRecord, TimelineRecord
from reintegration.projection import write_projection
from workflows import rules
from workflows.model import (
    Actor,
    CaseOpening,
    ConsentBody,
    Role,
    StepCommand,
    TaskAction,
    TaskCommand,
)


def _journey():
    now = datetime.now(UTC)
    actor = Actor(sub="cw-rm", role=Role.caseworker)
    opening = CaseOpening(
        case_id=f"rm-{now.timestamp()}",
        reference=f"ES-RM-{now.microsecond}",
        owner_country="ES",
        owner_caseworker="cw-rm",
        origin_country="RO",
        identified_on=now.date(),
        is_minor=False,
        opened_by=actor,
    )
    state = rules.new_journey(opening, now)
    counter = iter(range(10**6))
    new_id = lambda: f"{opening.case_id}-{next(counter)}"  # noqa: E731
    return state, actor, now, new_id


async def test_a_late_older_projection_never_overwrites_a_newer_one(stack):
    state, actor, now, new_id = _journey()
    opened = [rules.opened_event(state, actor, now, new_id)]
    first = rules.project(state.model_copy(deep=True), opened)
    consent = StepCommand(
        step="consent", body=ConsentBody(assistance=True, given_on=now.date()).model_dump(mode="json"), actor=actor
    )
    events = rules.apply_step(state, consent, rules.check_step(state, consent), now, new_id)
    assign = TaskCommand(action=TaskAction.assign, body={"service": "shelter", "agency_id": "shelter-es"}, actor=actor)
    task_events, task_id = rules.apply_task(state, assign, rules.check_task(state, assign, now), now, new_id)
    second = rules.project(state.model_copy(deep=True), events + task_events)

    write_projection(stack.engine, first, stack.keyring)
    write_projection(stack.engine, second, stack.keyring)
    write_projection(stack.engine, second, stack.keyring)  # a retry
    write_projection(stack.engine, first, stack.keyring)  # an abandoned attempt that finishes late
    with Session(stack.engine) as session:
        case = session.get(CaseRecord, state.case_id)
        assert case.version == second.state.version and case.stage == "protection"
        assert session.get(TaskRecord, task_id).status == "assigned"
        timeline = session.exec(select(TimelineRecord).where(TimelineRecord.case_id == state.case_id)).all()
        assert sorted(e.name for e in timeline) == sorted(["opened", "consent", "protection", "assigned"])


async def test_the_changes_sent_after_each_command_write_the_rows_the_whole_state_says(stack):
    """``rules.project_changes`` (what the workflow sends) leaves the read model exactly as the whole
    state would: reconciliation's comparison finds nothing to repair."""
    state, actor, now, new_id = _journey()
    write_projection(
        stack.engine, rules.project_changes(state, [rules.opened_event(state, actor, now, new_id)]), stack.keyring
    )
    consent = StepCommand(
        step="consent", body=ConsentBody(assistance=True, given_on=now.date()).model_dump(mode="json"), actor=actor
    )
    write_projection(
        stack.engine,
        rules.project_changes(state, rules.apply_step(state, consent, rules.check_step(state, consent), now, new_id)),
        stack.keyring,
    )
    task_ids = []
    for service, agency in (("shelter", "shelter-es"), ("medical", "clinic-es")):
        assign = TaskCommand(action=TaskAction.assign, body={"service": service, "agency_id": agency}, actor=actor)
        events, task_id = rules.apply_task(state, assign, rules.check_task(state, assign, now), now, new_id)
        task_ids.append(task_id)
        write_projection(stack.engine, rules.project_changes(state, events), stack.keyring)
    partner = Actor(sub="partner-clinic", role=Role.partner, agency="clinic-es")
    accept = TaskCommand(action=TaskAction.accept, task_id=task_ids[1], body={}, actor=partner)
    events, _ = rules.apply_task(state, accept, rules.check_task(state, accept, now), now, new_id)
    sent = rules.project_changes(state, events)
    assert list(sent.state.tasks) == [task_ids[1]]  # the shelter's task is not sent again
    write_projection(stack.engine, sent, stack.keyring)

    assert drift.compare(state, drift.read_rows(stack.engine, state.case_id), stack.keyring) == []
    with Session(stack.engine) as session:
        assert session.get(CaseRecord, state.case_id).agencies == ["clinic-es", "shelter-es"]


async def test_every_projection_counts_one_write_and_the_summary_follows_the_count(stack):
    """The summary an API process keeps for a region holds until the read model's count of writes
    moves: each projection moves it by one, in its own transaction."""

    def changes() -> int:
        with Session(stack.engine) as session:
            row = session.get(ReadModelChanges, 1)
            assert row is not None
            return row.changes

    sup = stack.auth("supervisor", "sup-rm", countries=["MT"])
    before = (await stack.http.get("/v1/supervision/summary", headers=sup)).json()
    assert (await stack.http.get("/v1/supervision/summary", headers=sup)).json() == before
    state, actor, now, new_id = _journey()
    state.owner_country = "MT"
    count = changes()
    write_projection(stack.engine, rules.project(state, [rules.opened_event(state, actor, now, new_id)]), stack.keyring)
    assert changes() >= count + 1  # at least this one (the stack's own journeys may be projecting)
    after = (await stack.http.get("/v1/supervision/summary", headers=sup)).json()
    assert after["total"] == before["total"] + 1
    assert after["by_country"]["MT"] == after["total"]
