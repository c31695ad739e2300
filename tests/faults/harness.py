"""The fault suite's harness: a stack to break, a client that tolerates faults, journeys, and the checks.

A fault run is one fresh system (its own database, task queue, API over HTTP and worker processes)
with two partner simulators (agencies with webhooks, one in Spain, one in Romania). Dozens of
journeys run through it concurrently while a fault happens; then the checks below hold or the run
fails:

* every journey finishes (reaches closure, or the state it was driven to);
* every step or task action that got a ``2xx`` is in the case's workflow histories exactly once (the
  ``WorkflowExecutionUpdateAccepted`` events of every run of ``case-<id>`` and its stage children,
  counted by update id ``<sub>:<Idempotency-Key>``), and no key is there twice;
* every task assigned to a webhook agency reached it, once: the simulator saw its delivery id and
  took it once (a repeat, after a timeout, is dropped by the key and counted apart);
* the read model equals the workflows' state (``reintegration.reconcile.check_case``);
* no ``500``; every ``503`` carries ``Retry-After``; both answers to a request sent twice agree;
* every notification that asked for an e-mail was sent, and the SMTP server (a real one, run here:
  ``aiosmtpd``) took each exactly once; every partner's completed task told the case's caseworker once.

The client is what a real client does under faults: on ``503`` or a broken connection it sends the
same request again with the same ``Idempotency-Key`` until it gets an answer (with a deadline).
"""

from __future__ import annotations

import asyncio
import email
import random
import statistics
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func
from sqlmodel import Session, col, select
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from api.main import create_app
from reintegration.blobs import LocalBlobStore
from reintegration.db import (
    CaseRecord,
    DeliveryRecord,
    DocumentRecord,
    NoteRecord,
    TimelineRecord,
    UserNotificationRecord,
    UserRecord,
    aware,
    keyring_from_settings,
    make_engine,
)
from reintegration.documents import open_stream
from reintegration.migrate import upgrade_schema
from reintegration.settings import Settings
from reintegration.temporal import connect
from tests.conftest import NAMESPACE, Stack, free_port, served
from tests.delivery_helpers import SIMULATORS, simulator
from tests.faults.processes import Workers
from tests.journey import case_body, day

REQUEST_DEADLINE = 150.0  # a client gives up on one request after this long
DELIVERY_DEADLINE = 120.0  # a partner waits this long for a task's webhook before acting on it
RUN_DEADLINE = 240.0  # a whole fault run's journeys
RETRY_PAUSE_CAP = 1.0  # honour Retry-After, but no longer than this in the tests
IN_PROGRESS = "still in progress"  # the 409 of a key whose first request has not finished: retry later

SUMMARIES: list[str] = []  # one line per fault, printed at the end of the session

# --- The mail server: a real SMTP server per fault stack, stoppable ------------------------------

# How long after the mail server took an e-mail a killed worker may not have recorded it yet: the
# record is one commit in the sending thread, which may wait for SQLite's write lock under the load.
KILLED_WHILE_RECORDING = 5.0
# How long before the mail server took an e-mail its sender may already have been killed: the whole
# message was written to the socket, and the server (a thread of this process, which may wait for the
# interpreter's lock behind the thread sending the kill) reads it only after the sender is gone; and
# a kill's time is stamped just before the signal. Seen: a kill 6.5 ms before the server took the
# message, which went again when the attempt's heartbeat timed out.
KILLED_WHILE_IN_FLIGHT = 0.2


@dataclass
class Received:
    message_id: str
    to: str
    at: float  # time.time() when the server took it


