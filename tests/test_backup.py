"""Backup and restore (issue 16): a backup taken while the stack runs, restored into an empty folder
on a new Temporal server, gives back every case with its data readable, a read model that
``reconcile`` finds in step with the workflows (after ``--repair`` where a step was taken between
the two stores' copies), an audit chain that verifies with the backup's head, and cases that go on.
A damaged backup, a folder that is not empty and another key-encryption key are refused, changing
nothing; and on PostgreSQL the application database goes through pg_dump and pg_restore."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import inspect
from sqlmodel import Session
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from reintegration import anchor, audit, cli
from reintegration.backup import (
    Failed,
    Refused,
    _move_in,
    _move_no_replace,
    backup_command,
    read_manifest,
    restore_backup,
    restore_command,
    take_backup,
)
from reintegration.db import CaseRecord, keyring_from_settings, make_engine
from reintegration.migrate import upgrade_schema
from reintegration.settings import Settings, get_settings
from reintegration.temporal import temporal_cli
from tests.conftest import NAMESPACE, Stack, _drop_postgres_database, _postgres_database, running_stack
from tests.journey import Journey, day

ROOT = Path(__file__).resolve().parents[1]
PDF = b"%PDF-1.7\n% a consent form, kept through a backup\n" + os.urandom(5000) + b"\n%%EOF\n"


@asynccontextmanager
async def temporal_on(store: Path) -> AsyncIterator[WorkflowEnvironment]:
    """A Temporal dev server persisted to ``store``, as `reintegration run` starts it."""
    env = await WorkflowEnvironment.start_local(
        namespace=NAMESPACE,
        data_converter=pydantic_data_converter,
        dev_server_existing_path=str(temporal_cli()),
        dev_server_database_filename=str(store),
        dev_server_extra_args=["--sqlite-pragma", "journal_mode=wal", "--sqlite-pragma", "synchronous=normal"],
    )
    try:
        yield env
    finally:
        await env.shutdown()


def cli_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REINTEGRATION_") and k != "DATABASE_URL"}
    env.update(
        {
            "REINTEGRATION_DATA_DIR": str(settings.data_dir),
            "REINTEGRATION_TEMPORAL_ADDRESS": settings.temporal_address,
            "REINTEGRATION_TEMPORAL_NAMESPACE": settings.temporal_namespace,
            "REINTEGRATION_TEMPORAL_TASK_QUEUE": settings.temporal_task_queue,
        }
    )
    return env


async def run_cli(*args: str, env: dict[str, str]) -> tuple[int, str]:
    """The command in a process of its own; awaited, so this process's worker answers its queries."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "reintegration.cli",
        *args,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


def version_of(stack: Stack, case_id: str) -> int:
    """The version of the case the read model shows."""
    with Session(stack.engine) as session:
        case = session.get(CaseRecord, case_id)
        assert case is not None
        return case.version


async def until(condition: Callable[[], bool], timeout: float = 30) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "the condition did not come true"
        await asyncio.sleep(0.05)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


