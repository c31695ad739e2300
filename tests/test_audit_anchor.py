"""The audit head anchored outside the database: the worker's writer appends it (and posts it to a
webhook) when it moved, and `reintegration audit verify` finds a chain cut back, rewritten or
wiped from the anchor file alone, with no head noted by hand."""

from __future__ import annotations

import asyncio
import re
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from pydantic import ValidationError
from sqlalchemy import delete, update
from sqlalchemy.engine import Engine
from sqlmodel import Session
from structlog.testing import capture_logs

from reintegration import anchor, audit, cli
from reintegration.crypto import Keyring
from reintegration.db import AuditHead, AuditRecord, keyring_from_settings, make_engine
from reintegration.migrate import upgrade_schema
from reintegration.settings import Settings, get_settings
from reintegration.webhooks import sign
from tests.conftest import served
from tests.test_oidc import production  # noqa: F401 - the fixture: settings production accepts

ACTOR = SimpleNamespace(sub="cw-1", role="caseworker", agency=None)
LINE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00 \d+:[0-9a-f]{64}\n")


class Trail:
    """A database with an audit chain of ``rows`` rows, and the anchor file under its data folder."""

    def __init__(self, tmp_path: Path, rows: int = 10) -> None:
        self.settings = Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'audit.db'}")
        self.engine: Engine = make_engine(self.settings)
        upgrade_schema(self.engine)
        self.keyring: Keyring = keyring_from_settings(self.settings)
        self.path = self.settings.audit_anchor_path
        self.add(rows)

    def add(self, rows: int) -> None:
        for i in range(rows):
            audit.record(self.engine, actor=ACTOR, action="step.consent", request_id=f"r-{i}", keyring=self.keyring)

    def cut_back_to(self, seq: int) -> None:
        """Rows after ``seq`` deleted and the head moved back to row ``seq``, whose MAC is genuine."""
        with Session(self.engine) as session:
            mac = session.get(AuditRecord, seq).hash if seq else audit.GENESIS
            session.exec(delete(AuditRecord).where(AuditRecord.seq > seq))
            session.exec(update(AuditHead).values(seq=seq, hash=mac))
            session.commit()

    def anchorer(self, **kw: Any) -> anchor.Anchorer:
        return anchor.Anchorer(engine=self.engine, path=self.path, **kw)

    def lines(self) -> list[str]:
        return self.path.read_text().splitlines(keepends=True) if self.path.exists() else []


@pytest.fixture
def trail(tmp_path: Path) -> Iterator[Trail]:
    t = Trail(tmp_path)
    yield t
    t.keyring.dispose()
    t.engine.dispose()


@pytest.fixture
def verify_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Any:
    """`reintegration audit verify ARGS` in this process, its settings read anew from the environment."""

    def run(t: Trail, *args: str, env: dict[str, str] | None = None) -> SimpleNamespace:
        with monkeypatch.context() as patch:
            patch.setenv("DATABASE_URL", t.settings.sqlalchemy_url)
            patch.setenv("REINTEGRATION_DATA_DIR", str(t.settings.data_dir))
            for name, value in (env or {}).items():
                patch.setenv(name, value)
            get_settings.cache_clear()
            try:
                code = cli.main(["audit", "verify", *args])
            finally:
                get_settings.cache_clear()
        out = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=out.out, stderr=out.err)

    return run


async def test_the_head_is_anchored_only_when_it_moved(trail: Trail):
    writer = trail.anchorer()
    first = await writer.tick()
    assert first is not None and first.head == anchor.current_head(trail.engine) and first.seq == 10
    assert await writer.tick() is None  # the head did not move: nothing new
    trail.add(2)
    second = await writer.tick()
    assert second is not None and second.seq == 12
    lines = trail.lines()
    assert len(lines) == 2 and all(LINE.fullmatch(line) for line in lines)
    assert lines[1].split()[1] == f"12:{second.mac}"  # a row number and an HMAC: nothing personal
    assert stat.S_IMODE(trail.path.stat().st_mode) == 0o600
    # A worker restarted finds its last anchor in the file and writes nothing new for the same head.
    assert await trail.anchorer().tick() is None and len(trail.lines()) == 2
    # Before the first row there is no head to anchor.
    empty = Trail(trail.path.parent / "empty", rows=0)
    assert await empty.anchorer().tick() is None and not empty.path.exists()
    empty.engine.dispose()


async def test_the_writer_runs_by_itself_and_a_failure_does_not_stop_it(trail: Trail):
    trail.path.mkdir()  # a folder where the file should be: every append fails
    with capture_logs() as logs:
        running = asyncio.create_task(anchor.keep_anchoring(trail.anchorer(), 0.02))
        await asyncio.sleep(0.15)
        assert not running.done()
        trail.path.rmdir()
        for _ in range(100):
            # The line is in the file once the append's thread wrote it; the writer logs it once it
            # is back on the event loop: wait for both before stopping it.
            if trail.lines() and any(log["event"] == "audit head anchored" for log in logs):
                break
            await asyncio.sleep(0.02)
        running.cancel()
    assert len(trail.lines()) == 1 and trail.lines()[0].split()[1].startswith("10:")
    assert {"event": "audit head not anchored", "error": "IsADirectoryError", "log_level": "warning"} in logs
    assert any(log["event"] == "audit head anchored" and log["seq"] == 10 for log in logs)


