"""``make bench``: what the orchestrator costs beyond its engine (Temporal) and its web framework
(FastAPI), measured in one run on one Temporal server. It prints numbers and asserts nothing.

It starts a stack of its own in a temporary folder, as ``reintegration run`` does but on free ports
and without the Web UI (Temporal's dev server on SQLite, the worker and the API each in their own
process), and measures:

1. journeys: N whole journeys (voluntary return and residence, alternately, to closure) through the
   HTTP API from C concurrent clients, partners acting through the API (tests/journey.py's driver);
2. bare Temporal: one workflow per journey, with no API, database or codec, executing as many
   updates and trivial activities as the real journeys did (counted in their histories), at the
   same concurrency, its worker in a process of its own (benchmarks/bare_temporal.py);
3. the journeys' shape on bare Temporal: the same updates and activities in the runs the real
   journeys' histories show (the case's workflow, then a child for each later stage), each with
   as many patch markers, local activities and timers, the activities' inputs of the real ones'
   mean size (the update validators' refusals, which leave no event, are not copied): what the
   engine spends on the journeys' shape, which no code of ours could save short of changing the
   design;
   the three in two rounds each, N/2 journeys a round, in the order journeys, bare, shape, shape,
   bare, journeys, so that a drift of the shared machine's speed through the run falls on all alike
   (each kind after one untimed journey of each pathway);
4. endpoints: a constant JSON endpoint on a bare FastAPI app (benchmarks/floor.py, the API's
   uvicorn options) and the same app's read of the closed case's row (SQLModel's session in a
   worker thread, nothing of ours), then the API's /health, a closed case, the case list, the task
   list, the stalled list and the summary, each from C clients for S seconds;
5. histories (events and payload bytes per journey), the peak RSS and CPU seconds of the
   Temporal server, the worker and the API, and the requests Temporal served in each phase (its
   own metrics);
6. the API in two processes (uvicorn's workers) on the same database, the one API process and the
   worker stopped first: GET of a case and the case list again, for the gain from one process to two;

then prints one table with the ratios of issue 13's targets and writes everything to ``--out``.
Every client of the API is benchmarks/lean_http.py's, on one kept-alive connection each: on these
shared cores, a client's own CPU per request is taken from the servers (httpx's was four times the
floor app's, and it, not the server, set the floor's pace).
The API and the worker each take a CPU of their own as they start (``reintegration.affinity``:
``clean_environment`` gives them ``auto``, as ``reintegration run`` does); the floor then runs on
the API's, the bare worker on the worker's, and so do the two API processes of (6), one CPU each
(the table's "CPUs" line).
Rate limits are raised for the run (the limiter still runs): it measures the pipeline, not the
limit. Everything it writes is in the temporary folder, removed at the end (also on Ctrl-C), and
all its traffic goes to 127.0.0.1.

Usage: .venv/bin/python -m benchmarks.bench [--journeys N] [--clients C] [--seconds S] [--out FILE]
       [--profile DIR]  (py-spy's samples of the API and the worker in each phase and each round of
       the journeys; slows them a little)
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import math
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import httpx
from google.protobuf.message import Message
from sqlalchemy.engine import Engine
from sqlmodel import Session
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WithStartWorkflowOperation
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.service import RPCError, RPCStatusCode

from api.supervision import compute_summary
from benchmarks.bare_temporal import TASK_QUEUE as BARE_TASK_QUEUE
from benchmarks.bare_temporal import (
    BareCommand,
    BareJourney,
    BareJourneyInput,
    ShapedJourney,
    ShapedJourneyInput,
    ShapedRun,
    child_id,
)
from benchmarks.lean_http import LeanHTTP
from reintegration import affinity, directory
from reintegration.commands import ROUTING_PAUSES
from reintegration.db import make_engine
from reintegration.settings import Settings
from reintegration.temporal import connect, dev_server_command
from reintegration.tokens import Claims, mint
from tests.conftest import Stack, free_port
from tests.journey import Journey
from workflows.ids import case_workflows_query
from workflows.journey import PROJECTION_HEARTBEAT
from workflows.model import Role

ROOT = Path(__file__).resolve().parents[1]
PATHWAYS = ("voluntary_return", "residence")
HISTORIES_PER_PATHWAY = 3  # journeys whose histories are counted, per pathway
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
TARGETS = {
    "journeys_vs_bare_temporal": ("journeys/s of the real journeys / of bare Temporal", ">=", 0.6),
    "health_vs_floor": ("/health requests/s / floor requests/s", ">=", 0.8),
    "case_vs_floor": ("GET case requests/s / floor requests/s", ">=", 0.3),
    "case_p99_vs_floor_p99": ("GET case p99 / floor p99", "<=", 2.0),
    "stalled_p95_vs_floor_p95": ("stalled list p95 / floor p95", "<=", 5.0),
    "summary_p95_vs_floor_p95": ("summary p95 / floor p95", "<=", 5.0),
}


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank percentile of ``values`` (0 for none)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))]


def latency(values: list[float]) -> dict[str, float]:
    """p50/p95/p99 in milliseconds of latencies given in seconds."""
    return {f"p{q}_ms": round(percentile(values, q / 100) * 1000, 2) for q in (50, 95, 99)}


# ---------------------------------------------------------------------------------------------
# The processes: started in the temporary folder's stack, measured from /proc, always stopped.


@dataclass
class Processes:
    """The stack's processes, each logging to a file of the temporary folder."""

    logs: Path
    env: dict[str, str]
    running: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, command: list[str], **env: str) -> None:
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - kept open for the child's life
        self.running[name] = subprocess.Popen(
            command, cwd=ROOT, env={**self.env, **env}, stdout=log, stderr=subprocess.STDOUT
        )

    def check(self) -> None:
        """Fail, saying why, if a process of the stack has exited."""
        for name, proc in self.running.items():
            if proc.poll() is not None:
                tail = (self.logs / f"{name}.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{name} exited with {proc.returncode}; the end of its log:\n{tail}")

    def usage(self) -> dict[str, dict[str, float]]:
        """Peak RSS (VmHWM) and CPU seconds (user + system) of each running process, from /proc."""
        found: dict[str, dict[str, float]] = {}
        for name, proc in self.running.items():
            try:
                status = Path(f"/proc/{proc.pid}/status").read_text()
                stat = Path(f"/proc/{proc.pid}/stat").read_text()
            except OSError:
                continue
            peak_kib = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), 0)
            fields = stat.rsplit(")", 1)[1].split()  # after the command's name, which may hold spaces
            cpu = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime and stime, fields 14 and 15
            found[name] = {"peak_rss_mib": round(peak_kib / 1024, 1), "cpu_seconds": round(cpu, 2)}
        return found

    def stop(self, name: str) -> None:
        """Stop one process of the stack (its log stays) and forget it."""
        proc = self.running.pop(name)
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def cpus(self, name: str) -> str:
        """The CPUs a running process may run on, as ``taskset -c`` writes them (``0``, ``0-1``):
        where ``reintegration.affinity`` put it."""
        return affinity.cpus_of(self.running[name].pid)

    def stop_all(self) -> None:
        for proc in reversed(self.running.values()):
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 15
        for proc in reversed(self.running.values()):
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def clean_environment(data_dir: Path, temporal_port: int, api_port: int) -> dict[str, str]:
    """This process's environment without the operator's REINTEGRATION_* and DATABASE_URL (they
    could name a real database, keys or webhooks), and with the temporary stack's settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REINTEGRATION_") and k != "DATABASE_URL"}
    env.update(
        {
            "REINTEGRATION_DATA_DIR": str(data_dir),
            "REINTEGRATION_TEMPORAL_ADDRESS": f"127.0.0.1:{temporal_port}",
            "REINTEGRATION_API_PORT": str(api_port),
            "REINTEGRATION_RATE_LIMIT_PER_MINUTE": str(10**8),
            "REINTEGRATION_RATE_LIMIT_BURST": str(10**7),
            "REINTEGRATION_CODEC_SESSION": secrets.token_urlsafe(24),
            # As `reintegration run` starts them: the worker and the API on a CPU each (reintegration.affinity).
            "REINTEGRATION_CPU_AFFINITY": "auto",
        }
    )
    return env


async def wait_ready(url: str, processes: Processes, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2) as http:
        while time.monotonic() < deadline:
            processes.check()
            try:
                if (await http.get(url)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError(f"nothing ready at {url}")


async def wait_for_line(log: Path, text: str, processes: Processes, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        processes.check()
        if log.exists() and text in log.read_text(errors="replace"):
            return
        await asyncio.sleep(0.2)
    raise RuntimeError(f"{log.name} never said {text!r}")


# Samples of the thread that holds the interpreter's lock only (what costs CPU in Python; a thread
# that waits is not counted), taken without pausing the process, written as collapsed stacks.
SAMPLED = ("--gil", "--nonblocking", "--format", "raw")


@dataclass
class Profiler:
    """With ``--profile DIR``: py-spy samples the API and the worker through each phase and writes
    their collapsed stacks (``DIR/<phase>-<process>.txt``, one line per stack with its sample count;
    ``--format speedscope`` files open in speedscope.app). Kept out of the repository (``profiles/``
    is ignored). Without it, nothing is sampled."""

    folder: Path | None
    processes: Processes
    sampling: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, phase: str) -> None:
        if self.folder is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        py_spy = Path(sys.executable).with_name("py-spy")
        for name in ("api", "worker"):
            pid = self.processes.running[name].pid
            out = self.folder / f"{phase}-{name}.txt"
            self.sampling.append(
                subprocess.Popen(
                    [str(py_spy), "record", "--pid", str(pid), "--rate", "200", *SAMPLED, "-o", str(out)],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )

    def stop(self) -> None:
        for proc in self.sampling:
            proc.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        for proc in self.sampling:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.sampling.clear()


# ---------------------------------------------------------------------------------------------
# 1. Journeys through the API.


class Caller:
    """What tests/journey.py's ``Journey`` needs of a stack: an HTTP client and development tokens."""

    def __init__(self, settings: Settings, http: LeanHTTP, tokens: dict[tuple[Any, ...], str] | None = None) -> None:
        self.settings, self.http = settings, http
        self._tokens = tokens if tokens is not None else {}
        self._engine: Any = None

    def auth(
        self, role: str, sub: str, *, agency: str | None = None, countries: list[str] | tuple[str, ...] | None = ("*",)
    ) -> dict[str, str]:
        scope = list(countries) if countries is not None and role != "partner" else None
        key = (role, sub, agency, tuple(scope) if scope is not None else None)
        if key not in self._tokens:
            self._tokens[key] = mint(self.settings, role=Role(role), sub=sub, agency=agency, countries=scope)
            # A token minted is a user signed in: the directory knows them (a travel plan names them).
            if self._engine is None:
                self._engine = make_engine(self.settings)
            with Session(self._engine) as session:
                directory.record_sign_in(session, Claims(sub=sub, role=Role(role), agency=agency, countries=scope))
        return {"Authorization": f"Bearer {self._tokens[key]}"}