class MailServer:
    """An SMTP server (aiosmtpd) on a fixed port, that records what it takes and can be stopped and
    started again (the mail-outage fault)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.received: list[Received] = []
        self.stopped = 0
        self._controller: Any = None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's name
        message = email.message_from_bytes(envelope.content)
        self.received.append(Received(str(message["Message-ID"]), str(message["To"]), time.time()))
        return "250 OK"

    def start(self) -> None:
        from aiosmtpd.controller import Controller

        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None
            self.stopped += 1


def give_addresses(engine: Any, user_ids: list[str]) -> None:
    """These users (known to the directory: signed in) get an e-mail address, e-mail at once."""
    with Session(engine) as session:
        for user in session.exec(select(UserRecord).where(col(UserRecord.user_id).in_(user_ids))).all():
            user.email, user.notify = f"{user.user_id}@faults.test", "email"
            session.add(user)
        session.commit()


# --- The plan: journeys per fault, and the seed of its random moments ----------------------------

PLAN: dict[str, tuple[int, int]] = {
    "duplicate-requests": (20, 6),  # f: every request sent twice, most pairs at once; no other fault
    "partner-webhooks": (12, 5),  # e: webhooks answering 5xx, and too slowly, for a while
    "worker-sigkill": (16, 1),  # a: the worker killed with SIGKILL at random moments, started again
    "two-workers": (12, 2),  # b: two workers, one killed
    "temporal-restart": (12, 3),  # c: the Temporal dev server stopped and started on the same store
    "database-outage": (16, 4),  # d: PostgreSQL stopped (-m immediate) and started again
    "mail-outage": (12, 7),  # g: the SMTP server stopped for a while, then started again
}


# --- The system under test -----------------------------------------------------------------------


@dataclass
class Partner:
    agency: str
    country: str
    stats: Any  # reintegration.partner_sim.SimulatorStats

    @property
    def config(self):  # type: ignore[no-untyped-def]
        return SIMULATORS[self.agency]


@dataclass
class FaultStack:
    stack: Stack
    workers: Workers
    partners: dict[str, Partner]  # by country
    mail: MailServer

    @property
    def settings(self) -> Settings:
        return self.stack.settings

    @property
    def client(self) -> Client:
        return self.stack.client


@asynccontextmanager
async def fault_stack(
    name: str, data_dir: Path, *, temporal_address: str, database_url: str | None = None, workers: int = 1
) -> AsyncIterator[FaultStack]:
    """A fresh system: database, API over HTTP on a free port (in this process), worker processes,
    and a partner simulator per country. Nothing of it is shared with another fault."""
    data_dir.mkdir(parents=True, exist_ok=True)
    mail = MailServer()
    mail.start()
    settings = Settings(
        data_dir=data_dir,
        database_url=database_url,
        temporal_address=temporal_address,
        temporal_namespace=NAMESPACE,
        temporal_task_queue=f"faults-{name}-{uuid.uuid4().hex[:6]}",
        delivery_timeout_seconds=1.5,
        delivery_retry_initial_seconds=0.2,
        delivery_retry_max_seconds=1.0,
        # Hundreds of requests a minute per caller, on purpose: the rate limit is not the fault here.
        rate_limit_per_minute=1_000_000,
        rate_limit_burst=100_000,
        smtp_host="127.0.0.1",
        smtp_port=mail.port,
        smtp_security="none",
        smtp_timeout_seconds=2.0,
        mail_from="Reintegration <notify@faults.test>",
    )
    engine = make_engine(settings)
    upgrade_schema(engine)
    keyring = keyring_from_settings(settings)
    client = await connect(settings, keyring=keyring)
    procs = Workers(settings)
    stack: Stack | None = None
    try:
        async with AsyncExitStack() as exits:
            base_url = await exits.enter_async_context(
                served(create_app(settings), log_level="critical", lifespan="on")
            )
            limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)
            http = httpx.AsyncClient(base_url=base_url, timeout=120, limits=limits)
            stack = Stack(
                backend=name,
                settings=settings,
                client=client,
                engine=engine,
                http=http,
                base_url=base_url,
                keyring=keyring,
            )
            for _ in range(workers):  # first: a worker sends the simulators' webhook verifications
                procs.start()
            partners = {}
            for country, services in (
                ("ES", ["legal-assistance", "medical", "travel-documents"]),
                ("RO", ["origin-assessment", "reception"]),
            ):
                agency, stats = await exits.enter_async_context(
                    simulator(stack, services=services, country=country, act_after=None)
                )
                partners[country] = Partner(agency, country, stats)
            yield FaultStack(stack=stack, workers=procs, partners=partners, mail=mail)
            procs.stop_all()  # before the simulators stop: no delivery in flight against them
    finally:
        procs.stop_all()
        mail.stop()
        if stack is not None:
            await stack.http.aclose()
            await stack.worker_http.aclose()
        engine.dispose()
        keyring.dispose()


# --- A client that tolerates faults --------------------------------------------------------------


@dataclass
class Sent:
    """One keyed command, as the client saw it in the end."""

    case_id: str
    update_id: str  # f"{sub}:{key}", the Temporal update id the API gives it
    what: str
    status: int


@dataclass
class RunStats:
    statuses: Counter = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)  # any 5xx but 503, and 503s without Retry-After
    disagreements: list[str] = field(default_factory=list)  # the two answers to one request differ
    connection_errors: int = 0
    in_progress: int = 0
    latencies: list[float] = field(default_factory=list)  # seconds, per answered request
    accepted: int = 0  # keyed commands answered 2xx so far (the faults wait for progress)
    sent: list[Sent] = field(default_factory=list)
    opened: list[str] = field(default_factory=list)
    delivered_tasks: dict[str, str] = field(default_factory=dict)  # task id -> country of its webhook agency


class FaultClient:
    """Sends every request twice with one ``Idempotency-Key`` (some pairs at once), retrying each
    copy with the same key and body on ``503`` or a broken connection, as a real client does."""

    def __init__(self, fs: FaultStack, stats: RunStats, rng: random.Random, concurrent_share: float) -> None:
        self.fs, self.stats, self.rng, self.concurrent_share = fs, stats, rng, concurrent_share
        self.http = fs.stack.http

    async def _until_answered(
        self, path: str, body: dict, headers: dict[str, str], raw: bytes | None = None, params: dict | None = None
    ) -> httpx.Response:
        deadline = time.monotonic() + REQUEST_DEADLINE
        while True:
            pause = 0.2
            sent_at = time.monotonic()
            try:
                if raw is not None:  # a document: the body is the document itself
                    r = await self.http.post(path, content=raw, params=params, headers=headers)
                else:
                    r = await self.http.post(path, json=body, params=params, headers=headers)
            except httpx.TransportError:
                self.stats.connection_errors += 1
                r = None
            if r is not None:
                self.stats.latencies.append(time.monotonic() - sent_at)
                self.stats.statuses[r.status_code] += 1
                if r.status_code == 503:
                    if "retry-after" not in r.headers:
                        self.stats.server_errors.append(f"503 without Retry-After on {path}")
                    pause = min(float(r.headers.get("retry-after", 1)), RETRY_PAUSE_CAP)
                elif r.status_code >= 500:
                    self.stats.server_errors.append(f"{r.status_code} on {path}: {r.text[:300]}")
                elif r.status_code == 409 and IN_PROGRESS in r.text:
                    self.stats.in_progress += 1
                else:
                    return r
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no answer to POST {path} within {REQUEST_DEADLINE:.0f} s"
                    + (f" (last {r.status_code}: {r.text[:200]})" if r is not None else "")
                )
            await asyncio.sleep(pause * (0.5 + self.rng.random()))

    async def post(
        self,
        path: str,
        body: dict,
        headers: dict[str, str],
        *,
        sub: str,
        what: str,
        case_id: str | None = None,
        raw: bytes | None = None,
        params: dict | None = None,
    ) -> httpx.Response:
        key = f"{what.replace('/', '-')}-{uuid.uuid4().hex[:16]}"
        keyed = {**headers, "Idempotency-Key": key}
        if self.rng.random() < self.concurrent_share:
            first, second = await asyncio.gather(
                self._until_answered(path, body, keyed, raw, params),
                self._until_answered(path, body, keyed, raw, params),
            )
        else:
            first = await self._until_answered(path, body, keyed, raw, params)
            second = await self._until_answered(path, body, keyed, raw, params)
        if first.status_code != second.status_code:
            self.stats.disagreements.append(f"{path}: {first.status_code} then {second.status_code}")
        elif first.is_success and first.json() != second.json():
            self.stats.disagreements.append(f"{path}: two bodies for one key")
        if case_id is not None:
            self.stats.sent.append(Sent(case_id, f"{sub}:{key}", what, first.status_code))
        if first.is_success:
            self.stats.accepted += 1
        return first

    async def get(self, path: str, headers: dict[str, str]) -> httpx.Response:
        deadline = time.monotonic() + REQUEST_DEADLINE
        while True:
            try:
                r = await self.http.get(path, headers=headers)
                self.stats.statuses[r.status_code] += 1
                if r.status_code != 503:
                    if r.status_code >= 500:
                        self.stats.server_errors.append(f"{r.status_code} on GET {path}")
                    return r
            except httpx.TransportError:
                self.stats.connection_errors += 1
            if time.monotonic() > deadline:
                raise AssertionError(f"no answer to GET {path}")
            await asyncio.sleep(0.3)


# --- Journeys ------------------------------------------------------------------------------------


# Per journey shape: the opening, a note and a document on the case, then the steps and task actions.
COMMANDS = {"residence": 16, "return": 17}
DOCUMENT = b"%PDF-1.7\n% the fault run's consent form\n" + bytes(range(256)) * 400 + b"\n%%EOF\n"


class JourneyFailed(AssertionError):
    pass


@dataclass
class JourneyRun:
    index: int
    shape: str
    case_id: str = ""
    done: list[str] = field(default_factory=list)
    finished: bool = False
    error: str | None = None


class FaultJourney:
    """One case, driven step by step through the API by its caseworkers, partners and a supervisor."""

    def __init__(self, fs: FaultStack, api: FaultClient, run: JourneyRun, label: str) -> None:
        self.fs, self.api, self.run = fs, api, run
        stack = fs.stack
        self.cw_sub, self.cw_ro_sub, self.sup_sub = f"cw-es-{label}", f"cw-ro-{label}", "sup-faults"
        self.cw = stack.auth("caseworker", self.cw_sub, countries=["ES"])
        self.cw_ro = stack.auth("caseworker", self.cw_ro_sub, countries=["RO"])
        self.sup = stack.auth("supervisor", self.sup_sub)
        give_addresses(stack.engine, [self.cw_sub, self.cw_ro_sub])  # told of their cases by e-mail
        self.case: dict[str, Any] = {}

    def _check(self, r: httpx.Response, what: str, expect: int) -> dict[str, Any]:
        if r.status_code != expect:
            raise JourneyFailed(f"{what}: {r.status_code} {r.text[:300]}")
        self.run.done.append(what)
        return r.json()

    async def open(self) -> None:
        r = await self.api.post("/v1/cases", case_body(), self.cw, sub=self.cw_sub, what="open")
        self.case = self._check(r, "open", 201)
        self.run.case_id = self.case["case_id"]
        self.api.stats.opened.append(self.run.case_id)
        # The case file: a note and a document, each sent twice with one key under the fault.
        notes = f"/v1/cases/{self.run.case_id}/notes"
        r = await self.api.post(notes, {"text": "Met at the shelter."}, self.cw, sub=self.cw_sub, what="note")
        self._check(r, "note", 201)
        documents = f"/v1/cases/{self.run.case_id}/documents"
        r = await self.api.post(
            documents, {}, self.cw, sub=self.cw_sub, what="document", raw=DOCUMENT, params={"kind": "consent-form"}
        )
        self._check(r, "document", 201)

    async def step(self, step: str, body: dict[str, Any], *, as_: str = "cw") -> None:
        headers, sub = {
            "cw": (self.cw, self.cw_sub),
            "ro": (self.cw_ro, self.cw_ro_sub),
            "sup": (self.sup, self.sup_sub),
        }[as_]
        r = await self.api.post(
            f"/v1/cases/{self.run.case_id}/steps/{step}", body, headers, sub=sub, what=step, case_id=self.run.case_id
        )
        self.case = self._check(r, step, 200)

    async def assign(self, service: str, country: str) -> dict[str, Any]:
        partner = self.fs.partners[country]
        r = await self.api.post(
            f"/v1/cases/{self.run.case_id}/tasks",
            {"service": service, "agency_id": partner.agency},
            self.cw,
            sub=self.cw_sub,
            what=f"assign-{service}",
            case_id=self.run.case_id,
        )
        task = self._check(r, f"assign {service}", 201)
        self.api.stats.delivered_tasks[task["task_id"]] = country
        return task

    async def partner_does(self, task: dict[str, Any], **complete: Any) -> None:
        """The agency learns of the task by its webhook, then accepts and completes it through the API."""
        country = next(c for c, p in self.fs.partners.items() if p.agency == task["agency_id"])
        partner = self.fs.partners[country]
        self.api.stats.delivered_tasks[task["task_id"]] = country
        deadline = time.monotonic() + DELIVERY_DEADLINE
        while task["task_id"] not in partner.stats.received:
            if time.monotonic() > deadline:
                raise JourneyFailed(f"task {task['service']} never reached its agency's webhook")
            await asyncio.sleep(0.1)
        sub = f"partner-{partner.agency}"
        headers = self.fs.stack.auth("partner", sub, agency=partner.agency)
        for action, body in (("accept", {}), ("complete", {"outcome": "done", **complete})):
            r = await self.api.post(
                f"/v1/tasks/{task['task_id']}/{action}",
                body,
                headers,
                sub=sub,
                what=f"{action}-{task['service']}",
                case_id=self.run.case_id,
            )
            self._check(r, f"{action} {task['service']}", 200)

    async def through_protection(self) -> None:
        await self.step("risk-assessment", {"level": "low", "threats": [], "assessed_on": day(1)})
        await self.step("security-guarantee", {"confirmed_on": day(2)})

    async def residence_to_closure(self) -> dict[str, Any]:
        """Residence granted, a one-service reintegration plan, closure approved: 14 commands."""
        await self.open()
        await self.through_protection()
        await self.step("pathway", {"pathway": "residence", "decided_on": day(3)})
        await self.partner_does(await self.assign("legal-assistance", "ES"))
        await self.step(
            "residence-application",
            {"filed_on": day(5), "permit_type": "victim-of-trafficking", "authority_reference": "EXT-1"},
        )
        await self.step("residence-decision", {"decision": "granted", "decided_on": day(40), "valid_until": day(400)})
        await self.step(
            "reintegration-plan",
            {"agreed_on": day(41), "services": [{"service": "medical", "agency_id": self.fs.partners["ES"].agency}]},
        )
        for task in list(self.case["open_tasks"]):
            await self.partner_does(task)
        await self.step("closure", {"reason": "lost-contact"})
        await self.step("approve-closure", {}, as_="sup")
        return {"status": "closed", "stage": "closed", "owner_country": "ES", "headers": self.cw}

    async def return_to_reintegration(self) -> dict[str, Any]:
        """Voluntary return to arrival in the country of origin (hand-over to it): 15 commands."""
        await self.open()
        await self.through_protection()
        await self.step("pathway", {"pathway": "voluntary_return", "decided_on": day(3)})
        await self.partner_does(await self.assign("origin-assessment", "RO"), assessment="safe")
        await self.partner_does(await self.assign("travel-documents", "ES"))
        await self.step(
            "travel-plan",
            {"travel_date": day(10), "route": "MAD-OTP", "escort": True, "receiving_caseworker": self.cw_ro_sub},
        )
        await self.step("departure", {"departed_on": day(10)})
        await self.partner_does(await self.assign("reception", "RO"), arrived_on=day(10))
        return {"status": "active", "stage": "reintegration", "owner_country": "RO", "headers": self.cw_ro}

    async def drive(self) -> None:
        shape = {"residence": self.residence_to_closure, "return": self.return_to_reintegration}[self.run.shape]
        expected = await shape()
        r = await self.api.get(f"/v1/cases/{self.run.case_id}", expected["headers"])
        case = r.json()
        got = {
            "status": case.get("status"),
            "stage": case.get("stage"),
            "owner_country": (case.get("owner") or {}).get("country"),
        }
        want = {k: v for k, v in expected.items() if k != "headers"}
        if r.status_code != 200 or got != want:
            raise JourneyFailed(f"ended as {got} ({r.status_code}), expected {want}")
        self.run.finished = True


# --- A fault run ---------------------------------------------------------------------------------


@dataclass
class Findings:
    name: str
    journeys: list[JourneyRun]
    stats: RunStats
    seconds: float
    steps_accepted: int = 0
    duplicates: list[str] = field(default_factory=list)
    losses: list[str] = field(default_factory=list)
    drifts: list[str] = field(default_factory=list)
    partner_problems: list[str] = field(default_factory=list)
    partner_repeats: int = 0
    fault_log: list[str] = field(default_factory=list)

    @property
    def unfinished(self) -> list[str]:
        return [
            f"journey {j.index} ({j.shape}, case {j.case_id or '-'}) after {j.done[-1:] or ['nothing']}: {j.error}"
            for j in self.journeys
            if not j.finished
        ]

    def summary(self) -> str:
        s = self.stats
        return (
            f"[faults] {self.name}: journeys {len(self.journeys)} "
            f"(finished {sum(j.finished for j in self.journeys)}), steps accepted {self.steps_accepted}, "
            f"duplicates {len(self.duplicates)}, losses {len(self.losses)}, drifts {len(self.drifts)}, "
            f"503s {s.statuses[503]}, 500s {len(s.server_errors)}, connection errors {s.connection_errors}, "
            f"in-progress 409s {s.in_progress}, partner repeats dropped {self.partner_repeats}, "
            f"answers median {statistics.median(s.latencies or [0]):.2f} s max {max(s.latencies or [0]):.1f} s, "
            f"time {self.seconds:.1f} s" + "".join(f"; {x}" for x in self.fault_log)
        )

    def problems(self) -> list[str]:
        s = self.stats
        return [
            *self.unfinished,
            *self.duplicates,
            *self.losses,
            *self.drifts,
            *self.partner_problems,
            *s.server_errors,
            *s.disagreements,
        ]


@dataclass
class FaultContext:
    """What a fault sees: the system, its random moments, the journeys' progress, and its log."""

    fs: FaultStack
    rng: random.Random
    done: asyncio.Event  # set when every journey has finished (or given up)
    stats: RunStats
    log: list[str]
    commands: int  # how many commands the journeys send in all, when nothing goes wrong

    def at(self, low: float, high: float) -> int:
        """A random moment between two fractions of the journeys' work, in accepted commands."""
        return int(self.rng.uniform(low, high) * self.commands)

    async def pause(self, seconds: float) -> bool:
        """Sleep, unless the journeys finish first; True if they have."""
        try:
            await asyncio.wait_for(self.done.wait(), seconds)
        except TimeoutError:
            return False
        return True

    async def progress(self, accepted: int) -> bool:
        """Wait until the journeys have had this many commands accepted; True if they finished first.
        Faults are timed by progress, not by the clock: a loaded machine makes the journeys slower."""
        while self.stats.accepted < accepted:
            if await self.pause(0.1):
                return True
        return False