async def test_a_backup_taken_while_the_stack_runs_restores_into_an_empty_folder(tmp_path, capsys):
    first, restored, backup = tmp_path / "data", tmp_path / "restored", tmp_path / "backup"
    first.mkdir(mode=0o700)
    queue = f"journeys-backup-{uuid.uuid4().hex[:6]}"
    name = f"Zb{uuid.uuid4().hex[:8]}"
    reads: list[int] = []

    async with (
        temporal_on(first / "temporal.db") as env,
        running_stack("sqlite", env, first, temporal_task_queue=queue) as stack,
    ):
        ahead = Journey(stack)  # at the pathway, its next step a choice
        await ahead.open(first_name=name)
        await ahead.through_protection()
        between = Journey(stack)  # takes a step during the backup, between the two stores' moments
        await between.open()
        documented = Journey(stack)
        await documented.open()
        r = await stack.http.post(
            f"/v1/cases/{documented.case_id}/documents",
            params={"kind": "consent-form"},
            content=PDF,
            headers=documented.cw,
        )
        assert r.status_code == 201, r.text
        document_id = r.json()["document_id"]

        async def keep_reading() -> None:
            # The workspace keeps being used while the backup is taken: each read is audited.
            while True:
                got = await stack.http.get(f"/v1/cases/{ahead.case_id}", headers=ahead.cw, params={"include": "person"})
                reads.append(got.status_code)
                await asyncio.sleep(0.01)

        loop = asyncio.get_running_loop()
        parts: list[str] = []

        def on_part(part: str) -> None:
            parts.append(part)
            if part == "temporal":  # the worst moment for a step: Temporal's moment is fixed, the database's not yet
                seen = version_of(stack, between.case_id)
                step = between.step("risk-assessment", {"level": "low", "threats": [], "assessed_on": day(1)})
                asyncio.run_coroutine_threadsafe(step, loop).result(timeout=60)
                written = until(lambda: version_of(stack, between.case_id) > seen)  # in the read model
                asyncio.run_coroutine_threadsafe(written, loop).result(timeout=60)

        reader = asyncio.create_task(keep_reading())
        try:
            manifest = await asyncio.to_thread(take_backup, stack.settings, backup, on_part=on_part)
        finally:
            reader.cancel()
        assert parts == ["temporal", "database", "blobs"]
        assert reads and set(reads) == {200}  # served all along
        # The command says what is in a backup and what is kept apart; another backup into the same
        # folder is refused, and the first is left as it was.
        capsys.readouterr()
        assert backup_command(stack.settings, tmp_path / "with-keys", include_keys=True) == 0
        said = capsys.readouterr().out
        assert "KEYS INCLUDED" in said and f"audit head {read_manifest(tmp_path / 'with-keys').audit_head}" in said
        before = snapshot(backup)
        assert backup_command(stack.settings, backup) == 1
        assert "is not an empty folder" in capsys.readouterr().err
        assert snapshot(backup) == before
        kek = stack.settings.kek_path.read_bytes()

    assert [f.path for f in manifest.files if f.role != "blob"] == ["temporal.db", "reintegration.db"]
    assert manifest.documents == 1 and [f.role for f in manifest.files].count("blob") == 1
    assert manifest.audit_head is not None and manifest.kek_ids and not manifest.keys_included
    assert read_manifest(backup) == manifest
    # Never the keys, and the person's name nowhere in clear: everything identifying is encrypted.
    files = snapshot(backup)
    assert not any(body == kek or name.encode() in body or b"Maria" in body for body in files.values())
    assert all(os.stat(backup / path).st_mode & 0o077 == 0 for path in files)

    # Refused, changing nothing: a folder that is not empty, a damaged backup, another KEK, no KEK,
    # another task queue.
    restored.mkdir(mode=0o700)
    shutil.copyfile(first / "kek", restored / "kek")  # the operator's copy, kept apart from the backup
    settings = Settings(data_dir=restored, temporal_task_queue=queue)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "reintegration.db").write_bytes(b"someone else's")
    with pytest.raises(Refused, match="not empty"):
        restore_backup(Settings(data_dir=busy, kek_file=first / "kek", temporal_task_queue=queue), backup)
    assert snapshot(busy) == {"reintegration.db": b"someone else's"}
    damaged = tmp_path / "damaged"
    shutil.copytree(backup, damaged)
    store = bytearray((damaged / "temporal.db").read_bytes())
    store[len(store) // 2] ^= 0x01
    (damaged / "temporal.db").write_bytes(bytes(store))
    with pytest.raises(Refused, match="temporal.db does not match its checksum"):
        restore_backup(settings, damaged)
    other_kek = tmp_path / "other-kek"
    other_kek.write_text(os.urandom(32).hex() + "\n")
    with pytest.raises(Refused, match="not the one that wrapped"):
        restore_backup(Settings(data_dir=tmp_path / "new", kek_file=other_kek, temporal_task_queue=queue), backup)
    with pytest.raises(Refused, match="no key-encryption key"):
        restore_backup(Settings(data_dir=tmp_path / "new", temporal_task_queue=queue), backup)
    with pytest.raises(Refused, match=f"on task queue {queue}; the settings name reintegration and case-journeys"):
        restore_backup(Settings(data_dir=tmp_path / "new", kek_file=first / "kek"), backup)  # no worker there
    assert not (tmp_path / "new").exists()
    assert snapshot(restored) == {"kek": kek}
    # A backup taken with --include-keys brings its key file along, where none is yet.
    keys_restored = restore_backup(
        Settings(data_dir=tmp_path / "from-keys", temporal_task_queue=queue), tmp_path / "with-keys"
    )
    assert (tmp_path / "from-keys" / "kek").read_bytes() == kek and keys_restored.manifest.keys_included
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no staging left

    code, out = await run_cli("restore", str(backup), env=cli_env(settings))
    assert code == 0, out
    assert f"--expect-head {manifest.audit_head}" in out and name not in out
    assert {"temporal.db", "reintegration.db", "blobs", "kek"} <= {p.name for p in restored.iterdir()}

    async with (
        temporal_on(restored / "temporal.db") as env,
        running_stack("sqlite", env, restored, temporal_task_queue=queue) as stack,
    ):
        env_cli = cli_env(stack.settings)
        again = Journey(stack)
        again.case_id = ahead.case_id
        assert (await again.get(include="person"))["person"]["first_name"] == name  # the vault opens
        r = await stack.http.get(f"/v1/documents/{document_id}/content", headers=again.supervisor)
        assert r.status_code == 200 and r.content == PDF

        # The step taken between the copies is in the read model, not in the workflow: drift, which
        # the workflows settle; then none.
        code, out = await run_cli("reconcile", "--rate", "50", env=env_cli)
        assert code == 1, out
        assert f"drift {between.case_id} (found)" in out and "checked 3, drifted 1" in out, out
        code, out = await run_cli("reconcile", "--repair", "--rate", "50", env=env_cli)
        assert code == 0 and f"drift {between.case_id} (repaired)" in out, out
        code, out = await run_cli("reconcile", "--rate", "50", env=env_cli)
        assert code == 0 and "checked 3, drifted 0" in out and "no drift remains" in out, out
        code, out = await run_cli("audit", "verify", "--expect-head", manifest.audit_head, env=env_cli)
        assert code == 0 and f"holds the expected head {manifest.audit_head.split(':')[0]}" in out, out

        # The restored cases go on: the one whose step was lost takes it again, the other its next.
        resumed = Journey(stack)
        resumed.case_id = between.case_id
        assert (await resumed.get())["version"] < between.case["version"]
        await resumed.step("risk-assessment", {"level": "low", "threats": [], "assessed_on": day(1)})
        await resumed.step("security-guarantee", {"confirmed_on": day(2)})
        assert resumed.case["stage"] == "pathway"
        await again.step("pathway", {"pathway": "residence", "decided_on": day(3)})
        assert again.case["stage"] == "residence"


def test_a_restore_reads_only_what_a_backup_holds(tmp_path):
    """A folder without a manifest (a backup that stopped half-way), a manifest that is not one, and a
    manifest naming a file outside the backup's own are all refused before anything is read or written."""
    target = Settings(data_dir=tmp_path / "data", kek_file=tmp_path / "kek")
    with pytest.raises(Refused, match="holds no manifest.json"):
        restore_backup(target, tmp_path)
    entry = {"path": "reintegration.db", "role": "database", "bytes": 0, "sha256": "0" * 64}
    manifest = {
        "format": 1,
        "created_at": "2025-01-01T00:00:00Z",
        "database": "sqlite",
        "schema_revision": None,
        "audit_head": None,
        "kek_ids": [],
        "temporal": "external",
        "temporal_namespace": "reintegration",
        "temporal_task_queue": "case-journeys",
        "blob_store": "local",
        "documents": 0,
        "documents_without_blob": 0,
        "keys_included": False,
        "files": [entry],
    }
    for files, refused in (
        ([entry, {**entry, "path": "blobs/../../kek", "role": "blob"}], "lists files a backup does not hold"),
        ([{**entry, "path": "../reintegration.db"}], "lists files a backup does not hold"),
        ([entry, entry], "lists files a backup does not hold"),
        ([], "does not list the stores it names"),
        ([{**entry, "sha256": "not hex"}], "not a manifest this version reads"),
    ):
        (tmp_path / "manifest.json").write_text(json.dumps({**manifest, "files": files}))
        with pytest.raises(Refused, match=refused):
            restore_backup(target, tmp_path)
    assert not (tmp_path / "data").exists()


@pytest.mark.postgres
async def test_on_postgresql_the_database_goes_through_pg_dump_and_pg_restore(temporal_env, tmp_path):
    if shutil.which("pg_dump") is None or shutil.which("pg_restore") is None:
        pytest.skip("PostgreSQL's client tools are not on PATH")
    backup = tmp_path / "backup"
    async with running_stack("postgres", temporal_env, tmp_path / "data") as stack:
        j = Journey(stack)
        await j.open()
        await j.step("risk-assessment", {"level": "low", "threats": [], "assessed_on": day(1)})
        manifest = await asyncio.to_thread(take_backup, stack.settings, backup)
        kek_file = stack.settings.kek_path
        assert manifest.database == "postgresql" and manifest.temporal == "external"
        assert [f.path for f in manifest.files] == ["reintegration.pgdump"]
        assert manifest.audit_head is not None and manifest.schema_revision is not None

        # Into a database that is not empty (the stack's own): refused, nothing changed.
        with pytest.raises(Refused, match="is not empty"):
            restore_backup(
                stack.settings.model_copy(update={"data_dir": tmp_path / "new", "kek_file": kek_file}), backup
            )
        name, url = _postgres_database()
        try:
            target = stack.settings.model_copy(
                update={"data_dir": tmp_path / "restored", "database_url": url, "kek_file": kek_file}
            )
            restored = await asyncio.to_thread(restore_backup, target, backup)
            assert "postgresql://postgres@127.0.0.1:5432/" in restored.database
            assert any("Temporal's store is not in this backup" in note for note in restored.notes)
            engine, keyring = make_engine(target), keyring_from_settings(target)
            try:
                with Session(engine) as session:
                    case = session.get(CaseRecord, j.case_id)
                    assert case is not None and case.stage == "protection"
                result = audit.verify(engine, keyring, expect_head=audit.parse_head(manifest.audit_head))
                assert result.ok and f"{result.head_seq}:{result.head_hash}" == manifest.audit_head
            finally:
                engine.dispose()
                keyring.dispose()
            # Restored once: the database is no longer empty, and a second restore is refused.
            with pytest.raises(Refused, match="is not empty"):
                restore_backup(target.model_copy(update={"data_dir": tmp_path / "again"}), backup)
        finally:
            _drop_postgres_database(name)


# --- Restores and what they find in place: fast, on a small backup of the database alone ---------

ACTOR = SimpleNamespace(sub="cw-1", role="caseworker", agency=None)


def small_backup(root: Path, *, rows: int = 5, later: int = 3, **settings: object) -> SimpleNamespace:
    """A backup of a database whose trail has ``rows`` rows (its head in the manifest), and the head
    the trail went on to (``later`` rows more) after it, which a worker would have anchored."""
    source = Settings(data_dir=root / "data", **settings)  # type: ignore[arg-type]
    engine, keyring = make_engine(source), keyring_from_settings(source)
    try:
        upgrade_schema(engine)
        for i in range(rows + later):
            if i == rows:
                manifest = take_backup(source, root / "backup", include_keys="database_url" in settings)
            audit.record(engine, actor=ACTOR, action="step.consent", request_id=f"r-{i}", keyring=keyring)
        head = anchor.current_head(engine)
    finally:
        keyring.dispose()
        engine.dispose()
    assert head is not None and manifest.audit_head is not None and head[0] == rows + later
    return SimpleNamespace(backup=root / "backup", manifest=manifest, kek=source.kek_path, later=f"{head[0]}:{head[1]}")


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    return small_backup(tmp_path_factory.mktemp("small"))


def verify_restored(settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys, anchor_file: Path) -> tuple[int, str]:
    """`reintegration audit verify` in this process, on the restored folder, with the anchor file named."""
    with monkeypatch.context() as patch:
        patch.setenv("REINTEGRATION_DATA_DIR", str(settings.data_dir))
        patch.setenv("REINTEGRATION_KEK_FILE", str(settings.kek_path))
        patch.setenv("REINTEGRATION_AUDIT_ANCHOR_FILE", str(anchor_file))
        get_settings.cache_clear()
        try:
            code = cli.main(["audit", "verify"])
        finally:
            get_settings.cache_clear()
    said = capsys.readouterr()
    return code, said.out + said.err


def anchored(head: str) -> str:
    return f"2025-01-01T00:00:00+00:00 {head}\n"


def no_staging_left(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if ".restoring-" in p.name]


def test_a_restore_moves_aside_an_anchor_file_beyond_the_restored_head(small, tmp_path, monkeypatch, capsys):
    """The anchors outlive a restore, and the restored trail is behind them: moved aside (kept), and
    a new file starts at the restored head, against which the restored trail verifies."""
    anchors = tmp_path / "anchors"
    anchors.mkdir()
    path = anchors / "audit-anchors"
    path.write_text(anchored(small.manifest.audit_head) + anchored(small.later))
    before = path.read_text()
    target = Settings(data_dir=tmp_path / "restored", kek_file=small.kek, audit_anchor_file=path)
    assert restore_command(target, small.backup) == 0
    out = capsys.readouterr().out
    [aside] = [p for p in anchors.iterdir() if p != path]
    assert re.fullmatch(r"audit-anchors\.before-restore-\d{8}T\d{6}Z", aside.name) and aside.read_text() == before
    assert "anchors head 8, beyond the restored trail's head 5" in out and f"moved aside to {aside}" in out
    assert [line.split()[1] for line in path.read_text().splitlines()] == [small.manifest.audit_head]
    code, said = verify_restored(target, monkeypatch, capsys, path)
    assert code == 0 and "holds head 5 anchored at" in said, said
    # What the old file would have said of the restored trail: the alarm the move spares.
    code, said = verify_restored(target, monkeypatch, capsys, aside)
    assert code == 1 and "row 8 of the anchored head is gone" in said
    # A file that anchors no head beyond the restored one stays as it is.
    path.unlink()
    aside.write_text(anchored(small.manifest.audit_head))
    restore_backup(target.model_copy(update={"data_dir": tmp_path / "again", "audit_anchor_file": aside}), small.backup)
    assert sorted(p.name for p in anchors.iterdir()) == [aside.name]
    assert aside.read_text() == anchored(small.manifest.audit_head)


@contextmanager
def unmovable(path: Path) -> Iterator[None]:
    """The anchor file made impossible to move for this process: append-only where it runs as root
    (as `chattr +a` is meant to keep it), its folder read-only otherwise."""
    if os.geteuid() == 0:
        if subprocess.run(["chattr", "+a", str(path)], capture_output=True, check=False).returncode != 0:
            pytest.skip("chattr +a is not available here")
        try:
            yield
        finally:
            subprocess.run(["chattr", "-a", str(path)], check=True)
    else:
        path.parent.chmod(0o500)
        try:
            yield
        finally:
            path.parent.chmod(0o700)


def test_a_restore_is_refused_when_the_anchor_file_cannot_be_moved_aside(small, tmp_path):
    anchors = tmp_path / "anchors"
    anchors.mkdir(mode=0o700)
    path = anchors / "audit-anchors"
    path.write_text(anchored(small.later))
    target = Settings(data_dir=tmp_path / "restored", kek_file=small.kek, audit_anchor_file=path)
    with unmovable(path), pytest.raises(Refused) as refused:
        restore_backup(target, small.backup)
    said = str(refused.value)
    assert "anchors head 8, beyond the restored trail's head 5" in said and "cannot be moved aside" in said
    assert f"move it yourself, as its owner (after `chattr -a` if it is append-only), to {path}.before-restore-" in said
    assert said.endswith("(nothing was restored)")
    assert [p.name for p in anchors.iterdir()] == ["audit-anchors"] and path.read_text() == anchored(small.later)
    assert not (tmp_path / "restored").exists() and no_staging_left(tmp_path)


def test_a_restore_never_replaces_a_file_that_appeared_meanwhile(small, tmp_path):
    """A stack started too early writes its database into the folder while the restore runs: the
    restore stops before moving anything in, and the folder (the anchor file too) is as it was."""
    restored = tmp_path / "restored"
    restored.mkdir(mode=0o700)
    shutil.copyfile(small.kek, restored / "kek")
    (restored / "audit-anchors").write_text(anchored(small.later))  # the development default's, beyond
    before = snapshot(restored)

    def too_early(part: str) -> None:
        if part == "staged":
            (restored / "reintegration.db").write_bytes(b"a stack started too early")

    target = Settings(data_dir=restored)
    with pytest.raises(Failed) as failed:
        restore_backup(target, small.backup, on_part=too_early)
    assert str(failed.value) == (
        f"{restored / 'reintegration.db'} appeared while the backup was restored (a stack started too early?): "
        f"nothing was moved into {restored}, which is as it was; nothing was restored"
    )
    assert snapshot(restored) == {**before, "reintegration.db": b"a stack started too early"}
    assert no_staging_left(tmp_path)
    # Once the folder is empty again, the same restore goes through, and the anchors start anew.
    (restored / "reintegration.db").unlink()
    restore_backup(target, small.backup)
    assert (restored / "audit-anchors").read_text().split()[1] == small.manifest.audit_head
    [aside] = restored.glob("audit-anchors.before-restore-*")
    assert aside.read_text() == anchored(small.later)


def test_moving_in_never_replaces_and_undoes_what_it_moved(tmp_path):
    staging, data = tmp_path / ".data.restoring-x", tmp_path / "data"
    (staging / "blobs").mkdir(parents=True)
    (staging / "blobs" / "k1").write_bytes(b"staged blob")
    (staging / "reintegration.db").write_bytes(b"staged database")
    data.mkdir()
    (data / "kek").write_bytes(b"a key made by a stack started too early")
    staged, present = snapshot(staging), snapshot(data)
    key = tmp_path / "backup-kek"
    key.write_bytes(b"the backup's key")
    # The database and the blobs are moved first; the key file that appeared stops it: all goes back.
    with pytest.raises(Failed) as failed:
        _move_in(staging, data, [(key, data / "kek")], database="postgresql://postgres@db/reintegration")
    said = str(failed.value)
    assert said.startswith(f"{data / 'kek'} appeared while the backup was moved into {data}")
    assert "nothing was replaced" in said and "reintegration WAS restored (pg_restore committed)" in said
    assert snapshot(data) == present and snapshot(staging) == staged
    # Never onto a file, nor onto a folder that is not empty.
    with pytest.raises(FileExistsError):
        _move_no_replace(staging / "reintegration.db", data / "kek")
    (data / "blobs").mkdir()
    (data / "blobs" / "k2").write_bytes(b"someone else's")
    with pytest.raises(FileExistsError):
        _move_no_replace(staging / "blobs", data / "blobs")
    assert snapshot(data) == {**present, "blobs/k2": b"someone else's"} and snapshot(staging) == staged


@pytest.mark.postgres
def test_on_postgresql_a_file_that_appeared_after_pg_restore_is_not_replaced(tmp_path):
    if shutil.which("pg_dump") is None or shutil.which("pg_restore") is None:
        pytest.skip("PostgreSQL's client tools are not on PATH")
    source, source_url = _postgres_database()
    target_name, target_url = _postgres_database()
    try:
        small = small_backup(tmp_path / "source", database_url=source_url)
        restored = tmp_path / "restored"

        def too_early(part: str) -> None:
            if part == "database":  # a development start makes a key where the backup's goes
                restored.mkdir(mode=0o700)
                (restored / "kek").write_bytes(b"a new key")

        target = Settings(data_dir=restored, database_url=target_url)
        with pytest.raises(Failed) as failed:
            restore_backup(target, small.backup, on_part=too_early)
        assert f"{restored / 'kek'} appeared while the backup was restored" in str(failed.value)
        assert "WAS restored (pg_restore committed): drop it and create it empty again" in str(failed.value)
        assert snapshot(restored) == {"kek": b"a new key"} and no_staging_left(tmp_path)
        engine = make_engine(target)
        try:  # as the message says: the database was restored
            assert "audit_trail" in inspect(engine).get_table_names()
        finally:
            engine.dispose()
    finally:
        _drop_postgres_database(source)
        _drop_postgres_database(target_name)