def route(method: str, path: str) -> str:
    """``POST /v1/cases/{id}/steps/pathway`` from a request's method and path."""
    path = re.sub(r"^/v1/(cases|tasks)/[^/]+", r"/v1/\1/{id}", path)
    return f"{method} {path}"


@dataclass
class Timings:
    """Every request's latency by route."""

    by_route: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))

    def record(self, method: str, path: str, seconds: float) -> None:
        self.by_route[route(method, path)].append(seconds)


class Progress:
    """A plain-text progress bar on stderr."""

    def __init__(self, label: str, total: int) -> None:
        self.label, self.total, self.done, self.started = label, total, 0, time.perf_counter()

    def step(self, note: str = "") -> None:
        self.done += 1
        width = 30
        filled = width * self.done // max(1, self.total)
        elapsed = time.perf_counter() - self.started
        bar = "#" * filled + "." * (width - filled)
        end = "\n" if self.done >= self.total else ""
        print(f"\r{self.label} [{bar}] {self.done}/{self.total} {elapsed:5.0f} s {note}", end=end, file=sys.stderr)
        sys.stderr.flush()


async def one_journey(caller: Caller, number: int) -> tuple[str, str]:
    """A whole journey to closure; the pathway alternates. Marker data only, no person's."""
    pathway = PATHWAYS[number % 2]
    j = Journey(cast(Stack, caller))
    await j.open(first_name="BENCH", second_name=f"MARKER-{number}", primary_language="en")
    if pathway == "voluntary_return":
        await j.to_reintegration_by_return()
    else:
        await j.to_reintegration_by_residence()
    await j.through_reintegration_to_closure()
    if j.case.get("status") != "closed":
        raise RuntimeError(f"journey {number} ended {j.case.get('status')}, not closed")
    return pathway, j.case_id


async def run_pool(count: int, clients: int, work: Callable[[int], Awaitable[Any]], progress: Progress) -> list[Any]:
    """``work(0..count-1)`` from ``clients`` concurrent clients; the results in order of number."""
    numbers = iter(range(count))
    results: list[Any] = [None] * count

    async def client() -> None:
        for number in numbers:
            results[number] = await work(number)
            progress.step()

    await asyncio.gather(*(client() for _ in range(clients)))
    return results


@dataclass
class Round:
    """One round of a phase: how many journeys, in how long, and every request's latency by route
    (the bare baseline's updates under ``UPDATE``)."""

    count: int
    seconds: float
    by_route: dict[str, list[float]]
    cases: list[tuple[str, str]] = field(default_factory=list)

    def summary(self) -> dict[str, float]:
        return {
            "journeys": self.count,
            "seconds": round(self.seconds, 2),
            "journeys_per_second": round(self.count / self.seconds, 3) if self.seconds else 0.0,
        }


UPDATE = "update"  # the bare baseline's only route


