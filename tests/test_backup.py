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
import shutil
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from sqlmodel import Session
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from reintegration import audit
from reintegration.backup import Refused, backup_command, read_manifest, restore_backup, take_backup
from reintegration.db import CaseRecord, keyring_from_settings, make_engine
from reintegration.settings import Settings
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
