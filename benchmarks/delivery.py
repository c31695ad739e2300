"""Benchmark: task deliveries per second against the partner simulator, and the p95 time from a
caseworker's assignment (the API's 201) to the agency's receipt of the webhook.

Runs the real stack on this machine (Temporal dev server, SQLite, worker, API over HTTP) and one
simulated agency, assigns TASKS tasks over CASES cases from CONCURRENCY caseworkers at once, and
prints the numbers. Usage: .venv/bin/python -m benchmarks.delivery [TASKS] [CONCURRENCY]
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from reintegration.temporal import temporal_cli
from tests.conftest import NAMESPACE, running_stack
from tests.delivery_helpers import SIMULATORS, simulator
from tests.journey import Journey
from tests.test_restart import worker_process


async def main(tasks: int, concurrency: int) -> None:
    env = await WorkflowEnvironment.start_local(
        namespace=NAMESPACE,
        data_converter=pydantic_data_converter,
        dev_server_existing_path=str(temporal_cli()),
        dev_server_extra_args=["--sqlite-pragma", "journal_mode=wal", "--sqlite-pragma", "synchronous=normal"],
    )
    try:
        with tempfile.TemporaryDirectory() as data:
            # One caseworker assigns hundreds of tasks at once: measure the pipeline, not the rate limit.
            async with running_stack(
                "sqlite", env, Path(data), rate_limit_per_minute=10**6, rate_limit_burst=10**5
            ) as stack:
                # The worker in its own process, as `make run` runs it, not in the API's event loop.
                await stack.stop_worker()
                worker = worker_process(stack)
                async with simulator(stack, services=["shelter"], act_after=None) as (agency, stats):
                    cases = []
                    for _ in range(concurrency):
                        j = Journey(stack)
                        await j.open()
                        cases.append(j)
                    assigned_at: dict[str, float] = {}

                    async def assign_many(j: Journey, n: int) -> None:
                        for _ in range(n):
                            task = await j.assign("shelter", agency)
                            assigned_at[task["task_id"]] = time.time()

                    per_case = tasks // concurrency
                    started = time.perf_counter()
                    await asyncio.gather(*(assign_many(j, per_case) for j in cases))
                    assigning = time.perf_counter() - started
                    total = per_case * concurrency
                    while sum(1 for k in assigned_at if k in stats.received_at) < total:
                        await asyncio.sleep(0.02)
                    elapsed = time.perf_counter() - started
                    latencies = sorted(stats.received_at[k] - assigned_at[k] for k in assigned_at)
                    p50 = statistics.median(latencies)
                    p95 = latencies[int(0.95 * (len(latencies) - 1))]
                    print(f"tasks delivered: {total} over {concurrency} cases, assigned concurrently")
                    print(f"assignments per second (API 201s): {total / assigning:.1f}")
                    print(f"deliveries per second (assignment to last receipt): {total / elapsed:.1f}")
                    print(
                        f"assignment-to-receipt latency: p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, "
                        f"max {latencies[-1] * 1000:.0f} ms"
                    )
                    print(f"repeats dropped by the agency: {sum(n - 1 for n in stats.received.values())}")

                # Phase 2: the agency is down while tasks pile up, then comes back: how fast does the
                # worker drain the backlog of deliveries?
                async with simulator(stack, services=["shelter"], act_after=None, fail_first=10**9) as (
                    down,
                    down_stats,
                ):
                    backlog: list[str] = []

                    async def pile_up(j: Journey, n: int) -> None:
                        for _ in range(n):
                            backlog.append((await j.assign("shelter", down))["task_id"])

                    await asyncio.gather(*(pile_up(j, per_case) for j in cases))
                    await asyncio.sleep(2)  # every delivery has failed at least once and is backing off
                    reopened = time.perf_counter()
                    SIMULATORS[down].fail_first = 0
                    while sum(1 for k in backlog if k in down_stats.received_at) < len(backlog):
                        await asyncio.sleep(0.02)
                    drained = time.perf_counter() - reopened
                    print(
                        f"backlog of {len(backlog)} deliveries drained in {drained:.1f} s after the agency came "
                        f"back: {len(backlog) / drained:.1f} deliveries per second (retry backoff at most "
                        f"{stack.settings.delivery_retry_max_seconds:.0f} s)"
                    )
                worker.terminate()
                worker.wait(timeout=30)
                await stack.start_worker()
    finally:
        await env.shutdown()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 200, int(sys.argv[2]) if len(sys.argv) > 2 else 10))
