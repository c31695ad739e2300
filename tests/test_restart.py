"""The worker stops or dies mid-journey and starts again: the journey goes on, nothing duplicated."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

from sqlmodel import Session, select

from reintegration.db import TaskRecord, TimelineRecord
from tests.journey import Journey, day

ROOT = Path(__file__).resolve().parents[1]


def worker_process(stack) -> subprocess.Popen:
    """The real worker, as `make run` starts it, on this stack's database and task queue."""
    env = {
        **os.environ,
        "REINTEGRATION_TEMPORAL_ADDRESS": stack.settings.temporal_address,
        "REINTEGRATION_TEMPORAL_NAMESPACE": stack.settings.temporal_namespace,
        "REINTEGRATION_TEMPORAL_TASK_QUEUE": stack.settings.temporal_task_queue,
        "REINTEGRATION_DATA_DIR": str(stack.settings.data_dir),
        "DATABASE_URL": stack.settings.sqlalchemy_url,
    }
    log = open(stack.settings.data_dir / "worker.log", "ab")  # noqa: SIM115 - the process keeps it
    return subprocess.Popen([sys.executable, "-m", "worker"], cwd=ROOT, env=env, stdout=log, stderr=log)


def timeline_counts(stack, case_id: str) -> Counter:
    with Session(stack.engine) as session:
        rows = session.exec(select(TimelineRecord).where(TimelineRecord.case_id == case_id)).all()
    return Counter((r.kind, r.name, r.task_id) for r in rows)


async def test_worker_stopped_mid_journey_then_started_again(stack):
    j = Journey(stack)
    await j.to_return(assessment="safe", documents=True)

    await stack.stop_worker()
    try:
        pending = asyncio.create_task(
            j.step("travel-plan", {"travel_date": day(10), "route": "MAD-OTP", "receiving_caseworker": "cw-ro-1"})
        )
        await asyncio.sleep(1.5)
        assert not pending.done()  # accepted by Temporal, waiting for a worker
    finally:
        await stack.start_worker()
    case = await pending
    assert case["facts"]["travel_plan_on"] is not None and "departure" in case["allowed_steps"]

    await j.step("departure", {"departed_on": day(10)})
    reception = await j.assign("reception", "origin-office-ro")
    await j.task_action(reception["task_id"], "origin-office-ro", "accept")
    # Stop again right after the return stage ends: the next stage's workflow starts on restart.
    await j.task_action(
        reception["task_id"], "origin-office-ro", "complete", {"outcome": "done", "arrived_on": day(10)}
    )
    await stack.stop_worker()
    await stack.start_worker()
    j.cw = j.cw_origin
    await j.through_reintegration_to_closure()
    assert j.case["status"] == "closed"

    counts = timeline_counts(stack, j.case_id)
    assert counts.pop(("step", "monitoring", None)) == 3  # the three scheduled visits
    assert all(n == 1 for n in counts.values()), counts
    assert counts[("step", "travel-plan", None)] == 1
    with Session(stack.engine) as session:
        tasks = session.exec(select(TaskRecord).where(TaskRecord.case_id == j.case_id)).all()
    assert len(tasks) == 5 and all(t.status == "completed" for t in tasks)


async def test_worker_killed_with_sigkill_mid_journey(stack):
    j = Journey(stack)
    await j.open()
    await stack.stop_worker()
    first = worker_process(stack)
    try:
        await j.step("risk-assessment", {"level": "low", "assessed_on": day(1)})
        # Kill the worker while a step is in flight.
        pending = asyncio.create_task(j.step("security-guarantee", {"confirmed_on": day(2)}))
        await asyncio.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        second = worker_process(stack)
        try:
            case = await asyncio.wait_for(pending, timeout=90)
            assert case["stage"] == "pathway"
            await j.step("pathway", {"pathway": "residence", "decided_on": day(3)})
            assert j.case["stage"] == "residence"
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
        await stack.start_worker()
    await j.step(
        "residence-application",
        {"filed_on": day(5), "permit_type": "victim-of-trafficking", "authority_reference": "EXT-9"},
    )
    counts = timeline_counts(stack, j.case_id)
    assert all(n == 1 for n in counts.values()), counts
    assert counts[("step", "security-guarantee", None)] == 1