Fault = Callable[[FaultContext], Awaitable[None]]


async def run_fault(
    fs: FaultStack,
    name: str,
    *,
    journeys: int,
    seed: int,
    fault: Fault | None = None,
    concurrent_share: float = 0.5,
    stagger: float = 2.0,
) -> Findings:
    """Run the journeys concurrently while ``fault`` runs beside them, then check everything."""
    rng = random.Random(seed)
    stats = RunStats()
    api = FaultClient(fs, stats, random.Random(seed + 1), concurrent_share)
    runs = [JourneyRun(i, "residence" if i % 2 == 0 else "return") for i in range(journeys)]
    all_done = asyncio.Event()
    fault_log: list[str] = []
    started = time.monotonic()

    async def one(run: JourneyRun, delay: float) -> None:
        await asyncio.sleep(delay)
        try:
            await FaultJourney(fs, api, run, f"{name}-{run.index}").drive()
        except Exception as exc:  # noqa: BLE001 - reported with the findings
            run.error = f"{type(exc).__name__}: {exc}"

    async def all_journeys() -> None:
        try:
            await asyncio.wait_for(asyncio.gather(*(one(r, rng.uniform(0, stagger)) for r in runs)), RUN_DEADLINE)
        except TimeoutError:
            for r in runs:
                if not r.finished and r.error is None:
                    r.error = f"not finished within {RUN_DEADLINE:.0f} s"
        finally:
            all_done.set()

    tasks = [asyncio.create_task(all_journeys())]
    if fault is not None:
        commands = sum(COMMANDS[r.shape] for r in runs)
        tasks.append(asyncio.create_task(fault(FaultContext(fs, rng, all_done, stats, fault_log, commands))))
    await asyncio.gather(*tasks)
    findings = Findings(name, runs, stats, time.monotonic() - started, fault_log=fault_log)
    await check(fs, findings)
    findings.seconds = time.monotonic() - started
    SUMMARIES.append(findings.summary())
    print(findings.summary())
    return findings


