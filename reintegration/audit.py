"""The audit trail: who did what to which case or task, and who saw personal data, provably.

Append-only, one row per action and per read of personal data (``AuditRecord`` in
``reintegration/db.py``). Each row's ``hash`` is an HMAC-SHA256 of its fields and the previous row's
``hash``, keyed with the audit key (``crypto.AUDIT_KEY_ID``), which the database holds only wrapped by
the key-encryption key: someone who can write to the database but has not the KEK cannot rehash an
edited chain. A one-row head (``AuditHead``) holds the last ``seq`` and ``hash``; so an edited,
inserted, reordered or deleted row, the last one included, breaks the chain, and ``verify`` names
where. What the database alone cannot show is a chain cut back to an earlier row with the head moved
back with it (or wiped whole along with everything else): ``verify`` checks it against a head noted
outside the database (``expect_head``, or the newest head the worker anchored: ``anchor``, from
``reintegration/anchor.py``), and calls an empty trail broken while there are cases.

Appends are serialised on the head so that concurrent appenders (threads, API processes) never fork
the chain: ``SELECT ... FOR UPDATE`` on PostgreSQL; on SQLite the append is a write
transaction from its start (``BEGIN IMMEDIATE``), so no two appenders read the same head.

Rows carry ids and action names only, never personal data.
"""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from cryptography.exceptions import InvalidTag
from sqlalchemy import bindparam, func, insert, inspect, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session, col

from reintegration.crypto import (
    AUDIT_KEY_ID,
    DataKeyRecord,
    Keyring,
    KeyUnavailable,
    Unreadable,
)
from reintegration.db import AuditHead, AuditRecord, CaseRecord, aware

GENESIS = "0" * 64  # the prev_hash of the first row
HEAD_ID = 1


class Actor(Protocol):
    """Who acts: a token's claims (``reintegration.tokens.Claims``) or a workflow ``Actor``. Read only."""

    @property
    def sub(self) -> str: ...
    @property
    def role(self) -> Any: ...
    @property
    def agency(self) -> str | None: ...


@dataclass(frozen=True)
class Entry:
    """One row to append: the action and what it was about (the actor and request come with it)."""

    action: str
    case_id: str | None = None
    task_id: str | None = None
    status: int | None = None
    replay: bool = False
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Verification:
    """The result of walking the chain: intact, or the first ``seq`` where it breaks and why."""

    rows: int
    head_seq: int
    head_hash: str
    broken_at: int | None = None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.broken_at is None


def record(
    target: Session | Engine,
    *,
    actor: Actor,
    action: str,
    request_id: str,
    case_id: str | None = None,
    task_id: str | None = None,
    status: int | None = None,
    replay: bool = False,
    detail: dict[str, Any] | None = None,
    keyring: Keyring | None = None,
) -> AuditRecord:
    """Append one row; see ``append`` for how a session and an engine differ."""
    entry = Entry(action=action, case_id=case_id, task_id=task_id, status=status, replay=replay, detail=detail or {})
    return append(target, actor=actor, request_id=request_id, entries=[entry], keyring=keyring)[0]


def append(
    target: Session | Engine, *, actor: Actor, request_id: str, entries: list[Entry], keyring: Keyring | None = None
) -> list[AuditRecord]:
    """Append rows in order, in one transaction.

    With an engine, in a transaction of its own, committed here. With a session, in the caller's
    transaction, which then holds the head until the caller commits (so an erasure and its audit
    row commit together). The keyring keys the chain: an API session carries it (``session.info``);
    with an engine, or any other session, pass it.
    """
    if isinstance(target, Engine):
        if keyring is None:
            raise ValueError("appending to the audit trail needs the keyring (its MAC key)")
        with Session(target, expire_on_commit=False) as session:
            rows = _append(session, keyring, actor, request_id, entries)
            session.commit()
            return rows
    keyring = keyring or target.info.get("keyring")
    if keyring is None:
        raise ValueError("appending to the audit trail needs the keyring (its MAC key)")
    return _append(target, keyring, actor, request_id, entries)


def _append(
    session: Session, keyring: Keyring, actor: Actor, request_id: str, entries: list[Entry]
) -> list[AuditRecord]:
    # Have the key at hand (made on the very first append) before taking the write lock: on SQLite
    # the keyring's own connection could not write while this one holds it.
    keyring.audit_mac(b"")
    connection = session.connection()
    _begin_writing(connection)
    head = _lock_head(connection)
    seq, prev_hash = head
    rows = []
    for entry in entries:
        seq += 1
        row = AuditRecord(
            seq=seq,
            at=datetime.now(UTC),
            actor_sub=actor.sub,
            actor_role=_value(actor.role),
            actor_agency=actor.agency,
            action=entry.action,
            case_id=entry.case_id,
            task_id=entry.task_id,
            request_id=request_id[:200],
            status=entry.status,
            replay=entry.replay,
            detail=dict(entry.detail),
            prev_hash=prev_hash,
            hash="",
        )
        row.hash = row_mac(row, keyring)
        prev_hash = row.hash
        rows.append(row)
    # Written as rows, not through the session's unit of work (a third of an append's CPU): the
    # objects returned are the rows as written, not in the session.
    connection.execute(_INSERT_ROWS, [{key: getattr(row, key) for key in _COLUMNS} for row in rows])
    connection.execute(_MOVE_HEAD, {"new_seq": seq, "new_hash": prev_hash})
    return rows


