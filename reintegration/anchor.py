"""The audit trail's head, anchored outside the database.

The HMAC chain (``reintegration/audit.py``) shows every edited, inserted, reordered or deleted row,
but not a trail cut back with its head moved to an earlier, genuine row, nor one wiped whole along
with the cases: the database alone cannot tell. So the worker notes the head where someone who can
write to the database cannot reach: every ``audit_anchor_seconds``, when the head has moved, it
appends ``AT SEQ:MAC`` as one line to the anchor file (opened for appending only, and synced), and
POSTs it to the anchor webhook if one is configured (signed as every webhook of ours is).
``reintegration audit verify`` then checks the chain against the highest head in the file, with no
head kept by hand: the chain must still hold that row with that MAC (else it was cut back or
rewritten), and an empty trail while an anchor exists was wiped. Where the file is named
explicitly (``REINTEGRATION_AUDIT_ANCHOR_FILE``), a file gone while the trail has rows fails the check
rather than passing it unchecked (``--no-anchor`` verifies knowingly without it); the writer says so
when the file it wrote to disappears. A restore moves aside a file that anchors heads beyond the
restored trail and starts a new one at the restored head (``reintegration/backup.py``).

Several workers each append their own lines; that is fine, the check takes the highest ``seq``. An
anchor is a row number, an HMAC and a time: no personal data. Make the file append-only where it
lies (``chattr +a``, a log host, object storage with retention) so the anchors outlive whoever can
reach the worker's disk; the webhook puts them on another machine altogether.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import structlog
from sqlalchemy import inspect, select
from sqlalchemy.engine import Engine
from sqlmodel import col

from reintegration.audit import parse_head, read_head
from reintegration.db import AuditRecord
from reintegration.webhooks import sign

log = structlog.get_logger("audit.anchor")

TAIL_BYTES = 64 * 1024  # where the writer looks for the newest anchor at start (the file only grows)


class AnchorFileUnreadable(Exception):
    """The anchor file exists but cannot be read, or holds a line that is not an anchor."""


class AnchorFileMissing(AnchorFileUnreadable):
    """There is no anchor file where the settings name one."""


class AnchorNotDelivered(Exception):
    """The anchor webhook did not take the head (no answer, or not a 2xx)."""


@dataclass(frozen=True)
class Anchor:
    """A head noted outside the database: the last row's number and MAC, and when it was noted."""

    seq: int
    mac: str
    at: datetime

    @property
    def head(self) -> tuple[int, str]:
        return self.seq, self.mac

    def line(self) -> str:
        return f"{self.at.isoformat(timespec='seconds')} {self.seq}:{self.mac}\n"


def parse_line(text: str) -> Anchor:
    """An anchor file's line (``ValueError`` if it is not one)."""
    at, _, head = text.strip().partition(" ")
    seq, mac = parse_head(head)
    when = datetime.fromisoformat(at)
    if when.tzinfo is None:
        raise ValueError("an anchor's time carries its zone")
    return Anchor(seq=seq, mac=mac, at=when)


def _anchors(text: str, *, torn_start: bool = False) -> list[Anchor]:
    lines = text.split("\n")
    # A line not ended by a newline is a write cut short (a crash or a full disk) and says nothing;
    # a tail read from the middle of the file begins inside a line, which says nothing either.
    complete = lines[1 if torn_start else 0 : -1]
    anchors = []
    for number, line in enumerate(complete, start=1):
        if not line.strip():
            continue
        try:
            anchors.append(parse_line(line))
        except ValueError:
            if torn_start:
                continue
            raise AnchorFileUnreadable(f"line {number} of the anchor file is not an anchor (AT SEQ:MAC)") from None
    return anchors


def newest(path: Path, *, missing_ok: bool = True) -> Anchor | None:
    """The highest head anchored in the file; None without an anchor in it, or without a file
    (``AnchorFileMissing`` instead when not ``missing_ok``)."""
    try:
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        if not missing_ok:
            raise AnchorFileMissing(f"no audit anchor file at {path}") from None
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise AnchorFileUnreadable(f"the anchor file {path} cannot be read ({type(exc).__name__})") from None
    return max(_anchors(text), key=lambda a: a.seq, default=None)