async def test_verify_finds_a_chain_cut_back_from_the_anchor_file_alone(trail: Trail, verify_cli):
    await trail.anchorer().tick()
    intact = verify_cli(trail)
    assert intact.returncode == 0, intact.stderr
    assert "holds head 10 anchored at" in intact.stdout and str(trail.path) in intact.stdout
    trail.cut_back_to(8)  # a chain that holds together, ending at a genuine earlier row
    assert audit.verify(trail.engine, trail.keyring).ok  # the database alone cannot tell
    cut = verify_cli(trail)
    assert cut.returncode == 1
    assert "row 10 of the anchored head is gone: the chain ends at row 8 (it was cut back)" in cut.stderr
    # The worker says so at its next tick, and anchors the lower head without forgetting the higher.
    writer = trail.anchorer()
    with capture_logs() as logs:
        assert (await writer.tick()).seq == 8
        await writer.tick()
    alarms = [log for log in logs if log["event"].startswith("audit trail cut back or rewritten")]
    assert len(alarms) == 2 and alarms[0]["anchored_seq"] == 10 and alarms[0]["head_seq"] == 8
    assert verify_cli(trail).returncode == 1  # the highest anchor still decides


async def test_verify_finds_a_chain_rewritten_or_wiped(trail: Trail, verify_cli):
    await trail.anchorer().tick()
    # Rewritten from row 6 by someone who holds the key: the chain is whole again, ten rows long.
    trail.cut_back_to(5)
    trail.add(5)
    assert audit.verify(trail.engine, trail.keyring).ok
    rewritten = verify_cli(trail)
    assert rewritten.returncode == 1 and "row 10 is not the one of the anchored head (its MAC differs)" in (
        rewritten.stderr
    )
    # Wiped: no row, no head, and no case either, so nothing in the database says anything is missing.
    trail.cut_back_to(0)
    with Session(trail.engine) as session:
        session.exec(delete(AuditHead))
        session.commit()
    wiped = verify_cli(trail)
    assert wiped.returncode == 1
    assert "the trail is empty but head 10 was anchored outside the database (it was wiped)" in wiped.stderr
    trail.path.unlink()  # without the anchor: an empty trail without cases passes
    assert verify_cli(trail).stdout.startswith("audit trail intact: 0 rows")


async def test_the_anchor_file_is_read_with_care(trail: Trail, verify_cli):
    await trail.anchorer().tick()
    with trail.path.open("a") as f:
        f.write("2025-01-01T00:00:00+00:00 3:")  # a write cut short by a crash: says nothing
    assert verify_cli(trail).returncode == 0
    assert (await trail.anchorer().tick()) is None  # nor does it stop the writer
    trail.path.write_text("not an anchor\n" + "".join(trail.lines()))
    garbled = verify_cli(trail)
    assert garbled.returncode == 3 and "line 1 of the anchor file is not an anchor" in garbled.stderr
    # Several workers append in turn; the highest head anchored is the one checked, wherever it is.
    trail.path.write_text("")
    trail.add(1)
    await trail.anchorer().tick()
    anchor.append(trail.path, anchor.Anchor(seq=5, mac="ab" * 32, at=datetime.now(UTC)))
    assert [line.split()[1][:3] for line in trail.lines()] == ["11:", "5:a"]
    assert anchor.newest(trail.path).seq == 11


async def test_the_head_goes_to_a_signed_webhook(trail: Trail, tmp_path: Path):
    received: list[tuple[dict[str, str], bytes]] = []
    hook = FastAPI()

    @hook.post("/anchors")
    async def take(request: Request) -> dict[str, bool]:
        received.append((dict(request.headers), await request.body()))
        return {"ok": True}

    secret_file = tmp_path / "anchor-secret"
    secret_file.write_text("s" * 40 + "\n")
    async with served(hook) as base, httpx.AsyncClient() as http:
        settings = trail.settings.model_copy(
            update={"audit_anchor_webhook_url": f"{base}/anchors", "audit_anchor_webhook_secret_file": secret_file}
        )
        writer = anchor.anchorer_from_settings(settings, trail.engine, http)
        await writer.tick()
        await writer.tick()  # the same head: not posted again
        trail.add(1)
        await writer.tick()
    assert len(received) == 2
    headers, body = received[0]
    assert headers["x-reintegration-event"] == "audit.head"
    assert headers["x-reintegration-signature"] == sign("s" * 40, headers["x-reintegration-timestamp"], body)
    assert body.startswith(b'{"at": ') and b'"seq": 10' in body
    # A webhook that refuses: said, and tried again at the next tick.
    async with served(FastAPI()) as base, httpx.AsyncClient() as http:
        refusing = anchor.Anchorer(engine=trail.engine, http=http, webhook_url=f"{base}/none", webhook_secret="x" * 40)
        with pytest.raises(anchor.AnchorNotDelivered, match="HTTP 404"):
            await refusing.tick()


