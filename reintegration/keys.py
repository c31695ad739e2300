"""Rotating the key-encryption key: every data key re-wrapped under the current KEK while the system
serves (``reintegration keys rotate``).

The operators' procedure (README, "Rotating the key-encryption key"): give every process the new KEK
as the current one and the old one as previous (``kek_previous_files``), restart them one by one,
run the rotation, then remove the old KEK. From the restart on, every process wraps new keys with
the new KEK and unwraps each stored key with the KEK its ``kek_id`` names, so the rotation can go
on beneath them: a key re-wrapped under a process that holds it unwrapped changes nothing for it.

The rotation walks ``data_keys`` in key order, a batch at a time, and writes each batch in a
transaction of its own; every row is written only if it still holds the ``kek_id`` and wrapping it
was read with (compare and set), so a concurrent change always wins: a key destroyed meanwhile (an
erasure: ``wrapped`` emptied) stays destroyed, and a row re-wrapped by another run is left as that
run wrote it. Killed at any point, it is simply run again: what is done is under the current KEK and
is not read again. The case keys, the system key, the keyed-hash key and the audit key are all rows
of that table; re-wrapping changes no key, so nothing they encrypt or MAC changes.

Nothing is changed unless the rotation can finish: every KEK the stored keys name must be configured
and must unwrap one of its keys, and the current KEK must wrap and unwrap, before the first write.

With Vault's transit engine the KEK ids carry the key's version (``vault:transit/NAME:v4``). Keys
under a later version of the same transit key than the run's (processes restarted after another
``rotate`` in Vault while this run was started before it) are not re-wrapped back down to the run's
version: they are left as they are and counted as ``newer``, and the command says to run it again,
which then takes the newest version.
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidTag
from sqlalchemy import ColumnElement, and_, bindparam, func, select, update
from sqlalchemy.engine import Engine
from sqlmodel import col

from reintegration.crypto import DataKeyRecord, KeyEncryptionKey, Keyring
from reintegration.vault import VaultRefused, VaultTransitKeyEncryptionKey

BATCH = 500
TABLE = DataKeyRecord.__table__  # type: ignore[attr-defined]  # set by SQLModel's metaclass, not declared


class RotationRefused(Exception):
    """The rotation cannot run as configured; nothing was changed."""


@dataclass(frozen=True)
class Pending:
    """Data keys still wrapped by a KEK other than the current one."""

    kek_id: str
    keys: int
    unwrapped_by: str | None  # the configured KEK that unwraps them (its id); None: none does


@dataclass
class Rotation:
    """What a run did."""

    rewrapped: int = 0
    skipped: int = 0  # changed by someone else between read and write: destroyed, or re-wrapped
    unreadable: list[str] = field(default_factory=list)  # key ids that did not unwrap: look into them
    batches: int = 0
    remaining: int = 0  # under another KEK after the run
    newer: int = 0  # under a later version of the Vault transit key than the run's, left as they are
    seconds: float = 0.0
    stopped: bool = False  # stopped by ``max_batches`` before the end

    @property
    def keys_per_second(self) -> float:
        return self.rewrapped / self.seconds if self.seconds > 0 else 0.0


def _still_to_do(current: KeyEncryptionKey) -> ColumnElement[bool]:
    """A key not destroyed, and wrapped by another KEK than the current one."""
    return and_(col(DataKeyRecord.wrapped).is_not(None), col(DataKeyRecord.kek_id) != current.kek_id)


def _newer(current: KeyEncryptionKey, kek_id: str) -> bool:
    """Wrapped by a later version of the current (Vault transit) KEK: not for this run to re-wrap."""
    return isinstance(current, VaultTransitKeyEncryptionKey) and current.newer(kek_id)


def _groups(engine: Engine, keyring: Keyring) -> list[Pending]:
    """The data keys not destroyed and not under the current KEK, by the KEK that wraps them now."""
    query = (
        select(col(DataKeyRecord.kek_id), func.count())
        .where(_still_to_do(keyring.kek))
        .group_by(col(DataKeyRecord.kek_id))
        .order_by(col(DataKeyRecord.kek_id))
    )
    with engine.connect() as connection:
        groups = connection.execute(query).all()
    return [
        Pending(kek_id=kek_id, keys=int(keys), unwrapped_by=(kek.kek_id if (kek := keyring.kek_for(kek_id)) else None))
        for kek_id, keys in groups
    ]


def pending(engine: Engine, keyring: Keyring) -> list[Pending]:
    """The data keys still to re-wrap, by the KEK that wraps them now (destroyed keys are not, nor
    keys under a later version of the Vault transit key than the current one: see ``newer``)."""
    return [group for group in _groups(engine, keyring) if not _newer(keyring.kek, group.kek_id)]


def newer(engine: Engine, keyring: Keyring) -> list[Pending]:
    """The data keys under a later version of the current (Vault transit) KEK than this process's, by
    version: wrapped by processes started after a later ``rotate`` in Vault. A rotation leaves them
    as they are; run it again (it then takes the newest version) to bring every key to one version."""
    return [group for group in _groups(engine, keyring) if _newer(keyring.kek, group.kek_id)]


def check(engine: Engine, keyring: Keyring) -> list[Pending]:
    """What the rotation will do; ``RotationRefused`` (saying why) if it cannot finish."""
    current = keyring.kek
    for previous in keyring.previous:
        if previous.kek_id == current.kek_id:
            raise RotationRefused(
                f"the current key-encryption key ({current.kek_id}) is also listed as a previous one: no new "
                "KEK is configured (the new key goes in REINTEGRATION_KEK_FILE, the old in _KEK_PREVIOUS_FILES)"
            )
    groups = pending(engine, keyring)
    missing = [g for g in groups if g.unwrapped_by is None]
    if missing:
        raise RotationRefused(
            "; ".join(
                f"{g.keys} data key(s) are wrapped by key-encryption key {g.kek_id}, which is not configured"
                for g in missing
            )
            + " (give it in REINTEGRATION_KEK_PREVIOUS_FILES)"
        )
    try:
        probe = os.urandom(32)
        if current.unwrap(current.wrap(probe, context=b"rotation-check"), context=b"rotation-check") != probe:
            raise ValueError("round trip")
    except (InvalidTag, ValueError):
        raise RotationRefused(f"the current key-encryption key ({current.kek_id}) does not wrap and unwrap") from None
    with engine.connect() as connection:
        for group in groups:
            # One key of each old KEK, unwrapped before anything is written: the right key file, a
            # token allowed to decrypt.
            sample = connection.execute(
                select(col(DataKeyRecord.key_id), col(DataKeyRecord.wrapped))
                .where(col(DataKeyRecord.kek_id) == group.kek_id, col(DataKeyRecord.wrapped).is_not(None))
                .order_by(col(DataKeyRecord.key_id))
                .limit(1)
            ).first()
            kek = keyring.kek_for(group.kek_id)
            if sample is None or kek is None:
                continue  # destroyed meanwhile
            try:
                kek.unwrap(base64.b64decode(sample.wrapped), context=sample.key_id.encode())
            except (InvalidTag, ValueError):
                raise RotationRefused(
                    f"the key-encryption key configured for {group.kek_id} does not unwrap its data key {sample.key_id}"
                ) from None
    return groups


def _rewrapped(keyring: Keyring, rows: Sequence[Any]) -> dict[str, str | None]:
    """Each row's key wrapped by the current KEK, by key id; None for one that does not unwrap."""
    current = keyring.kek
    if not isinstance(current, VaultTransitKeyEncryptionKey):
        return {row.key_id: _one(keyring, row) for row in rows}
    # Vault: a request per batch, not per key. Keys of an earlier version of the transit key are
    # re-wrapped inside Vault; keys of a key file are unwrapped here and wrapped by Vault.
    inside = [row for row in rows if current.unwraps(row.kek_id)]
    results = _batched(current.rewrap_many, current.rewrap, [(_blob(row), row.key_id.encode()) for row in inside])
    done: dict[str, str | None] = {row.key_id: result for row, result in zip(inside, results, strict=True)}
    opened = []
    for row in rows:
        if row.key_id in done:
            continue
        old = keyring.kek_for(row.kek_id)
        try:
            opened.append((row, old.unwrap(_blob(row), context=row.key_id.encode()) if old else None))
        except (InvalidTag, ValueError):
            opened.append((row, None))
    readable = [(row, key) for row, key in opened if key is not None]
    results = _batched(current.wrap_many, current.wrap, [(key, row.key_id.encode()) for row, key in readable])
    done |= {row.key_id: result for (row, _), result in zip(readable, results, strict=True)}
    return done | {row.key_id: None for row, key in opened if key is None}