def _newest_in_tail(path: Path) -> Anchor | None:
    """The highest head among the file's last lines: what this writer need not write again."""
    try:
        with path.open("rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - TAIL_BYTES))
            text = f.read().decode("ascii", errors="replace")
    except FileNotFoundError:
        return None
    return max(_anchors(text, torn_start=size > TAIL_BYTES), key=lambda a: a.seq, default=None)


def append(path: Path, anchor: Anchor) -> None:
    """One line, in one write to a file opened for appending only, synced before it counts."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, anchor.line().encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)


def current_head(engine: Engine) -> tuple[int, str] | None:
    """The trail's head (``seq``, MAC); None before the first row."""
    with engine.connect() as connection:
        return read_head(connection, set(inspect(connection).get_table_names()))


def has_rows(engine: Engine) -> bool:
    """Whether the trail has a row, or a head past the first (cheap: no walk of the chain)."""
    if current_head(engine) is not None:
        return True
    with engine.connect() as connection:
        if AuditRecord.__tablename__ not in inspect(connection).get_table_names():
            return False
        return connection.execute(select(col(AuditRecord.seq)).limit(1)).first() is not None


def holds(engine: Engine, anchor: Anchor) -> bool:
    """Whether the chain still holds the anchored row with its MAC (one indexed read, no walk)."""
    with engine.connect() as connection:
        mac = connection.execute(
            select(col(AuditRecord.hash)).where(col(AuditRecord.seq) == anchor.seq)
        ).scalar_one_or_none()
    return mac == anchor.mac


async def post(http: httpx.AsyncClient, *, url: str, secret: str, anchor: Anchor, timeout: float = 10.0) -> None:
    """The head to the anchor webhook, signed as the supervisors' and agencies' webhooks are."""
    body = json.dumps({"seq": anchor.seq, "hash": anchor.mac, "at": anchor.at.isoformat()}, sort_keys=True).encode()
    timestamp = str(int(time.time()))
    try:
        response = await http.post(
            url,
            content=body,
            timeout=timeout,
            headers={
                "Content-Type": "application/json",
                "Idempotency-Key": f"audit-head-{anchor.seq}-{anchor.mac[:16]}",
                "X-Reintegration-Event": "audit.head",
                "X-Reintegration-Timestamp": timestamp,
                "X-Reintegration-Signature": sign(secret, timestamp, body),
            },
        )
    except httpx.HTTPError as exc:
        raise AnchorNotDelivered(f"the anchor webhook did not answer: {type(exc).__name__}") from None
    if not 200 <= response.status_code < 300:
        raise AnchorNotDelivered(f"the anchor webhook answered HTTP {response.status_code}")


class Anchorer:
    """Anchors the head wherever configured, when it moved since this writer last anchored it."""

    def __init__(
        self,
        *,
        engine: Engine,
        path: Path | None = None,
        http: httpx.AsyncClient | None = None,
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
    ) -> None:
        if (webhook_url is None) != (webhook_secret is None) or (webhook_url is not None and http is None):
            raise ValueError("the anchor webhook needs its URL, its secret and an HTTP client")
        self._engine, self._path, self._http = engine, path, http
        self._url, self._secret = webhook_url, webhook_secret
        self._written: Anchor | None = None  # the last anchor this writer wrote to the file
        # The highest head ever anchored (in the file at start, or since): the chain must keep it.
        self._highest: Anchor | None = None
        self._posted: tuple[int, str] | None = None
        self._started = False

    @property
    def anchored(self) -> bool:
        """Whether a head is anchored (in the file at start, or by this writer since)."""
        return self._highest is not None

    async def tick(self) -> Anchor | None:
        """Anchor the head if it moved; the anchor written, or None if there was nothing new."""
        if not self._started and self._path is not None:
            self._written = self._highest = await asyncio.to_thread(_newest_in_tail, self._path)
        self._started = True
        if (
            self._path is not None
            and self._written is not None
            and not await asyncio.to_thread(os.path.lexists, self._path)
        ):
            # Deleted, or moved aside, since this writer wrote to it (or found it at start): said
            # once, then a new file starts at the current head (the highest one stays the one the
            # chain must hold). `audit verify` fails without the file meanwhile, where it is named.
            log.error("the anchor file disappeared", path=str(self._path), anchored_seq=self._written.seq)
            self._written = None
        head = await asyncio.to_thread(current_head, self._engine)
        if self._highest is not None and not await asyncio.to_thread(holds, self._engine, self._highest):
            # Said at every tick, not only when someone runs `audit verify`; numbers only. The lower
            # head is still anchored below: the highest one stays the one the chain must hold.
            log.error(
                "audit trail cut back or rewritten: it no longer holds the anchored head",
                anchored_seq=self._highest.seq,
                head_seq=head[0] if head else 0,
            )
        if head is None:
            return None
        anchor = Anchor(seq=head[0], mac=head[1], at=datetime.now(UTC))
        wrote = None
        if self._path is not None and (self._written is None or self._written.head != head):
            await asyncio.to_thread(append, self._path, anchor)
            self._written = wrote = anchor
        if self._highest is None or anchor.seq > self._highest.seq:
            self._highest = anchor
        if self._url is not None and self._posted != head:
            assert self._http is not None and self._secret is not None
            await post(self._http, url=self._url, secret=self._secret, anchor=anchor)
            self._posted, wrote = head, anchor
        return wrote


def anchorer_from_settings(settings: Any, engine: Engine, http: httpx.AsyncClient) -> Anchorer:
    """The worker's anchorer: the settings' file (by default ``data/audit-anchors``) and webhook."""
    secret = None
    # The secret file may be there without a webhook (docker-compose.yml mounts it always): read
    # only for a webhook.
    if settings.audit_anchor_webhook_url is not None and settings.audit_anchor_webhook_secret_file is not None:
        secret = settings.audit_anchor_webhook_secret_file.read_text().strip()
        if not secret:
            raise ValueError("the audit anchor webhook's secret file is empty")
    return Anchorer(
        engine=engine,
        path=settings.audit_anchor_path,
        http=http,
        webhook_url=settings.audit_anchor_webhook_url,
        webhook_secret=secret,
    )


# Until the trail has a first anchor (a new deployment, a new file after a restore), a worker looks
# this often, so that a head exists outside the database soon after the first audited action and
# `audit verify` does not find the file missing meanwhile.
UNANCHORED_SECONDS = 10.0


async def keep_anchoring(anchorer: Anchorer, every_seconds: float) -> None:
    """Anchor now, then every ``every_seconds`` (every ``UNANCHORED_SECONDS`` while nothing is
    anchored yet); a failure is logged and tried again next time, never stopping the worker."""
    while True:
        try:
            written = await anchorer.tick()
        except Exception as exc:  # noqa: BLE001 - tried again at the next tick
            log.warning("audit head not anchored", error=type(exc).__name__)
        else:
            if written is not None:
                log.info("audit head anchored", seq=written.seq)
        await asyncio.sleep(every_seconds if anchorer.anchored else min(every_seconds, UNANCHORED_SECONDS))
