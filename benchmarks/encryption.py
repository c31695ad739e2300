"""Benchmark: what encryption costs a step, as a ratio measured in one run.

Two stacks share one Temporal dev server and this machine: one as in service (payload codec on
the client and worker, sealed free text and person vault), and one with encryption taken out (a
plain data converter and a keyring whose seal/open do nothing; only this benchmark builds it).
Journeys alternate between the two so that the machine's noise falls on both alike; each records
the same steps and task actions, and the latency of every API call is kept.

Usage: .venv/bin/python -m benchmarks.encryption [JOURNEYS_PER_ARM]
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from unittest import mock

from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from reintegration.codec import EncryptionCodec
from reintegration.crypto import Keyring
from reintegration.db import keyring_from_settings
from reintegration.temporal import temporal_cli
from tests.conftest import NAMESPACE, Stack, running_stack
from tests.journey import Journey, day


class PlainKeyring(Keyring):
    """Seals nothing: the arm without encryption."""

    def seal(self, case_id: str, text: str, *, purpose: str = "text") -> str:
        return text

    def open(self, case_id: str, value: str, *, purpose: str = "text") -> str:
        return value

    def seal_fields(self, case_id: str, value: Any, keys: frozenset[str]) -> Any:
        return value

    def open_fields(self, case_id: str, value: Any, keys: frozenset[str]) -> Any:
        return value


def plain_keyring(settings: Any, **options: Any) -> Keyring:
    keyring = keyring_from_settings(settings, **options)
    return PlainKeyring(keyring.engine, keyring.kek)


def without_encryption() -> ExitStack:
    patches = ExitStack()
    for target in ("tests.conftest.keyring_from_settings", "api.main.keyring_from_settings"):
        patches.enter_context(mock.patch(target, plain_keyring))
    for target in ("tests.conftest.data_converter", "reintegration.temporal.data_converter"):
        patches.enter_context(mock.patch(target, lambda _keyring: pydantic_data_converter))
    return patches


async def journey(stack: Stack, timings: list[float]) -> None:
    """Open a case and record a dozen steps and task actions, timing each call."""
    j = Journey(stack)

    async def timed(call: Any) -> None:
        started = time.perf_counter()
        await call
        timings.append(time.perf_counter() - started)

    await timed(j.open())
    await timed(j.step("risk-assessment", {"level": "low", "threats": ["a named threat"], "assessed_on": day(1)}))
    await timed(j.step("security-guarantee", {"confirmed_on": day(2), "notes": "some notes about the person"}))
    await timed(j.step("pathway", {"pathway": "residence", "decided_on": day(3), "reason": "wishes to stay"}))
    task = await j.assign("legal-assistance", "legal-aid-es")
    await timed(j.task_action(task["task_id"], "legal-aid-es", "accept", {"notes": "we can take this"}))
    await timed(j.task_action(task["task_id"], "legal-aid-es", "complete", {"outcome": "done", "notes": "held"}))
    await timed(
        j.step(
            "residence-application",
            {"filed_on": day(5), "permit_type": "victim-of-trafficking", "authority_reference": "EXT-1"},
        )
    )
    await timed(j.step("residence-decision", {"decision": "granted", "decided_on": day(40), "valid_until": day(400)}))
    await timed(j.get())


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[int(p * (len(ordered) - 1))] * 1000


async def micro(stack: Stack) -> None:
    codec = EncryptionCodec(stack.keyring)  # no workflow: the system key
    payload = Payload(metadata={"encoding": b"json/plain"}, data=b'{"notes": "' + b"x" * 2000 + b'"}')
    rounds = 2000
    started = time.perf_counter()
    for _ in range(rounds):
        await codec.decode(await codec.encode([payload]))
    codec_us = (time.perf_counter() - started) / rounds * 1e6
    case_id = "00000000-0000-4000-8000-000000000000"
    started = time.perf_counter()
    for _ in range(rounds):
        stack.keyring.open(case_id, stack.keyring.seal(case_id, "a note of about sixty characters, as notes often are"))
    seal_us = (time.perf_counter() - started) / rounds * 1e6
    print(f"codec encode+decode of a 2 KB payload: {codec_us:.0f} µs; seal+open of a note: {seal_us:.0f} µs")


async def main(per_arm: int) -> None:
    env = await WorkflowEnvironment.start_local(
        namespace=NAMESPACE,
        data_converter=pydantic_data_converter,
        dev_server_existing_path=str(temporal_cli()),
        dev_server_extra_args=["--sqlite-pragma", "journal_mode=wal", "--sqlite-pragma", "synchronous=normal"],
    )
    try:
        with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
            async with running_stack("sqlite", env, Path(a)) as encrypted:
                with without_encryption():
                    plain_stack = running_stack("sqlite", env, Path(b))
                    plain = await plain_stack.__aenter__()
                try:
                    await journey(encrypted, [])  # warm both up
                    await journey(plain, [])
                    timings: dict[str, list[float]] = {"encrypted": [], "plain": []}
                    for _ in range(per_arm):
                        await journey(encrypted, timings["encrypted"])
                        await journey(plain, timings["plain"])
                    print(f"{per_arm} journeys per arm, {len(timings['plain'])} timed calls per arm, alternating")
                    for arm, values in timings.items():
                        print(
                            f"{arm:>9}: p50 {pct(values, 0.5):.1f} ms, p95 {pct(values, 0.95):.1f} ms, "
                            f"mean {statistics.mean(values) * 1000:.1f} ms"
                        )
                    ratio50 = pct(timings["encrypted"], 0.5) / pct(timings["plain"], 0.5)
                    ratio95 = pct(timings["encrypted"], 0.95) / pct(timings["plain"], 0.95)
                    print(f"encrypted / plain: p50 x{ratio50:.2f}, p95 x{ratio95:.2f}")
                    await micro(encrypted)
                finally:
                    await plain_stack.__aexit__(None, None, None)
    finally:
        await env.shutdown()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 20))
