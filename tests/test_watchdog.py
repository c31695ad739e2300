"""The suite's watchdog (tests/watchdog.py): a run with a hung test ends within its limit, and says
what failed before and where the hung test waits."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import conftest, watchdog

ROOT = Path(__file__).resolve().parents[1]

HUNG = """
import asyncio

from tests.watchdog import watch_loop


def test_fails_first():
    assert 1 == 2, "failed before the hang"


async def test_hangs():
    watch_loop(asyncio.get_running_loop())
    await waits_here()


async def waits_here():
    await asyncio.sleep(3600)
"""


def test_a_hung_test_ends_the_run_with_what_failed_and_where_it_waits(tmp_path: Path) -> None:
    (tmp_path / "test_hung.py").write_text(HUNG)
    (tmp_path / "pytest.ini").write_text("[pytest]\nasyncio_mode = auto\n")
    env = {**os.environ, "REINTEGRATION_TEST_LIMIT": "3", "PYTHONPATH": str(ROOT)}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.watchdog", "-p", "no:cacheprovider", "-q", str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,  # the limit is 3 s; without the watchdog the run would wait an hour
    )
    out = run.stdout + run.stderr
    assert run.returncode != 0, out
    assert "watchdog: test_hung.py::test_hangs has not finished in 3 s" in out, out
    assert "failed earlier: test_hung.py::test_fails_first (call)" in out and "failed before the hang" in out, out
    assert "in waits_here" in out, out  # the hung task's chain of awaits


async def test_a_stacks_worker_that_does_not_stop_is_reported_and_left_behind(temporal_env, tmp_path, monkeypatch):
    monkeypatch.setattr(conftest, "WORKER_STOP_SECONDS", 1.0)
    reported: list[str] = []
    monkeypatch.setattr(watchdog, "report", reported.append)  # not on the terminal: this one is meant
    never = asyncio.Event()

    async def stuck() -> None:
        await never.wait()

    with pytest.warns(pytest.PytestWarning, match="the sqlite stack's worker had not stopped after 1 s"):
        async with conftest.running_stack("sqlite", temporal_env, tmp_path) as stack:
            stop = stack.stop_worker
            stack.stop_worker = stuck  # type: ignore[method-assign]
    assert reported == ["the sqlite stack's worker had not stopped after 1 s; left behind"]
    await stop()  # the real one, left behind by the teardown
