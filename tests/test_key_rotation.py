"""Rotating the key-encryption key (`reintegration keys rotate`): every data key re-wrapped under the
new KEK, after which a process given the new KEK alone reads every case and verifies the audit
chain; a run stopped half way goes on when run again; an erasure or a concurrent run between the
read and the write of a batch always wins; nothing changes when the old KEK is missing or no new
one is configured; and the system serves throughout."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import select
from sqlmodel import Session

from reintegration import audit, cli, keys
from reintegration.codec import EncryptionCodec
from reintegration.crypto import (
    AUDIT_KEY_ID,
    HASH_KEY_ID,
    SYSTEM_KEY_ID,
    DataKeyRecord,
    Keyring,
    LocalKeyEncryptionKey,
    UnknownKeyEncryptionKey,
    Unreadable,
)
from reintegration.db import keyring_from_settings, make_engine
from reintegration.migrate import upgrade_schema
from reintegration.persons import load_person
from reintegration.settings import Settings, get_settings
from tests.conftest import _drop_postgres_database, _postgres_database, running_stack
from tests.journey import Journey, day
from workflows.ids import workflow_id

ROOT = Path(__file__).resolve().parents[1]
ACTOR = SimpleNamespace(sub="cw-1", role="caseworker", agency=None)


def key_file(path: Path) -> Path:
    path.write_text(secrets.token_hex(32) + "\n")
    path.chmod(0o600)
    return path


def rows(engine: Any) -> dict[str, tuple[str, str | None]]:
    """Every data key's (kek_id, wrapped), by key id."""
    with Session(engine) as session:
        found = session.execute(select(DataKeyRecord.key_id, DataKeyRecord.kek_id, DataKeyRecord.wrapped)).all()
    return {key_id: (kek_id, wrapped) for key_id, kek_id, wrapped in found}


class Database:
    """A database with cases' keys, sealed values, the system and hash keys and an audit chain, all
    wrapped by the old KEK; settings for the rotation (the new KEK current, the old one previous)."""

    def __init__(self, tmp_path: Path, url: str, *, cases: int = 12) -> None:
        self.tmp_path = tmp_path
        self.old, self.new = key_file(tmp_path / "kek-old"), key_file(tmp_path / "kek-new")
        self.before = Settings(data_dir=tmp_path, database_url=url, kek_file=self.old)
        self.after = Settings(data_dir=tmp_path, database_url=url, kek_file=self.new, kek_previous_files=[self.old])
        self.engine = make_engine(self.before)
        upgrade_schema(self.engine)
        keyring = keyring_from_settings(self.before)
        self.cases = [f"case-{i:03}" for i in range(cases)]
        self.sealed = {case_id: keyring.seal(case_id, f"a note of {case_id}") for case_id in self.cases}
        self.system = keyring.seal_system("a webhook secret", purpose="webhook:shelter-es")
        self.hash = keyring.keyed_hash("a fingerprint", purpose="idempotency")
        for i in range(5):
            audit.record(self.engine, actor=ACTOR, action="step.consent", request_id=f"r-{i}", keyring=keyring)
        keyring.dispose()
        self.old_id = LocalKeyEncryptionKey.from_file(self.old).kek_id
        self.new_id = LocalKeyEncryptionKey.from_file(self.new).kek_id

    def keyring(self, settings: Settings | None = None) -> Keyring:
        return keyring_from_settings(settings or self.after)

    def only_new(self) -> Keyring:
        """A process that was never given the old KEK: nothing cached."""
        return Keyring(self.engine, LocalKeyEncryptionKey.from_file(self.new))

    def reads_everything(self, keyring: Keyring) -> None:
        for case_id, sealed in self.sealed.items():
            assert keyring.open(case_id, sealed) == f"a note of {case_id}"
        assert keyring.open_system(self.system, purpose="webhook:shelter-es") == "a webhook secret"
        assert keyring.keyed_hash("a fingerprint", purpose="idempotency") == self.hash
        assert audit.verify(self.engine, keyring).ok


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    pg_name, url = None, f"sqlite:///{tmp_path / 'keys.db'}"
    if request.param == "postgres":
        pg_name, url = _postgres_database()
    db = Database(tmp_path, url)
    try:
        yield db
    finally:
        db.engine.dispose()
        if pg_name:
            _drop_postgres_database(pg_name)


@pytest.fixture
def sqlite_database(tmp_path: Path) -> Iterator[Database]:
    db = Database(tmp_path, f"sqlite:///{tmp_path / 'keys.db'}")
    yield db
    db.engine.dispose()


