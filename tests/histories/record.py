"""Record the histories of real journeys, for ``tests/test_stored_histories.py`` to replay forever.

    .venv/bin/python -m tests.histories.record <release>     # e.g. 2026-12-issue-10

Runs each journey below through the real API, worker and a Temporal dev server (one that suggests
continuing as new after 40 events, so one journey does), and the journeys whose deadlines must pass
(``CLOCK_JOURNEYS``) on the time-skipping test server, with marker data only (the tests' made-up
person) and the test key-encryption key ``tests/histories/test-kek`` (TEST ONLY). Writes, under
``tests/histories/<release>/``, every run of every workflow of each case as Temporal's JSON
(``<journey>/<workflow>.<run>.json``) and the cases' data keys, wrapped by the test key
(``keys.json``), so the replay can decode the payloads.

Record a release's histories before changing workflow code, and keep them: each is a case in flight
that the next version must still carry (see "Changing the journey" in the README).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import tempfile
from collections.abc import Awaitable, Callable, Iterable
from datetime import timedelta
from pathlib import Path

from sqlmodel import Session, select
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from reintegration.crypto import DataKeyRecord
from reintegration.temporal import temporal_cli
from tests.conftest import NAMESPACE, Stack, running_stack
from tests.journey import Journey, day
from workflows import ids
from workflows.rules import add_months

HERE = Path(__file__).resolve().parent
TEST_KEK = HERE / "test-kek"


async def residence_to_closure(j: Journey) -> None:
    await j.open()
    await j.to_reintegration_by_residence()
    await j.through_reintegration_to_closure()


async def return_to_closure(j: Journey) -> None:
    await j.open()
    await j.to_reintegration_by_return()
    await j.through_reintegration_to_closure()


async def pathway_switch(j: Journey) -> None:
    """Voluntary return chosen, then residence instead (from the return stage)."""
    await j.to_return(assessment="unsafe")
    await j.step("pathway", {"pathway": "residence", "decided_on": day(6), "reason": "return is unsafe"})
    await j.deliver("legal-assistance", "legal-aid-es")
    await j.step("residence-application", {"filed_on": day(7), "permit_type": "victim-of-trafficking",
                                           "authority_reference": "EXT-2"})


async def appeal(j: Journey) -> None:
    await j.open()
    await j.through_protection()
    await j.step("pathway", {"pathway": "residence", "decided_on": day(3)})
    await j.deliver("legal-assistance", "legal-aid-es")
    await j.step("residence-application", {"filed_on": day(5), "permit_type": "victim-of-trafficking",
                                           "authority_reference": "EXT-3"})
    await j.step("residence-decision", {"decision": "rejected", "decided_on": day(40)})
    await j.step("appeal", {"filed_on": day(45), "authority_reference": "APP-1"})


async def withdrawal(j: Journey) -> None:
    await j.open()
    task = await j.assign("shelter", "shelter-es")
    await j.task_action(task["task_id"], "shelter-es", "accept")
    await j.step("withdraw-consent", {"withdrawn_on": day(1), "notes": "returned home"})


async def stopped_in_identification(j: Journey) -> None:
    await j.open(consent=False)


async def stopped_in_protection(j: Journey) -> None:
    await j.open()
    await j.step("risk-assessment", {"level": "high", "threats": ["recruiter nearby"], "assessed_on": day(1)})
    await j.step("safety-plan", {"agreed_on": day(1), "measures": [
        {"measure": "shelter placement", "service": "shelter", "agency_id": "shelter-es"}]})


async def stopped_in_pathway(j: Journey) -> None:
    await j.open()
    await j.through_protection()


async def stopped_in_return(j: Journey) -> None:
    await j.to_return(assessment="safe", documents=True)
    await j.step("travel-plan", {"travel_date": day(10), "route": "MAD-OTP", "receiving_caseworker": "cw-ro-1"})


async def stopped_in_residence(j: Journey) -> None:
    await j.open()
    await j.through_protection()
    await j.step("pathway", {"pathway": "residence", "decided_on": day(3)})
    await j.deliver("legal-assistance", "legal-aid-es")


async def stopped_in_reintegration(j: Journey) -> None:
    await j.open()
    await j.to_reintegration_by_return()
    await j.get()
    await j.step("reintegration-plan", {"agreed_on": day(20), "services": [
        {"service": "medical", "agency_id": "reintegration-partner-ro"}]})


async def continued_as_new(j: Journey) -> None:
    """More task actions in one stage than the server's 40 events: the case workflow continues as new."""
    await j.open()
    await j.through_protection()
    for _ in range(6):
        task = await j.assign("shelter", "shelter-es")
        await j.task_action(task["task_id"], "shelter-es", "decline", {"reason": "full"})
        await j.http.post(f"/v1/cases/{j.case_id}/tasks/{task['task_id']}/cancel",
                          json={"reason": "placed elsewhere"}, headers=j.cw)
    await j.step("pathway", {"pathway": "voluntary_return", "decided_on": day(3)})


