"""Deadlines, stalled cases and escalation, months in seconds on the time-skipping test server.

The workflows keep every deadline with durable timers; here the test server skips the time
between them (``env.sleep``), so a reflection period, an unaccepted task or a year of monitoring
visits pass in seconds, through the real API, worker and database.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections import Counter
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlmodel import Session, select
from temporalio import activity, workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowUpdateStage
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from reintegration.db import NotificationRecord
from tests.conftest import running_stack, served
from tests.journey import Journey, day
from tests.rules.builders import opening
from workflows import rules
from workflows.journey import JourneyWorkflowBase
from workflows.model import ActivityName, JourneyState, Stage
from workflows.rules import add_months

WEBHOOK_SECRET = "supervisors-webhook-secret-0123456789abcdef"


class Supervisors:
    """The supervisors' notification webhook: fails the first N calls, counts the rest by key."""

    def __init__(self, fail_first: int = 0) -> None:
        self.fail_first, self.calls, self.received = fail_first, 0, Counter()
        self.bodies: dict[str, dict] = {}
        self.app = FastAPI()

        @self.app.post("/notify")
        async def notify(request: Request) -> JSONResponse:
            self.calls += 1
            if self.calls <= self.fail_first:
                return JSONResponse({"error": "down"}, status_code=503)
            key = request.headers["idempotency-key"]
            self.received[key] += 1
            self.bodies[key] = await request.json()
            return JSONResponse({"ok": True})

    def kinds(self, item: str) -> list[str]:
        return sorted(b["kind"] for b in self.bodies.values() if b["item"] == item)


@pytest.fixture(scope="module")
async def skipping():
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter,
        test_server_existing_path=str(Path(sys.executable).parent / "temporal-test-server"),
    )
    supervisors = Supervisors(fail_first=2)
    import tempfile

    async with served(supervisors.app) as url:
        with tempfile.TemporaryDirectory() as data:
            async with running_stack(
                "sqlite",
                env,
                Path(data),
                temporal_namespace="default",
                supervision_webhook_url=f"{url}/notify",
                supervision_webhook_secret=WEBHOOK_SECRET,
            ) as stack:
                yield env, stack, supervisors
    await env.shutdown()


