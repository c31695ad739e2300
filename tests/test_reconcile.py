"""``reintegration reconcile``: drift made on purpose in the read model is found, repaired, and stays repaired.

Real journeys through the HTTP API with a real Temporal server; the drift is written straight into
the database, as a bug, a restore or a hand-made fix would leave it.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import delete, insert, select, update
from sqlmodel import Session

from reintegration import cli
from reintegration import reconcile as rec
from reintegration.crypto import FREE_TEXT_KEYS
from reintegration.db import CaseRecord, StageVisitRecord, TaskRecord, TimelineRecord, aware
from reintegration.drift import Drift
from reintegration.projection import write_projection
from reintegration.reconcile import RateLimiter, check_case, reconcile
from tests.conftest import Stack
from tests.journey import Journey, day
from workflows import rules
from workflows.model import Actor, CaseOpening, Role

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def quick_settle(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows a version apart from their workflow are looked at again after shorter pauses."""
    monkeypatch.setattr(rec, "SETTLE_PAUSES", (0.05, 0.1, 0.2, 0.4))


def marker(name: str) -> str:
    return f"Zr{uuid.uuid4().hex[:8]}{name}"


async def case_with_task(stack: Stack, *, note: str = "", **person: str) -> tuple[Journey, str]:
    """Opened with consent (so in protection), with a shelter task whose notes are free text."""
    j = Journey(stack)
    await j.open(**person)
    r = await stack.http.post(
        f"/v1/cases/{j.case_id}/tasks",
        headers=j.cw,
        json={"service": "shelter", "agency_id": "shelter-es", "notes": note},
    )
    assert r.status_code == 201, r.text
    return j, r.json()["task_id"]


def execute(stack: Stack, *statements) -> None:  # type: ignore[no-untyped-def]
    with stack.engine.begin() as conn:
        for statement in statements:
            conn.execute(statement)


def task_row(stack: Stack, task_id: str) -> dict | None:
    with stack.engine.connect() as conn:
        row = conn.execute(select(TaskRecord.__table__).where(TaskRecord.task_id == task_id)).mappings().first()
    return dict(row) if row else None


def seal_note(stack: Stack, case_id: str, text: str) -> str:
    """Sealed as the projection seals a task's notes (with the case's key, for that field)."""
    return stack.keyring.seal_fields(case_id, {"notes": text}, FREE_TEXT_KEYS)["notes"]


def open_note(stack: Stack, case_id: str, sealed: str) -> str:
    return stack.keyring.open_fields(case_id, {"notes": sealed}, FREE_TEXT_KEYS)["notes"]


def altered(sealed: str) -> str:
    """One character of the ciphertext changed, as a bad restore or a hand edit would."""
    at = len(sealed) - 8
    return sealed[:at] + ("A" if sealed[at] != "A" else "B") + sealed[at + 1 :]


def where(drifts: list[Drift]) -> set[tuple[str, str, str]]:
    return {(d.table, d.key, d.field) for d in drifts}


async def check(stack: Stack, case_id: str) -> list[Drift]:
    return await check_case(stack.client, stack.engine, stack.keyring, case_id)


async def test_an_untouched_case_reports_nothing_and_a_changed_one_does(stack):
    j, task_id = await case_with_task(stack, note="Needs a ground-floor room.")
    assert await check(stack, j.case_id) == []
    # Free text is sealed with random nonces: sealed again, the same text is no drift.
    row = task_row(stack, task_id)
    resealed = seal_note(stack, j.case_id, "Needs a ground-floor room.")
    assert resealed != row["notes"]
    execute(stack, update(TaskRecord).where(TaskRecord.task_id == task_id).values(notes=resealed))
    assert await check(stack, j.case_id) == []

    execute(stack, update(CaseRecord).where(CaseRecord.case_id == j.case_id).values(stage="pathway"))
    assert await check(stack, j.case_id) == [Drift(j.case_id, "cases", j.case_id, "stage", "pathway", "protection")]
    await reconcile(stack.client, stack.engine, stack.keyring, repair=True, rate=50, case_ids=[j.case_id])
    assert await check(stack, j.case_id) == []


