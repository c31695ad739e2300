"""The audit trail: every action and every read of personal data recorded, in one HMAC chain that
concurrent appenders don't fork and that `reintegration audit verify` proves intact or names where
it breaks: edited, deleted, rehashed without the key, cut back (against a head noted elsewhere) or
wiped while there are cases."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import delete, func, insert, select, text, update
from sqlalchemy.engine import Engine
from sqlmodel import Session

from reintegration import audit, cli
from reintegration.crypto import (
    AUDIT_KEY_ID,
    DataKeyRecord,
    Keyring,
    LocalKeyEncryptionKey,
)
from reintegration.db import (
    AuditHead,
    AuditRecord,
    CaseRecord,
    aware,
    keyring_from_settings,
    make_engine,
)
from reintegration.migrate import upgrade_schema
from reintegration.settings import Settings
from tests.conftest import Stack, _drop_postgres_database, _postgres_database
from tests.delivery_helpers import simulator, until
from tests.journey import Journey, case_body, day

ROOT = Path(__file__).resolve().parents[1]
MARKERS = ("Maria", "Ionescu", "Madrid", "1998-03-14")


async def trail(stack: Stack, case_id: str, *, limit: int = 500) -> list[dict[str, Any]]:
    """The whole audit trail of a case, page by page, as a supervisor sees it."""
    rows, cursor = [], None
    while True:
        params: dict[str, Any] = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        r = await stack.http.get(f"/v1/cases/{case_id}/audit", params=params, headers=stack.auth("supervisor", "sup-1"))
        assert r.status_code == 200, r.text
        assert not any(marker in r.text for marker in MARKERS)
        rows += r.json()["items"]
        cursor = r.json()["next_cursor"]
        if not cursor:
            return rows


def head(engine: Engine) -> int:
    with Session(engine) as session:
        return session.execute(select(func.coalesce(func.max(AuditHead.seq), 0))).scalar_one()


# --- Over HTTP ------------------------------------------------------------------------------------


async def test_actions_and_reads_of_personal_data_are_recorded_in_order(stack: Stack):
    j = Journey(stack)
    opened = await stack.http.post("/v1/cases", json=case_body(), headers={**j.cw, "Idempotency-Key": "audit-open-1"})
    assert opened.status_code == 201
    j.case_id = opened.json()["case_id"]
    again = await stack.http.post("/v1/cases", json=case_body(), headers={**j.cw, "Idempotency-Key": "audit-open-1"})
    assert again.status_code == 201 and again.json()["case_id"] == j.case_id
    await j.step("risk-assessment", {"level": "low", "threats": [], "assessed_on": day(1)})
    task = await j.assign("shelter", "shelter-es")
    accepted = await j.task_action(task["task_id"], "shelter-es", "accept")
    assert accepted["person"]["first_name"] == "Maria"  # consented to sharing: the shelter sees the name
    shelter = j.partner("shelter-es")
    seen = await stack.http.get(f"/v1/tasks/{task['task_id']}", headers=shelter)
    assert seen.status_code == 200 and seen.json()["person"]
    listed = await stack.http.get("/v1/tasks", headers=shelter, params={"limit": 500})
    assert task["task_id"] in {t["task_id"] for t in listed.json()["items"]}
    await j.get()  # no personal data: not a row
    read = await stack.http.get(f"/v1/cases/{j.case_id}", headers=j.cw, params={"include": "person"})
    assert read.json()["person"]["first_name"] == "Maria"
    stack.token("caseworker", "cw-es-2", countries=["ES"])  # known to the directory
    r = await stack.http.post(f"/v1/cases/{j.case_id}/reassign", json={"caseworker": "cw-es-2"}, headers=j.supervisor)
    assert r.status_code == 200, r.text
    await j.step("departure", {"departed_on": day(2)}, expect=409)  # refused: not a row
    await j.step("withdraw-consent", {"withdrawn_on": day(2)})

    rows = await trail(stack, j.case_id)
    assert [(r["action"], r["replay"]) for r in rows] == [
        ("case.open", False),
        ("case.open", True),
        ("step.risk-assessment", False),
        ("task.assign", False),
        ("task.accept", False),
        ("task.read-person", False),
        ("task.read-person", False),
        ("task.read-person", False),
        ("person.read", False),
        ("case.reassign", False),
        ("step.withdraw-consent", False),
    ]
    by_action = {r["action"]: r for r in rows}
    assert rows[0]["actor"] == {"sub": "cw-es-1", "role": "caseworker", "agency": None} and rows[0]["status"] == 201
    assert by_action["task.accept"]["actor"] == {"sub": "partner-shelter-es", "role": "partner", "agency": "shelter-es"}
    assert all(r["task_id"] == task["task_id"] for r in rows if r["action"].startswith("task."))
    assert [r["detail"]["via"] for r in rows if r["action"] == "task.read-person"] == ["accept", "read", "list"]
    assert by_action["case.reassign"]["detail"] == {"to_caseworker": "cw-es-2"}
    assert by_action["person.read"]["detail"] == {"found": True}
    # One request id per request (the accept and what it showed share one), and the one it answered with.
    assert rows[4]["request_id"] == rows[5]["request_id"] and len({r["request_id"] for r in rows}) == len(rows) - 1
    if "x-request-id" in read.headers:
        assert by_action["person.read"]["request_id"] == read.headers["x-request-id"]
    seqs = [r["seq"] for r in rows]
    assert seqs == sorted(seqs) and all(len(r["hash"]) == 64 for r in rows)
    assert audit.verify(stack.engine, stack.keyring).ok


async def test_replays_of_steps_and_tasks_are_marked(stack: Stack):
    j = Journey(stack)
    await j.open()
    for _ in range(2):
        r = await stack.http.post(
            f"/v1/cases/{j.case_id}/steps/risk-assessment",
            json={"level": "low", "assessed_on": day(1)},
            headers={**j.cw, "Idempotency-Key": "audit-step-1"},
        )
        assert r.status_code == 200
    task = await j.assign("shelter", "shelter-es")
    for _ in range(2):
        r = await stack.http.post(
            f"/v1/tasks/{task['task_id']}/accept",
            json={},
            headers={**j.partner("shelter-es"), "Idempotency-Key": "audit-accept-1"},
        )
        assert r.status_code == 200 and r.json()["person"]
    rows = [(r["action"], r["replay"]) for r in await trail(stack, j.case_id)]
    assert rows == [
        ("case.open", False),
        ("step.risk-assessment", False),
        ("step.risk-assessment", True),
        ("task.assign", False),
        ("task.accept", False),
        ("task.read-person", False),
        ("task.accept", True),
        ("task.read-person", True),
    ]


async def test_the_trail_is_for_supervisors_in_scope_and_pages_oldest_first(stack: Stack):
    j = Journey(stack)
    await j.open()
    for _ in range(4):
        await j.get(include="person")
    path = f"/v1/cases/{j.case_id}/audit"
    for headers in (j.cw, j.partner("shelter-es"), stack.auth("admin", "admin-1")):
        r = await stack.http.get(path, headers=headers)
        assert r.status_code == 403 and r.headers["content-type"] == "application/problem+json"
    assert (await stack.http.get(path)).status_code == 401
    region_ro = stack.auth("supervisor", "sup-ro", countries=["RO"])
    r = await stack.http.get(path, headers=region_ro)
    assert r.status_code == 404 and r.json()["detail"] == "no such case"
    r = await stack.http.get("/v1/cases/no-such-case/audit", headers=j.supervisor)
    assert r.status_code == 404
    region_es = stack.auth("supervisor", "sup-es", countries=["ES"])
    assert (await stack.http.get(path, headers=region_es)).status_code == 200

    whole = await trail(stack, j.case_id)
    assert [r["action"] for r in whole] == ["case.open"] + ["person.read"] * 4
    assert await trail(stack, j.case_id, limit=2) == whole
    for cursor in ("%%%", "LTE=", "OTk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5"):  # garbage, -1, beyond any seq
        r = await stack.http.get(path, headers=j.supervisor, params={"cursor": cursor})
        assert r.status_code == 422, cursor


async def test_agency_changes_are_recorded(stack: Stack):
    admin = stack.auth("admin", "admin-audit")
    before = head(stack.engine)
    r = await stack.http.post(
        "/v1/agencies",
        headers=admin,
        json={
            "agency_id": "audit-shelter-pt",
            "name": "Casa Abrigo",
            "org_type": "NGO",
            "country": "PT",
            "services": ["shelter"],
        },
    )
    assert r.status_code == 201, r.text
    r = await stack.http.patch(
        "/v1/agencies/audit-shelter-pt", headers=admin, json={"services": ["shelter", "housing"]}
    )
    assert r.status_code == 200, r.text
    with Session(stack.engine) as session:
        query = select(AuditRecord).where(AuditRecord.seq > before).order_by(AuditRecord.seq)
        rows = session.execute(query).scalars().all()
    assert [(r.action, r.actor_sub, r.detail) for r in rows] == [
        ("agency.create", "admin-audit", {"agency_id": "audit-shelter-pt"}),
        ("agency.update", "admin-audit", {"agency_id": "audit-shelter-pt", "fields": ["services"]}),
    ]


async def test_no_audit_row_no_personal_data(stack: Stack):
    j = Journey(stack)
    await j.open()
    task = await j.assign("shelter", "shelter-es")
    await j.task_action(task["task_id"], "shelter-es", "accept")
    before = head(stack.engine)
    with stack.engine.begin() as conn:
        conn.execute(text("ALTER TABLE audit_trail RENAME TO audit_trail_away"))
    try:
        r = await stack.http.get(f"/v1/cases/{j.case_id}", headers=j.cw, params={"include": "person"})
        assert r.status_code == 503 and r.headers["content-type"] == "application/problem+json"
        assert r.headers.get("retry-after") and not any(m in r.text for m in MARKERS)
        r = await stack.http.get(f"/v1/tasks/{task['task_id']}", headers=j.partner("shelter-es"))
        assert r.status_code == 503 and not any(m in r.text for m in MARKERS)
        r = await stack.http.get("/v1/exports/htcds", headers=j.supervisor, params={"include": "person"})
        assert r.status_code == 503 and not any(m in r.text for m in MARKERS)
        # What carries no personal data is still served.
        assert (await stack.http.get(f"/v1/cases/{j.case_id}", headers=j.cw)).status_code == 200
    finally:
        with stack.engine.begin() as conn:
            conn.execute(text("ALTER TABLE audit_trail_away RENAME TO audit_trail"))
    assert head(stack.engine) == before
    assert audit.verify(stack.engine, stack.keyring).ok


async def test_concurrent_reads_and_appends_from_several_processes_make_one_chain(stack: Stack):
    j = Journey(stack, caseworker="cw-audit-load")
    await j.open()
    before = head(stack.engine)
    # Several API processes: an engine (a pool of connections) each, several threads each; and more
    # concurrent reads than the API's pool has connections (each must not need a second one).
    engines = [make_engine(stack.settings) for _ in range(3)]
    actor = SimpleNamespace(sub="load-test", role="supervisor", agency=None)
    errors: list[BaseException] = []

    def append(engine: Engine, thread: int) -> None:
        try:
            for i in range(25):
                audit.record(
                    engine,
                    actor=actor,
                    action="person.read",
                    request_id=f"load-{thread}-{i}",
                    case_id=j.case_id,
                    status=200,
                    keyring=stack.keyring,
                )
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=append, args=(engines[n % 3], n)) for n in range(8)]
    for t in threads:
        t.start()
    reads = await asyncio.gather(
        *[stack.http.get(f"/v1/cases/{j.case_id}", headers=j.cw, params={"include": "person"}) for _ in range(40)]
    )
    await asyncio.to_thread(lambda: [t.join() for t in threads])
    for engine in engines:
        engine.dispose()
    assert not errors, errors
    assert all(r.status_code == 200 for r in reads)
    assert head(stack.engine) == before + 8 * 25 + 40
    rows = await trail(stack, j.case_id)
    assert len(rows) == 1 + 8 * 25 + 40
    assert len({r["request_id"] for r in rows if r["actor"]["sub"] == "load-test"}) == 200
    result = audit.verify(stack.engine, stack.keyring)
    assert result.ok, result


# --- The chain itself, on a database of its own ----------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def chain_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Engine, dict[str, str], Keyring]]:
    """A fresh database with ten audit rows, the environment that points the CLI at it (and at the
    same key-encryption key file), and the keyring that keys the chain."""
    pg_name, url = None, f"sqlite:///{tmp_path / 'audit.db'}"
    if request.param == "postgres":
        pg_name, url = _postgres_database()
    settings = Settings(data_dir=tmp_path, database_url=url)
    engine = make_engine(settings)
    upgrade_schema(engine)
    keyring = keyring_from_settings(settings)
    actor = SimpleNamespace(sub="cw-1", role="caseworker", agency=None)
    for i in range(1, 11):
        audit.record(
            engine,
            actor=actor,
            action="person.read" if i % 2 else "step.consent",
            request_id=f"req-{i}",
            case_id=f"case-{i % 3}",
            status=200,
            detail={"i": i},
            keyring=keyring,
        )
    env = {**os.environ, "DATABASE_URL": url, "REINTEGRATION_DATA_DIR": str(tmp_path)}
    try:
        yield engine, env, keyring
    finally:
        keyring.dispose()
        engine.dispose()
        if pg_name:
            _drop_postgres_database(pg_name)


def verify_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "reintegration.cli", "audit", "verify", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def fresh_keyring(engine: Engine, env: dict[str, str]) -> Keyring:
    """The chain's keyring as a new process has it: nothing cached, the key read (and unwrapped) anew."""
    return Keyring(engine, LocalKeyEncryptionKey.from_file(Path(env["REINTEGRATION_DATA_DIR"]) / "kek"))


