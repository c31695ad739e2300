"""Workflow histories: a full journey replays deterministically, and long journeys continue as new."""

from __future__ import annotations

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, UnsandboxedWorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from reintegration.codec import data_converter
from reintegration.temporal import temporal_cli
from tests.conftest import NAMESPACE, Stack, running_stack
from tests.journey import Journey
from workflows.case import CaseWorkflow
from workflows.stages import ALL_WORKFLOWS


async def journey_histories(stack: Stack, case_id: str) -> dict[str, list]:
    """Every run of every workflow of the case, oldest first, by workflow id."""
    runs: dict[str, list] = {}
    query = f'WorkflowId STARTS_WITH "case-{case_id}"'
    async for execution in stack.client.list_workflows(query):
        handle = stack.client.get_workflow_handle(execution.id, run_id=execution.run_id)
        if "-delivery-" in execution.id or "-notify-" in execution.id:
            continue  # messages to agencies and supervisors, not the journey
        runs.setdefault(execution.id, []).append((execution.start_time, await handle.fetch_history()))
    return {wid: [h for _, h in sorted(items, key=lambda x: x[0])] for wid, items in runs.items()}


async def test_a_full_journey_replays_and_its_size_is_known(stack):
    j = Journey(stack)
    await j.open()
    await j.to_reintegration_by_return()
    await j.through_reintegration_to_closure()
    case_id = j.case_id
    for _ in range(50):  # visibility is eventually consistent
        histories = await journey_histories(stack, case_id)
        if len(histories) == 3:
            break
    assert set(histories) == {f"case-{case_id}", f"case-{case_id}-return-1", f"case-{case_id}-reintegration-2"}
    # The worker ran the journey outside the sandbox (the default); its replay runs inside it, where
    # anything non-deterministic the code calls (the clock, random, I/O) fails.
    assert isinstance(stack.worker.config()["workflow_runner"], UnsandboxedWorkflowRunner)
    replayer = Replayer(
        workflows=[CaseWorkflow, *ALL_WORKFLOWS],
        data_converter=data_converter(stack.keyring),
        workflow_runner=SandboxedWorkflowRunner(),
    )
    total = 0
    for runs in histories.values():
        for history in runs:
            await replayer.replay_workflow(history)  # raises on any non-determinism
            total += len(history.events)
    sizes = {
        (wid.split(case_id)[-1].lstrip("-") or "case"): sum(len(h.events) for h in runs)
        for wid, runs in histories.items()
    }
    print(f"\nhistory events of one full voluntary-return journey: {total} {sizes}")
    # One deadline timer is kept across the commands while the next deadline does not come sooner
    # (KEPT_TIMER_PATCH): before it, every command cancelled the timer and started another.
    events = [e for runs in histories.values() for h in runs for e in h.events]
    updates = sum(e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED for e in events)
    started = sum(e.event_type == EventType.EVENT_TYPE_TIMER_STARTED for e in events)
    cancelled = sum(e.event_type == EventType.EVENT_TYPE_TIMER_CANCELED for e in events)
    print(f"updates {updates}, timers started {started}, cancelled {cancelled}")
    assert updates >= 20 and started <= updates // 2 and cancelled <= updates // 3
    # The person's name never enters a history.
    assert all(
        "Maria" not in str(h.events) and "Ionescu" not in str(h.events) for runs in histories.values() for h in runs
    )


@pytest.fixture(scope="module")
async def small_history_env():
    """A Temporal server that suggests continue-as-new after a few dozen events."""
    env = await WorkflowEnvironment.start_local(
        namespace=NAMESPACE,
        data_converter=pydantic_data_converter,
        dev_server_existing_path=str(temporal_cli()),
        dev_server_extra_args=["--dynamic-config-value", "limit.historyCount.suggestContinueAsNew=40"],
    )
    yield env
    await env.shutdown()


async def test_long_journeys_continue_as_new_and_lose_nothing(small_history_env, tmp_path):
    # This stack's worker runs the journeys inside the sandbox (REINTEGRATION_WORKFLOW_SANDBOX=true).
    async with running_stack("sqlite", small_history_env, tmp_path, workflow_sandbox=True) as stack:
        assert isinstance(stack.worker.config()["workflow_runner"], SandboxedWorkflowRunner)
        j = Journey(stack)
        await j.open()
        await j.through_protection()
        # Many task actions in one stage: far past the 40 events after which the server suggests
        # continuing as new.
        for _ in range(6):
            task = await j.assign("shelter", "shelter-es")
            await j.task_action(task["task_id"], "shelter-es", "decline", {"reason": "full"})
            await j.http.post(
                f"/v1/cases/{j.case_id}/tasks/{task['task_id']}/cancel",
                json={"reason": "placed elsewhere"},
                headers=j.cw,
            )
        await j.to_reintegration_by_return_from_pathway()
        await j.through_reintegration_to_closure()
        assert j.case["status"] == "closed"
        histories = {}
        for _ in range(50):
            histories = await journey_histories(stack, j.case_id)
            if len(histories.get(f"case-{j.case_id}", [])) > 1:
                break
        runs = {wid.split(j.case_id)[-1] or "case": len(r) for wid, r in histories.items()}
        assert runs["case"] > 1, runs  # the case workflow continued as new
        assert sum(runs.values()) > len(runs), runs
        assert len([t for t in j.case["timeline"] if t["name"] == "cancelled"]) == 6
        replayer = Replayer(
            workflows=[CaseWorkflow, *ALL_WORKFLOWS],
            data_converter=data_converter(stack.keyring),
            workflow_runner=SandboxedWorkflowRunner(),
        )
        for runs_of_workflow in histories.values():
            for history in runs_of_workflow:
                await replayer.replay_workflow(history)