async def test_cases_owned_by_a_stage_workflow_and_closed_cases_check_clean(stack):
    """The return stage's child workflow holds the state; a closed case's workflow has completed."""
    in_return = Journey(stack)
    await in_return.to_return()
    closed = Journey(stack)
    await closed.open()
    await closed.step("withdraw-consent", {"withdrawn_on": day(1), "notes": "Went home on their own."})
    assert closed.case["status"] == "closed"
    await closed.stack.client.get_workflow_handle(f"case-{closed.case_id}").result()  # completed

    owner, state = await rec.workflow_state(stack.client, in_return.case_id)
    assert owner.startswith(f"case-{in_return.case_id}-return-") and state.stage.value == "return"
    assert await check(stack, in_return.case_id) == []
    assert await check(stack, closed.case_id) == []
    # A run leaves closed cases out unless asked for them (--all); named, they are checked too.
    assert closed.case_id not in await rec._case_ids(stack.client, stack.engine, False, None)
    assert closed.case_id in await rec._case_ids(stack.client, stack.engine, True, None)
    ids = [in_return.case_id, closed.case_id]
    report = await reconcile(stack.client, stack.engine, stack.keyring, rate=50, case_ids=ids)
    assert (report.checked, report.drifted, report.failed, report.clean) == (2, 0, 0, True)

    execute(
        stack,
        update(CaseRecord)
        .where(CaseRecord.case_id == in_return.case_id)
        .values(active_workflow_id=f"case-{in_return.case_id}"),
    )
    execute(stack, update(CaseRecord).where(CaseRecord.case_id == closed.case_id).values(status="active"))
    report = await reconcile(stack.client, stack.engine, stack.keyring, rate=50, case_ids=ids)
    assert report.drifted == 2 and not report.clean
    assert (
        Drift(in_return.case_id, "cases", in_return.case_id, "active_workflow_id", f"case-{in_return.case_id}", owner)
        in report.drifts
    )
    assert Drift(closed.case_id, "cases", closed.case_id, "status", "active", "closed") in report.drifts
    report = await reconcile(stack.client, stack.engine, stack.keyring, repair=True, rate=50, case_ids=ids)
    assert (report.drifted, report.repaired, report.remaining) == (2, 2, [])
    # The command path finds the child workflow again through the repaired row.
    await in_return.deliver("origin-assessment", "origin-office-ro", assessment="safe")
    assert await check(stack, in_return.case_id) == []