# Built once: every request that changes something appends.
_COLUMNS = tuple(column.key for column in AuditRecord.__table__.columns)  # type: ignore[attr-defined]
_INSERT_ROWS = insert(AuditRecord)
_LOCKED_HEAD = select(col(AuditHead.seq), col(AuditHead.hash)).where(col(AuditHead.id) == HEAD_ID).with_for_update()
_MOVE_HEAD = (
    update(AuditHead).where(col(AuditHead.id) == HEAD_ID).values(seq=bindparam("new_seq"), hash=bindparam("new_hash"))
)


def _begin_writing(connection: Connection) -> None:
    """On SQLite, take the write lock before reading the head (PostgreSQL locks the head row)."""
    if connection.dialect.name != "sqlite":
        return
    raw = connection.connection.dbapi_connection
    # The driver begins a transaction only before a write, so none is open yet unless this
    # session already wrote, and then it already holds the write lock.
    if not raw.in_transaction:  # type: ignore[union-attr]  # never None on a connection in use
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def _lock_head(connection: Connection) -> tuple[int, str]:
    head = connection.execute(_LOCKED_HEAD).first()
    if head is None:  # the first append ever: make the head, unless a concurrent first append did
        dialect_insert = pg_insert if connection.dialect.name == "postgresql" else sqlite_insert
        connection.execute(dialect_insert(AuditHead).values(id=HEAD_ID, seq=0, hash=GENESIS).on_conflict_do_nothing())
        head = connection.execute(_LOCKED_HEAD).first()
    assert head is not None
    return int(head.seq), str(head.hash)


def _value(role: Any) -> str:
    return str(getattr(role, "value", role))


def canonical(row: Any) -> str:
    """The canonical JSON of a row's fields and ``prev_hash`` (what its MAC, ``hash``, covers)."""
    fields = {
        "seq": int(row.seq),
        "at": aware(row.at).astimezone(UTC).isoformat(timespec="microseconds"),
        "actor_sub": row.actor_sub,
        "actor_role": row.actor_role,
        "actor_agency": row.actor_agency,
        "action": row.action,
        "case_id": row.case_id,
        "task_id": row.task_id,
        "request_id": row.request_id,
        "status": row.status,
        "replay": bool(row.replay),
        "detail": row.detail or {},
        "prev_hash": row.prev_hash,
    }
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def row_mac(row: Any, keyring: Keyring) -> str:
    """The row's ``hash``: HMAC-SHA256 of its canonical fields with the audit key."""
    return keyring.audit_mac(canonical(row).encode())


def read_head(connection: Connection, tables: set[str]) -> tuple[int, str] | None:
    """The trail's head (``seq``, MAC) as this connection's transaction sees it; None before the
    first row (or without the table: ``tables`` are the database's)."""
    if AuditHead.__tablename__ not in tables:
        return None
    head = connection.execute(
        select(col(AuditHead.seq), col(AuditHead.hash)).where(col(AuditHead.id) == HEAD_ID)
    ).first()
    return (int(head.seq), str(head.hash)) if head is not None and head.seq else None


def parse_head(text: str) -> tuple[int, str]:
    """``SEQ:MAC`` as ``verify`` prints the head (``ValueError`` if it is not that)."""
    seq, sep, mac = text.strip().partition(":")
    if not sep or not seq.isdigit() or int(seq) < 1 or len(mac) != 64 or any(c not in "0123456789abcdef" for c in mac):
        raise ValueError("the head is SEQ:MAC, as `audit verify` prints it (a row number and 64 hex digits)")
    return int(seq), mac


