"""c. The Temporal server stopped (SIGTERM, then SIGKILL) and started again on the same store, while
journeys run.

The suite runs its own ``temporal server start-dev`` (``dev_server_command``, as ``make run`` does)
on a fixed port and data folder. The API's client and the workers' clients must find it again.
"""

from __future__ import annotations

import pytest

from tests.conftest import NAMESPACE
from tests.faults.harness import PLAN, assert_clean, fault_stack, run_fault
from tests.faults.processes import TemporalServer

pytestmark = pytest.mark.faults


async def test_temporal_restarted_on_the_same_store(tmp_path):
    journeys, seed = PLAN["temporal-restart"]
    server = TemporalServer(tmp_path / "temporal", NAMESPACE)
    await server.start()
    try:

        async def restart_temporal(ctx) -> None:
            # A clean stop and a short gap; then SIGKILL and a longer gap, in which requests that
            # meet it are answered 503 and retried.
            for (low, high), kill, down in (((0.15, 0.3), False, (1.0, 3.0)), ((0.55, 0.7), True, (6.0, 9.0))):
                if await ctx.progress(ctx.at(low, high)):
                    break
                await server.restart(down_for=ctx.rng.uniform(*down), kill=kill)
            ctx.log.append(f"Temporal restarted {server.restarts} times")

        async with fault_stack("temporal", tmp_path / "stack", temporal_address=server.address) as fs:
            findings = await run_fault(fs, "temporal-restart", journeys=journeys, seed=seed, fault=restart_temporal)
    finally:
        if server.proc is not None:
            server.stop()
    assert_clean(findings)
    assert server.restarts >= 1
