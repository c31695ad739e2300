"""a. The worker killed with SIGKILL at random moments and started again; b. two workers, one killed."""

from __future__ import annotations

import asyncio

import pytest

from tests.faults.harness import PLAN, assert_clean, fault_stack, run_fault

pytestmark = pytest.mark.faults


async def kill_the_worker_at_random(ctx) -> None:
    workers = ctx.fs.workers
    for low, high in ((0.1, 0.3), (0.4, 0.6), (0.7, 0.85)):
        if await ctx.progress(ctx.at(low, high)):
            break
        workers.kill(workers.running[0])
        await asyncio.sleep(ctx.rng.uniform(0.0, 1.5))  # nobody works meanwhile
        workers.start()
    ctx.log.append(f"worker killed {workers.killed} times")


async def kill_one_of_two(ctx) -> None:
    workers = ctx.fs.workers
    for low, high in ((0.1, 0.3), (0.5, 0.7)):
        if await ctx.progress(ctx.at(low, high)):
            break
        workers.kill(workers.running[ctx.rng.randrange(len(workers.running))])  # the other carries on alone
        if await ctx.pause(ctx.rng.uniform(3.0, 6.0)):
            break
        workers.start()
    ctx.log.append(f"one of two workers killed, {workers.killed} times")


async def test_worker_killed_at_random_moments(temporal_address, tmp_path):
    journeys, seed = PLAN["worker-sigkill"]
    async with fault_stack("sigkill", tmp_path, temporal_address=temporal_address) as fs:
        findings = await run_fault(fs, "worker-sigkill", journeys=journeys, seed=seed, fault=kill_the_worker_at_random)
    assert_clean(findings)
    assert fs.workers.killed >= 2


async def test_two_workers_and_one_killed(temporal_address, tmp_path):
    journeys, seed = PLAN["two-workers"]
    async with fault_stack("two-workers", tmp_path, temporal_address=temporal_address, workers=2) as fs:
        findings = await run_fault(fs, "two-workers", journeys=journeys, seed=seed, fault=kill_one_of_two)
    assert_clean(findings)
    assert fs.workers.killed >= 1