async def settle(j: Journey, predicate, what: str, timeout: float = 30.0) -> dict:
    """Read the case until the predicate holds (the worker projects what the timers found)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        case = await j.get()
        if predicate(case):
            return case
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}: {j.case['status']} {j.case['stall_reasons']}")


def reasons(case: dict) -> dict[str, dict]:
    return {r["name"]: r for r in case["stall_reasons"]}


async def test_the_reflection_period_running_out_stalls_the_case_until_the_decision(skipping):
    env, stack, supervisors = skipping
    j = Journey(stack)
    await j.open()
    await j.through_protection()
    assert j.case["status"] == "active" and j.case["stall_reasons"] == []
    await env.sleep(timedelta(days=31))
    case = await settle(j, lambda c: "pathway" in reasons(c), "the pathway decision overdue")
    pathway = reasons(case)["pathway"]
    assert case["status"] == "stalled" and pathway["turn"] == "caseworker" and pathway["kind"] == "step"
    supervisor = stack.auth("supervisor", "sup-deadlines")
    stalled = (await stack.http.get("/v1/supervision/stalled", headers=supervisor, params={"limit": 500})).json()
    assert j.case_id in {c["case_id"] for c in stalled["items"]}
    await j.step("pathway", {"pathway": "residence", "decided_on": day(31)})
    case = await settle(j, lambda c: c["status"] == "active", "the stall to clear")
    assert case["stall_reasons"] == []


async def test_a_task_not_accepted_in_three_days_stalls_and_escalates_at_twice_the_deadline(skipping):
    env, stack, supervisors = skipping
    j = Journey(stack)
    await j.open()
    task = await j.assign("shelter", "shelter-es")
    await env.sleep(timedelta(days=3, hours=1))
    case = await settle(j, lambda c: "shelter" in reasons(c), "the unaccepted task")
    shelter = reasons(case)["shelter"]
    assert shelter["turn"] == "agency" and shelter["task_id"] == task["task_id"]
    item = "shelter"

    def notified(kinds: list[str]):
        return lambda: (
            sorted(b["kind"] for b in supervisors.bodies.values() if b["case_id"] == j.case_id and b["item"] == item)
            == kinds
        )

    await until(notified(["stalled"]), "the first notification")
    await env.sleep(timedelta(days=3))
    await until(notified(["escalated", "stalled"]), "the escalation at twice the deadline")
    await j.task_action(task["task_id"], "shelter-es", "accept")
    case = await settle(j, lambda c: "shelter" not in reasons(c), "the stall to clear")
    assert all(n == 1 for n in supervisors.received.values())  # each notification once


async def test_a_declined_task_not_reassigned_is_the_caseworkers_turn(skipping):
    env, stack, _ = skipping
    j = Journey(stack)
    await j.open()
    task = await j.assign("medical", "clinic-es")
    await j.task_action(task["task_id"], "clinic-es", "decline", {"reason": "no doctor this week"})
    await env.sleep(timedelta(days=3, hours=1))
    case = await settle(j, lambda c: "medical" in reasons(c), "the declined task overdue")
    assert reasons(case)["medical"]["turn"] == "caseworker"
    await stack.http.post(
        f"/v1/cases/{j.case_id}/tasks/{task['task_id']}/reassign",
        json={"agency_id": "reintegration-partner-ro"},
        headers=j.cw,
    )  # wrong country: 422
    r = await stack.http.post(
        f"/v1/cases/{j.case_id}/tasks/{task['task_id']}/reassign", json={"agency_id": "shelter-es"}, headers=j.cw
    )
    assert r.status_code == 422  # shelter-es offers no medical care
    admin = stack.auth("admin", "admin-1")
    await stack.http.patch(
        "/v1/agencies/shelter-es",
        headers=admin,
        json={"services": ["shelter", "police-protection", "housing", "psychosocial", "medical"]},
    )
    r = await stack.http.post(
        f"/v1/cases/{j.case_id}/tasks/{task['task_id']}/reassign", json={"agency_id": "shelter-es"}, headers=j.cw
    )
    assert r.status_code == 200, r.text
    await settle(j, lambda c: "medical" not in reasons(c), "the stall to clear")


async def test_inactivity_after_thirty_days(skipping):
    env, stack, _ = skipping
    j = Journey(stack)
    await j.open()
    await j.through_protection()
    await j.step("pathway", {"pathway": "residence", "decided_on": day(1)})
    await j.step(
        "residence-application",
        {"filed_on": day(2), "permit_type": "victim-of-trafficking", "authority_reference": "EXT-T"},
    )
    await env.sleep(timedelta(days=29))
    assert (await j.get())["status"] == "active"  # waiting on the authority is not overdue
    await env.sleep(timedelta(days=2))
    case = await settle(j, lambda c: c["status"] == "stalled", "inactivity")
    assert list(reasons(case)) == ["no activity"] and reasons(case)["no activity"]["kind"] == "inactivity"
    await j.step("residence-decision", {"decision": "rejected", "decided_on": day(31)})
    await settle(j, lambda c: c["status"] == "active", "the stall to clear")


async def test_monitoring_visits_at_three_six_and_twelve_months(skipping):
    env, stack, _ = skipping
    j = Journey(stack)
    await j.open()
    await j.to_reintegration_by_residence()
    today = (await env.get_current_time()).date()  # the workflows' clock: earlier tests moved it on

    def on(offset: int) -> str:
        return (today + timedelta(days=offset)).isoformat()

    await j.step(
        "reintegration-plan",
        {"agreed_on": on(0), "services": [{"service": "job-orientation", "agency_id": "clinic-es"}]},
    )
    assert j.case["open_tasks"], (j.case["stage"], j.case["timeline"][-3:], j.case["facts"]["plan_agreed_on"])
    [task] = j.case["open_tasks"]
    await j.task_action(task["task_id"], "clinic-es", "accept")
    await j.task_action(task["task_id"], "clinic-es", "complete", {"outcome": "done"})
    elapsed = 0
    for number, months in enumerate((3, 6, 12), start=1):
        scheduled_day = (add_months(today, months) - today).days
        due_day = scheduled_day + 14  # the scheduled date plus two weeks' grace
        visit_day = scheduled_day + 3
        await env.sleep(timedelta(days=due_day - 2 - elapsed))
        case = await j.get()
        assert "monitoring" not in reasons(case), f"visit {number} is not overdue yet"
        await env.sleep(timedelta(days=3))
        elapsed = due_day + 1
        case = await settle(j, lambda c: "monitoring" in reasons(c), f"visit {number} overdue")
        assert reasons(case)["monitoring"]["turn"] == "caseworker"
        await j.step("monitoring", {"visited_on": on(visit_day), "economic": 0.7, "social": 0.7, "psychosocial": 0.7})
        case = await settle(j, lambda c: "monitoring" not in reasons(c), f"visit {number} recorded")
    assert len(case["facts"]["monitoring_visits"]) == 3
    assert "closure" in case["allowed_steps"]


async def test_a_revision_overdue_stays_overdue_after_a_later_visit_until_the_plan_is_revised(skipping):
    """The 3-month visit flags the plan; its revision is due 30 days after that visit, and a later
    visit that flags nothing neither moves the deadline nor clears the stall: only the revision does."""
    env, stack, _ = skipping
    j = Journey(stack)
    await j.open()
    await j.to_reintegration_by_residence()
    today = (await env.get_current_time()).date()  # the workflows' clock: earlier tests moved it on
    await j.step(
        "reintegration-plan",
        {"agreed_on": today.isoformat(), "services": [{"service": "job-orientation", "agency_id": "clinic-es"}]},
    )
    [task] = j.case["open_tasks"]
    await j.task_action(task["task_id"], "clinic-es", "accept")
    await j.task_action(task["task_id"], "clinic-es", "complete", {"outcome": "done"})
    first, second = add_months(today, 3), add_months(today, 6)

    def visit(on: date, economic: float) -> dict:
        return {"visited_on": on.isoformat(), "economic": economic, "social": 0.7, "psychosocial": 0.7}

    def revision(case: dict) -> str | None:
        return {s["step"]: s["due_at"] for s in case["open_steps"]}.get("reintegration-plan")

    await env.sleep(timedelta(days=(first - today).days))
    await j.step("monitoring", visit(first, economic=0.2))
    due = (first + timedelta(days=30)).isoformat()
    assert revision(j.case).startswith(due)
    await env.sleep(timedelta(days=31))
    case = await settle(j, lambda c: "reintegration-plan" in reasons(c), "the revision overdue")
    assert reasons(case)["reintegration-plan"]["due_at"].startswith(due)

    await env.sleep(timedelta(days=(second - first).days - 31))
    await j.step("monitoring", visit(second, economic=0.7))  # sustainable: flags nothing
    assert revision(j.case).startswith(due)  # not 30 days after this visit
    assert j.case["status"] == "stalled" and reasons(j.case)["reintegration-plan"]["due_at"].startswith(due)
    await env.sleep(timedelta(days=32))  # past where the latest visit would have put the deadline
    case = await j.get()
    assert reasons(case)["reintegration-plan"]["due_at"].startswith(due)
    with Session(stack.engine) as session:
        notices = session.exec(select(NotificationRecord).where(NotificationRecord.case_id == j.case_id)).all()
    # The supervisors were told of one deadline, once and at twice it (not of a new one from the later visit).
    revision_notices = sorted(
        (n.kind, n.payload["due_at"][:10])
        for n in notices
        if n.payload["item"] == "reintegration-plan" and n.payload["due_at"][:10] > first.isoformat()
    )
    assert revision_notices == [("escalated", due), ("stalled", due)], [n.notification_id for n in notices]

    await j.step(
        "reintegration-plan",
        {
            "agreed_on": (second + timedelta(days=32)).isoformat(),
            "services": [{"service": "financial", "agency_id": "clinic-es"}],
        },
    )
    assert revision(j.case) is None and "reintegration-plan" not in reasons(j.case)


async def test_a_retried_notification_is_sent_once(skipping):
    env, stack, supervisors = skipping
    with Session(stack.engine) as session:
        sent = session.exec(select(NotificationRecord).where(NotificationRecord.status == "sent")).all()
    assert sent, "the earlier tests notified the supervisors"
    assert supervisors.calls > len(supervisors.received)  # the first calls failed and were retried
    assert all(n == 1 for n in supervisors.received.values())
    assert {n.notification_id for n in sent} == set(supervisors.received)
    assert max(n.attempts for n in sent) >= 2


@workflow.defn(name="KeptTimerProbe")
class KeptTimerProbe(JourneyWorkflowBase):
    """The journey's hold of a stage (``hold_stage``) with a command that can be made to wait holding
    the case's lock before it changes the case, as a step or task command waits for its agency check."""

    OWNED_STAGES = (Stage.identification,)

    @workflow.init
    def __init__(self, state: JourneyState) -> None:
        super().__init__()
        self.state = state
        self.released = False

    @workflow.run
    async def run(self, state: JourneyState) -> None:
        await self.hold_stage()

    @workflow.update
    async def touch(self, held: bool) -> int:
        async with self._lock:
            if held:
                await workflow.wait_condition(lambda: self.released)
            self.state.version += 1
            self.state.last_activity_at = workflow.now()
            return (await self._record([])).version

    @workflow.signal
    def release(self) -> None:
        self.released = True

    @workflow.signal
    def leave(self) -> None:
        self.state.stage = Stage.protection


