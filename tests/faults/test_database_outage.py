"""d. The database unavailable for a while: a throwaway PostgreSQL cluster stopped with
``pg_ctl stop -m immediate`` (every connection dropped at once) and started again, twice.

During the outage the API answers ``503`` with ``Retry-After``, never ``500``; the workers' writes
wait and are retried; nothing accepted is lost. The cluster is the suite's own, on a port of its
own, never the machine's server.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.faults.harness import PLAN, assert_clean, fault_stack, run_fault
from tests.faults.processes import PostgresCluster

pytestmark = pytest.mark.faults


@pytest.fixture(scope="module")
def cluster():
    pg = PostgresCluster()
    try:
        pg.init()
        yield pg
    finally:
        pg.destroy()


async def test_database_unavailable_for_a_while(cluster, temporal_address, tmp_path):
    journeys, seed = PLAN["database-outage"]
    database_url = cluster.create_database("faults_outage")
    downtime: list[float] = []

    async def take_the_database_away(ctx) -> None:
        for low, high in ((0.15, 0.3), (0.55, 0.7)):
            if await ctx.progress(ctx.at(low, high)):
                break
            await asyncio.to_thread(cluster.stop_immediately)
            stopped = time.monotonic()
            await asyncio.sleep(ctx.rng.uniform(3.0, 6.0))
            await asyncio.to_thread(cluster.start)
            downtime.append(time.monotonic() - stopped)
        ctx.log.append(f"database down {len(downtime)} times, {sum(downtime):.1f} s in all")

    async with fault_stack("database", tmp_path, temporal_address=temporal_address, database_url=database_url) as fs:
        findings = await run_fault(fs, "database-outage", journeys=journeys, seed=seed, fault=take_the_database_away)
    assert_clean(findings)
    assert downtime and findings.stats.statuses[503] > 0  # the outage met requests, and they were told to wait