def _blob(row: Any) -> bytes:
    return base64.b64decode(row.wrapped)


def _one(keyring: Keyring, row: Any) -> str | None:
    old = keyring.kek_for(row.kek_id)
    if old is None:
        return None
    context = row.key_id.encode()
    try:
        return base64.b64encode(keyring.kek.wrap(old.unwrap(_blob(row), context=context), context=context)).decode()
    except (InvalidTag, ValueError):
        return None


def _batched(
    many: Callable[[list[tuple[bytes, bytes]]], list[bytes]],
    one: Callable[..., bytes],
    items: list[tuple[bytes, bytes]],
) -> list[str | None]:
    """``many`` over the whole batch; if it refuses any item, ``one`` for each, to find which."""
    if not items:
        return []
    try:
        return [base64.b64encode(result).decode() for result in many(items)]
    except VaultRefused:
        pass
    results: list[str | None] = []
    for blob, context in items:
        try:
            results.append(base64.b64encode(one(blob, context=context)).decode())
        except VaultRefused:
            results.append(None)
    return results


def rotate(
    engine: Engine,
    keyring: Keyring,
    *,
    batch: int = BATCH,
    max_batches: int | None = None,
    progress: Callable[[Rotation, int], None] | None = None,
) -> Rotation:
    """Re-wrap every data key not under the current KEK, ``batch`` rows per transaction; stop after
    ``max_batches`` if given (run again to go on). ``progress(report, total)`` after each batch."""
    if batch < 1:
        raise ValueError("a batch holds at least one key")
    started = time.monotonic()
    total = sum(group.keys for group in check(engine, keyring))
    report = Rotation()
    current = keyring.kek
    # Keys under a later version of the transit key, as found now; any that appear during the run
    # are dropped from their batch below.
    later = [group.kek_id for group in newer(engine, keyring)]
    to_do = _still_to_do(current)
    if later:
        to_do = and_(to_do, col(DataKeyRecord.kek_id).not_in(later))
    # Compare and set: written only if the row still holds what was read.
    write = (
        update(TABLE)
        .where(
            and_(
                TABLE.c.key_id == bindparam("b_key_id"),
                TABLE.c.kek_id == bindparam("b_old_kek_id"),
                TABLE.c.wrapped == bindparam("b_old_wrapped"),
            )
        )
        .values(kek_id=current.kek_id, wrapped=bindparam("b_wrapped"))
    )
    after = ""
    while True:
        if max_batches is not None and report.batches >= max_batches:
            report.stopped = True
            break
        with engine.connect() as connection:
            rows = connection.execute(
                select(col(DataKeyRecord.key_id), col(DataKeyRecord.kek_id), col(DataKeyRecord.wrapped))
                .where(to_do, col(DataKeyRecord.key_id) > after)
                .order_by(col(DataKeyRecord.key_id))
                .limit(batch)
            ).all()
        if not rows:
            break
        after = rows[-1].key_id
        rows = [row for row in rows if not _newer(current, row.kek_id)]
        changes = []
        rewrapped = _rewrapped(keyring, rows)
        for row in rows:
            wrapped = rewrapped[row.key_id]
            if wrapped is None:
                report.unreadable.append(row.key_id)  # a key id is random, never personal
                continue
            changes.append(
                {"b_key_id": row.key_id, "b_old_kek_id": row.kek_id, "b_old_wrapped": row.wrapped, "b_wrapped": wrapped}
            )
        if changes:
            with engine.begin() as connection:
                if connection.dialect.supports_sane_multi_rowcount:
                    written = connection.execute(write, changes).rowcount
                else:
                    written = sum(connection.execute(write, change).rowcount for change in changes)
            report.rewrapped += written
            report.skipped += len(changes) - written
        report.batches += 1
        if progress is not None:
            progress(report, total)
    groups = _groups(engine, keyring)
    report.remaining = sum(group.keys for group in groups if not _newer(current, group.kek_id))
    report.newer = sum(group.keys for group in groups if _newer(current, group.kek_id))
    report.seconds = time.monotonic() - started
    return report
