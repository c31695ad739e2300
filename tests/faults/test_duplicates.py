"""f. Every request sent twice with one Idempotency-Key, most pairs at the same moment: one effect, one answer.

Every fault run sends each request twice (half the pairs at once); this one does only that, with
three pairs in four at once, so that nothing else hides a race between the two copies.
"""

from __future__ import annotations

import pytest

from tests.faults.harness import PLAN, assert_clean, fault_stack, run_fault

pytestmark = pytest.mark.faults


async def test_every_request_sent_twice(temporal_address, tmp_path):
    journeys, seed = PLAN["duplicate-requests"]
    async with fault_stack("duplicates", tmp_path, temporal_address=temporal_address) as fs:
        findings = await run_fault(fs, "duplicate-requests", journeys=journeys, seed=seed, concurrent_share=0.75)
    assert_clean(findings)