def commands_of(by_route: dict[str, list[float]]) -> list[float]:
    """The commands' latencies (the POSTs) among every route's."""
    return [t for name, times in by_route.items() if name.startswith("POST ") for t in times]


def rounds_together(rounds: list[Round]) -> tuple[int, float, dict[str, list[float]]]:
    """The rounds of a phase as one: their journeys, their seconds, their latencies by route."""
    by_route: dict[str, list[float]] = defaultdict(list)
    for r in rounds:
        for name, times in r.by_route.items():
            by_route[name] += times
    return sum(r.count for r in rounds), sum(r.seconds for r in rounds), by_route


async def journeys(base_url: str, settings: Settings, numbers: range, clients: int, *, label: str) -> Round:
    """Whole journeys ``numbers`` (their pathways alternate with the number) from ``clients``
    concurrent clients."""
    timings = Timings()
    tokens: dict[tuple[Any, ...], str] = {}  # minted once for every client

    def connection() -> LeanHTTP:
        # A connection per simulated client, as a browser keeps one (benchmarks/lean_http.py: what a
        # client spends per request is taken from the servers on these two cores).
        return LeanHTTP(base_url, timeout=120, on_response=timings.record)

    progress = Progress(label, len(numbers))
    remaining = iter(numbers)
    done: list[tuple[str, str]] = []

    async def client() -> None:
        async with connection() as http:
            caller = Caller(settings, http, tokens)
            for number in remaining:
                done.append(await one_journey(caller, number))
                progress.step()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return Round(len(numbers), time.perf_counter() - started, dict(timings.by_route), done)


def journeys_results(rounds: list[Round], clients: int) -> dict[str, Any]:
    count, elapsed, by_route = rounds_together(rounds)
    commands = commands_of(by_route)
    return {
        "journeys": count,
        "clients": clients,
        "seconds": round(elapsed, 2),
        "journeys_per_second": round(count / elapsed, 3),
        "rounds": [r.summary() for r in rounds],
        "commands": len(commands),
        "commands_per_journey": round(len(commands) / count, 2),
        "commands_per_second": round(len(commands) / elapsed, 2),
        "command_latency": latency(commands),
        "reads": sum(len(t) for name, t in by_route.items() if name.startswith("GET ")),
        "by_route": {name: {"count": len(times), **latency(times)} for name, times in sorted(by_route.items())},
        "cases": [{"pathway": pathway, "case_id": case_id} for r in rounds for pathway, case_id in r.cases],
    }


# ---------------------------------------------------------------------------------------------
# Histories: what a journey costs Temporal, counted from the stored events.


def payload_bytes(message: Message) -> int:
    """The bytes of every Payload inside an event (as stored: encrypted by the codec)."""
    if isinstance(message, Payload):
        return message.ByteSize()
    total = 0
    for descriptor, value in message.ListFields():
        if descriptor.message_type is None:
            continue
        if descriptor.message_type.GetOptions().map_entry:
            items = [v for v in value.values() if isinstance(v, Message)]
        elif isinstance(value, Message):
            items = [value]
        else:
            items = list(value)
        total += sum(payload_bytes(item) for item in items)
    return total


def count_events(events: Any, counts: dict[str, int]) -> None:
    """Add a history's events, bytes and what the journey's shape is made of to ``counts``."""
    for event in events:
        counts["events"] += 1
        counts["history_bytes"] += event.ByteSize()
        payload = payload_bytes(event)
        counts["payload_bytes"] += payload
        kind = COUNTED.get(event.event_type)
        if kind is not None:
            counts[kind] += 1
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            counts["activity_input_bytes"] += payload


COUNTED = {
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED: "updates_accepted",
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED: "updates_completed",
    EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED: "activities",
    EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED: "children",
    EventType.EVENT_TYPE_MARKER_RECORDED: "markers",
    EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES: "search_attribute_upserts",
    EventType.EVENT_TYPE_TIMER_STARTED: "timers",
}


JOURNEY_RUNS = frozenset({"CaseJourney", "ReturnStage", "ResidenceStage", "ReintegrationStage"})


async def case_history(client: Client, case_id: str) -> dict[str, Any]:
    """Events, updates, activities and bytes over every workflow of one case (children and messages
    to agencies included), and each run of the journey's own workflows in the order they started
    (``runs``: the journey's shape)."""
    counts: dict[str, Any] = defaultdict(int)
    runs = []
    async for execution in client.list_workflows(case_workflows_query(case_id)):
        counts["workflows"] += 1
        history = await client.get_workflow_handle(execution.id, run_id=execution.run_id).fetch_history()
        run: dict[str, int] = defaultdict(int)
        count_events(history.events, run)
        for key, value in run.items():
            counts[key] += value
        if execution.workflow_type in JOURNEY_RUNS:
            runs.append((execution.start_time, dict(run)))
    counts["runs"] = [run for _, run in sorted(runs, key=lambda r: r[0])]
    return dict(counts)


async def histories(client: Client, cases: list[dict[str, str]]) -> dict[str, Any]:
    """The mean counts per journey, by pathway, over a few journeys of each, and the runs of the
    first of them (every journey of a pathway takes the same steps)."""
    by_pathway: dict[str, Any] = {}
    for pathway in PATHWAYS:
        sample = [c["case_id"] for c in cases if c["pathway"] == pathway][:HISTORIES_PER_PATHWAY]
        counted = [await case_history(client, case_id) for case_id in sample]
        keys = sorted({k for c in counted for k in c} - {"runs"})
        by_pathway[pathway] = {
            "journeys_counted": len(counted),
            **{k: round(sum(c.get(k, 0) for c in counted) / max(1, len(counted)), 1) for k in keys},
            "runs": counted[0]["runs"] if counted else [],
        }
    return by_pathway


# ---------------------------------------------------------------------------------------------
# 2. Bare Temporal: the same number of updates and activities per journey, nothing else.