async def revision_after_a_later_visit(j: Journey, env: WorkflowEnvironment) -> None:
    """Months of reintegration by the clock: the 3-month visit flags the plan (economic 0.2), its
    revision runs overdue, the 6-month visit flags nothing, and a month later the plan is revised.
    Left in flight, waiting for the 12-month visit."""
    await j.open()
    await j.to_reintegration_by_residence()
    today = (await env.get_current_time()).date()
    await j.step("reintegration-plan", {"agreed_on": today.isoformat(), "services": [
        {"service": "job-orientation", "agency_id": "clinic-es"}]})
    [task] = j.case["open_tasks"]
    await j.task_action(task["task_id"], "clinic-es", "accept")
    await j.task_action(task["task_id"], "clinic-es", "complete", {"outcome": "done"})
    first, second = add_months(today, 3), add_months(today, 6)
    await env.sleep(timedelta(days=(first - today).days))
    await j.step("monitoring", {"visited_on": first.isoformat(), "economic": 0.2, "social": 0.7, "psychosocial": 0.7})
    await env.sleep(timedelta(days=(second - first).days))  # the revision runs overdue, then escalates
    await j.step("monitoring", {"visited_on": second.isoformat(), "economic": 0.7, "social": 0.7,
                                "psychosocial": 0.7})
    await env.sleep(timedelta(days=32))
    await j.step("reintegration-plan", {"agreed_on": (second + timedelta(days=32)).isoformat(), "services": [
        {"service": "financial", "agency_id": "clinic-es"}]})


async def _reopen(j: Journey, stage: str) -> None:
    r = await j.http.post(
        f"/v1/cases/{j.case_id}/reopen", json={"stage": stage, "reason": "identified again"}, headers=j.supervisor
    )
    assert r.status_code == 200, r.text


async def reopened_in_reintegration(j: Journey) -> None:
    """Closed, then reopened by a supervisor for a new need: a new plan (a new run of the case)."""
    await residence_to_closure(j)
    await _reopen(j, "reintegration")
    await j.step("reintegration-plan", {"agreed_on": day(500), "services": [
        {"service": "job-orientation", "agency_id": "clinic-es"}]})


async def reopened_in_protection(j: Journey) -> None:
    """Closed, then reopened in protection (re-trafficking): the risk assessed again."""
    await return_to_closure(j)
    await _reopen(j, "protection")
    await j.step("risk-assessment", {"level": "high", "threats": [], "assessed_on": day(600)}, headers=j.cw_origin)


async def transferred(j: Journey) -> None:
    """Offered to Portugal's office in protection, accepted there: the case goes on in PT."""
    pt = j.stack.auth("caseworker", "cw-pt-1", countries=["PT"])
    await j.open()
    r = await j.http.post(
        f"/v1/cases/{j.case_id}/transfers",
        json={"to_country": "PT", "to_caseworker": "cw-pt-1", "reason": "moved"},
        headers=j.cw,
    )
    assert r.status_code == 201, r.text
    r = await j.http.post(f"/v1/transfers/{r.json()['transfer_id']}/accept", json={}, headers=pt)
    assert r.status_code == 200, r.text
    await j.step("risk-assessment", {"level": "low", "threats": [], "assessed_on": day(1)}, headers=pt)


