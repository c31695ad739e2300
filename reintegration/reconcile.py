"""Reconciliation: the read model checked against the workflows that own the cases, and repaired.

The workflows own each case's journey; the read model (``cases``, ``tasks``, ``stage_visits``) is
their projection, written by ``activities/read_model.py``. ``check_case`` asks the workflow that
owns a case for its state (the ``journey`` query) and compares the case's rows with it
(``reintegration.drift``). ``reconcile`` does that a case at a time, throttled, and
with ``repair`` rewrites a drifted case's rows from the workflow's state through ``write_projection``
(idempotent, upsert by version), then checks the case again.

A drift names the case, the table, the row's key and the field, never a value that could carry
personal data or free text. What is not checked: the timeline (the workflow's state doesn't keep its
events) and the outboxes (deliveries, notifications). Of the stage stays (``stage_visits``) the open
one is checked and repaired from the state's stage and when it was entered (``stage_entered_at``);
past stays' times are not in the state, so a stay the read model lacks in the past stays lacking.

A case being changed while it is checked is seen a moment apart by the query and the read: a row a
version behind (or ahead) is looked at again, after short pauses, before it counts as drift.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session, col
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from reintegration.crypto import Keyring
from reintegration.db import (
    CaseRecord,
    PersonRecord,
    StageVisitRecord,
    TaskRecord,
    aware,
)
from reintegration.drift import Drift, Rows, compare, erased, read_rows, settled, shown_drift
from reintegration.projection import count_write, write_projection
from workflows import ids, rules
from workflows.model import CaseStatus, JourneyState, Stage

CASE_WORKFLOW_TYPE = "CaseJourney"
QUERY_TIMEOUT = timedelta(seconds=10)
# How long a stage change may take to settle (the stage's child workflow handing the state back to
# the case workflow), and the pauses before a row a version apart from its workflow counts as drift.
OWNER_DEADLINE = 15.0
SETTLE_PAUSES = (0.1, 0.25, 0.5, 1.0, 2.0)
# A person's data stored for a case that never opened (its opening failed and was never retried):
# older than this, nothing can still be opening it.
ORPHAN_AFTER = timedelta(hours=1)


@dataclass
class Failure:
    """A case that could not be checked or repaired: why, as an error type or our own message."""

    case_id: str
    error: str


@dataclass
class Report:
    """What a run of ``reconcile`` found; the counts are of cases.

    ``drifts`` are as found; ``remaining`` what is still there at the end (after ``repair``, what it
    could not fix; without it, the same as ``drifts``). ``skipped``: erased cases (their key is gone),
    and closed cases whose history Temporal no longer keeps.
    """

    checked: int = 0
    drifted: int = 0
    repaired: int = 0
    failed: int = 0
    skipped: int = 0
    drifts: list[Drift] = field(default_factory=list)
    remaining: list[Drift] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        """No drift remains and every case could be checked."""
        return not self.remaining and not self.failed


class ReconcileError(Exception):
    """A case that can't be checked; the message names no values."""


class NoSuchCase(ReconcileError):
    pass


class StageChanging(ReconcileError):
    pass


class WorkflowMissing(ReconcileError):
    pass


# --- Throttling ---------------------------------------------------------------------------------