async def test_drift_made_on_purpose_is_found_then_repaired_and_stays_repaired(stack, quick_settle):
    note, tampered = marker("note"), marker("tampered")
    a, _ = await case_with_task(stack)  # stage, status and allowed steps changed
    b, b_task = await case_with_task(stack)  # a task row deleted
    c, c_task = await case_with_task(stack)  # a task's status changed
    d, d_task = await case_with_task(stack, note=note)  # a sealed note replaced by another text's
    g, g_task = await case_with_task(stack, note=note)  # a sealed note altered: it no longer decrypts
    e, _ = await case_with_task(stack)  # the case row deleted
    f, _ = await case_with_task(stack)  # untouched
    h, _ = await case_with_task(stack)  # a version the workflow never reached
    i, i_task = await case_with_task(stack)  # a task row the workflow doesn't know
    version = {j.case_id: (await j.get())["version"] for j in (a, h)}
    extra = {**task_row(stack, i_task), "task_id": str(uuid.uuid4())}
    execute(
        stack,
        update(CaseRecord)
        .where(CaseRecord.case_id == a.case_id)
        .values(stage="closed", status="closed", allowed_steps=[]),
        delete(TaskRecord).where(TaskRecord.task_id == b_task),
        update(TaskRecord).where(TaskRecord.task_id == c_task).values(status="completed"),
        update(TaskRecord).where(TaskRecord.task_id == d_task).values(notes=seal_note(stack, d.case_id, tampered)),
        update(TaskRecord).where(TaskRecord.task_id == g_task).values(notes=altered(task_row(stack, g_task)["notes"])),
        delete(CaseRecord).where(CaseRecord.case_id == e.case_id),
        update(CaseRecord).where(CaseRecord.case_id == h.case_id).values(version=999),
        insert(TaskRecord).values(**extra),
    )
    ids = [j.case_id for j in (a, b, c, d, e, f, g, h, i)]

    report = await reconcile(stack.client, stack.engine, stack.keyring, rate=50, case_ids=ids)
    assert (report.checked, report.drifted, report.repaired, report.failed) == (9, 8, 0, 0)
    assert report.remaining == report.drifts and not report.clean
    by_case = {cid: [x for x in report.drifts if x.case_id == cid] for cid in ids}
    assert Drift(a.case_id, "cases", a.case_id, "stage", "closed", "protection") in by_case[a.case_id]
    assert Drift(a.case_id, "cases", a.case_id, "status", "closed", "active") in by_case[a.case_id]
    assert ("cases", a.case_id, "allowed_steps") in where(by_case[a.case_id])
    assert by_case[b.case_id] == [Drift(b.case_id, "tasks", b_task, "row", "missing", "present")]
    assert by_case[c.case_id] == [Drift(c.case_id, "tasks", c_task, "status", "completed", "assigned")]
    assert by_case[d.case_id] == [Drift(d.case_id, "tasks", d_task, "notes", "differs", "differs")]
    assert by_case[e.case_id] == [Drift(e.case_id, "cases", e.case_id, "row", "missing", "present")]
    assert by_case[f.case_id] == []
    assert by_case[g.case_id] == [Drift(g.case_id, "tasks", g_task, "notes", "differs", "differs")]
    assert by_case[h.case_id] == [Drift(h.case_id, "cases", h.case_id, "version", 999, version[h.case_id])]
    assert by_case[i.case_id] == [Drift(i.case_id, "tasks", extra["task_id"], "row", "present", "missing")]
    assert note not in repr(report) and tampered not in repr(report)

    report = await reconcile(stack.client, stack.engine, stack.keyring, repair=True, rate=50, case_ids=ids)
    assert (report.checked, report.drifted, report.repaired, report.failed) == (9, 8, 8, 0)
    assert report.remaining == [] and report.clean
    report = await reconcile(stack.client, stack.engine, stack.keyring, rate=50, case_ids=ids)
    assert (report.checked, report.drifted, report.drifts) == (9, 0, [])

    # What the API shows is the workflows' again, and the journeys go on from there.
    assert (await a.get())["stage"] == "protection" and (await e.get())["case_id"] == e.case_id
    for j, task_id in ((d, d_task), (g, g_task)):
        assert open_note(stack, j.case_id, task_row(stack, task_id)["notes"]) == note
    assert task_row(stack, b_task)["status"] == "assigned" and task_row(stack, extra["task_id"]) is None
    assert task_row(stack, c_task)["status"] == "assigned"
    for j in (a, e, h):
        await j.step("risk-assessment", {"level": "low", "threats": [], "assessed_on": day(1)})
    await b.task_action(b_task, "shelter-es", "accept")
    assert (await h.get())["version"] == version[h.case_id] + 1
    report = await reconcile(stack.client, stack.engine, stack.keyring, rate=50, case_ids=ids)
    assert (report.checked, report.drifted) == (9, 0)