def bare_plans(shapes: dict[str, Any]) -> dict[str, list[int]]:
    """For each pathway, the activities of each of its updates: as many updates and activities per
    journey as the real journeys' histories hold, the activities spread as evenly as they go."""
    plans = {}
    for pathway, shape in shapes.items():
        updates = max(1, round(shape.get("updates_completed", 0)))
        activities = round(shape.get("activities", 0))
        plans[pathway] = [activities // updates + (1 if i < activities % updates else 0) for i in range(updates)]
    return plans


async def bare_temporal(
    client: Client, plans: dict[str, list[int]], numbers: range, clients: int, *, label: str
) -> Round:
    update_times: list[float] = []

    async def one(number: int) -> None:
        plan = plans[PATHWAYS[number % 2]]
        start = WithStartWorkflowOperation(
            BareJourney.run,
            BareJourneyInput(updates=len(plan)),
            id=f"bare-{uuid.uuid4()}",
            task_queue=BARE_TASK_QUEUE,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
        )
        began = time.perf_counter()
        await client.execute_update_with_start_workflow(
            BareJourney.command, BareCommand(activities=plan[0]), start_workflow_operation=start
        )
        update_times.append(time.perf_counter() - began)
        handle = await start.workflow_handle()
        for activities in plan[1:]:
            began = time.perf_counter()
            await handle.execute_update(BareJourney.command, BareCommand(activities=activities))
            update_times.append(time.perf_counter() - began)
        await handle.result()

    progress = Progress(label, len(numbers))
    started = time.perf_counter()
    await run_pool(len(numbers), clients, lambda i: one(numbers[i]), progress)
    return Round(len(numbers), time.perf_counter() - started, {UPDATE: update_times})


def bare_results(rounds: list[Round], plans: Any, clients: int) -> dict[str, Any]:
    """A bare phase's rounds as one, with the plans its journeys followed."""
    count, elapsed, by_route = rounds_together(rounds)
    updates = by_route[UPDATE]
    return {
        "journeys": count,
        "clients": clients,
        "plans": plans,
        "seconds": round(elapsed, 2),
        "journeys_per_second": round(count / elapsed, 3),
        "rounds": [r.summary() for r in rounds],
        "updates": len(updates),
        "commands_per_second": round(len(updates) / elapsed, 2),
        "update_latency": latency(updates),
    }


# ---------------------------------------------------------------------------------------------
# 3. The journeys' shape on bare Temporal: the same updates and activities, in the workflows,
#    markers, local activities, timers and payload sizes the real journeys' histories show.


def shaped_plans(shapes: dict[str, Any]) -> dict[str, ShapedJourneyInput]:
    """For each pathway, the real journey's runs as a shaped journey's: the same updates and
    activities in each run; as many patches as the run's search attribute upserts (the SDK upserts
    one with each patch's marker), its other markers as local activities (one in each of its first
    updates, as the agencies' check); its timers (at most one per update: the real hold sets one at
    the start and replaces it at an update, never at the last); every activity's input the mean size
    of the real activities' inputs, with the projection's heartbeat timeout. A shape it cannot copy
    (a run that does something without an update, more timers than updates) is refused."""
    plans = {}
    heartbeat = PROJECTION_HEARTBEAT.total_seconds()
    for pathway, shape in shapes.items():
        payload = round(shape.get("activity_input_bytes", 0) / max(1, shape.get("activities", 0)))
        runs = []
        for run in shape.get("runs", []):
            updates, activities = run.get("updates_completed", 0), run.get("activities", 0)
            patches, timers = run.get("search_attribute_upserts", 0), run.get("timers", 0)
            local_activities = max(0, run.get("markers", 0) - patches)
            if (not updates and (activities or timers or local_activities)) or timers > updates:
                raise ValueError(f"a {pathway} run the shape cannot copy: {run}")
            commands = [activities // updates + (1 if i < activities % updates else 0) for i in range(updates)]
            runs.append(ShapedRun(commands, patches, local_activities, timers, payload, heartbeat))
        if runs and not runs[0].commands:
            raise ValueError(f"the {pathway} journey's first run takes no update: {shape['runs'][0]}")
        plans[pathway] = ShapedJourneyInput(runs=runs or [ShapedRun(commands=[1])])
    return plans


async def update_when_started(client: Client, workflow_id: str, command: BareCommand) -> None:
    """An update to a stage's child workflow, which its parent starts once the stage before ends:
    until then the server knows no such workflow. Tried again after the pauses the API's commands
    take for it (``reintegration.commands``), so the shape asks the engine no more than they do."""
    handle = client.get_workflow_handle(workflow_id)
    for attempt in range(100):
        if attempt:
            await asyncio.sleep(ROUTING_PAUSES[min(attempt - 1, len(ROUTING_PAUSES) - 1)])
        try:
            await handle.execute_update(ShapedJourney.command, command)
            return
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
    raise RuntimeError(f"{workflow_id} never started")


async def shaped_temporal(
    client: Client, plans: dict[str, ShapedJourneyInput], numbers: range, clients: int, *, label: str
) -> tuple[Round, list[tuple[str, str]]]:
    """The shaped journeys ``numbers``; with the pathway and the id of each one's case workflow."""
    update_times: list[float] = []
    ids: list[tuple[str, str]] = []

    async def one(number: int) -> None:
        pathway = PATHWAYS[number % 2]
        plan = plans[pathway]
        workflow_id = f"shaped-{uuid.uuid4()}"
        ids.append((pathway, workflow_id))
        commands = [
            (workflow_id if k == 0 else child_id(workflow_id, k), activities)
            for k, run in enumerate(plan.runs)
            for activities in run.commands
        ]
        start = WithStartWorkflowOperation(
            ShapedJourney.run,
            plan,
            id=workflow_id,
            task_queue=BARE_TASK_QUEUE,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
        )
        began = time.perf_counter()
        await client.execute_update_with_start_workflow(
            ShapedJourney.command, BareCommand(activities=commands[0][1]), start_workflow_operation=start
        )
        update_times.append(time.perf_counter() - began)
        for target, activities in commands[1:]:
            began = time.perf_counter()
            await update_when_started(client, target, BareCommand(activities=activities))
            update_times.append(time.perf_counter() - began)
        await client.get_workflow_handle(workflow_id).result()

    progress = Progress(label, len(numbers))
    started = time.perf_counter()
    await run_pool(len(numbers), clients, lambda i: one(numbers[i]), progress)
    return Round(len(numbers), time.perf_counter() - started, {UPDATE: update_times}), ids


async def shaped_histories(
    client: Client, ids: list[tuple[str, str]], plans: dict[str, ShapedJourneyInput]
) -> dict[str, Any]:
    """Events and payload bytes per shaped journey, by pathway, to set beside the real ones'."""
    by_pathway: dict[str, Any] = {}
    for pathway in PATHWAYS:
        sample = [workflow_id for of, workflow_id in ids if of == pathway][:HISTORIES_PER_PATHWAY]
        totals: dict[str, int] = defaultdict(int)
        for workflow_id in sample:
            for k in range(len(plans[pathway].runs)):
                target = workflow_id if k == 0 else child_id(workflow_id, k)
                count_events((await client.get_workflow_handle(target).fetch_history()).events, totals)
        by_pathway[pathway] = {k: round(v / max(1, len(sample)), 1) for k, v in sorted(totals.items())}
    return by_pathway


def shaped_results(
    rounds: list[Round], plans: dict[str, ShapedJourneyInput], shapes: dict[str, Any], clients: int
) -> dict[str, Any]:
    """The shaped phase's rounds as one, with its journeys' plans and histories."""
    plans_as_values = {pathway: asdict(plan) for pathway, plan in plans.items()}
    return {**bare_results(rounds, plans_as_values, clients), "histories": shapes}


# ---------------------------------------------------------------------------------------------
# 4. Endpoints: C clients for S seconds each.


def connections_by_process(parent: int, port: int) -> list[int]:
    """How many established connections to ``port`` each child process of ``parent`` that listens on
    it holds (uvicorn's workers, not its resource tracker), from /proc: the sockets by inode."""
    return sorted(count for _, count in _serving_children(parent, port))


def cpus_of_serving(parent: int, port: int) -> list[str]:
    """The CPUs each child process of ``parent`` that listens on ``port`` may run on."""
    return sorted(affinity.cpus_of(proc.name) for proc, _ in _serving_children(parent, port))


def _serving_children(parent: int, port: int) -> list[tuple[Path, int]]:
    """Each child process of ``parent`` that listens on ``port`` (its /proc folder), with the
    established connections to ``port`` it holds."""
    established: set[str] = set()
    listening: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port:
                if fields[3] == "01":  # ESTABLISHED
                    established.add(fields[9])  # the socket's inode
                elif fields[3] == "0A":  # LISTEN
                    listening.add(fields[9])
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        if _parent_of(stat) != parent:
            continue
        inodes = set()
        for fd in (stat.parent / "fd").glob("*"):
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
        if inodes & listening:
            found.append((stat.parent, len(inodes & established)))
    return found


def _parent_of(stat: Path) -> int | None:
    try:
        return int(stat.read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


async def hammer(
    base_url: str,
    path: str,
    headers: dict[str, str],
    clients: int,
    seconds: float,
    *,
    spread: Callable[[], list[int]] | None = None,
    processes: int = 1,
) -> dict[str, Any]:
    """GET ``path`` from ``clients`` concurrent clients for ``seconds``: requests/s and latency.

    With ``spread`` (the connections each of the server's ``processes`` holds), the connections are
    opened again until each process holds its share, none more than one more than another, as a
    load balancer would share them: opened at once, or one after the other, uvicorn's first worker
    to wake took most of them (11 and 5, 4 and 12, all 16 in some tries against two processes), and
    the busier one set the pace. After 30 tries it goes on as they are, and says so."""
    times: list[float] = []
    failures: dict[int, int] = defaultdict(int)
    # A connection per simulated client, C in all, each with the client of benchmarks/lean_http.py:
    # httpx's own CPU per request (about four times the floor app's) would set the floor's pace.
    https = [LeanHTTP(base_url, timeout=60, headers=headers) for _ in range(clients)]
    shares: list[int] = []
    try:
        for attempt in range(30):
            for http in https:  # opened one after the other, untimed
                await http.get(path)
                if attempt:
                    await asyncio.sleep(0.02)  # each accepted before the next knocks
            if spread is None:
                break
            shares = spread()
            if len(shares) == processes and sum(shares) == clients and shares[-1] - shares[0] <= 1:
                break
            if attempt < 29:
                for http in https:
                    await http.disconnect()
        else:
            print(f"{path}: connections not shared by the {processes} processes: {shares}", file=sys.stderr)
        deadline = time.perf_counter() + seconds

        async def client(http: LeanHTTP) -> None:
            while time.perf_counter() < deadline:
                began = time.perf_counter()
                response = await http.get(path)
                if response.status_code == 200:
                    times.append(time.perf_counter() - began)
                else:
                    failures[response.status_code] += 1

        started = time.perf_counter()
        async with asyncio.TaskGroup() as clients_running:  # one failing stops the others
            for http in https:
                clients_running.create_task(client(http))
        elapsed = time.perf_counter() - started
    finally:
        for http in https:
            await http.aclose()
    return {
        "path": path,
        **({"connections_by_process": shares} if spread is not None else {}),
        "requests": len(times),
        "failures": dict(failures),
        "requests_per_second": round(len(times) / elapsed, 1),
        **latency(times),
    }


async def endpoints(
    processes: Processes,
    floor_url: str,
    api_url: str,
    caller: Caller,
    cases: list[dict[str, str]],
    clients: int,
    seconds: float,
    profiler: Profiler,
) -> dict[str, Any]:
    closed_return = next(c["case_id"] for c in cases if c["pathway"] == "voluntary_return")
    plan: list[tuple[str, str, str, dict[str, str]]] = [
        ("floor", floor_url, "/", {}),
        ("floor_row", floor_url, f"/rows/{closed_return}", {}),
        ("health", api_url, "/health", {}),
        # The case's owner (handed over to the country of origin on the way) reads it.
        ("case", api_url, f"/v1/cases/{closed_return}", caller.auth("caseworker", "cw-ro-1", countries=["RO"])),
        ("cases", api_url, "/v1/cases", caller.auth("caseworker", "cw-es-1", countries=["ES"])),
        ("tasks", api_url, "/v1/tasks", caller.auth("partner", "partner-clinic-es", agency="clinic-es")),
        ("stalled", api_url, "/v1/supervision/stalled", caller.auth("supervisor", "sup-bench")),
        ("summary", api_url, "/v1/supervision/summary", caller.auth("supervisor", "sup-bench")),
    ]
    found = {}
    for name, base, path, headers in plan:
        print(f"endpoint {name}: {clients} clients for {seconds:g} s", file=sys.stderr, flush=True)
        server = "floor" if base == floor_url else "api"
        cpu_before = processes.usage()[server]["cpu_seconds"]
        if server == "api":
            profiler.start(f"endpoint-{name}")
        found[name] = await hammer(base, path, headers, clients, seconds)
        profiler.stop()
        # The server's own CPU per request: what the load generator (Python, on the same cores)
        # cannot hide when it, not the server, sets the pace of a cheap endpoint.
        cpu = processes.usage()[server]["cpu_seconds"] - cpu_before
        found[name]["server_cpu_ms_per_request"] = round(1000 * cpu / max(1, found[name]["requests"]), 3)
    return found


def summary_computed(engine: Engine, samples: int = 50) -> dict[str, Any]:
    """The summary as it is computed after any write to the read model, in this process, one at a
    time (p50/p95/p99 of ``compute_summary`` over every country): what the API process pays once per
    region each time the count of writes moves. The hammered summary above is mostly kept ones."""
    times = []
    with Session(engine) as session:
        for _ in range(samples):
            began = time.perf_counter()
            compute_summary(session, None)
            times.append(time.perf_counter() - began)
            session.rollback()
    return {"samples": samples, **latency(times)}


async def two_processes(
    processes: Processes, settings: Settings, results: dict[str, Any], clients: int, seconds: float
) -> dict[str, Any]:
    """The API again, in two processes (``REINTEGRATION_API_PROCESSES=2``) on the same database and
    Temporal: the reads of the endpoints' phase, for the gain from one process to two. The one API
    process and the worker are stopped first (their phases are over): each of the two then takes
    a CPU of its own, as the one did."""
    processes.stop("api")
    processes.stop("worker")
    port = free_port()
    processes.start(
        "api_2_processes",
        [sys.executable, "-m", "reintegration.cli", "api"],
        REINTEGRATION_API_PORT=str(port),
        REINTEGRATION_API_PROCESSES="2",
    )
    url = f"http://127.0.0.1:{port}"
    await wait_ready(f"{url}/ready", processes)
    closed_return = next(c["case_id"] for c in results["journeys"]["cases"] if c["pathway"] == "voluntary_return")
    async with LeanHTTP(url) as http:
        caller = Caller(settings, http)
        plan = {
            "case": (f"/v1/cases/{closed_return}", caller.auth("caseworker", "cw-ro-1", countries=["RO"])),
            "cases": ("/v1/cases", caller.auth("caseworker", "cw-es-1", countries=["ES"])),
        }
        found: dict[str, Any] = {}
        for name, (path, headers) in plan.items():
            print(
                f"endpoint {name}, two API processes: {clients} clients for {seconds:g} s", file=sys.stderr, flush=True
            )
            spread = functools.partial(connections_by_process, processes.running["api_2_processes"].pid, port)
            found[name] = await hammer(url, path, headers, clients, seconds, spread=spread, processes=2)
            one = results["endpoints"][name]["requests_per_second"]
            found[name]["gain_vs_one_process"] = round(found[name]["requests_per_second"] / one, 3) if one else 0.0
    # Read once they have served: each takes its CPU as it loads the app.
    results["cpus_by_process"]["api_2_processes"] = cpus_of_serving(processes.running["api_2_processes"].pid, port)
    return found


# ---------------------------------------------------------------------------------------------
# Ratios and the table.


def ratios(results: dict[str, Any]) -> dict[str, Any]:
    j, bare, e = results["journeys"], results["bare_temporal"], results["endpoints"]
    floor = e["floor"]

    def share(a: float, b: float) -> float:
        return round(a / b, 3) if b else 0.0

    values = {
        "journeys_vs_bare_temporal": share(j["journeys_per_second"], bare["journeys_per_second"]),
        "health_vs_floor": share(e["health"]["requests_per_second"], floor["requests_per_second"]),
        "case_vs_floor": share(e["case"]["requests_per_second"], floor["requests_per_second"]),
        "case_p99_vs_floor_p99": share(e["case"]["p99_ms"], floor["p99_ms"]),
        "stalled_p95_vs_floor_p95": share(e["stalled"]["p95_ms"], floor["p95_ms"]),
        "summary_p95_vs_floor_p95": share(e["summary"]["p95_ms"], floor["p95_ms"]),
    }
    # Not a target of the issue: the server's CPU per request against the floor's, which the load
    # generator's own limit cannot mask (requests/s of cheap endpoints can be the client's).
    informative = {
        f"{name}_cpu_vs_floor_cpu": share(e[name]["server_cpu_ms_per_request"], floor["server_cpu_ms_per_request"])
        for name in ("health", "case")
    }
    found = {}
    for key, value in values.items():
        what, sense, target = TARGETS[key]
        met = value >= target if sense == ">=" else value <= target
        found[key] = {"what": what, "value": value, "target": f"{sense} {target}", "met": met}
    for key, value in informative.items():
        what = f"{key.split('_')[0]} server CPU per request / floor's"
        found[key] = {"what": what, "value": value, "target": "(none)", "met": None}
    # Not targets either: how far the engine itself goes with the journeys' shape, and how far our
    # code goes beyond it (the journeys' ratio to bare Temporal is the product of the two).
    if (shape := results.get("shaped_temporal")) is not None:
        for key, what, a, b in (
            ("shape_vs_bare_temporal", "journeys/s of their shape on bare Temporal / of bare", shape, bare),
            ("journeys_vs_shape", "journeys/s of the real journeys / of their shape", j, shape),
        ):
            value = share(a["journeys_per_second"], b["journeys_per_second"])
            found[key] = {"what": what, "value": value, "target": "(none)", "met": None}
    # Nor these: a case read against the framework's and the ORM's own simplest read of a row (no
    # token, no scope, no decryption, no access line), which sets how near the floor any read can come.
    if (row := e.get("floor_row")) is not None:
        for key, what, a, b in (
            ("case_vs_floor_row", "GET case requests/s / of a row on bare FastAPI", e["case"], row),
            ("floor_row_vs_floor", "requests/s of a row on bare FastAPI / floor's", row, floor),
        ):
            value = share(a["requests_per_second"], b["requests_per_second"])
            found[key] = {"what": what, "value": value, "target": "(none)", "met": None}
    return found


TEMPORAL_COUNTERS = re.compile(r"^(service_requests|persistence_requests)(?:_total)?\{([^}]*)\} ([0-9.e+]+)$")


def temporal_requests(url: str) -> dict[str, float]:
    """The requests Temporal's server has served, by service and operation, and its persistence's,
    from its own metrics (what the journeys ask of the engine, beyond their histories' events)."""
    counts: dict[str, float] = defaultdict(float)
    try:
        text = httpx.get(url, timeout=10).text
    except httpx.HTTPError:
        return {}  # counted as nothing served: the table leaves the phase's requests out
    for line in text.splitlines():
        if (found := TEMPORAL_COUNTERS.match(line)) is None:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', found.group(2)))
        where = labels.get("service_name", "") if found.group(1) == "service_requests" else "persistence"
        counts[f"{where} {labels.get('operation', '?')}"] += float(found.group(3))
    return dict(counts)


def temporal_requests_table(results: dict[str, Any], top: int = 14) -> list[str]:
    """Temporal's requests per journey in each phase, the operations the real journeys ask most of."""
    phases = results.get("temporal_requests_by_phase", {})
    real = phases.get("journeys")
    if not real:
        return []
    count = results["journeys"]["journeys"]
    columns = [real, phases.get("shaped_temporal", {}), phases.get("bare_temporal", {})]
    lines = ["", f"{'Temporal requests per journey':<46} {'via API':>9} {'shape':>9} {'bare':>9}"]
    for operation in sorted(real, key=lambda o: -real[o])[:top]:
        lines.append(f"{operation:<46} " + " ".join(f"{c.get(operation, 0) / count:>9.1f}" for c in columns))
    return lines


def journey_cpu(results: dict[str, Any]) -> list[str]:
    """CPU seconds per journey of each process, the real journeys' phase beside their shape's on bare
    Temporal and the bare baseline's: with both cores busy, the ratio of journeys/s is about the
    inverse ratio of their totals."""
    phases = results.get("cpu_seconds_by_phase", {})
    real, bare, shape = phases.get("journeys"), phases.get("bare_temporal"), phases.get("shaped_temporal", {})
    if not real or not bare:
        return []
    count = results["journeys"]["journeys"]
    lines = ["", f"{'CPU s per journey':<34} {'via API':>10} {'shape':>10} {'bare':>10}"]
    rows = [("temporal", "temporal", "temporal"), ("worker", "worker", "bare_worker"), ("api", "api", None)]
    rows.append(("clients (this process)", "clients", "clients"))
    totals = [0.0, 0.0, 0.0]
    for label, mine, theirs in rows:
        spent = [
            real.get(mine, 0.0) / count,
            shape.get(theirs, 0.0) / count if theirs else 0.0,
            bare.get(theirs, 0.0) / count if theirs else 0.0,
        ]
        totals = [t + x for t, x in zip(totals, spent, strict=True)]
        lines.append(f"{label:<34} " + " ".join(f"{x:>10.3f}" for x in spent))
    lines.append(f"{'total':<34} " + " ".join(f"{x:>10.3f}" for x in totals))
    return lines


def by_round(phase: dict[str, Any]) -> str:
    """Each round's journeys/s, in the order they ran (journeys, bare, shape, shape, bare, journeys)."""
    rounds = phase.get("rounds", [])
    return "   rounds: " + ", ".join(f"{r['journeys_per_second']:.2f}" for r in rounds) if rounds else ""


def table(results: dict[str, Any]) -> str:
    j, bare, e = results["journeys"], results["bare_temporal"], results["endpoints"]
    lines = [
        f"{'measurement':<34} {'throughput':>16} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'CPU ms/req':>10}",
        "-" * 89,
    ]

    def row(name: str, throughput: str, lat: dict[str, float]) -> None:
        lines.append(f"{name:<34} {throughput:>16} {lat['p50_ms']:>8.1f} {lat['p95_ms']:>8.1f} {lat['p99_ms']:>8.1f}")

    row(
        f"journeys via API ({j['commands_per_journey']:g} cmd/journey)",
        f"{j['commands_per_second']:.1f} cmd/s",
        j["command_latency"],
    )
    lines.append(f"{'':<34} {j['journeys_per_second']:>10.2f} jrn/s{by_round(j)}")
    row(
        f"bare Temporal ({bare['updates'] / bare['journeys']:g} upd/journey)",
        f"{bare['commands_per_second']:.1f} upd/s",
        bare["update_latency"],
    )
    lines.append(f"{'':<34} {bare['journeys_per_second']:>10.2f} jrn/s{by_round(bare)}")
    if (shape := results.get("shaped_temporal")) is not None:
        row("their shape on bare Temporal", f"{shape['commands_per_second']:.1f} upd/s", shape["update_latency"])
        lines.append(f"{'':<34} {shape['journeys_per_second']:>10.2f} jrn/s{by_round(shape)}")
    names = {
        "floor": "bare FastAPI floor GET /",
        "floor_row": "bare FastAPI + SQLModel GET a row",
        "health": "API GET /health",
        "case": "API GET /v1/cases/{id} (closed)",
        "cases": "API GET /v1/cases",
        "tasks": "API GET /v1/tasks (partner)",
        "stalled": "API GET /v1/supervision/stalled",
        "summary": "API GET /v1/supervision/summary",
    }
    for key, name in names.items():
        row(name, f"{e[key]['requests_per_second']:.0f} req/s", e[key])
        lines[-1] += f" {e[key]['server_cpu_ms_per_request']:>7.2f}"
    if "summary_computed" in results:  # once per region after each write (the above: mostly kept)
        row("summary computed after a write", "1 client", results["summary_computed"])
    for key, two in results.get("two_processes", {}).items():
        row(f"{names[key]}, 2 processes", f"{two['requests_per_second']:.0f} req/s", two)
        lines[-1] += f" {two['gain_vs_one_process']:>6.2f}x"
    lines += [
        "",
        f"{'per journey (histories)':<34} {'events':>8} {'updates':>8} {'activities':>10} {'payload KiB':>12}",
    ]
    shaped_histories = results.get("shaped_temporal", {}).get("histories", {})
    for pathway, h in results["histories"].items():
        for label, counted in ((pathway, h), ("  its shape on bare Temporal", shaped_histories.get(pathway))):
            if counted:
                lines.append(
                    f"{label:<34} {counted.get('events', 0):>8g} {counted.get('updates_completed', 0):>8g} "
                    f"{counted.get('activities', 0):>10g} {counted.get('payload_bytes', 0) / 1024:>12.1f}"
                )
    lines += journey_cpu(results)
    lines += temporal_requests_table(results)
    lines += ["", f"{'process':<34} {'peak RSS MiB':>14} {'CPU s':>8}"]
    for name, usage in results["processes"].items():
        lines.append(f"{name:<34} {usage['peak_rss_mib']:>14.1f} {usage['cpu_seconds']:>8.1f}")
    if cpus := results.get("cpus_by_process"):
        lines.append(
            "CPUs: "
            + ", ".join(f"{name} {cpu if isinstance(cpu, str) else ' and '.join(cpu)}" for name, cpu in cpus.items())
        )
    lines += ["", f"{'ratio':<52} {'value':>7} {'target':>8}"]
    for r in results["ratios"].values():
        verdict = "" if r["met"] is None else "PASS" if r["met"] else "MISS"
        lines.append(f"{r['what']:<52} {r['value']:>7.2f} {r['target']:>8} {verdict}".rstrip())
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------


async def measure(
    args: argparse.Namespace, processes: Processes, settings: Settings, floor_port: int
) -> dict[str, Any]:
    started = time.monotonic()
    metrics_port = free_port()
    processes.start(
        "temporal",
        [*dev_server_command(settings, ui_port=free_port()), "--headless", "--metrics-port", str(metrics_port)],
    )
    temporal_metrics = f"http://127.0.0.1:{metrics_port}/metrics"
    raw = await connect(settings, keyring=None, attempts=240, delay=0.5)  # histories as stored
    processes.start("worker", [sys.executable, "-m", "worker"])
    processes.start("api", [sys.executable, "-m", "reintegration.cli", "api"])
    api_url, floor_url = f"http://127.0.0.1:{settings.api_port}", f"http://127.0.0.1:{floor_port}"
    await wait_ready(f"{api_url}/ready", processes)
    await wait_for_line(processes.logs / "worker.log", "worker started", processes)
    # The API and the worker each took a CPU of their own as they started (``reintegration.affinity``,
    # ``auto`` from ``clean_environment``), unless other processes of this machine had them all. The
    # baselines run as they do: the floor on the API's CPUs, the bare worker on the worker's.
    cpus = {"api": processes.cpus("api"), "worker": processes.cpus("worker")}
    everywhere = processes.cpus("temporal")  # left to the kernel
    cpus["floor"], cpus["bare_worker"] = cpus["api"], cpus["worker"]
    processes.start(
        "bare_worker",
        [sys.executable, "-m", "benchmarks.bare_temporal"],
        BENCH_TEMPORAL_ADDRESS=settings.temporal_address,
        BENCH_NAMESPACE=settings.temporal_namespace,
        REINTEGRATION_CPU_AFFINITY="off" if cpus["worker"] == everywhere else cpus["worker"],
    )
    processes.start(
        "floor",
        [sys.executable, "-m", "benchmarks.floor"],
        REINTEGRATION_API_PORT=str(floor_port),
        REINTEGRATION_CPU_AFFINITY="off" if cpus["api"] == everywhere else cpus["api"],
    )
    await wait_ready(f"{floor_url}/", processes)
    await wait_for_line(processes.logs / "bare_worker.log", "bare worker started", processes)
    print(f"stack ready in {time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)

    results: dict[str, Any] = {
        "arguments": {"journeys": args.journeys, "clients": args.clients, "seconds": args.seconds},
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "cpus_by_process": {**cpus, "temporal": everywhere},
        "cpu_seconds_by_phase": {},
        "temporal_requests_by_phase": {},
    }
    before, client_before = processes.usage(), time.process_time()
    requests_before = temporal_requests(temporal_metrics)

    def phase(name: str | None) -> None:
        """CPU seconds of each process in the phase (added up over its rounds), and of this one: the
        clients, which share the machine's cores with the stack (a deployment's clients run elsewhere);
        Temporal's requests likewise. ``None``: counted in no phase (a warm-up)."""
        nonlocal before, client_before, requests_before
        now, client_now, requests_now = processes.usage(), time.process_time(), temporal_requests(temporal_metrics)
        if name is not None:
            spent = results["cpu_seconds_by_phase"].setdefault(name, {})
            for proc in now:
                used = now[proc]["cpu_seconds"] - before.get(proc, {}).get("cpu_seconds", 0)
                spent[proc] = round(spent.get(proc, 0) + used, 2)
            spent["clients"] = round(spent.get("clients", 0) + client_now - client_before, 2)
            served = results["temporal_requests_by_phase"].setdefault(name, {})
            for operation, count in requests_now.items():
                if count > requests_before.get(operation, 0):
                    served[operation] = served.get(operation, 0) + count - requests_before.get(operation, 0)
        before, client_before = now, client_now
        requests_before = requests_now or requests_before  # unread: the next phase counts this one's too

    # The journeys, the bare baseline and the journeys' shape on bare Temporal in two rounds each,
    # in the order journeys, bare, shape, shape, bare, journeys: the machine's speed drifts (it is
    # shared), and a drift that goes one way through the run then falls on all three alike. Every
    # round starts and ends with its clients' ramp. Each kind's first round follows one journey of
    # each pathway of its kind, untimed and counted in no phase: imports, caches, first tasks.
    profiler = Profiler(args.profile, processes)
    first, second = range(args.journeys // 2), range(args.journeys // 2, args.journeys)
    warm_up = range(-2, 0)  # both pathways (they alternate with the number)
    bare_client = await Client.connect(settings.temporal_address, namespace=settings.temporal_namespace)
    real: list[Round] = []
    bare: list[Round] = []
    shaped: list[Round] = []
    await journeys(api_url, settings, warm_up, 1, label="journeys, warm-up")
    phase(None)
    profiler.start("journeys")
    real.append(await journeys(api_url, settings, first, args.clients, label="journeys 1/2"))
    profiler.stop()
    phase("journeys")
    processes.check()
    results["histories"] = await histories(raw, journeys_results(real, args.clients)["cases"])
    plans, shapes = bare_plans(results["histories"]), shaped_plans(results["histories"])
    shaped_ids: list[tuple[str, str]] = []
    await bare_temporal(bare_client, plans, warm_up, 1, label="bare Temporal, warm-up")
    phase(None)
    bare.append(await bare_temporal(bare_client, plans, first, args.clients, label="bare Temporal 1/2"))
    phase("bare_temporal")
    processes.check()
    await shaped_temporal(bare_client, shapes, warm_up, 1, label="journeys' shape, warm-up")
    phase(None)
    for numbers, label in ((first, "journeys' shape 1/2"), (second, "journeys' shape 2/2")):
        done, ids = await shaped_temporal(bare_client, shapes, numbers, args.clients, label=label)
        shaped.append(done)
        shaped_ids += ids
        phase("shaped_temporal")
        processes.check()
    bare.append(await bare_temporal(bare_client, plans, second, args.clients, label="bare Temporal 2/2"))
    phase("bare_temporal")
    processes.check()
    profiler.start("journeys-2")
    real.append(await journeys(api_url, settings, second, args.clients, label="journeys 2/2"))
    profiler.stop()
    phase("journeys")
    processes.check()
    results["journeys"] = journeys_results(real, args.clients)
    results["bare_temporal"] = bare_results(bare, plans, args.clients)
    results["shaped_temporal"] = shaped_results(
        shaped, shapes, await shaped_histories(bare_client, shaped_ids, shapes), args.clients
    )
    phase(None)  # the histories' reading is no endpoint's
    async with LeanHTTP(api_url) as http:
        caller = Caller(settings, http)
        results["endpoints"] = await endpoints(
            processes, floor_url, api_url, caller, results["journeys"]["cases"], args.clients, args.seconds, profiler
        )
    phase("endpoints")
    processes.check()
    engine = make_engine(settings)
    try:
        results["summary_computed"] = summary_computed(engine)
    finally:
        engine.dispose()
    results["processes"] = processes.usage()
    results["two_processes"] = await two_processes(processes, settings, results, args.clients, args.seconds)
    processes.check()
    results["ratios"] = ratios(results)
    return results


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--journeys", type=int, default=200, help="whole journeys through the API (default 200)")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients in every phase (default 16)")
    parser.add_argument("--seconds", type=float, default=10, help="seconds per endpoint (default 10)")
    parser.add_argument(
        "--profile", type=Path, default=None, help="sample the API and the worker with py-spy into this folder"
    )
    parser.add_argument("--out", type=Path, default=Path("bench.json"), help="where the numbers go (bench.json)")
    args = parser.parse_args(argv)
    if args.journeys < 4 or args.clients < 1 or args.seconds <= 0:
        parser.error("--journeys at least 4 (both pathways in each round), --clients at least 1, --seconds above 0")

    floor_port = free_port()
    return run_on_temporary_stack(
        "reintegration-bench-",
        lambda processes, settings: measure(args, processes, settings, floor_port),
        table,
        args.out,
    )


def run_on_temporary_stack(
    prefix: str,
    measure: Callable[[Processes, Settings], Coroutine[Any, Any, dict[str, Any]]],
    table: Callable[[dict[str, Any]], str],
    out: Path,
) -> int:
    """Run ``measure`` with a stack of its own in a temporary folder (free ports; this process reads
    the same settings as its children, without the operator's), stop the stack and remove the folder
    whatever happens (Ctrl-C too), then print ``table`` of the results and write them to ``out``."""
    # Set explicitly, as `reintegration run` does: a shell that starts us in the background would
    # otherwise have SIGINT ignored.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    data_dir, logs = folder / "data", folder / "logs"
    data_dir.mkdir(mode=0o700)
    logs.mkdir()
    env = clean_environment(data_dir, free_port(), free_port())
    # This process reads the same settings as its children (the signing key for tokens, the ports).
    for key in [k for k in os.environ if k.startswith("REINTEGRATION_") or k == "DATABASE_URL"]:
        del os.environ[key]
    os.environ.update({k: v for k, v in env.items() if k.startswith("REINTEGRATION_")})
    settings = Settings()
    processes = Processes(logs=logs, env=env)
    try:
        results = asyncio.run(measure(processes, settings))
    except KeyboardInterrupt:
        print("\ninterrupted: stopping the stack", file=sys.stderr)
        return 130
    finally:
        processes.stop_all()
        shutil.rmtree(folder, ignore_errors=True)
    print(table(results))
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwritten to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