async def monitored_with_survey(j: Journey) -> None:
    """Reintegration after a return: a visit scored from the sustainability survey (its social
    dimension weak: the plan flagged for revision), then one with the three scores typed in. Left in
    flight, the revision due."""
    await j.open()
    await j.to_reintegration_by_return()
    await j.get()
    await j.step("reintegration-plan", {"agreed_on": day(20), "services": [
        {"service": "job-orientation", "agency_id": "reintegration-partner-ro"}]})
    for task in list(j.case["open_tasks"]):
        await j.task_action(task["task_id"], task["agency_id"], "accept")
        await j.task_action(task["task_id"], task["agency_id"], "complete", {"outcome": "done"})
    survey = {"economic_satisfaction": 3, "food_security": 4, "ability_to_borrow": 2, "debt_to_spending": None,
              "employment": 4, "housing": 2, "education": None, "justice": 2, "documentation": 3,
              "public_services": 2, "social_participation": 3, "support_network": 4, "discrimination": 4,
              "wellbeing": 3, "physical_safety": 5}
    await j.step("monitoring", {"visited_on": day(110), "survey": survey, "notes": "marker visit"})
    assert j.case["facts"]["plan_revision_needed"] is True, j.case["facts"]["monitoring_visits"]
    await j.step("monitoring", {"visited_on": day(200), "economic": 0.7, "social": 0.8, "psychosocial": 0.75})


JOURNEYS: dict[str, Callable[[Journey], Awaitable[None]]] = {
    "transferred": transferred,
    "reopened-in-reintegration": reopened_in_reintegration,
    "reopened-in-protection": reopened_in_protection,
    "residence-to-closure": residence_to_closure,
    "return-to-closure": return_to_closure,
    "pathway-switch": pathway_switch,
    "appeal": appeal,
    "withdrawal": withdrawal,
    "stopped-in-identification": stopped_in_identification,
    "stopped-in-protection": stopped_in_protection,
    "stopped-in-pathway": stopped_in_pathway,
    "stopped-in-return": stopped_in_return,
    "stopped-in-residence": stopped_in_residence,
    "stopped-in-reintegration": stopped_in_reintegration,
    "continued-as-new": continued_as_new,
    "monitored-with-survey": monitored_with_survey,
}

# Journeys whose deadlines pass: on the time-skipping test server, where months pass in seconds and
# the workflows' timers decide what happens (a stall found by the clock is a command of its own).
CLOCK_JOURNEYS: dict[str, Callable[[Journey, WorkflowEnvironment], Awaitable[None]]] = {
    "revision-after-a-later-visit": revision_after_a_later_visit,
}


async def _histories(stack: Stack, case_id: str) -> list[tuple[str, str, str]]:
    """(workflow id, run id, history JSON) of every run of the case's journey workflows."""
    found: dict[tuple[str, str], str] = {}
    for _ in range(100):  # visibility is eventually consistent: wait until it stops growing
        seen = []
        async for execution in stack.client.list_workflows(f'WorkflowId STARTS_WITH "case-{case_id}"'):
            if "-delivery-" in execution.id or "-notify-" in execution.id:
                continue
            seen.append((execution.id, execution.run_id))
        if seen and set(seen) == set(found):
            break
        for workflow_id, run_id in seen:
            if (workflow_id, run_id) not in found:
                found[(workflow_id, run_id)] = await _settled(stack, workflow_id, run_id)
        await asyncio.sleep(0.2)
    return [(w, r, text) for (w, r), text in found.items()]


async def _runs(stack: Stack, case_id: str) -> list[tuple[str, str, str]]:
    """The same, where there is no visibility to list workflows (the test server): from the case
    workflow's first run, each run's history names its continuation and its children."""
    case_workflow = ids.workflow_id(case_id)
    latest = await stack.client.get_workflow_handle(case_workflow).fetch_history()
    first = latest.events[0].workflow_execution_started_event_attributes.first_execution_run_id
    todo, found = [(case_workflow, first)], []
    while todo:
        workflow_id, run_id = todo.pop(0)
        text = await _settled(stack, workflow_id, run_id)
        for e in WorkflowHistory.from_json(workflow_id, text).events:
            if e.HasField("child_workflow_execution_started_event_attributes"):
                child = e.child_workflow_execution_started_event_attributes.workflow_execution
                todo.append((child.workflow_id, child.run_id))
            elif e.HasField("workflow_execution_continued_as_new_event_attributes"):
                todo.append((workflow_id, e.workflow_execution_continued_as_new_event_attributes.new_execution_run_id))
        found.append((workflow_id, run_id, text))
    return found