class RateLimiter:
    """At most ``rate`` starts a second: each ``wait`` returns at least ``1/rate`` after the last.

    ``sleeps`` keeps every pause it made, so a test can count them without timing anything.
    """

    def __init__(
        self,
        rate: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        if not rate > 0 or rate == float("inf"):
            raise ValueError("the rate must be a positive number of cases per second")
        self.interval = 1.0 / rate
        self._clock, self._sleep = clock, sleep
        self._next: float | None = None
        self.sleeps: list[float] = []

    async def wait(self) -> None:
        now = self._clock()
        if self._next is not None and now < self._next:
            delay = self._next - now
            self.sleeps.append(delay)
            await self._sleep(delay)
            now = self._next
        self._next = now + self.interval


# --- The workflow's side ------------------------------------------------------------------------


async def _query(client: Client, workflow_id: str) -> JourneyState | None:
    """The workflow's state (the latest run; a closed workflow answers while a worker runs), or None."""
    try:
        state: JourneyState = await client.get_workflow_handle(workflow_id).query(
            "journey", result_type=JourneyState, rpc_timeout=QUERY_TIMEOUT
        )
        return state
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return None
        raise


async def workflow_state(client: Client, case_id: str) -> tuple[str, JourneyState]:
    """The id of the workflow that owns the case now, and its state.

    The case workflow holds the journey except during the return, residence and reintegration
    stages, when a child holds it (the case workflow's own copy is then stale). A child whose stage
    has ended is handing the state back: asked again after a pause.
    """
    root = ids.workflow_id(case_id)
    deadline = time.monotonic() + OWNER_DEADLINE
    while True:
        state = await _query(client, root)
        if state is None:
            raise WorkflowMissing("the case's workflow is missing")
        if state.status == CaseStatus.closed or state.stage not in ids.CHILD_STAGES:
            return root, state
        child_id = ids.stage_workflow_id(state)
        child = await _query(client, child_id)
        if child is not None and child.stage == state.stage:
            return child_id, child
        if time.monotonic() > deadline:
            raise StageChanging("the case's stage change did not settle")
        await asyncio.sleep(0.2)


# --- The read model's side ----------------------------------------------------------------------


# --- Checking and repairing a case --------------------------------------------------------------


@dataclass
class _Outcome:
    drifts: list[Drift]
    state: JourneyState | None = None
    rows: Rows | None = None
    skipped: str | None = None


async def _check(client: Client, engine: Engine, keyring: Keyring, case_id: str) -> _Outcome:
    pauses = iter(SETTLE_PAUSES)
    while True:
        if await asyncio.to_thread(erased, engine, case_id):  # nothing of it can be read, its history either
            return _Outcome([], skipped="erased")
        try:
            _, state = await workflow_state(client, case_id)
        except WorkflowMissing:
            rows = await asyncio.to_thread(read_rows, engine, case_id)
            if rows.case is None and not rows.tasks:
                raise NoSuchCase("no such case in the read model or in Temporal") from None
            if rows.case is not None and rows.case["status"] == CaseStatus.closed.value:
                return _Outcome([], rows=rows, skipped="history expired")  # past Temporal's retention
            shown = rows.case["active_workflow_id"] if rows.case is not None else None
            return _Outcome([Drift(case_id, "cases", case_id, "workflow", shown, "missing")], rows=rows)
        rows = await asyncio.to_thread(read_rows, engine, case_id)
        if not settled(state, rows):
            pause = next(pauses, None)
            if pause is not None:
                await asyncio.sleep(pause)
                continue
        return _Outcome(compare(state, rows, keyring), state=state, rows=rows)


async def check_case(client: Client, engine: Engine, keyring: Keyring, case_id: str) -> list[Drift]:
    """The case's drifts: its rows against the state of the workflow that owns it ([] if none).

    An erased case (its key destroyed) and a closed case whose history Temporal no longer keeps
    can't be compared: []. A case neither in the read model nor in Temporal raises ``NoSuchCase``;
    one whose stage change does not settle, ``StageChanging``; Temporal's and the database's own
    errors pass through.
    """
    return (await _check(client, engine, keyring, case_id)).drifts


def _rewrite(engine: Engine, keyring: Keyring, state: JourneyState, found: Rows) -> None:
    """The case's rows rewritten from the state, through the projection's own upsert.

    Before it, two things the upsert by version would leave alone: a row that claims a version the
    workflow never reached (lowered, if it still holds the version seen) and a task row the state
    doesn't know (deleted, likewise). The open stage stay is set from the state
    (``_repair_stage_stays``); timeline and outboxes are not touched.
    """
    with engine.begin() as conn:
        if found.case is not None and found.case["version"] > state.version:
            conn.execute(
                update(CaseRecord)
                .where(col(CaseRecord.case_id) == state.case_id, col(CaseRecord.version) == found.case["version"])
                .values(version=state.version)
            )
        for task_id, row in found.tasks.items():
            task = state.tasks.get(task_id)
            if task is None:
                conn.execute(
                    delete(TaskRecord).where(
                        col(TaskRecord.task_id) == task_id, col(TaskRecord.version) == row["version"]
                    )
                )
            elif row["version"] > task.version:
                conn.execute(
                    update(TaskRecord)
                    .where(col(TaskRecord.task_id) == task_id, col(TaskRecord.version) == row["version"])
                    .values(version=task.version)
                )
        _repair_stage_stays(conn, state)
        count_write(conn)
    write_projection(engine, rules.project(state, []), keyring, all_tasks=True)


# A stay's entry and the state's ``stage_entered_at`` are the same instant (the stage event's time);
# this much apart still names the same entry (a database that stores less precision).
SAME_ENTRY = timedelta(seconds=1)


def _repair_stage_stays(conn: Connection, state: JourneyState) -> None:
    """The case's open stay as the state has it: in ``state.stage`` since ``stage_entered_at`` (none
    once closed). Stays entered after that never happened for the workflow (the read model got ahead
    of it, e.g. a database restored a moment after Temporal's store): deleted. The stay of the
    state's stage entered then is reopened, or made if missing (its id says it was reconciled); any
    other open stay is closed when the state entered its stage."""
    at = state.stage_entered_at
    if at is None:
        return
    at = aware(at)
    stays = conn.execute(
        select(
            col(StageVisitRecord.visit_id),
            col(StageVisitRecord.stage),
            col(StageVisitRecord.entered_at),
            col(StageVisitRecord.left_at),
        ).where(col(StageVisitRecord.case_id) == state.case_id)
    ).all()
    ahead = [s.visit_id for s in stays if aware(s.entered_at) > at + SAME_ENTRY]
    if ahead:
        conn.execute(delete(StageVisitRecord).where(col(StageVisitRecord.visit_id).in_(ahead)))
    kept = [s for s in stays if s.visit_id not in ahead]
    want = None if state.stage == Stage.closed else state.stage.value
    current = next(
        (s for s in kept if s.stage == want and abs(aware(s.entered_at) - at) <= SAME_ENTRY),
        None,
    )
    for stay in kept:
        if stay.left_at is None and (current is None or stay.visit_id != current.visit_id):
            left = max(at, aware(stay.entered_at))
            conn.execute(
                update(StageVisitRecord)
                .where(col(StageVisitRecord.visit_id) == stay.visit_id)
                .values(left_at=left, days=(left - aware(stay.entered_at)).total_seconds() / 86400)
            )
    if want is None:
        return
    if current is not None:
        if current.left_at is not None:
            conn.execute(
                update(StageVisitRecord)
                .where(col(StageVisitRecord.visit_id) == current.visit_id)
                .values(left_at=None, days=None)
            )
    else:
        conn.execute(
            insert(StageVisitRecord).values(
                visit_id=f"reconciled-{state.case_id}-{int(at.timestamp() * 1_000_000)}",
                case_id=state.case_id,
                stage=want,
                entered_at=at,
                country=state.owner_country,
            )
        )


async def repair_case(client: Client, engine: Engine, keyring: Keyring, case_id: str) -> list[Drift]:
    """Rewrite the case's rows from its workflow's state; the drifts that remain after it."""
    outcome = await _check(client, engine, keyring, case_id)
    if not outcome.drifts or outcome.state is None or outcome.rows is None:
        return outcome.drifts
    await asyncio.to_thread(_rewrite, engine, keyring, outcome.state, outcome.rows)
    return (await _check(client, engine, keyring, case_id)).drifts


# --- Many cases ---------------------------------------------------------------------------------


def _read_model_ids(engine: Engine, include_closed: bool) -> tuple[list[str], set[str], set[str]]:
    """The cases to check, in order of opening; every case id; the closed ones."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(col(CaseRecord.case_id), col(CaseRecord.status)).order_by(
                col(CaseRecord.opened_at), col(CaseRecord.case_id)
            )
        ).all()
    closed = {r.case_id for r in rows if r.status == CaseStatus.closed.value}
    return [r.case_id for r in rows if include_closed or r.case_id not in closed], {r.case_id for r in rows}, closed


async def _workflow_ids(client: Client, task_queue: str, include_closed: bool) -> list[str]:
    """Case ids of the case workflows on this task queue (running ones unless ``include_closed``)."""
    query = f"WorkflowType = '{CASE_WORKFLOW_TYPE}' AND TaskQueue = '{task_queue}'"
    if not include_closed:
        query += " AND ExecutionStatus = 'Running'"
    prefix = ids.workflow_id("")
    found = []
    async for execution in client.list_workflows(query):
        if execution.id.startswith(prefix):
            found.append(execution.id[len(prefix) :])
    return found


async def _case_ids(client: Client, engine: Engine, include_closed: bool, task_queue: str | None) -> list[str]:
    found, known, closed = await asyncio.to_thread(_read_model_ids, engine, include_closed)
    if task_queue:
        listed = set(found)
        for case_id in await _workflow_ids(client, task_queue, include_closed):
            # Missing from the read model, or closed there while its workflow runs.
            if case_id not in listed and (case_id not in known or case_id in closed):
                found.append(case_id)
                listed.add(case_id)
    return found


def _unique(case_ids: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(case_ids))


def _error(exc: Exception) -> str:
    """Our own messages name no values; anyone else's (a driver's can quote a row) only by type."""
    return f"{type(exc).__name__}: {exc}" if isinstance(exc, ReconcileError) else type(exc).__name__


async def reconcile(
    client: Client,
    engine: Engine,
    keyring: Keyring,
    *,
    repair: bool = False,
    rate: float = 5.0,
    case_ids: list[str] | None = None,
    include_closed: bool = False,
    task_queue: str | None = None,
) -> Report:
    """Check cases one at a time, at most ``rate`` a second; with ``repair``, fix the drifted ones.

    The cases: ``case_ids``, or else every open case of the read model (every case with
    ``include_closed``), and, when ``task_queue`` is given, the case workflows on it that the read
    model lacks (or shows closed while they run). Without ``task_queue`` Temporal is not listed:
    several deployments can share a namespace, each with its own task queue. A case that can't be
    checked is counted in ``failed`` and the run goes on.
    """
    limiter = RateLimiter(rate)
    report = Report()
    if case_ids is None:
        await asyncio.to_thread(_orphan_persons, engine, keyring, report, repair)
    todo = _unique(case_ids) if case_ids is not None else await _case_ids(client, engine, include_closed, task_queue)
    for case_id in todo:
        await limiter.wait()
        try:
            outcome = await _check(client, engine, keyring, case_id)
        except Exception as exc:  # noqa: BLE001 - counted and reported; the run goes on
            report.failed += 1
            report.failures.append(Failure(case_id, _error(exc)))
            continue
        if outcome.skipped:
            report.skipped += 1
            continue
        report.checked += 1
        if not outcome.drifts:
            continue
        report.drifted += 1
        report.drifts += outcome.drifts
        remaining = outcome.drifts
        if repair and outcome.state is not None and outcome.rows is not None:
            try:
                await asyncio.to_thread(_rewrite, engine, keyring, outcome.state, outcome.rows)
                remaining = (await _check(client, engine, keyring, case_id)).drifts
            except Exception as exc:  # noqa: BLE001
                report.failed += 1
                report.failures.append(Failure(case_id, _error(exc)))
            else:
                if not remaining:
                    report.repaired += 1
        report.remaining += remaining
    return report


def _orphan_persons(engine: Engine, keyring: Keyring, report: Report, repair: bool) -> None:
    """A person row whose case never opened can't be reached by erasure: report it, and with
    ``repair`` delete it and destroy its key (nobody ever saw a case for it)."""
    cutoff = datetime.now(UTC) - ORPHAN_AFTER
    with Session(engine) as session:
        orphans = (
            session.execute(
                select(col(PersonRecord.case_id))
                .outerjoin(CaseRecord, col(CaseRecord.case_id) == col(PersonRecord.case_id))
                .where(col(CaseRecord.case_id).is_(None), col(PersonRecord.created_at) < cutoff)
            )
            .scalars()
            .all()
        )
        for case_id in orphans:
            drift = shown_drift(case_id, "persons", case_id, "row", "orphan", "no case")
            report.drifted += 1
            report.drifts.append(drift)
            if repair:
                session.execute(delete(PersonRecord).where(PersonRecord.case_id == case_id))
                keyring.destroy_case_key(session, case_id)
                session.commit()
                keyring.forget(case_id)
                report.repaired += 1
            else:
                report.remaining.append(drift)


__all__ = [
    "Drift",
    "Failure",
    "NoSuchCase",
    "RateLimiter",
    "ReconcileError",
    "Report",
    "StageChanging",
    "WorkflowMissing",
    "check_case",
    "compare",
    "reconcile",
    "repair_case",
    "workflow_state",
]
