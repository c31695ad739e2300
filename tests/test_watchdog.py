"""The suite's watchdog (tests/watchdog.py): a run with a hung test ends within its limit, and says
what failed before and where the hung test waits."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