async def test_a_case_without_its_workflow_and_an_unknown_case(stack):
    """A read-model case whose workflow is missing drifts and can't be repaired; an id known nowhere
    fails to check, and the run goes on."""
    now = datetime.now(UTC)
    actor = Actor(sub="cw-rc", role=Role.caseworker)
    case_id = str(uuid.uuid4())
    opening = CaseOpening(
        case_id=case_id,
        reference=f"ES-RC-{uuid.uuid4().hex[:6]}",
        owner_country="ES",
        owner_caseworker="cw-rc",
        origin_country="RO",
        identified_on=now.date(),
        is_minor=False,
        opened_by=actor,
    )
    state = rules.new_journey(opening, now)
    opened = rules.opened_event(state, actor, now, lambda: str(uuid.uuid4()))
    write_projection(stack.engine, rules.project(state, [opened]), stack.keyring)
    good, _ = await case_with_task(stack)
    try:
        missing = Drift(case_id, "cases", case_id, "workflow", f"case-{case_id}", "missing")
        assert await check(stack, case_id) == [missing]
        unknown = str(uuid.uuid4())
        with pytest.raises(rec.NoSuchCase):
            await check(stack, unknown)
        report = await reconcile(
            stack.client, stack.engine, stack.keyring, repair=True, rate=50, case_ids=[case_id, unknown, good.case_id]
        )
        assert (report.checked, report.drifted, report.repaired, report.failed) == (2, 1, 0, 1)
        assert report.remaining == [missing] and report.failures[0].case_id == unknown
        assert "NoSuchCase" in report.failures[0].error
    finally:
        execute(
            stack,
            *(
                delete(t).where(t.case_id == case_id)
                for t in (CaseRecord, TaskRecord, TimelineRecord, StageVisitRecord)
            ),
        )


def _stays(stack, case_id: str) -> list[dict]:
    with stack.engine.connect() as conn:
        return [
            dict(row)
            for row in conn.execute(
                select(StageVisitRecord.__table__)
                .where(StageVisitRecord.case_id == case_id)
                .order_by(StageVisitRecord.entered_at)
            ).mappings()
        ]


async def test_a_lost_open_stage_stay_is_made_again_from_the_state(stack):
    """The open stay (the stage the case is in, since when) is in the state: ``--repair`` makes it again."""
    j, _ = await case_with_task(stack)
    (stay,) = [s for s in _stays(stack, j.case_id) if s["left_at"] is None]
    execute(stack, delete(StageVisitRecord).where(StageVisitRecord.visit_id == stay["visit_id"]))
    lost = Drift(j.case_id, "stage_visits", j.case_id, "open_stage", None, "protection")
    assert await check(stack, j.case_id) == [lost]
    report = await reconcile(stack.client, stack.engine, stack.keyring, repair=True, rate=50, case_ids=[j.case_id])
    assert (report.drifted, report.repaired, report.remaining, report.clean) == (1, 1, [], True)
    (made,) = [s for s in _stays(stack, j.case_id) if s["left_at"] is None]
    assert made["stage"] == "protection" and made["visit_id"].startswith("reconciled-")
    assert abs(aware(made["entered_at"]) - aware(stay["entered_at"])) < timedelta(seconds=1)
    assert made["country"] == stay["country"]
    assert await check(stack, j.case_id) == []


async def test_a_stage_stay_the_read_model_got_ahead_with_is_undone(stack):
    """A database restored a moment after Temporal's store can hold a stage the workflow never
    entered: the stay is deleted, and the stay of the stage the workflow is in is open again."""
    j, _ = await case_with_task(stack)
    (stay,) = [s for s in _stays(stack, j.case_id) if s["left_at"] is None]
    later = aware(stay["entered_at"]) + timedelta(days=3)
    execute(
        stack,
        update(StageVisitRecord).where(StageVisitRecord.visit_id == stay["visit_id"]).values(left_at=later, days=3.0),
        insert(StageVisitRecord).values(
            visit_id="ahead-of-the-workflow",
            case_id=j.case_id,
            stage="voluntary_return",
            entered_at=later,
            country=stay["country"],
        ),
    )
    ahead = Drift(j.case_id, "stage_visits", j.case_id, "open_stage", "voluntary_return", "protection")
    assert await check(stack, j.case_id) == [ahead]
    report = await reconcile(stack.client, stack.engine, stack.keyring, repair=True, rate=50, case_ids=[j.case_id])
    assert (report.repaired, report.remaining) == (1, [])
    stays = _stays(stack, j.case_id)
    assert "ahead-of-the-workflow" not in {s["visit_id"] for s in stays}
    (reopened,) = [s for s in stays if s["left_at"] is None]
    assert reopened["visit_id"] == stay["visit_id"] and reopened["days"] is None
    assert await check(stack, j.case_id) == []