def test_anchor_settings(tmp_path, production):  # noqa: F811 - the fixture imported above
    with pytest.raises(ValidationError, match="needs REINTEGRATION_AUDIT_ANCHOR_WEBHOOK_SECRET_FILE"):
        Settings(audit_anchor_webhook_url="https://anchors.example.org/")
    with pytest.raises(ValidationError, match="http"):
        Settings(audit_anchor_webhook_url="ftp://anchors.example.org/", audit_anchor_webhook_secret_file=tmp_path)
    secret = tmp_path / "secret"
    secret.write_text("s" * 40)
    hook = {"audit_anchor_webhook_secret_file": secret}
    Settings(**production, **hook, audit_anchor_webhook_url="https://anchors.example.org/")
    with pytest.raises(ValidationError, match="https:// address in production"):
        Settings(**production, **hook, audit_anchor_webhook_url="http://anchors.example.org/")
    assert Settings(data_dir=tmp_path).audit_anchor_path == tmp_path / "audit-anchors"
    assert Settings(audit_anchor_file="").audit_anchor_file is None  # as docker-compose passes it unset


async def test_an_anchor_file_named_in_the_settings_and_gone_fails_the_check(trail: Trail, verify_cli):
    named = {"REINTEGRATION_AUDIT_ANCHOR_FILE": str(trail.path)}  # as the compose file names it
    await trail.anchorer().tick()
    assert verify_cli(trail, env=named).returncode == 0
    trail.cut_back_to(8)
    trail.path.unlink()  # deleted with the cut, or not mounted where verify runs (the compose file's API)
    gone = verify_cli(trail, env=named)
    assert gone.returncode == 3 and gone.stdout == ""
    assert (
        f"no audit anchor file at {trail.path}: deleted, not mounted where this runs, or not written yet" in gone.stderr
    )
    # Knowingly without it: the chain is walked, and the output says what was not checked.
    knowingly = verify_cli(trail, "--no-anchor", env=named)
    assert knowingly.returncode == 0, knowingly.stderr
    assert "the check that the trail was not cut back or wiped is skipped" in knowingly.stderr
    assert "(not checked against the anchor file: --no-anchor)" in knowingly.stdout
    # Emptied rather than deleted: no anchor in it says no more.
    trail.path.write_text("")
    emptied = verify_cli(trail, env=named)
    assert emptied.returncode == 3 and "holds no anchor: emptied" in emptied.stderr
    trail.path.unlink()
    # Anchoring off, or the development default (the worker not yet run): as before, with a note.
    off = verify_cli(trail, env={**named, "REINTEGRATION_AUDIT_ANCHOR_SECONDS": "0"})
    assert off.returncode == 0 and "anchoring is off" in off.stderr
    default = verify_cli(trail)
    assert default.returncode == 0 and default.stdout.startswith("audit trail intact: 8 rows")
    assert f"note: no audit anchor file at {trail.path} yet" in default.stderr
    # A trail without rows has nothing to anchor yet: nothing is missing.
    trail.cut_back_to(0)
    assert verify_cli(trail, env=named).stdout.startswith("audit trail intact: 0 rows")


async def test_the_writer_says_once_that_its_file_disappeared(trail: Trail):
    writer = trail.anchorer()
    await writer.tick()
    trail.path.unlink()
    trail.add(1)
    with capture_logs() as logs:
        written = await writer.tick()  # said, and a new file starts at the head
        assert written is not None and written.seq == 11
        await writer.tick()
        trail.add(1)
        await writer.tick()
    assert [log for log in logs if log["log_level"] == "error"] == [
        {"event": "the anchor file disappeared", "path": str(trail.path), "anchored_seq": 10, "log_level": "error"}
    ]
    assert [line.split()[1][:3] for line in trail.lines()] == ["11:", "12:"]


async def test_a_new_trail_is_anchored_soon_after_its_first_row_then_at_the_interval(tmp_path, monkeypatch):
    """A new deployment: nothing to anchor at start; the first audited action is anchored within
    UNANCHORED_SECONDS, not after the whole interval, so `audit verify` soon finds the file."""
    monkeypatch.setattr(anchor, "UNANCHORED_SECONDS", 0.05)
    fresh = Trail(tmp_path, rows=0)
    running = asyncio.create_task(anchor.keep_anchoring(fresh.anchorer(), 300.0))
    try:
        await asyncio.sleep(0.15)
        assert not fresh.path.exists() or fresh.lines() == []  # nothing to anchor yet
        fresh.add(2)
        for _ in range(100):
            if fresh.lines():
                break
            await asyncio.sleep(0.02)
        assert [line.split()[1].split(":")[0] for line in fresh.lines()] == ["2"]
        fresh.add(1)  # anchored now: the next tick waits for the interval (300 s)
        await asyncio.sleep(0.3)
        assert len(fresh.lines()) == 1
    finally:
        running.cancel()
        fresh.engine.dispose()
