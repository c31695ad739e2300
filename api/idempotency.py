"""``Idempotency-Key``: the same key with the same request gives the same response and one effect;
with another request, ``422``.

The first request with a key claims it (a row with no response yet), runs, and stores its response.
A repeat waits for that response. A failure the client should retry (``5xx``) releases the key. A
claim left behind by a crashed process is taken over after a while; the command it carried reaches
the workflow under the same update id, which Temporal de-duplicates.

A stored answer is not a second door: the caller's scope is checked before a repeat as before a
first request, what could show personal data is not stored but read again under today's rules
(``replay``), and stored answers expire (``Settings.idempotency_ttl_hours``, 24 hours): after that
the key is new again, and ``purge_expired`` deletes them.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import delete, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlmodel import Session, col

from api.deps import release_connection
from api.errors import PROBLEM_JSON, ApiProblem, Conflict, Unprocessable
from api.languages import N_
from reintegration.crypto import ERASED, Keyring
from reintegration.db import IdempotencyRecord, aware
from reintegration.tokens import Claims

ABANDONED_AFTER = timedelta(minutes=2)
WAIT_FOR_FIRST = 60.0
DEFAULT_TTL = timedelta(hours=24)

Answer = TypeVar("Answer", bound=BaseModel)


def fingerprint(method: str, path: str, body: Any) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{method} {path}\n{canonical}".encode()).hexdigest()


def update_id(user: Claims, key: str | None) -> str | None:
    """The Temporal update id of a keyed command: repeats reaching the workflow are dropped there too."""
    return f"{user.sub}:{key}" if key else None


async def once(
    engine: Engine,
    keyring: Keyring,
    *,
    user: Claims,
    key: str | None,
    request_hash: str,
    status_code: int,
    run: Callable[[str], Awaitable[Answer]],
    headers: Callable[[dict[str, Any]], dict[str, str]] = lambda _: {},
    case_id: str | None = None,
    session: Session | None = None,
    ttl: timedelta = DEFAULT_TTL,
    replay: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    unstored: frozenset[str] = frozenset(),
) -> Answer | JSONResponse:
    """Run the request once per (caller, key) and give every repeat the first response.

    ``run`` gets the id to give what the request creates: fixed at the first claim, so a request
    taken over after a crash creates the same thing, not a second one. A stored response that shows
    a case (notes, reasons) is kept sealed with the case's key, and goes with the case's erasure.
    ``session``, the request's, holds no connection while this waits (``release_connection``).
    ``replay``, when given, makes a repeat's successful body anew from the stored one under today's
    access rules (it may raise a problem, e.g. 404 once the caller's scope no longer holds the case):
    ``unstored`` names the response's fields that are never stored (the person's data: ``replay``
    reads it again under today's rules).
    """
    if key is None:
        return await run(str(uuid.uuid4()))
    # The fingerprint hashes the body, notes and all: stored keyed, so it can't be used to test guesses.
    # (The keyring may read or create keys in the database: off the event loop, as all database work.)
    request_hash = await asyncio.to_thread(keyring.keyed_hash, request_hash, purpose="idempotency")
    if session is not None and session.in_transaction():
        await asyncio.to_thread(release_connection, session)
    claim = await _claim_or_wait(engine, user.sub, key, request_hash, ttl)
    if isinstance(claim, tuple):
        code, body = await asyncio.to_thread(_open, keyring, *claim)
        if code < 400 and replay is not None:
            body = await asyncio.to_thread(replay, body)
        media = PROBLEM_JSON if code >= 400 else "application/json"
        return JSONResponse(body, status_code=code, headers=headers(body) if code < 400 else {}, media_type=media)
    try:
        result = await run(claim)
    except ApiProblem as problem:
        if problem.status >= 500 or not problem.stored:
            await _release_or_later(engine, user.sub, key)
        else:
            body = {
                "type": f"https://reintegration.example/problems/{problem.status}",
                "title": problem.title,
                "status": problem.status,
                "detail": problem.detail,
                **problem.extra,
            }
            try:
                await asyncio.to_thread(_store, engine, user.sub, key, problem.status, body)
            except SQLAlchemyError:
                await _release_or_later(engine, user.sub, key)  # not left claimed for minutes
                raise
        raise
    except BaseException:
        await asyncio.shield(_release_or_later(engine, user.sub, key))
        raise
    body = {k: (None if k in unstored else v) for k, v in result.model_dump(mode="json").items()}
    # The case whose key seals the stored response: named by the caller, or by the response itself.
    case_id = case_id or (body.get("case_id") if isinstance(body.get("case_id"), str) else None)
    try:
        await asyncio.to_thread(_seal_and_store, engine, keyring, user.sub, key, status_code, body, case_id)
    except SQLAlchemyError:
        await _release_or_later(engine, user.sub, key)  # the client's retry sends the command again, same update id
        raise
    return result


SEALED = "idempotent-response"


def _open(keyring: Keyring, code: int, stored: Any) -> tuple[int, Any]:
    if not (isinstance(stored, dict) and "sealed" in stored):
        return code, stored
    plain = keyring.open(stored["case_id"], stored["sealed"], purpose=SEALED)
    if plain == ERASED:
        raise Conflict(N_("the response to this request went with the erasure of the case's personal data"))
    return code, json.loads(plain)


async def _claim_or_wait(
    engine: Engine, sub: str, key: str, request_hash: str, ttl: timedelta = DEFAULT_TTL
) -> str | tuple[int, Any]:
    """The resource id once this request holds the key; the stored response if an earlier one finished."""
    deadline = asyncio.get_running_loop().time() + WAIT_FOR_FIRST
    while True:
        claim = await asyncio.to_thread(_try_claim, engine, sub, key, request_hash, ttl)
        if claim is not None:
            return claim
        if asyncio.get_running_loop().time() > deadline:
            raise Conflict(N_("a request with this Idempotency-Key is still in progress; retry later"))
        await asyncio.sleep(0.1)


def _try_claim(engine: Engine, sub: str, key: str, request_hash: str, ttl: timedelta) -> str | tuple[int, Any] | None:
    """One look at the key: claimed now (the resource id), answered before (the stored response), or
    still being answered by another request (``None``: look again later)."""
    while True:
        now = datetime.now(UTC)
        with Session(engine) as session:
            record = session.get(IdempotencyRecord, (sub, key))
            if record is not None and record.status_code is not None and now - aware(record.created_at) > ttl:
                # Expired: the key is new again (its answer is gone, whatever purge_expired has done yet).
                session.exec(
                    delete(IdempotencyRecord).where(
                        col(IdempotencyRecord.sub) == sub,
                        col(IdempotencyRecord.key) == key,
                        col(IdempotencyRecord.created_at) == record.created_at,
                    )
                )
                session.commit()
                continue
            if record is None:
                resource_id = str(uuid.uuid4())
                session.add(
                    IdempotencyRecord(
                        sub=sub, key=key, request_hash=request_hash, resource_id=resource_id, created_at=now
                    )
                )
                try:
                    session.commit()
                    return resource_id
                except IntegrityError:
                    continue  # another request claimed it first: look again
            if record.request_hash != request_hash:
                raise Unprocessable(N_("this Idempotency-Key was used with another request"))
            if record.status_code is not None:
                return record.status_code, record.response
            if now - aware(record.created_at) > ABANDONED_AFTER:
                taken = session.exec(
                    update(IdempotencyRecord)
                    .where(
                        col(IdempotencyRecord.sub) == sub,
                        col(IdempotencyRecord.key) == key,
                        col(IdempotencyRecord.status_code).is_(None),
                        col(IdempotencyRecord.created_at) == record.created_at,
                    )
                    .values(created_at=now)
                )
                session.commit()
                if taken.rowcount == 1:
                    return record.resource_id
                continue
            return None


def _seal_and_store(
    engine: Engine, keyring: Keyring, sub: str, key: str, status_code: int, body: dict[str, Any], case_id: str | None
) -> None:
    """Store a successful answer, sealed with the key of the case it shows (if it shows one)."""
    stored = (
        {"case_id": case_id, "sealed": keyring.seal(case_id, json.dumps(body), purpose=SEALED)} if case_id else body
    )
    _store(engine, sub, key, status_code, stored, case_id=case_id)


def _store(engine: Engine, sub: str, key: str, status_code: int, body: Any, *, case_id: str | None = None) -> None:
    with Session(engine) as session:
        session.exec(
            update(IdempotencyRecord)
            .where(col(IdempotencyRecord.sub) == sub, col(IdempotencyRecord.key) == key)
            .values(status_code=status_code, response=body, case_id=case_id)
        )
        session.commit()


def purge_expired(engine: Engine, ttl: timedelta = DEFAULT_TTL) -> int:
    """Delete the stored answers older than ``ttl``; how many."""
    cutoff = datetime.now(UTC) - ttl
    with Session(engine) as session:
        gone = session.exec(
            delete(IdempotencyRecord).where(
                col(IdempotencyRecord.status_code).is_not(None), col(IdempotencyRecord.created_at) < cutoff
            )
        )
        session.commit()
        return gone.rowcount or 0


RELEASED = datetime(1970, 1, 1, tzinfo=UTC)


def _release(engine: Engine, sub: str, key: str, *, claimed_before: datetime | None = None) -> None:
    """Let the client's retry take the claim over at once, keeping its resource id: the retry of a
    case opening that timed out must open the same case (the first attempt may have started it),
    not a second one for the same person. ``claimed_before``: only a claim made before then (not a
    retry's takeover since)."""
    claim = update(IdempotencyRecord).where(
        col(IdempotencyRecord.sub) == sub,
        col(IdempotencyRecord.key) == key,
        col(IdempotencyRecord.status_code).is_(None),
    )
    if claimed_before is not None:
        claim = claim.where(col(IdempotencyRecord.created_at) <= claimed_before)
    with Session(engine) as session:
        session.exec(claim.values(created_at=RELEASED))
        session.commit()


_RELEASING: set[asyncio.Task[None]] = set()


async def _release_or_later(engine: Engine, sub: str, key: str) -> None:
    """Release the claim now, or, if the database is unavailable, as soon as it is back.

    The request ends with ``503`` either way and its client retries with the same key: a claim left
    behind would hold that retry back for ``ABANDONED_AFTER``. (A process that dies before it
    releases leaves it to that takeover.)
    """
    try:
        await asyncio.to_thread(_release, engine, sub, key)
    except SQLAlchemyError:
        task = asyncio.get_running_loop().create_task(
            _release_later(engine, sub, key, claimed_before=datetime.now(UTC))
        )
        _RELEASING.add(task)
        task.add_done_callback(_RELEASING.discard)


async def _release_later(engine: Engine, sub: str, key: str, *, claimed_before: datetime) -> None:
    deadline = asyncio.get_running_loop().time() + ABANDONED_AFTER.total_seconds()
    while asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.5)
        try:
            await asyncio.to_thread(_release, engine, sub, key, claimed_before=claimed_before)
            return
        except SQLAlchemyError:
            continue
