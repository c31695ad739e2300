"""e. Partner webhooks answer 5xx for a while, and then too slowly (beyond the delivery timeout)."""

from __future__ import annotations

import pytest

from tests.faults.harness import PLAN, assert_clean, fault_stack, run_fault

pytestmark = pytest.mark.faults

FAILING_FOR = 5.0  # seconds of 503s from one agency, while the other answers too slowly
SLOW_ANSWER = 2.5  # the delivery timeout is 1.5 s
SLOW_ANSWERS: list[int] = []  # deliveries answered too slowly, per fault window


async def webhooks_fail_and_answer_slowly(ctx) -> None:
    es, ro = ctx.fs.partners["ES"], ctx.fs.partners["RO"]
    for failing, slow, moment in ((es, ro, ctx.at(0.15, 0.3)), (ro, es, ctx.at(0.5, 0.65))):
        if await ctx.progress(moment):
            break
        failing.config.fail_first = failing.stats.failed_on_purpose + 1_000_000  # every delivery fails
        slow.config.slow_seconds = SLOW_ANSWER
        received = len(slow.stats.received)
        finished = await ctx.pause(FAILING_FOR)
        failing.config.fail_first = failing.stats.failed_on_purpose
        slow.config.slow_seconds = 0.0
        SLOW_ANSWERS.append(len(slow.stats.received) - received)
        if finished:
            break
    ctx.log.append(
        f"webhook 503s {es.stats.failed_on_purpose + ro.stats.failed_on_purpose}, slow answers {sum(SLOW_ANSWERS)}"
    )


async def test_partner_webhooks_fail_and_time_out(temporal_address, tmp_path):
    journeys, seed = PLAN["partner-webhooks"]
    async with fault_stack("partners", tmp_path, temporal_address=temporal_address) as fs:
        findings = await run_fault(
            fs, "partner-webhooks", journeys=journeys, seed=seed, fault=webhooks_fail_and_answer_slowly
        )
        failed = sum(p.stats.failed_on_purpose for p in fs.partners.values())
    assert_clean(findings)
    assert failed > 0 and sum(SLOW_ANSWERS) > 0  # both faults met deliveries