def environment(db: Database, settings: dict[str, str] | None = None) -> dict[str, str]:
    """The command's environment: the new KEK current, the old one previous, unless told otherwise."""
    return {
        "DATABASE_URL": db.after.sqlalchemy_url,
        "REINTEGRATION_DATA_DIR": str(db.tmp_path),
        "REINTEGRATION_KEK_FILE": str(db.new),
        "REINTEGRATION_KEK_PREVIOUS_FILES": f'["{db.old}"]',
        **(settings or {}),
    }


@pytest.fixture
def rotate_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Any:
    """`reintegration keys rotate ARGS` in this process (its settings from the environment, read
    anew for each run): a second or so less than a process of its own for each."""

    def run(db: Database, *args: str, settings: dict[str, str] | None = None) -> SimpleNamespace:
        with monkeypatch.context() as patch:
            for name, value in environment(db, settings).items():
                patch.setenv(name, value)
            get_settings.cache_clear()
            try:
                code = cli.main(["keys", "rotate", *args])
            finally:
                get_settings.cache_clear()
        out = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=out.out, stderr=out.err)

    return run


# --- On a database of its own ---------------------------------------------------------------------


def test_every_key_is_rewrapped_and_a_process_with_the_new_kek_alone_reads_everything(database: Database):
    db = database
    destroyed = db.cases[0]
    keyring = db.keyring()
    destroyed_key = keyring.case_key(destroyed).key_id
    with Session(db.engine) as session:
        assert keyring.destroy_case_key(session, destroyed)
        session.commit()
    before = rows(db.engine)
    assert {kek_id for kek_id, _ in before.values()} == {db.old_id}
    assert {SYSTEM_KEY_ID, HASH_KEY_ID, AUDIT_KEY_ID} <= set(before)
    # Before the rotation, a process given only the new KEK cannot read a key, and says why.
    with pytest.raises(UnknownKeyEncryptionKey, match=f"{db.old_id}, which this process is not given"):
        db.only_new().case_key(db.cases[1])

    report = keys.rotate(db.engine, keyring, batch=5)
    assert (report.rewrapped, report.skipped, report.unreadable, report.remaining) == (len(before) - 1, 0, [], 0)
    assert report.batches == -(-(len(before) - 1) // 5) and not report.stopped
    after = rows(db.engine)
    assert after[destroyed_key] == before[destroyed_key]  # a destroyed key stays destroyed: nothing to wrap
    live = {key_id: row for key_id, row in after.items() if row[1] is not None}
    assert {kek_id for kek_id, _ in live.values()} == {db.new_id}
    assert all(after[key_id][1] != before[key_id][1] for key_id in live)
    # The keys themselves are unchanged: what they sealed, hashed and MAC'd before still holds.
    fresh = db.only_new()
    db.sealed.pop(destroyed)
    db.reads_everything(fresh)
    # And the old KEK alone no longer reads anything.
    with pytest.raises(Unreadable):
        Keyring(db.engine, LocalKeyEncryptionKey.from_file(db.old)).case_key(db.cases[1])
    # Run again: nothing left to do.
    again = keys.rotate(db.engine, keyring)
    assert (again.rewrapped, again.remaining, again.batches) == (0, 0, 0)
    keyring.dispose()


def test_a_rotation_stopped_half_way_goes_on_when_run_again(sqlite_database: Database):
    db = sqlite_database
    total = len(rows(db.engine))
    keyring = db.keyring()
    first = keys.rotate(db.engine, keyring, batch=4, max_batches=1)
    assert (first.rewrapped, first.batches, first.stopped, first.remaining) == (4, 1, True, total - 4)
    # Half way, a serving process (the new KEK current, the old one previous) reads every key,
    # whichever wraps it now.
    assert len({kek_id for kek_id, _ in rows(db.engine).values()}) == 2
    db.reads_everything(db.keyring())
    second = keys.rotate(db.engine, keyring, batch=4, max_batches=2)
    assert (second.rewrapped, second.remaining) == (8, total - 12)
    # The command itself, in a process of its own, goes on from there.
    done = subprocess.run(
        [sys.executable, "-m", "reintegration.cli", "keys", "rotate", "--batch", "3"],
        env={**os.environ, **environment(db)},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert f"keys rotate: re-wrapped {total - 12}, skipped 0" in done.stdout
    assert "re-wrapped 3 of" in done.stdout  # its progress, a line per batch
    assert "every data key is under the current key-encryption key" in done.stdout
    assert subprocess.run(
        [sys.executable, "-m", "reintegration.cli", "keys", "rotate", "--dry-run"],
        env={**os.environ, **environment(db)},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.endswith("dry run: 0 data key(s) to re-wrap; nothing changed\n")
    db.reads_everything(db.only_new())
    keyring.dispose()


class Racing:
    """The old KEK, with something done by another process the moment a given key is unwrapped for
    re-wrapping: between the batch's read and its write."""

    def __init__(self, kek: LocalKeyEncryptionKey, meanwhile: dict[str, Any]) -> None:
        self._kek, self._meanwhile, self.kek_id = kek, meanwhile, kek.kek_id

    def wrap(self, key: bytes, *, context: bytes) -> bytes:
        return self._kek.wrap(key, context=context)

    def unwrap(self, wrapped: bytes, *, context: bytes) -> bytes:
        meanwhile = self._meanwhile.pop(context.decode(), None)
        if meanwhile is not None:
            meanwhile()
        return self._kek.unwrap(wrapped, context=context)

    def unwraps(self, kek_id: str) -> bool:
        return kek_id == self.kek_id


def test_an_erasure_or_another_run_between_read_and_write_wins(database: Database):
    db = database
    serving = db.keyring()  # another process, given the new KEK and the old
    erased, racing_case = db.cases[3], db.cases[5]
    erased_key = serving.case_key(erased).key_id
    racing_key = serving.case_key(racing_case).key_id

    def erase() -> None:
        with Session(db.engine) as session:
            assert serving.destroy_case_key(session, erased)
            session.commit()

    def another_run() -> None:  # another `keys rotate` writes that row first
        keys.rotate(db.engine, serving, batch=1, max_batches=len(rows(db.engine)))

    racing = Racing(LocalKeyEncryptionKey.from_file(db.old), {erased_key: erase, racing_key: another_run})
    rotating = Keyring(db.engine, LocalKeyEncryptionKey.from_file(db.new), previous=[racing])  # type: ignore[list-item]
    report = keys.rotate(db.engine, rotating, batch=100)
    assert racing._meanwhile == {}  # both happened
    # The batch was read before either: the erased row and those the other run re-wrapped first
    # (all of them) are skipped, none written over.
    assert (report.rewrapped, report.skipped) == (0, len(rows(db.engine)))
    assert report.remaining == 0 and not report.unreadable
    after = rows(db.engine)
    assert after[erased_key][1] is None  # destroyed, not brought back by the rotation
    assert after[racing_key][0] == db.new_id
    fresh = db.only_new()
    assert fresh.open(erased, db.sealed.pop(erased)) == "[erased]"
    db.reads_everything(fresh)
    serving.dispose()


def test_keys_written_meanwhile_under_the_old_kek_are_counted_and_taken_by_the_next_run(sqlite_database, rotate_cli):
    db = sqlite_database
    rotating = db.keyring()
    not_restarted = keyring_from_settings(db.before)  # a process still given the old KEK as current
    late = []

    def progress(report: keys.Rotation, total: int) -> None:
        # After the one batch that held every key: "system-1" is the last id in the key order, so a
        # case's key ("dk-...") made now lies behind the rotation, which will not come back to it.
        if report.batches == 1:
            late.append(not_restarted.case_key(f"late-{uuid.uuid4()}", create=True))
            new_case = rotating.case_key(f"new-{uuid.uuid4()}", create=True)  # a restarted process
            assert rows(db.engine)[new_case.key_id][0] == db.new_id

    report = keys.rotate(db.engine, rotating, batch=1000, progress=progress)
    assert report.remaining == 1 and not report.stopped and report.rewrapped == len(db.cases) + 3
    done = rotate_cli(db)
    assert done.returncode == 0 and "re-wrapped 1," in done.stdout, done.stdout + done.stderr
    fresh = db.only_new()
    assert fresh.key(late[0].key_id).key == late[0].key
    rotating.dispose()
    not_restarted.dispose()


# --- Refused, and nothing changed -----------------------------------------------------------------


def test_refused_without_the_old_kek_or_a_new_one_and_nothing_changes(sqlite_database: Database, rotate_cli):
    db = sqlite_database
    before = rows(db.engine)
    # The old KEK not given: the rotation cannot read the keys.
    missing = rotate_cli(db, settings={"REINTEGRATION_KEK_PREVIOUS_FILES": "[]"})
    assert missing.returncode == 2
    assert f"{len(before)} data key(s) are wrapped by key-encryption key {db.old_id}, which is not configured" in (
        missing.stderr
    )
    assert "nothing changed" in missing.stderr
    # No new KEK: the old one given as current and as previous.
    same = rotate_cli(db, settings={"REINTEGRATION_KEK_FILE": str(db.old)})
    assert same.returncode == 2 and "no new KEK is configured" in same.stderr
    # A previous KEK that is not the one that wrapped the keys (another file, another id).
    wrong = key_file(db.tmp_path / "kek-wrong")
    other = rotate_cli(db, settings={"REINTEGRATION_KEK_PREVIOUS_FILES": f'["{wrong}"]'})
    assert other.returncode == 2 and "which is not configured" in other.stderr
    # A previous key file that is not there, and bad numbers.
    gone = rotate_cli(db, settings={"REINTEGRATION_KEK_PREVIOUS_FILES": f'["{db.tmp_path / "nowhere"}"]'})
    assert gone.returncode == 2 and "does not exist" in gone.stderr
    assert rotate_cli(db, "--batch", "0").returncode == 2
    # The dry run counts and checks, and changes nothing either.
    dry = rotate_cli(db, "--dry-run")
    assert dry.returncode == 0 and f"to re-wrap: {len(before)} data key(s) under {db.old_id}" in dry.stdout
    for done in (missing, same, other, gone, dry):
        assert secrets_in(done) == []
    assert rows(db.engine) == before


def test_a_previous_kek_with_the_right_id_that_does_not_unwrap_is_refused_before_any_write(sqlite_database):
    db = sqlite_database
    before = rows(db.engine)
    old = LocalKeyEncryptionKey.from_file(db.old)
    liar = Racing(LocalKeyEncryptionKey(os.urandom(32)), {})
    liar.kek_id = old.kek_id  # a KMS token without decrypt, say: the id matches, the unwrap fails
    keyring = Keyring(db.engine, LocalKeyEncryptionKey.from_file(db.new), previous=[liar])  # type: ignore[list-item]
    with pytest.raises(keys.RotationRefused, match=f"configured for {old.kek_id} does not unwrap"):
        keys.rotate(db.engine, keyring)
    assert rows(db.engine) == before


def secrets_in(done: SimpleNamespace) -> list[str]:
    """Key material in a command's output: the 64 hex digits of a key file, or a wrapped key."""
    text = done.stdout + done.stderr
    return [word for word in text.split() if len(word) >= 40 and all(c in "0123456789abcdef" for c in word)]


# --- While the system serves ----------------------------------------------------------------------


async def test_the_system_serves_while_its_keys_are_rotated(temporal_env, tmp_path: Path):
    data = tmp_path / "data"
    old, new = key_file(tmp_path / "kek-old"), key_file(tmp_path / "kek-new")
    queue = f"journeys-rotation-{uuid.uuid4().hex[:6]}"
    async with running_stack("sqlite", temporal_env, data, kek_file=old, temporal_task_queue=queue) as before:
        journeys = [Journey(before) for _ in range(3)]
        for j in journeys:
            await j.open()
    # Every process restarted with the new KEK as current and the old one as previous.
    async with running_stack(
        "sqlite", temporal_env, data, kek_file=new, kek_previous_files=[old], temporal_task_queue=queue
    ) as stack:
        for j in journeys:
            j.stack, j.http = stack, stack.http
            j.cw, j.supervisor = (
                stack.auth("caseworker", "cw-es-1", countries=["ES"]),
                stack.auth("supervisor", "sup-1"),
            )
        rotating = keyring_from_settings(stack.settings)
        stop = threading.Event()
        batches: list[int] = []

        def slowly(report: keys.Rotation, total: int) -> None:
            batches.append(report.rewrapped)
            stop.wait(0.05)  # a batch at a time, with requests in between

        rotation = asyncio.create_task(asyncio.to_thread(keys.rotate, stack.engine, rotating, batch=1, progress=slowly))
        served = 0
        while not rotation.done() or served < 3:
            j = journeys[served % 3]
            case = await j.get()  # the case's free text, opened with its key
            r = await stack.http.get(f"/v1/cases/{j.case_id}", headers=j.cw, params={"include": "person"})
            assert r.status_code == 200 and r.json()["person"]["first_name"] == "Maria", r.text
            if served < 3:
                await j.step("risk-assessment", {"level": "low", "threats": ["a threat"], "assessed_on": day(1)})
            assert case["case_id"] == j.case_id
            served += 1
        opened = Journey(stack)
        await opened.open()  # a new case: its key wrapped by the new KEK
        report = await rotation
        assert report.remaining == 0 and report.rewrapped >= 3 + 1 and not report.unreadable
        assert {kek_id for kek_id, _ in rows(stack.engine).values()} == {rotating.kek.kek_id}
        assert len(batches) == report.batches and served >= 3
        # A process given the new KEK alone reads every case, its workflow's payloads, and the chain.
        fresh = Keyring(stack.engine, LocalKeyEncryptionKey.from_file(new))
        with Session(stack.engine) as session:
            for j in [*journeys, opened]:
                person = load_person(session, fresh, case_id=j.case_id)
                assert person is not None and person["first_name"] == "Maria"
        history = await stack.client.get_workflow_handle(workflow_id(journeys[0].case_id)).fetch_history()
        started = history.events[0].workflow_execution_started_event_attributes.input.payloads
        assert await EncryptionCodec(fresh).decode(list(started))
        assert audit.verify(stack.engine, fresh).ok
        rotating.dispose()
