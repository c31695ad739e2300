"""``make bench-scale``: the orchestrator with many open cases. It prints numbers and asserts nothing.

On a stack of its own (as ``make bench``: Temporal's dev server on SQLite, the worker and the API in
their own processes, a temporary folder), it loads open cases in steps (default 10,000 then
100,000 in all) and, once the stack is at rest again (the load may leave work behind it: Temporal's
visibility records, the stalls the clock projects), at each step measures:

- the p95 (and p50, p99, requests/s) of the case list, the stalled list and the summary, from C
  clients for S seconds, as a supervisor of every country sees them; and the summary as computed
  after a write (one at a time, in this process: the hammered one is mostly the API's kept one);
- the worker's RSS with that many open workflows (now, and its peak);
- the disk bytes per case of each store: Temporal's database and the project's (files with their
  write-ahead logs);
- the time to restart the worker with them all open: from its start to "worker started", and to
  the first command on an open case answered through the API after it.

The loader is fast but real: each case is a real case workflow started with the client (as the API
starts it, without the person's data, which the lists never read), which projects itself into the
read model through the worker, as every case does. One case in three is identified weeks ago, so
its consent is overdue and it is stalled (the stalled list has rows to page through).

Usage: .venv/bin/python -m benchmarks.scale [--cases 10000,100000] [--clients C] [--seconds S]
       [--load-concurrency N] [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlmodel import Session
from temporalio.client import Client

from benchmarks.bench import (
    Caller,
    Processes,
    Progress,
    free_port,
    hammer,
    run_on_temporary_stack,
    summary_computed,
    wait_for_line,
    wait_ready,
)
from benchmarks.lean_http import LeanHTTP
from reintegration.db import CaseRecord, keyring_from_settings, make_engine
from reintegration.settings import Settings
from reintegration.temporal import connect, dev_server_command
from workflows import ids
from workflows.case import CaseRun, CaseWorkflow
from workflows.model import Actor, CaseOpening, ConsentBody, Role

COUNTRIES = ("ES", "IT", "FR", "DE", "PT")
AT_REST = 0.10  # of a core: a process of the stack below it, over REST_WINDOW, is at rest
REST_WINDOW = 3.0  # seconds
REST_WITHIN = 900.0  # seconds: measured anyway after this long (``settled``'s ``at_rest`` says so)
STALLED_EVERY = 3  # one case in three is identified long ago: its consent is overdue


def opening(number: int, today: datetime) -> CaseOpening:
    """A case's opening facts: marker data, no person's."""
    country = COUNTRIES[number % len(COUNTRIES)]
    case_id = str(uuid.uuid4())  # as the API names cases (the codec finds the case in the workflow id)
    identified = (today - timedelta(days=60 if number % STALLED_EVERY == 0 else 1)).date()
    consent = None
    if number % STALLED_EVERY == 1:  # some go straight to protection
        consent = ConsentBody(assistance=True, given_on=identified)
    return CaseOpening(
        case_id=case_id,
        reference=f"{country}-SCALE-{number:07d}",
        owner_country=country,
        owner_caseworker=f"cw-{country.lower()}-{number % 40}",
        origin_country="RO",
        identified_on=identified,
        is_minor=False,
        initial_consent=consent,
        opened_by=Actor(sub=f"cw-{country.lower()}-{number % 40}", role=Role.caseworker),
    )


async def load(
    settings: Settings, client: Client, engine: Engine, first: int, count: int, concurrency: int
) -> dict[str, Any]:
    """Start ``count`` case workflows (numbers ``first``...) and wait until the read model has them."""
    today = datetime.now(UTC)
    numbers = iter(range(first, first + count))
    progress = Progress("starting cases", count)
    started = time.perf_counter()

    async def starter() -> None:
        for number in numbers:
            case = opening(number, today)
            await client.start_workflow(
                CaseWorkflow.run,
                CaseRun(opening=case),
                id=ids.workflow_id(case.case_id),
                task_queue=settings.temporal_task_queue,
            )
            if (number - first) % 100 == 99 or number == first + count - 1:
                progress.done = number - first
                progress.step()

    await asyncio.gather(*(starter() for _ in range(concurrency)))
    start_seconds = time.perf_counter() - started
    target = first + count
    while True:
        with Session(engine) as session:
            projected = session.execute(select(func.count()).select_from(CaseRecord)).scalar_one()
        print(f"\rread model: {projected}/{target} cases", end="", file=sys.stderr, flush=True)
        if projected >= target:
            break
        await asyncio.sleep(1)
    print(file=sys.stderr)
    seconds = time.perf_counter() - started
    return {
        "cases": count,
        "start_seconds": round(start_seconds, 1),
        "seconds_until_projected": round(seconds, 1),
        "cases_per_second": round(count / seconds, 1),
    }


async def settle(processes: Processes, names: tuple[str, ...] = ("temporal", "worker", "api")) -> dict[str, Any]:
    """Wait until the stack is at rest: each of ``names`` below ``AT_REST`` of a core over
    ``REST_WINDOW`` seconds. Work the load may leave behind it once the read model has every case
    (Temporal's visibility records of the runs it started, the stalls the clock projects) would
    otherwise share the cores with the lists measured next, unseen. How long it waited, and each
    process's share of a core in the first window (in the runs on record the stack was at rest in
    the first: a guard, and a record of the conditions)."""
    started = time.monotonic()
    before, first = processes.usage(), None
    while True:
        await asyncio.sleep(REST_WINDOW)
        now = processes.usage()
        busy = {
            name: (now[name]["cpu_seconds"] - before[name]["cpu_seconds"]) / REST_WINDOW
            for name in names
            if name in now and name in before
        }
        first, before = first or busy, now
        at_rest = all(share < AT_REST for share in busy.values())
        waited = time.monotonic() - started
        if at_rest or waited > REST_WITHIN:
            return {
                "seconds": round(waited, 1),
                "at_rest": at_rest,
                "busy_at_first": {name: round(share, 2) for name, share in first.items()},
            }


def files_bytes(*paths: Path) -> int:
    """The bytes of these files and their SQLite companions (-wal, -shm)."""
    total = 0
    for path in paths:
        for candidate in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            if candidate.exists():
                total += candidate.stat().st_size
    return total


def rss_mib(pid: int) -> dict[str, float]:
    status = Path(f"/proc/{pid}/status").read_text()
    values = {line.split(":")[0]: int(line.split()[1]) for line in status.splitlines() if line.startswith("Vm")}
    return {"rss_mib": round(values.get("VmRSS", 0) / 1024, 1), "peak_rss_mib": round(values.get("VmHWM", 0) / 1024, 1)}


async def restart_worker(processes: Processes, api_url: str, caller: Caller, case_id: str) -> dict[str, float]:
    """Stop the worker, start it again, and time it to ready and to a command answered."""
    worker = processes.running.pop("worker")
    worker.send_signal(signal.SIGTERM)
    worker.wait(timeout=120)
    log = processes.logs / "worker.log"
    log.write_bytes(b"")
    started = time.perf_counter()
    processes.start("worker", [sys.executable, "-m", "worker"])
    await wait_for_line(log, "worker started", processes, timeout=600)
    ready = time.perf_counter() - started
    # A command on an open case: the worker must have its workflow back to answer.
    today = datetime.now(UTC).date().isoformat()
    async with LeanHTTP(api_url, timeout=120) as http:
        headers = caller.auth("supervisor", "sup-scale")
        taker = f"cw-restart-{uuid.uuid4().hex[:8]}"
        caller.auth("caseworker", taker)  # signed in: known to the users' directory
        body = {"caseworker": taker, "reason": today}
        r = await http.post(f"/v1/cases/{case_id}/reassign", json=body, headers=headers)
        if r.status_code != 200:
            raise RuntimeError(f"the command after the restart answered {r.status_code}: {r.text[:300]}")
    return {"to_worker_started_s": round(ready, 2), "to_first_command_s": round(time.perf_counter() - started, 2)}


async def measure(args: argparse.Namespace, processes: Processes, settings: Settings) -> dict[str, Any]:
    processes.start("temporal", [*dev_server_command(settings, ui_port=free_port()), "--headless"])
    await connect(settings, keyring=None, attempts=240, delay=0.5)
    processes.start("worker", [sys.executable, "-m", "worker"])
    processes.start("api", [sys.executable, "-m", "reintegration.cli", "api"])
    api_url = f"http://127.0.0.1:{settings.api_port}"
    await wait_ready(f"{api_url}/ready", processes)
    await wait_for_line(processes.logs / "worker.log", "worker started", processes)
    results: dict[str, Any] = {
        "arguments": {"cases": args.cases, "clients": args.clients, "seconds": args.seconds},
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "steps": [],
    }
    # One engine and one client (with the keyring that seals the cases' payloads) for every step.
    keyring = keyring_from_settings(settings)
    engine = make_engine(settings)
    client = await connect(settings, keyring=keyring)
    try:
        await steps(args, processes, settings, results, client, engine)
    finally:
        engine.dispose()
        keyring.dispose()
    steps_done = results["steps"]
    if len(steps_done) >= 2:
        first, last = steps_done[0], steps_done[-1]
        results["ratios"] = {
            f"{name}_p95_{last['open_cases']}_vs_{first['open_cases']}": round(
                last["endpoints"][name]["p95_ms"] / max(0.01, first["endpoints"][name]["p95_ms"]), 2
            )
            for name in ("cases", "stalled", "summary")
        }
    return results


async def steps(
    args: argparse.Namespace,
    processes: Processes,
    settings: Settings,
    results: dict[str, Any],
    client: Client,
    engine: Engine,
) -> None:
    """Each step: load up to its number of open cases, then measure (``results["steps"]``)."""
    api_url = f"http://127.0.0.1:{settings.api_port}"
    temporal_db = settings.data_dir / "temporal.db"
    app_db = settings.data_dir / "reintegration.db"
    loaded = 0
    async with LeanHTTP(api_url) as http:
        caller = Caller(settings, http)
        supervisor = caller.auth("supervisor", "sup-scale")
        for total in args.cases:
            step: dict[str, Any] = {"open_cases": total}
            step["load"] = await load(settings, client, engine, loaded, total - loaded, args.load_concurrency)
            loaded = total
            processes.check()
            step["settled"] = await settle(processes)
            step["endpoints"] = {}
            for name, path in (
                ("cases", "/v1/cases"),
                ("stalled", "/v1/supervision/stalled"),
                ("summary", "/v1/supervision/summary"),
            ):
                print(f"{total} cases, {name}: {args.clients} clients for {args.seconds:g} s", file=sys.stderr)
                step["endpoints"][name] = await hammer(api_url, path, supervisor, args.clients, args.seconds)
            step["summary_computed"] = summary_computed(engine, samples=10)
            step["worker"] = rss_mib(processes.running["worker"].pid)
            step["disk_bytes_per_case"] = {
                "temporal": round(files_bytes(temporal_db) / total),
                "reintegration": round(files_bytes(app_db) / total),
            }
            with Session(engine) as session:
                some_case = session.execute(select(CaseRecord.case_id).limit(1)).scalar_one()
            step["worker_restart"] = await restart_worker(processes, api_url, caller, some_case)
            step["worker_after_restart"] = rss_mib(processes.running["worker"].pid)
            results["steps"].append(step)
            print(table(results), file=sys.stderr)


def table(results: dict[str, Any]) -> str:
    lines = [
        f"{'open cases':>10} {'endpoint':<9} {'req/s':>7} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}",
        "-" * 55,
    ]
    for step in results["steps"]:
        for name, e in step["endpoints"].items():
            lines.append(
                f"{step['open_cases']:>10} {name:<9} {e['requests_per_second']:>7.0f} "
                f"{e['p50_ms']:>8.1f} {e['p95_ms']:>8.1f} {e['p99_ms']:>8.1f}"
            )
        if "summary_computed" in step:  # after a write, once per region (the summary above: kept)
            c = step["summary_computed"]
            lines.append(
                f"{step['open_cases']:>10} {'computed':<9} {'1 cl.':>7} "
                f"{c['p50_ms']:>8.1f} {c['p95_ms']:>8.1f} {c['p99_ms']:>8.1f}"
            )
    lines += [
        "",
        f"{'open cases':>10} {'load c/s':>8} {'worker RSS':>10} {'peak':>6} {'Temporal B/case':>15} "
        f"{'app B/case':>10} {'restart s':>9} {'1st cmd s':>9} {'settled s':>9}",
    ]
    for step in results["steps"]:
        settled = step.get("settled", {})
        lines.append(
            f"{step['open_cases']:>10} {step['load']['cases_per_second']:>8.1f} {step['worker']['rss_mib']:>10.1f} "
            f"{step['worker']['peak_rss_mib']:>6.1f} {step['disk_bytes_per_case']['temporal']:>15} "
            f"{step['disk_bytes_per_case']['reintegration']:>10} {step['worker_restart']['to_worker_started_s']:>9} "
            f"{step['worker_restart']['to_first_command_s']:>9} {settled.get('seconds', 0):>9}"
            + ("" if settled.get("at_rest", True) else " (not at rest)")
        )
    for key, value in results.get("ratios", {}).items():
        target = "(target <= 1.3)" if not key.startswith("summary") else ""
        lines.append(f"{key}: {value} {target}".rstrip())
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--cases", default="10000,100000", help="open cases in all at each step, comma-separated (10000,100000)"
    )
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients per endpoint (16)")
    parser.add_argument("--seconds", type=float, default=10, help="seconds per endpoint (10)")
    parser.add_argument("--load-concurrency", type=int, default=32, help="concurrent workflow starts (32)")
    parser.add_argument("--out", type=Path, default=Path("bench-scale.json"), help="where the numbers go")
    args = parser.parse_args(argv)
    try:
        args.cases = [int(n) for n in args.cases.split(",")]
    except ValueError:
        parser.error("--cases: whole numbers separated by commas, e.g. 10000,100000")
    if not args.cases or any(n < 1 for n in args.cases) or args.cases != sorted(set(args.cases)):
        parser.error("--cases: growing numbers of cases, each at least 1")
    if args.clients < 1 or args.seconds <= 0 or args.load_concurrency < 1:
        parser.error("--clients and --load-concurrency at least 1, --seconds above 0")

    return run_on_temporary_stack(
        "reintegration-scale-", lambda processes, settings: measure(args, processes, settings), table, args.out
    )


if __name__ == "__main__":
    sys.exit(main())