def verify(
    engine: Engine,
    keyring: Keyring,
    *,
    expect_head: tuple[int, str] | None = None,
    anchor: tuple[int, str] | None = None,
    batch: int = 1000,
) -> Verification:
    """Walk the whole chain in one snapshot and report the first row where it breaks.

    ``expect_head`` is a head noted earlier (``seq``, ``hash``): the chain must still hold that row
    with that MAC, or it was cut back or rewritten from there or before. ``anchor`` is the same
    check against the head the worker anchored outside the database, and an empty trail while an
    anchor exists was wiped. An empty trail (or none at all) while the ``cases`` table holds cases is
    broken too: the trail was wiped.
    """
    with engine.connect() as connection:
        if connection.dialect.name == "sqlite":
            connection.exec_driver_sql("BEGIN")  # one read snapshot (WAL) for the whole walk
        elif connection.dialect.name == "postgresql":
            connection = connection.execution_options(isolation_level="REPEATABLE READ")
        tables = set(inspect(connection).get_table_names())
        head = None
        if AuditHead.__tablename__ in tables:
            head = connection.execute(
                select(col(AuditHead.seq), col(AuditHead.hash)).where(col(AuditHead.id) == HEAD_ID)
            ).first()
        head_seq, head_hash = (int(head.seq), str(head.hash)) if head else (0, GENESIS)

        def broken(seq: int, reason: str, rows: int) -> Verification:
            return Verification(rows=rows, head_seq=head_seq, head_hash=head_hash, broken_at=seq, reason=reason)

        table = AuditRecord.__table__  # type: ignore[attr-defined]  # set by SQLModel's metaclass, not declared
        expected, prev_hash, last = 1, GENESIS, None
        wanted = {head[0] for head in (expect_head, anchor) if head is not None}
        held: dict[int, str] = {}  # the MAC of each row a noted head names, as the chain holds it
        while AuditRecord.__tablename__ in tables:
            query = select(table).order_by(table.c.seq).limit(batch)
            if last is not None:
                query = query.where(table.c.seq > last)
            rows = connection.execute(query).all()
            if not rows:
                break
            if last is None:
                if head is None:
                    return broken(rows[0].seq, "the head is missing (the trail has rows)", 0)
                if (problem := _key_problem(connection, tables, keyring)) is not None:
                    return broken(rows[0].seq, problem, 0)
            for row in rows:
                count = expected - 1
                if row.seq > head_seq:
                    return broken(row.seq, f"row {row.seq} is after the head (seq {head_seq})", count)
                if row.seq != expected:
                    if row.seq > expected:
                        return broken(expected, f"row {expected} is missing (the next is {row.seq})", count)
                    return broken(row.seq, f"row {row.seq} is out of sequence", count)
                if row.prev_hash != prev_hash:
                    return broken(row.seq, f"row {row.seq} does not follow row {row.seq - 1}", count)
                if row_mac(row, keyring) != row.hash:
                    return broken(row.seq, f"row {row.seq} was changed (its MAC does not match)", count)
                if row.seq in wanted:
                    held[row.seq] = row.hash
                prev_hash, expected, last = row.hash, expected + 1, row.seq
        count = expected - 1
        if count < head_seq:
            return broken(count + 1, f"row {count + 1} is missing (the head says the last is {head_seq})", count)
        if prev_hash != head_hash:
            return broken(head_seq, f"row {head_seq} does not match the head", count)
        if count == 0 and CaseRecord.__tablename__ in tables:
            cases_table = CaseRecord.__table__  # type: ignore[attr-defined]  # set by SQLModel, not declared
            cases = connection.execute(select(func.count()).select_from(cases_table)).scalar_one()
            if cases:
                return broken(1, f"the trail is empty but there are {cases} cases (it was wiped)", count)
        if anchor is not None:
            seq, mac = anchor
            if count == 0:
                return broken(
                    1, f"the trail is empty but head {seq} was anchored outside the database (it was wiped)", 0
                )
            if seq not in held:
                return broken(
                    seq,
                    f"row {seq} of the anchored head is gone: the chain ends at row {count} (it was cut back)",
                    count,
                )
            if not hmac.compare_digest(held[seq].encode(), mac.encode()):
                return broken(
                    seq,
                    f"row {seq} is not the one of the anchored head (its MAC differs): the chain was rewritten "
                    "from there or before",
                    count,
                )
        if expect_head is not None:
            seq, mac = expect_head
            anchored = held.get(seq)
            if anchored is None:
                return broken(
                    seq,
                    f"row {seq} of the expected head is gone: the chain ends at row {count} (it was cut back)",
                    count,
                )
            if not hmac.compare_digest(anchored.encode(), mac.encode()):
                return broken(
                    seq,
                    f"row {seq} is not the one of the expected head (its MAC differs): the chain "
                    "was rewritten from there or before",
                    count,
                )
        connection.rollback()
    return Verification(rows=count, head_seq=head_seq, head_hash=head_hash)


def _key_problem(connection: Connection, tables: set[str], keyring: Keyring) -> str | None:
    """Why rows cannot be checked at all, if the audit key is gone or is not one this KEK wrapped."""
    wrapped = None
    if DataKeyRecord.__tablename__ in tables:
        wrapped = connection.execute(
            select(col(DataKeyRecord.wrapped)).where(col(DataKeyRecord.key_id) == AUDIT_KEY_ID)
        ).scalar_one_or_none()
    if wrapped is None:
        return "the audit key is missing (the trail cannot be checked, nor trusted)"
    try:
        keyring.audit_mac(b"")
    except (InvalidTag, KeyUnavailable, Unreadable, ValueError):
        return "the audit key cannot be unwrapped with this key-encryption key"
    return None