async def test_a_case_missing_from_the_read_model_is_found_by_listing_the_workflows(stack, quick_settle):
    j, _ = await case_with_task(stack)
    execute(stack, delete(CaseRecord).where(CaseRecord.case_id == j.case_id))
    queue = stack.settings.temporal_task_queue
    ids: list[str] = []
    for _ in range(50):  # visibility is eventually consistent
        ids = await rec._case_ids(stack.client, stack.engine, False, queue)
        if j.case_id in ids:
            break
        await asyncio.sleep(0.2)
    assert j.case_id in ids
    assert j.case_id not in await rec._case_ids(stack.client, stack.engine, False, None)  # the read model alone
    report = await reconcile(stack.client, stack.engine, stack.keyring, repair=True, rate=50, case_ids=[j.case_id])
    assert (report.drifted, report.repaired) == (1, 1)
    assert j.case_id in await rec._case_ids(stack.client, stack.engine, False, None)  # back in the read model


# --- The command ----------------------------------------------------------------------------------


def cli_env(stack: Stack) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REINTEGRATION_") and k not in ("DATABASE_URL",)}
    s = stack.settings
    env.update(
        {
            "REINTEGRATION_DATA_DIR": str(s.data_dir),
            "REINTEGRATION_TEMPORAL_ADDRESS": s.temporal_address,
            "REINTEGRATION_TEMPORAL_NAMESPACE": s.temporal_namespace,
            "REINTEGRATION_TEMPORAL_TASK_QUEUE": s.temporal_task_queue,
        }
    )
    if s.database_url:
        env["DATABASE_URL"] = s.database_url
    return env