def printed_head(done: subprocess.CompletedProcess) -> str:
    """The ``SEQ:MAC`` head the CLI's summary line prints."""
    return done.stdout.split(" head ", 1)[1].split()[0]


def row(engine: Engine, seq: int) -> dict[str, Any]:
    with engine.connect() as conn:
        return dict(conn.execute(select(AuditRecord.__table__).where(AuditRecord.seq == seq)).mappings().one())


def put_back(engine: Engine, values: dict[str, Any]) -> None:
    with engine.begin() as conn:
        conn.execute(delete(AuditRecord).where(AuditRecord.seq == values["seq"]))
        conn.execute(insert(AuditRecord).values(**values))


def test_an_untouched_chain_verifies(chain_db):
    engine, env, keyring = chain_db
    result = audit.verify(engine, keyring)
    assert result.ok and result.rows == 10 and result.head_seq == 10
    done = verify_cli(env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("audit trail intact: 10 rows") and len(done.stdout.strip().splitlines()) == 1
    assert printed_head(done) == f"10:{row(engine, 10)['hash']}"


def test_an_edited_row_is_detected(chain_db):
    engine, env, keyring = chain_db
    original = row(engine, 4)
    with engine.begin() as conn:
        conn.execute(update(AuditRecord).where(AuditRecord.seq == 4).values(actor_sub="someone-else"))
    result = audit.verify(engine, keyring)
    assert result.broken_at == 4 and "changed" in result.reason
    done = verify_cli(env)
    assert done.returncode == 1 and "seq 4" in done.stderr
    # Rewriting the edited row's hash to match is caught by the next row.
    edited = {**original, "actor_sub": "someone-else"}
    with engine.begin() as conn:
        conn.execute(
            update(AuditRecord)
            .where(AuditRecord.seq == 4)
            .values(hash=audit.row_mac(SimpleNamespace(**edited), keyring))
        )
    assert audit.verify(engine, keyring).broken_at == 5
    put_back(engine, original)
    assert audit.verify(engine, keyring).ok


def test_a_deleted_row_in_the_middle_is_detected(chain_db):
    engine, env, keyring = chain_db
    original = row(engine, 6)
    with engine.begin() as conn:
        conn.execute(delete(AuditRecord).where(AuditRecord.seq == 6))
    result = audit.verify(engine, keyring)
    assert result.broken_at == 6 and "missing" in result.reason
    done = verify_cli(env)
    assert done.returncode == 1 and "seq 6" in done.stderr
    put_back(engine, original)
    assert audit.verify(engine, keyring).ok


def test_a_deleted_last_row_is_detected_by_the_head(chain_db):
    engine, env, keyring = chain_db
    with engine.begin() as conn:
        conn.execute(delete(AuditRecord).where(AuditRecord.seq == 10))
    result = audit.verify(engine, keyring)
    assert result.broken_at == 10 and "head" in result.reason
    done = verify_cli(env)
    assert done.returncode == 1 and "seq 10" in done.stderr


def test_reordered_and_added_rows_are_detected(chain_db):
    engine, _, keyring = chain_db
    second, third = row(engine, 2), row(engine, 3)
    swapped = {k: v for k, v in third.items() if k not in ("seq", "hash", "prev_hash")}
    with engine.begin() as conn:  # row 3's content moved to row 2's place
        conn.execute(update(AuditRecord).where(AuditRecord.seq == 2).values(**swapped))
    assert audit.verify(engine, keyring).broken_at == 2
    put_back(engine, second)
    assert audit.verify(engine, keyring).ok
    # A row added after the last one, however well it is chained, is not under the head.
    last = row(engine, 10)
    extra = {**last, "seq": 11, "prev_hash": last["hash"], "request_id": "forged"}
    extra["hash"] = audit.row_mac(SimpleNamespace(**extra), keyring)
    with engine.begin() as conn:
        conn.execute(insert(AuditRecord).values(**extra))
    result = audit.verify(engine, keyring)
    assert result.broken_at == 11 and "after the head" in result.reason


def test_a_row_recorded_in_the_callers_transaction_commits_or_rolls_back_with_it(chain_db):
    engine, _, keyring = chain_db
    actor = SimpleNamespace(sub="admin-1", role="admin", agency=None)
    with Session(engine) as session:  # as the erasure does: its change and its row in one transaction
        session.execute(update(AuditHead).values(hash=AuditHead.hash))  # a write of its own first
        audit.record(
            session, actor=actor, action="personal-data.erase", request_id="erase-1", case_id="case-1", keyring=keyring
        )
        session.rollback()
    assert audit.verify(engine, keyring).rows == 10
    with Session(engine) as session:
        audit.record(
            session, actor=actor, action="personal-data.erase", request_id="erase-2", case_id="case-1", keyring=keyring
        )
        session.execute(select(CaseRecord)).all()
        session.commit()
    result = audit.verify(engine, keyring)
    assert result.ok and result.rows == 11
    assert row(engine, 11)["action"] == "personal-data.erase"


def test_an_empty_trail_verifies_only_while_there_are_no_cases(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    env = {**os.environ, "DATABASE_URL": url, "REINTEGRATION_DATA_DIR": str(tmp_path)}
    done = verify_cli(env)  # no tables at all
    assert done.returncode == 0 and "0 rows" in done.stdout, done.stderr
    engine = make_engine(Settings(data_dir=tmp_path, database_url=url))
    try:
        upgrade_schema(engine)
        done = verify_cli(env)
        assert done.returncode == 0 and "0 rows" in done.stdout, done.stderr
        add_case(engine, "case-without-trail")
        done = verify_cli(env)
        assert done.returncode == 1 and "seq 1" in done.stderr and "wiped" in done.stderr
    finally:
        engine.dispose()


def add_case(engine: Engine, case_id: str) -> None:
    now = datetime.now(UTC)
    with Session(engine) as session:
        session.add(
            CaseRecord(
                case_id=case_id,
                reference=case_id[-32:],
                owner_country="ES",
                origin_country="RO",
                destination_country="ES",
                stage="identification",
                status="active",
                opened_at=now,
                updated_at=now,
                active_workflow_id=f"case-{case_id}",
            )
        )
        session.commit()


def rehash(engine: Engine, mac: Any, *, start: int) -> None:
    """What someone with write access to the database does after editing row ``start``: recompute
    every MAC from there on, the prev_hash links and the head, with the MAC function ``mac``."""
    with engine.begin() as conn:
        prev = conn.execute(select(AuditRecord.hash).where(AuditRecord.seq == start - 1)).scalar() or audit.GENESIS
        rows = (
            conn.execute(select(AuditRecord.__table__).where(AuditRecord.seq >= start).order_by(AuditRecord.seq))
            .mappings()
            .all()
        )
        for values in rows:
            values = {**values, "prev_hash": prev}
            prev = mac(audit.canonical(SimpleNamespace(**values)).encode())
            conn.execute(
                update(AuditRecord)
                .where(AuditRecord.seq == values["seq"])
                .values(prev_hash=values["prev_hash"], hash=prev)
            )
        conn.execute(update(AuditHead).values(hash=prev))


def test_a_chain_rehashed_without_the_key_is_detected(chain_db):
    engine, env, keyring = chain_db
    with engine.begin() as conn:
        conn.execute(update(AuditRecord).where(AuditRecord.seq == 4).values(actor_sub="someone-else"))
    # The chain recomputed as an unkeyed chain would be (SHA-256), or under a key of the forger's own:
    # consistent links and head, but not the audit key's MACs.
    for forged in (
        lambda data: hashlib.sha256(data).hexdigest(),
        lambda data: hmac.new(os.urandom(32), data, hashlib.sha256).hexdigest(),
    ):
        rehash(engine, forged, start=4)
        result = audit.verify(engine, fresh_keyring(engine, env))
        assert result.broken_at == 4 and "MAC" in result.reason, result
        done = verify_cli(env)
        assert done.returncode == 1 and "seq 4" in done.stderr
    # With the real key it would pass: it is the key, which the database does not hold in clear, that matters.
    rehash(engine, keyring.audit_mac, start=4)
    assert audit.verify(engine, keyring).ok

    # Nor can the forger put a key of their own in the database: one wrapped by another KEK does not
    # unwrap, and with the key gone nothing can be checked.
    forger = Keyring(engine, LocalKeyEncryptionKey(os.urandom(32)))
    with engine.begin() as conn:
        conn.execute(delete(DataKeyRecord.__table__).where(DataKeyRecord.key_id == AUDIT_KEY_ID))
    rehash(engine, forger.audit_mac, start=1)  # makes the forger's own audit key, wrapped by their KEK
    result = audit.verify(engine, fresh_keyring(engine, env))
    assert result.broken_at == 1 and "cannot be unwrapped" in result.reason, result
    with engine.begin() as conn:
        conn.execute(delete(DataKeyRecord.__table__).where(DataKeyRecord.key_id == AUDIT_KEY_ID))
    result = audit.verify(engine, fresh_keyring(engine, env))
    assert result.broken_at == 1 and "key is missing" in result.reason, result
    done = verify_cli(env)
    assert done.returncode == 1 and "seq 1" in done.stderr


def test_a_tail_cut_with_the_head_moved_back_is_detected_against_the_noted_head(chain_db, capsys):
    engine, env, keyring = chain_db
    noted = printed_head(verify_cli(env))  # "10:<mac>", as an operator notes it in the operations log
    earlier = f"5:{row(engine, 5)['hash']}"
    assert verify_cli(env, "--expect-head", noted).returncode == 0
    # Rows 8-10 deleted and the head moved back to row 7: consistent, and the database alone can't tell.
    with engine.begin() as conn:
        conn.execute(delete(AuditRecord).where(AuditRecord.seq > 7))
        conn.execute(update(AuditHead).values(seq=7, hash=row(engine, 7)["hash"]))
    assert audit.verify(engine, keyring).ok
    done = verify_cli(env, "--expect-head", noted)
    assert done.returncode == 1 and "seq 10" in done.stderr and "cut back" in done.stderr, done.stderr
    result = audit.verify(engine, keyring, expect_head=audit.parse_head(noted))
    assert result.broken_at == 10 and result.rows == 7
    # New rows appended since reach seq 10 again, but not with the noted MAC.
    actor = SimpleNamespace(sub="cw-2", role="caseworker", agency=None)
    for i in range(3):
        audit.record(
            engine, actor=actor, action="person.read", request_id=f"after-{i}", case_id="case-1", keyring=keyring
        )
    done = verify_cli(env, "--expect-head", noted)
    assert done.returncode == 1 and "seq 10" in done.stderr and "MAC differs" in done.stderr, done.stderr
    # A head noted before the cut still holds.
    done = verify_cli(env, "--expect-head", earlier)
    assert done.returncode == 0 and "holds the expected head 5" in done.stdout, done.stderr
    for bad in ("10", "x:abc", f"0:{audit.GENESIS}", "10:" + "g" * 64):  # refused before any database call
        assert cli.main(["audit", "verify", "--expect-head", bad]) == 2, bad
        assert "SEQ:MAC" in capsys.readouterr().err


def test_wiped_tables_while_cases_exist_are_detected(chain_db):
    engine, env, keyring = chain_db
    add_case(engine, "case-1")
    assert audit.verify(engine, keyring).ok
    noted = printed_head(verify_cli(env))
    with engine.begin() as conn:  # both tables emptied
        conn.execute(delete(AuditRecord))
        conn.execute(delete(AuditHead))
    result = audit.verify(engine, keyring)
    assert result.broken_at == 1 and "wiped" in result.reason, result
    done = verify_cli(env)
    assert done.returncode == 1 and "seq 1" in done.stderr and "wiped" in done.stderr
    with engine.begin() as conn:  # or dropped
        conn.execute(text("DROP TABLE audit_trail"))
        conn.execute(text("DROP TABLE audit_head"))
    done = verify_cli(env)
    assert done.returncode == 1 and "wiped" in done.stderr
    with engine.begin() as conn:  # the cases gone too: only the head noted elsewhere tells
        conn.execute(delete(CaseRecord))
    assert verify_cli(env).returncode == 0
    done = verify_cli(env, "--expect-head", noted)
    assert done.returncode == 1 and "seq 10" in done.stderr


def test_a_head_missing_under_rows_is_detected(chain_db):
    engine, _, keyring = chain_db
    with engine.begin() as conn:
        conn.execute(delete(AuditHead))
    result = audit.verify(engine, keyring)
    assert result.broken_at == 1 and "head is missing" in result.reason


# --- Deliveries to partner agencies ---------------------------------------------------------------


async def test_a_delivery_that_carries_the_persons_fields_is_audited_before_it_is_sent(stack: Stack):
    async with simulator(stack, services=["shelter"], fail_first=1, act_after=None) as (agency, stats):
        j = Journey(stack)
        await j.open()
        task = await j.assign("shelter", agency)
        await until(lambda: task["task_id"] in stats.received, what="the delivery")
        [event] = [e for e in stats.events if e["key"] == task["task_id"]]
        assert event["had_person"]  # consented: the fields went out (the simulator keeps none of them)
        rows = await until(
            lambda: (
                [r for r in audit_rows(stack, j.case_id) if r.action == "task.deliver-person"]
                and audit_rows(stack, j.case_id)
            ),
            what="the delivery audited",
        )
    delivered = [r for r in rows if r.action == "task.deliver-person"]
    # The first attempt was answered 503 and retried: each attempt put the fields on the wire, each a row.
    assert [r.detail["attempt"] for r in delivered] == [1, 2]
    for r in delivered:
        assert (r.actor_sub, r.actor_role, r.actor_agency) == ("system:delivery", "system", agency)
        assert (r.case_id, r.task_id, r.request_id) == (j.case_id, task["task_id"], task["task_id"])
        assert r.detail["delivery_id"] == task["task_id"]
        assert r.detail["fields"] == sorted(stack.settings.partner_fields["shelter"])
        assert r.detail["fields"] and not any(m in str(r.detail) for m in MARKERS)
    # Written before the send: before the agency first had the message.
    assert aware(delivered[0].at).timestamp() <= stats.received_at[task["task_id"]]
    assert audit.verify(stack.engine, stack.keyring).ok


async def test_a_delivery_without_the_persons_fields_is_not_audited(stack: Stack):
    async with simulator(stack, services=["shelter"], act_after=None) as (agency, stats):
        j = Journey(stack)  # no consent to data sharing: the task goes out without the person
        await j.open(consent=False)
        await j.step("consent", {"assistance": True, "data_sharing": False, "given_on": day(0)})
        task = await j.assign("shelter", agency)
        await until(lambda: task["task_id"] in stats.received, what="the delivery")
        [event] = [e for e in stats.events if e["key"] == task["task_id"]]
        assert not event["had_person"]
        shared = Journey(stack)  # consent given: one row for the task, none for its cancellation
        await shared.open()
        shared_task = await shared.assign("shelter", agency)
        await until(lambda: shared_task["task_id"] in stats.received, what="the delivery")
        await shared.step("withdraw-consent", {"withdrawn_on": day(1)})
        await until(lambda: f"{shared_task['task_id']}.cancel.1" in stats.received, what="the cancellation")
    assert "task.deliver-person" not in [r.action for r in audit_rows(stack, j.case_id)]
    delivered = [r for r in audit_rows(stack, shared.case_id) if r.action == "task.deliver-person"]
    assert [r.detail["delivery_id"] for r in delivered] == [shared_task["task_id"]]


def audit_rows(stack: Stack, case_id: str) -> list[AuditRecord]:
    with Session(stack.engine) as session:
        return list(
            session.execute(
                select(AuditRecord).where(AuditRecord.case_id == case_id).order_by(AuditRecord.seq)
            ).scalars()
        )
