"""A test that hangs ends the run within minutes, saying where it hung and what had failed before it.

Without it a hang (a server's shutdown waiting on a connection, a worker's on an activity) ran the
suite into CI's 90-minute limit, which kills it before pytest prints any failure. Each test's
protocol (its setup, its call, its teardown, and for the last test the session's fixtures' teardown)
gets ``LIMIT`` seconds. Past it, the watchdog writes to the terminal:

- the failures reported so far, in full (pytest prints them only at the end, which a hang never
  reaches);
- the stack of every thread and of every task of the tests' event loop;

then raises KeyboardInterrupt in the tests' event loop (or sends SIGINT when no loop runs), so pytest
stops the run. If that too is stuck after ``GRACE`` seconds, the process exits with status 3.

``REINTEGRATION_TEST_LIMIT`` (seconds) changes the limit; 0 turns the watchdog off, as ``--pdb`` and
``--trace`` do.
"""

from __future__ import annotations

import asyncio
import faulthandler
import os
import signal
import sys
import threading
from typing import IO

import pytest

LIMIT = float(os.environ.get("REINTEGRATION_TEST_LIMIT", "600"))
GRACE = 120.0


class Watchdog:
    def __init__(self, limit: float, out: IO[str], config: pytest.Config) -> None:
        self.limit, self.out, self.config = limit, out, config
        self.loop: asyncio.AbstractEventLoop | None = None
        self._timer: threading.Timer | None = None

    def arm(self, nodeid: str) -> None:
        self.disarm()
        if self.limit > 0:
            self._timer = threading.Timer(self.limit, self._fire, args=(nodeid,))
            self._timer.daemon = True
            self._timer.start()

    def disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fire(self, nodeid: str) -> None:
        write = self.out.write
        write(f"\n\n!!! watchdog: {nodeid} has not finished in {self.limit:.0f} s; the run is stopped\n")
        # What pytest's terminal reporter has counted as failed (a call) or in error (a fixture).
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        stats = reporter.stats if reporter is not None else {}
        for failure in [*stats.get("failed", ()), *stats.get("error", ())]:
            write(f"\n--- failed earlier: {failure.nodeid} ({failure.when})\n{failure.longreprtext}\n")
        self.dump()
        killer = threading.Timer(GRACE, os._exit, args=(3,))
        killer.daemon = True
        killer.start()
        if self.loop is not None and self.loop.is_running():
            # Raised in the loop's thread, out of the loop: a SIGINT would mostly reach the handler
            # uvicorn installs while the tests' API serves (it stops that server, not the run).
            self.loop.call_soon_threadsafe(_interrupt)
        else:
            os.kill(os.getpid(), signal.SIGINT)

    def dump(self) -> None:
        """Every thread's stack and every task's chain of awaits, to the terminal."""
        self.out.write("\n--- the threads\n")
        self.out.flush()
        faulthandler.dump_traceback(file=self.out, all_threads=True)
        self._dump_tasks()
        self.out.flush()

    def _dump_tasks(self) -> None:
        if self.loop is None or self.loop.is_closed():
            return
        for _ in range(5):  # read from this thread while the loop may change its set of tasks
            try:
                tasks = list(asyncio.all_tasks(self.loop))
                break
            except RuntimeError:
                continue
        else:
            return
        self.out.write(f"\n--- the event loop's {len(tasks)} tasks, each by the chain of its awaits\n")
        for task in tasks:
            self.out.write(f"{task.get_name()}:\n")
            try:
                for line in _awaits(task.get_coro()):
                    self.out.write(f"  {line}\n")
            except Exception as exc:  # noqa: BLE001 - a diagnostic on the way out; say and go on
                self.out.write(f"  its stack could not be read ({exc!r})\n")


def _interrupt() -> None:
    raise KeyboardInterrupt("the watchdog stopped the run")


def _awaits(coro: object) -> list[str]:
    """Where a task waits: its coroutine and each coroutine or generator it awaits, outermost first."""
    lines, awaited = [], coro
    while awaited is not None and len(lines) < 40:
        frame = (
            getattr(awaited, "cr_frame", None)
            or getattr(awaited, "gi_frame", None)
            or getattr(awaited, "ag_frame", None)
        )
        if frame is not None:
            lines.append(f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}")
        awaited = (
            getattr(awaited, "cr_await", None)
            or getattr(awaited, "gi_yieldfrom", None)
            or getattr(awaited, "ag_await", None)
        )
    return lines or [repr(coro)]


_watchdog: Watchdog | None = None


def watch_loop(loop: asyncio.AbstractEventLoop) -> None:
    """The tests' event loop, whose tasks the watchdog shows when it fires."""
    if _watchdog is not None:
        _watchdog.loop = loop


def report(what: str) -> None:
    """Say on the terminal that something was stuck, with every thread's and task's stack, without
    stopping the run (a fixture's teardown that gives up waiting, say)."""
    if _watchdog is not None:
        _watchdog.out.write(f"\n\n!!! {what}\n")
        _watchdog.dump()


def pytest_configure(config: pytest.Config) -> None:
    global _watchdog
    # Off while a debugger may hold a test (--pdb, --trace) for as long as its user needs.
    debugging = config.getoption("usepdb", False) or config.getoption("trace", False)
    # A copy of the terminal's stderr, as pytest's faulthandler plugin keeps: writes reach the
    # terminal while the test's own output is captured.
    _watchdog = Watchdog(0 if debugging else LIMIT, os.fdopen(os.dup(sys.stderr.fileno()), "w", buffering=1), config)


def pytest_unconfigure(config: pytest.Config) -> None:
    if _watchdog is not None:
        _watchdog.disarm()
        _watchdog.out.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    assert _watchdog is not None
    _watchdog.arm(item.nodeid)
    try:
        yield
    finally:
        _watchdog.disarm()