UNSETTLED = {EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED, EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED}


async def _settled(stack: Stack, workflow_id: str, run_id: str) -> str:
    """The history once its first workflow task completed, none is under way (a replay of one cut
    mid-task would wait for that task's local activity forever), and it stopped growing."""
    handle = stack.client.get_workflow_handle(workflow_id, run_id=run_id)
    previous = -1
    for _ in range(200):
        history = await handle.fetch_history()
        done = any(e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED for e in history.events)
        if done and len(history.events) == previous and history.events[-1].event_type not in UNSETTLED:
            return history.to_json()
        previous = len(history.events)
        await asyncio.sleep(0.25)
    raise RuntimeError(f"the history of {workflow_id} did not settle")


def _store(out: Path, name: str, case_id: str, runs: list[tuple[str, str, str]]) -> None:
    for workflow_id, run_id, text in runs:
        short = workflow_id.replace(f"case-{case_id}", "case")
        path = out / name / f"{short}.{run_id}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    print(f"{name}: case {case_id}, {len(list((out / name).glob('*.json')))} runs", flush=True)


def _keys(stack: Stack, case_ids: Iterable[str]) -> dict[str, dict[str, str]]:
    """The cases' data keys, as wrapped by the test key."""
    with Session(stack.engine) as session:
        return {record_.key_id: {"case_id": record_.case_id, "purpose": record_.purpose,
                                 "kek_id": record_.kek_id, "wrapped": record_.wrapped}
                for record_ in session.exec(select(DataKeyRecord).where(
                    DataKeyRecord.case_id.in_(list(case_ids)))).all()}  # type: ignore[union-attr]


async def record(release: str) -> Path:
    out = HERE / release
    if out.exists():
        raise SystemExit(f"{out} exists: a release's histories are recorded once")
    data = Path(tempfile.mkdtemp(prefix="histories-"))
    (data / "dev").mkdir()
    (data / "clock").mkdir()
    keys: dict[str, dict[str, str]] = {}
    cases: dict[str, str] = {}
    try:
        env = await WorkflowEnvironment.start_local(
            namespace=NAMESPACE, data_converter=pydantic_data_converter, dev_server_existing_path=str(temporal_cli()),
            dev_server_extra_args=["--dynamic-config-value", "limit.historyCount.suggestContinueAsNew=40"])
        try:
            async with running_stack("sqlite", env, data / "dev", kek_file=TEST_KEK) as stack:
                for name, journey in JOURNEYS.items():
                    j = Journey(stack)
                    await journey(j)
                    cases[name] = j.case_id
                    _store(out, name, j.case_id, await _histories(stack, j.case_id))
                keys |= _keys(stack, cases.values())
        finally:
            await env.shutdown()
        env = await WorkflowEnvironment.start_time_skipping(
            data_converter=pydantic_data_converter,
            test_server_existing_path=str(Path(sys.executable).parent / "temporal-test-server"))
        try:
            async with running_stack("sqlite", env, data / "clock", kek_file=TEST_KEK,
                                     temporal_namespace="default") as stack:
                for name, clock_journey in CLOCK_JOURNEYS.items():
                    j = Journey(stack)
                    await clock_journey(j, env)
                    cases[name] = j.case_id
                    _store(out, name, j.case_id, await _runs(stack, j.case_id))
                keys |= _keys(stack, [cases[name] for name in CLOCK_JOURNEYS])
        finally:
            await env.shutdown()
        (out / "keys.json").write_text(json.dumps({"cases": cases, "keys": keys}, indent=1, sort_keys=True) + "\n")
    finally:
        shutil.rmtree(data, ignore_errors=True)
    return out


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m tests.histories.record <release>")
    print(f"recorded in {asyncio.run(record(sys.argv[1]))}")