async def test_a_kept_timer_firing_early_while_a_command_holds_the_case_projects_nothing_more():
    """The kept timer fires before the deadline it was set for has come (a command moved it later);
    meanwhile another command holds the case's lock. The command projects its change; the timer,
    which found nothing due, projects nothing (the command's own projection is not repeated)."""
    projected: list[int] = []

    @activity.defn(name=ActivityName.PROJECT_CASE)
    async def project_case(projection: dict[str, Any]) -> None:
        projected.append(projection["state"]["version"])

    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter,
        test_server_existing_path=str(Path(sys.executable).parent / "temporal-test-server"),
    )
    try:
        case_id = str(uuid.uuid4())
        state = rules.new_journey(opening().model_copy(update={"case_id": case_id}), await env.get_current_time())
        async with Worker(
            env.client,
            task_queue="kept-timer",
            workflows=[KeptTimerProbe],
            activities=[project_case],
            workflow_runner=UnsandboxedWorkflowRunner(),
        ):
            handle = await env.client.start_workflow(
                KeptTimerProbe.run, state, id=f"case-{case_id}", task_queue="kept-timer"
            )
            await env.sleep(timedelta(days=10))
            assert await handle.execute_update(KeptTimerProbe.touch, False) == 1  # inactivity due 10 days later
            held = await handle.start_update(KeptTimerProbe.touch, True, wait_for_stage=WorkflowUpdateStage.ACCEPTED)
            await env.sleep(timedelta(days=21))  # the timer kept for day 30 fires: nothing is due before day 40
            await handle.signal(KeptTimerProbe.release)
            assert await held.result() == 2
            await handle.signal(KeptTimerProbe.leave)
            await handle.result()
            events = [e.event_type for e in (await handle.fetch_history()).events]
        assert events.count(EventType.EVENT_TYPE_TIMER_FIRED) == 1
        fired = events.index(EventType.EVENT_TYPE_TIMER_FIRED)  # the timer set at the start, kept
        assert events[:fired].count(EventType.EVENT_TYPE_TIMER_STARTED) == 1
        assert EventType.EVENT_TYPE_TIMER_CANCELED not in events[:fired]
        assert projected == [1, 2], projected  # each command once; nothing from the timer
    finally:
        await env.shutdown()


async def until(condition, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")