# --- The checks ----------------------------------------------------------------------------------


async def update_ids_in_history(client: Client, case_id: str) -> Counter:
    """Update ids accepted by every run of the case's workflow and of its stage children."""
    counts: Counter = Counter()
    pending, seen = [f"case-{case_id}"], set()
    while pending:
        workflow_id = pending.pop()
        if workflow_id in seen:
            continue
        seen.add(workflow_id)
        run_id: str | None = None
        runs: set[str] = set()
        while True:
            try:
                history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
            except RPCError as exc:
                if exc.status == RPCStatusCode.NOT_FOUND:
                    break
                raise
            previous = ""
            for event in history.events:
                if event.HasField("workflow_execution_started_event_attributes"):
                    previous = event.workflow_execution_started_event_attributes.continued_execution_run_id
                elif event.HasField("workflow_execution_update_accepted_event_attributes"):
                    accepted = event.workflow_execution_update_accepted_event_attributes
                    counts[accepted.accepted_request.meta.update_id] += 1
                elif event.HasField("start_child_workflow_execution_initiated_event_attributes"):
                    pending.append(event.start_child_workflow_execution_initiated_event_attributes.workflow_id)
            runs.add(run_id or "")
            if not previous or previous in runs:
                break
            run_id = previous
    return counts


async def check(fs: FaultStack, f: Findings) -> None:
    stats, client, engine = f.stats, fs.client, fs.stack.engine
    # Every journey's case, and no other: one case per opening, however often it was sent.
    with Session(engine) as session:
        cases = session.exec(select(func.count()).select_from(CaseRecord)).one()
    if cases != len(stats.opened):
        f.duplicates.append(f"{cases} cases in the read model for {len(stats.opened)} openings")

    # Every accepted command in the histories exactly once; no command twice.
    by_case: dict[str, list[Sent]] = {}
    for sent in stats.sent:
        by_case.setdefault(sent.case_id, []).append(sent)
    for case_id, sents in by_case.items():
        counts = await update_ids_in_history(client, case_id)
        for s in sents:
            n = counts[s.update_id]
            if 200 <= s.status < 300:
                f.steps_accepted += 1
                if n == 0:
                    f.losses.append(f"case {case_id}: {s.what} got {s.status} but is not in the history")
            if n > 1:
                f.duplicates.append(f"case {case_id}: {s.what} ({s.status}) is in the history {n} times")
        # The timeline too: one entry per step and per task event (these journeys repeat none).
        with Session(engine) as session:
            rows = session.exec(select(TimelineRecord).where(TimelineRecord.case_id == case_id)).all()
        repeated = [k for k, n in Counter((r.kind, r.name, r.task_id) for r in rows).items() if n > 1]
        if repeated:
            f.duplicates.append(f"case {case_id}: timeline entries repeated: {repeated}")

    # Every task given to a webhook agency reached it, and took effect there once.
    for country, partner in fs.partners.items():
        expected = {t for t, c in stats.delivered_tasks.items() if c == country}
        events = Counter(e["key"] for e in partner.stats.events)
        missing = expected - set(events)
        extra = set(events) - expected
        twice = [k for k, n in events.items() if n > 1]
        f.partner_repeats += sum(n - 1 for n in partner.stats.received.values())
        if missing:
            f.losses.append(f"{len(missing)} tasks never reached {partner.agency} ({country})")
        if extra:
            f.duplicates.append(f"{partner.agency} got {len(extra)} deliveries no journey assigned")
        if twice:
            f.duplicates.append(f"{partner.agency} took {len(twice)} deliveries twice")
        if partner.stats.bad_signatures:
            f.partner_problems.append(f"{partner.agency}: {partner.stats.bad_signatures} bad signatures")
    # No delivery left pending or failed. (One whose answer timed out, retried after the agency had
    # already acted on the task, ends "skipped": nothing left to send.)
    deadline = time.monotonic() + 60
    while True:  # the worker records a delivery just after the agency answers
        with Session(engine) as session:
            unfinished = session.exec(
                select(func.count())
                .select_from(DeliveryRecord)
                .where(DeliveryRecord.status.not_in(("delivered", "skipped")))
            ).one()
        if not unfinished or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    if unfinished:
        f.partner_problems.append(f"{unfinished} deliveries still pending or failed")

    # The case file: one note and one document per case, however often each was sent; every document's
    # blob whole (it decrypts to what was sent) and no blob without its document (nothing half-written).
    with Session(engine) as session:
        notes = Counter(session.exec(select(NoteRecord.case_id)).all())
        documents = session.exec(select(DocumentRecord)).all()
    for case_id in stats.opened:
        if notes[case_id] != 1:
            (f.losses if notes[case_id] == 0 else f.duplicates).append(f"case {case_id}: {notes[case_id]} notes")
    by_case = Counter(d.case_id for d in documents)
    for case_id in stats.opened:
        if by_case[case_id] != 1:
            (f.losses if by_case[case_id] == 0 else f.duplicates).append(
                f"case {case_id}: {by_case[case_id]} documents"
            )
    store = LocalBlobStore(fs.stack.settings.data_dir / "blobs")
    orphans = set(store.keys()) - {d.blob_key for d in documents}
    if orphans:
        f.duplicates.append(f"{len(orphans)} blobs stored without a document")
    for d in documents:
        back = b"".join(open_stream(fs.stack.keyring.case_key(d.case_id), d.document_id, store.get(d.blob_key)))
        if back != DOCUMENT:
            f.losses.append(f"case {d.case_id}: its document does not read back as sent")

    await check_mail(fs, f)

    # The read model equals the workflows' state.
    from reintegration.reconcile import check_case

    for case_id in stats.opened:
        f.drifts += [f"case {case_id}: {d}" for d in await check_case(client, engine, fs.stack.keyring, case_id)]