async def run_cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """The command in a process of its own; awaited, so this process's worker answers its queries."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "reintegration.cli",
        "reconcile",
        *args,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=120)
    return proc.returncode, out.decode()


async def test_the_command_reports_repairs_and_never_prints_free_text(stack):
    m = {name: marker(name) for name in ("first", "second", "note", "tampered")}
    j, task_id = await case_with_task(stack, note=m["note"], first_name=m["first"], second_name=m["second"])
    clean, _ = await case_with_task(stack)
    execute(
        stack,
        update(TaskRecord)
        .where(TaskRecord.task_id == task_id)
        .values(status="declined", notes=seal_note(stack, j.case_id, m["tampered"])),
    )
    env = cli_env(stack)
    cases = ["--case", j.case_id, "--case", clean.case_id]

    code, out = await run_cli(*cases, env=env)
    assert code == 1, out
    assert f"drift {j.case_id} (found): tasks[{task_id}].status, tasks[{task_id}].notes" in out
    assert clean.case_id not in out
    assert "checked 2, drifted 1, repaired 0, failed 0" in out and "drift remains in 1 case" in out

    code, repaired = await run_cli(*cases, "--repair", "--rate", "20", env=env)
    assert code == 0, repaired
    assert f"drift {j.case_id} (repaired)" in repaired and "repaired 1" in repaired
    assert "no drift remains" in repaired

    code, again = await run_cli(*cases, "--all", env=env)
    assert code == 0, again
    assert "checked 2, drifted 0, repaired 0, failed 0, skipped 0; no drift remains" in again
    for text in (out, repaired, again):
        for value in m.values():
            assert value not in text
        assert "declined" not in text and "assigned" not in text  # no values at all, not even safe ones


async def test_bad_usage_exits_2(capsys):
    code, out = await run_cli("--rate", "0")  # as a process, once
    assert code == 2 and "--rate" in out
    for args in (["--rate", "-1"], ["--rate", "nan"], ["--rate", "inf"], ["--case", "../etc"], ["--case", ""]):
        assert cli.main(["reconcile", *args]) == 2, args
    for args in (["--nope"], ["--rate", "fast"], ["--case"]):
        with pytest.raises(SystemExit) as exited:
            cli.main(["reconcile", *args])
        assert exited.value.code == 2, args


# --- Throttling -----------------------------------------------------------------------------------


async def test_the_rate_limiter_spaces_starts_by_one_over_the_rate():
    now = [100.0]

    async def sleep(seconds: float) -> None:
        now[0] += seconds

    limiter = RateLimiter(4, clock=lambda: now[0], sleep=sleep)
    for _ in range(5):
        await limiter.wait()
    assert limiter.sleeps == [0.25] * 4 and now[0] == 101.0
    now[0] += 10  # idle for a while: no catching up in a burst, the next start only waits its turn
    await limiter.wait()
    await limiter.wait()
    assert limiter.sleeps == [0.25] * 5
    for rate in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            RateLimiter(rate)


async def test_reconcile_checks_no_faster_than_its_rate(stack, monkeypatch):
    made: list[RateLimiter] = []

    class Recording(RateLimiter):
        def __init__(self, rate: float, **kw) -> None:  # type: ignore[no-untyped-def]
            super().__init__(rate, **kw)
            made.append(self)

    monkeypatch.setattr(rec, "RateLimiter", Recording)
    ids = [str(uuid.uuid4()) for _ in range(3)]  # known nowhere: each check is quick, and fails
    started = time.monotonic()
    report = await reconcile(stack.client, stack.engine, stack.keyring, rate=2, case_ids=ids)
    assert time.monotonic() - started >= 1.0  # (3 - 1) / 2 seconds at least
    assert report.failed == 3 and len(made) == 1 and made[0].interval == 0.5
    assert len(made[0].sleeps) == 2 and all(0 < s <= 0.5 for s in made[0].sleeps)


async def test_a_person_whose_case_never_opened_is_found_and_with_repair_forgotten(stack):
    """An opening that failed and was never retried leaves the person's row without a case, out
    of erasure's reach: reconcile reports it once it is old enough, and repair deletes it."""
    from datetime import timedelta

    from reintegration.crypto import KeyUnavailable
    from reintegration.db import PersonRecord
    from reintegration.persons import store_person
    from reintegration.reconcile import Report, _orphan_persons

    old, fresh = str(uuid.uuid4()), str(uuid.uuid4())
    with Session(stack.engine) as session:
        for case_id in (old, fresh):
            store_person(session, stack.keyring, case_id=case_id, person={"first_name": "Orphan"})
        session.commit()
        session.get(PersonRecord, old).created_at = datetime.now(UTC) - timedelta(hours=2)
        session.commit()
    found = Report()
    _orphan_persons(stack.engine, stack.keyring, found, repair=False)
    assert [(d.case_id, d.table) for d in found.remaining] == [(old, "persons")]
    fixed = Report()
    _orphan_persons(stack.engine, stack.keyring, fixed, repair=True)
    assert fixed.repaired == 1 and not fixed.remaining
    with Session(stack.engine) as session:
        assert session.get(PersonRecord, old) is None and session.get(PersonRecord, fresh) is not None
    with pytest.raises(KeyUnavailable):
        stack.keyring.case_key(old)
    again = Report()
    _orphan_persons(stack.engine, stack.keyring, again, repair=False)
    assert not again.drifts