def second_copies(received: list[Received], kill_times: list[float]) -> tuple[dict[str, float], list[str]]:
    """The Message-IDs the mail server took more than once: those explained by a worker killed while
    the first copy was in flight or not yet recorded (from ``KILLED_WHILE_IN_FLIGHT`` seconds before
    the server took it to ``KILLED_WHILE_RECORDING`` after, and before the second copy), with the
    kill's time from the first copy (negative: before it), and the others: a third copy, or a second
    one with no such kill, is a defect."""
    explained: dict[str, float] = {}
    unexplained: list[str] = []
    for message_id, times in copies_of(received).items():
        if len(times) < 2:
            continue
        first, second = times[:2]
        lags = [
            k - first
            for k in kill_times
            if first - KILLED_WHILE_IN_FLIGHT <= k <= second and k - first <= KILLED_WHILE_RECORDING
        ]
        if len(times) == 2 and lags:
            explained[message_id] = min(lags, key=abs)
        else:
            unexplained.append(message_id)
    return explained, unexplained


def copies_of(received: list[Received]) -> dict[str, list[float]]:
    """When the mail server took each Message-ID, in order."""
    copies: dict[str, list[float]] = {}
    for m in received:
        copies.setdefault(m.message_id, []).append(m.at)
    return {message_id: sorted(times) for message_id, times in copies.items()}


def copies_told(received: list[Received], kill_times: list[float], message_ids: list[str]) -> str:
    """For a failure's message: each of these e-mails' copies and the kills, in seconds from its
    first copy (no Message-ID, no address)."""
    copies = copies_of(received)
    told = []
    for message_id in message_ids:
        times = copies[message_id]
        kills = ", ".join(f"{k - times[0]:+.3f}" for k in kill_times)
        told.append(
            f"copies at {', '.join(f'{t - times[0]:+.3f}' for t in times)} s, "
            + (f"kills at {kills} s" if kills else "no kill")
        )
    return "; ".join(told)


async def check_mail(fs: FaultStack, f: Findings) -> None:
    """Every e-mail asked for went, exactly once; every partner's completion told its caseworker once."""
    engine, mail = fs.stack.engine, fs.mail
    deadline = time.monotonic() + 60
    while True:  # the last e-mails go just after the last commands
        with Session(engine) as session:
            rows = session.exec(select(UserNotificationRecord)).all()
        waiting = [r for r in rows if r.email_status == "pending"]
        if not waiting or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    if waiting:
        f.losses.append(f"{len(waiting)} e-mails never sent")
    failed = [r for r in rows if r.email_status == "failed"]
    if failed:
        f.losses.append(f"{len(failed)} e-mails failed")
    taken = Counter(m.message_id for m in mail.received)
    sent = {f"<{r.notification_id}@faults.test>": r for r in rows if r.email_status == "sent"}
    if not sent:  # every journey's partners complete tasks for caseworkers with an address
        f.losses.append("no e-mail was sent at all")
    if wrong := [
        m for m in mail.received if m.message_id in sent and m.to != f"{sent[m.message_id].user_id}@faults.test"
    ]:
        f.duplicates.append(f"{len(wrong)} e-mails went to someone else than their notification's reader")
    # SMTP has no idempotency key: a worker killed after it wrote the message and before the commit
    # of the record that the e-mail went sends it again, with the same Message-ID (README, "Not
    # promised"). Such a second copy is allowed only when a worker really was killed in that instant
    # (from KILLED_WHILE_IN_FLIGHT seconds before the server took the first copy, the message still in
    # the socket, to KILLED_WHILE_RECORDING after, the commit waiting for SQLite's write lock); any
    # other one is a defect.
    explained, unexplained = second_copies(mail.received, fs.workers.kill_times)
    if unexplained:
        f.duplicates.append(
            f"{len(unexplained)} e-mails taken by the mail server more than once "
            f"({copies_told(mail.received, fs.workers.kill_times, unexplained)})"
        )
    if missing := set(sent) - set(taken):
        f.losses.append(f"{len(missing)} e-mails recorded sent that the mail server never took")
    if unknown := set(taken) - set(sent):
        f.duplicates.append(f"{len(unknown)} e-mails the mail server took that are not recorded sent")
    # A partner's completion of a task tells the case's caseworker: one row per completion event.
    with Session(engine) as session:
        completions = session.exec(
            select(TimelineRecord.event_id).where(TimelineRecord.kind == "task", TimelineRecord.name == "completed")
        ).all()
    told = Counter(r.event_id for r in rows if r.kind == "task.completed")
    if untold := [e for e in completions if told[e] != 1]:
        f.losses.append(f"{len(untold)} task completions not told to their caseworker exactly once")
    at = {m.message_id: m.at for m in mail.received}
    delays = [at[k] - aware(r.created_at).timestamp() for k, r in sent.items() if k in at]
    again = (
        f", {len(explained)} of them twice: the worker killed "
        + ", ".join(f"{lag:+.3f} s" for lag in explained.values())
        + " from the moment the mail server took the first copy, before the record (not promised)"
        if explained
        else ""
    )
    f.fault_log.append(
        f"e-mails {len(sent)} sent once each{again} (median {statistics.median(delays or [0]):.2f} s, "
        f"max {max(delays or [0]):.1f} s from event to mail server)"
    )


def assert_clean(findings: Findings) -> None:
    problems = findings.problems()
    assert not problems, f"{findings.summary()}\n" + "\n".join(problems[:40])
