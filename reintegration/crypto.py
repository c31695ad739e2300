"""Encryption of personal data: one data key per case, wrapped by a key-encryption key.

* A **data key** (AES-256-GCM) per case encrypts everything identifying about the case: the
  person vault, free text in the read model (notes, reasons, references) and the case's workflow
  payloads (``reintegration/codec.py``). Destroying it (erasure) makes all of that unreadable
  wherever a copy lies, while the anonymous facts stay.
* Data keys are stored only wrapped (encrypted) by the **key-encryption key** (KEK), which comes
  from settings and sits behind :class:`KeyEncryptionKey`: a local key file on the embedded default,
  or a key of Vault's transit engine (``reintegration/vault.py``). Each stored key names the KEK
  that wrapped it (``kek_id``), so that during a rotation (``reintegration/keys.py``) a keyring
  given the new KEK and the previous ones reads every key, whichever has wrapped it so far.
* A **system key** encrypts workflow payloads and secrets that belong to no case; a **hash key**
  makes keyed hashes (request fingerprints) that nobody without it can test guesses against.

Every ciphertext is bound to where it belongs (associated data: the case id and what it is), so a
value copied to another case or column does not decrypt.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import os
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Column, DateTime, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, Session, SQLModel, col, select

from reintegration.vault import VaultTransitKeyEncryptionKey

DEVELOPMENT_MARKER = "# DEVELOPMENT ONLY"
# Free text and references anywhere in the read model's facts and tasks: sealed with the case's key.
FREE_TEXT_KEYS = frozenset(
    {
        "notes",
        "reason",
        "outcome_notes",
        "decline_reason",
        "authority_reference",
        "measure",
        "route",
        "threats",
        "measures",
        "guardian_type",
        "permit_type",
    }
)
SEALED_PREFIX = "enc:v1:"
ERASED = "[erased]"
NONCE_BYTES = 12


class KeyUnavailable(Exception):
    """The data key was destroyed (the person's data was erased) or never existed."""


class Unreadable(Exception):
    """A stored value or key does not decrypt: another key-encryption key, or the data was altered.
    Never reported as "erased": it is an operational fault to look into."""


class UnknownKeyEncryptionKey(Unreadable):
    """A stored key names a key-encryption key that this process was not given (neither the current
    one nor a previous one): a rotation's old KEK removed too early, or the wrong key file."""


class KeyEncryptionKey(Protocol):
    """Wraps and unwraps data keys. A KMS or Vault transit key implements the same calls.

    ``kek_id`` names what wraps a new key and is stored beside it; ``unwraps`` says whether a key
    stored under another id is one this KEK can still open (a Vault key's earlier versions are).
    A wrapped key that does not unwrap raises ``InvalidTag`` or ``ValueError``."""

    kek_id: str

    def wrap(self, key: bytes, *, context: bytes) -> bytes: ...

    def unwrap(self, wrapped: bytes, *, context: bytes) -> bytes: ...

    def unwraps(self, kek_id: str) -> bool: ...


class LocalKeyEncryptionKey:
    """A 256-bit key read from a file (owner-only permissions); AES-GCM wrapping."""

    def __init__(self, key: bytes, *, development: bool = False) -> None:
        if len(key) != 32:
            raise ValueError("the key-encryption key must be 32 bytes (64 hex digits)")
        self._aead = AESGCM(key)
        self.kek_id = "local:" + hashlib.sha256(b"kek-id" + key).hexdigest()[:16]
        self.development = development

    @classmethod
    def from_file(cls, path: Path, *, create: bool = False) -> LocalKeyEncryptionKey:
        """Read the key file; on the embedded default, create one marked as a development key."""
        if not path.exists():
            if not create:
                raise FileNotFoundError(f"the key-encryption key file {path} does not exist")
            path.parent.mkdir(parents=True, exist_ok=True)
            body = (
                f"{DEVELOPMENT_MARKER}: made by the embedded default; production refuses it\n{secrets.token_hex(32)}\n"
            )
            # Written whole under another name, then linked into place: a process starting at the
            # same moment sees either no file or the whole key, never an empty one.
            partial = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(body)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(partial, path)
            except FileExistsError:  # another process made it first: use theirs
                pass
            finally:
                partial.unlink()
        text = path.read_text()
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        development = any(line.startswith(DEVELOPMENT_MARKER) for line in lines)
        keys = [line for line in lines if not line.startswith("#")]
        if len(keys) != 1:
            raise ValueError(f"the key-encryption key file {path} must hold one key in hex")
        try:
            key = bytes.fromhex(keys[0])
        except ValueError:
            raise ValueError(f"the key-encryption key file {path} is not hex") from None
        return cls(key, development=development)

    def wrap(self, key: bytes, *, context: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, key, context)

    def unwrap(self, wrapped: bytes, *, context: bytes) -> bytes:
        return self._aead.decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], context)

    def unwraps(self, kek_id: str) -> bool:
        return kek_id == self.kek_id


def is_development_kek_file(path: Path) -> bool:
    try:
        return any(line.startswith(DEVELOPMENT_MARKER) for line in path.read_text().splitlines())
    except OSError:
        return False


class DataKeyRecord(SQLModel, table=True):
    """A data key, stored only wrapped by the KEK; ``wrapped`` is emptied when it is destroyed."""

    __tablename__ = "data_keys"

    key_id: str = Field(primary_key=True, max_length=40)
    case_id: str | None = Field(default=None, unique=True, max_length=64)
    purpose: str = Field(max_length=16)  # case, system, keyed-hash
    kek_id: str = Field(max_length=64)
    wrapped: str | None = Field(default=None, max_length=200)
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    destroyed_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))


@dataclass(frozen=True)
class DataKey:
    key_id: str
    key: bytes

    @property
    def aead(self) -> AESGCM:
        return AESGCM(self.key)

    def encrypt(self, plaintext: bytes, aad: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self.aead.encrypt(nonce, plaintext, aad)

    def decrypt(self, blob: bytes, aad: bytes) -> bytes:
        return self.aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)


SYSTEM_KEY_ID = "system-1"
HASH_KEY_ID = "keyed-hash-1"
AUDIT_KEY_ID = "audit-1"  # keys the audit trail's HMAC chain (reintegration/audit.py)


class Keyring:
    """Data keys by case: created on first need, unwrapped on use, cached briefly, destroyed on erasure.

    The cache keeps unwrapped keys for ``cache_seconds`` so that a busy case does not unwrap its key
    on every payload; a key destroyed in another process stops working here when its entry expires.
    Values opened with a case's key can be kept beside it (``keep_opened``), never longer than the key
    itself is at hand: what this process could open again at once, and nothing more.

    New keys are wrapped by ``kek``; a stored key is unwrapped by whichever of ``kek`` and
    ``previous`` its ``kek_id`` names, so a process keeps serving while a rotation re-wraps the keys.
    """

    def __init__(
        self,
        engine: Engine,
        kek: KeyEncryptionKey,
        *,
        previous: Sequence[KeyEncryptionKey] = (),
        cache_seconds: float = 60.0,
        opened_cases: int = 512,
    ) -> None:
        self._engine, self._kek, self._ttl = engine, kek, cache_seconds
        self._previous = tuple(previous)
        self._by_id: dict[str, tuple[float, DataKey]] = {}
        self._by_case: dict[str, str] = {}
        # case id -> name -> (version, the key's id and expiry when it was kept, value); least recently
        # used case first, at most ``opened_cases`` cases.
        self._opened: OrderedDict[str, dict[str, tuple[int, str, float, Any]]] = OrderedDict()
        self._opened_cases = opened_cases
        # No kept value's key expires before this (a lower bound): until then nothing kept is stale,
        # and ``keep_opened`` need not look through them all.
        self._opened_expire_after = math.inf
        self._lock = threading.Lock()

    @property
    def kek(self) -> KeyEncryptionKey:
        return self._kek

    @property
    def previous(self) -> tuple[KeyEncryptionKey, ...]:
        """The key-encryption keys being rotated away from: they unwrap, never wrap."""
        return self._previous

    @property
    def engine(self) -> Engine:
        return self._engine

    def kek_for(self, kek_id: str) -> KeyEncryptionKey | None:
        """The configured KEK that unwraps keys stored under ``kek_id``: the current one first."""
        return next((kek for kek in (self._kek, *self._previous) if kek.unwraps(kek_id)), None)

    def dispose(self) -> None:
        self._engine.dispose()

    # --- keys ----------------------------------------------------------------------------------

    def _cached(self, key_id: str) -> DataKey | None:
        entry = self._by_id.get(key_id)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def _remember(self, key: DataKey, case_id: str | None = None) -> DataKey:
        with self._lock:
            self._by_id[key.key_id] = (time.monotonic() + self._ttl, key)
            if case_id is not None:
                self._by_case[case_id] = key.key_id
        return key

    def cached_case_key(self, case_id: str) -> DataKey | None:
        """The case's key if this process has it at hand (no database call)."""
        key_id = self._by_case.get(case_id)
        return self._cached(key_id) if key_id else None

    def cached_key(self, key_id: str) -> DataKey | None:
        return self._cached(key_id)

    def _unwrap(self, record: DataKeyRecord) -> DataKey:
        if record.wrapped is None:
            raise KeyUnavailable("the key was destroyed")
        kek = self.kek_for(record.kek_id)
        if kek is None:
            # Ids only: a key's id is random, a KEK's id a digest that reveals nothing of the key.
            raise UnknownKeyEncryptionKey(
                f"data key {record.key_id} is wrapped by key-encryption key {record.kek_id}, which this "
                "process is not given (neither the current one nor a previous one)"
            )
        try:
            key = kek.unwrap(base64.b64decode(record.wrapped), context=record.key_id.encode())
        except (InvalidTag, ValueError):
            raise Unreadable(f"data key {record.key_id} does not unwrap") from None
        return DataKey(record.key_id, key)

    def _create(self, session: Session, *, key_id: str, purpose: str, case_id: str | None) -> None:
        key = AESGCM.generate_key(bit_length=256)
        wrapped = base64.b64encode(self._kek.wrap(key, context=key_id.encode())).decode()
        session.add(
            DataKeyRecord(
                key_id=key_id,
                case_id=case_id,
                purpose=purpose,
                kek_id=self._kek.kek_id,
                wrapped=wrapped,
                created_at=datetime.now(UTC),
            )
        )
        try:
            session.commit()
        except IntegrityError:  # made at the same moment by another process: use theirs
            session.rollback()

    def case_key(self, case_id: str, *, create: bool = False) -> DataKey:
        """The case's data key; ``KeyUnavailable`` if it was destroyed (or is missing and not created)."""
        cached = self.cached_case_key(case_id)
        if cached is not None:
            return cached
        with Session(self._engine) as session:
            record = session.exec(select(DataKeyRecord).where(DataKeyRecord.case_id == case_id)).first()
            if record is None:
                if not create:
                    raise KeyUnavailable("the case has no key")
                self._create(session, key_id="dk-" + secrets.token_hex(12), purpose="case", case_id=case_id)
                record = session.exec(select(DataKeyRecord).where(DataKeyRecord.case_id == case_id)).one()
            return self._remember(self._unwrap(record), case_id)

    def key(self, key_id: str) -> DataKey:
        """Any data key by its id (payloads name theirs); ``KeyUnavailable`` if destroyed or unknown."""
        cached = self._cached(key_id)
        if cached is not None:
            return cached
        if key_id in (SYSTEM_KEY_ID, HASH_KEY_ID):
            return self._named(key_id)
        with Session(self._engine) as session:
            record = session.get(DataKeyRecord, key_id)
            if record is None:
                raise KeyUnavailable(f"no key {key_id[:40]!r}")  # key ids are random, never personal
            return self._remember(self._unwrap(record), record.case_id)

    def _named(self, key_id: str) -> DataKey:
        cached = self._cached(key_id)
        if cached is not None:
            return cached
        with Session(self._engine) as session:
            record = session.get(DataKeyRecord, key_id)
            if record is None:
                purpose = {SYSTEM_KEY_ID: "system", AUDIT_KEY_ID: "audit"}.get(key_id, "keyed-hash")
                self._create(session, key_id=key_id, purpose=purpose, case_id=None)
                record = session.get(DataKeyRecord, key_id)
                assert record is not None
            return self._remember(self._unwrap(record))

    def system_key(self) -> DataKey:
        return self._named(SYSTEM_KEY_ID)

    def destroy_case_key(self, session: Session, case_id: str) -> bool:
        """Destroy the case's key in the caller's transaction; True if there was one to destroy.
        Call ``forget`` once it is committed (before, a concurrent read could cache it again)."""
        result = session.exec(
            update(DataKeyRecord)
            .where(col(DataKeyRecord.case_id) == case_id, col(DataKeyRecord.wrapped).is_not(None))
            .values(wrapped=None, destroyed_at=datetime.now(UTC))
        )
        return bool(result.rowcount)

    def forget(self, case_id: str) -> None:
        with self._lock:
            key_id = self._by_case.pop(case_id, None)
            if key_id:
                self._by_id.pop(key_id, None)
            self._opened.pop(case_id, None)

    # --- values opened with a case's key ---------------------------------------------------------

    def keep_opened(self, case_id: str, name: str, version: int, value: Any) -> None:
        """Keep ``value``, opened with the case's key for its ``version``, while the key is at hand
        here (an expired or forgotten key takes its values with it). Nothing is kept for a case
        whose key this process does not hold (a destroyed key, say)."""
        with self._lock:
            key_id = self._by_case.get(case_id)
            entry = self._by_id.get(key_id) if key_id else None
            if key_id is None or entry is None or entry[0] < time.monotonic():
                return
            self._opened.setdefault(case_id, {})[name] = (version, key_id, entry[0], value)
            self._opened.move_to_end(case_id)
            self._opened_expire_after = min(self._opened_expire_after, entry[0])
            while len(self._opened) > self._opened_cases:
                self._opened.popitem(last=False)
            # What expired with its key goes now, not when the cases after it push it out. (Before
            # the earliest key kept expires there is none: a look through every case, each time,
            # cost a command's answer 0.2 ms with 400 cases kept.)
            now = time.monotonic()
            if now > self._opened_expire_after:
                for stale in [c for c, kept in self._opened.items() if all(k[2] < now for k in kept.values())]:
                    del self._opened[stale]
                self._opened_expire_after = min(
                    (k[2] for kept in self._opened.values() for k in kept.values()), default=math.inf
                )

    def opened(self, case_id: str, name: str, version: int) -> Any | None:
        """The value kept under ``name`` for this version of the case, if its key is still at hand."""
        kept = self._kept(case_id, name, version)
        return kept[1] if kept is not None else None

    def latest_opened(self, case_id: str, name: str) -> tuple[int, Any] | None:
        """The version of the case a value is kept for under ``name``, and the value, whichever
        version that is, if its key is still at hand: what a reader of a later version may build on
        (``api.cases.opened_case``) where nothing the value holds can have been rewritten since."""
        return self._kept(case_id, name, None)

    def _kept(self, case_id: str, name: str, version: int | None) -> tuple[int, Any] | None:
        with self._lock:
            kept = self._opened.get(case_id, {}).get(name)
            if kept is None:
                return None
            kept_version, key_id, expiry, value = kept
            key = self._by_id.get(key_id)
            if (
                (version is not None and kept_version != version)
                or self._by_case.get(case_id) != key_id
                or key is None
                or key[0] != expiry  # the key was unwrapped again since: keep only what that one opens
                or expiry < time.monotonic()
            ):
                return None
            self._opened.move_to_end(case_id)
            return kept_version, value

    # --- values --------------------------------------------------------------------------------

    def seal(self, case_id: str, text: str, *, purpose: str = "text") -> str:
        """Encrypt a string with the case's key; the empty string stays empty (it says nothing)."""
        if not text:
            return text
        key = self.case_key(case_id, create=True)
        blob = key.encrypt(text.encode(), _aad(case_id, purpose))
        return SEALED_PREFIX + base64.urlsafe_b64encode(blob).decode()

    def open(self, case_id: str, value: str, *, purpose: str = "text") -> str:
        """The plain text of a sealed value; ``ERASED`` once the case's key is destroyed;
        ``Unreadable`` if it does not decrypt (altered, or sealed for another case or field)."""
        if not value or not value.startswith(SEALED_PREFIX):
            return value
        try:
            key = self.case_key(case_id)
        except KeyUnavailable:
            return ERASED
        try:
            return key.decrypt(base64.urlsafe_b64decode(value[len(SEALED_PREFIX) :]), _aad(case_id, purpose)).decode()
        except (InvalidTag, ValueError):
            raise Unreadable(f"a sealed value of case {case_id} does not decrypt") from None

    def open_field(self, case_id: str, field: str, value: str) -> str:
        """A free-text field sealed by ``seal_fields`` (bound to its field's name)."""
        return self.open(case_id, value, purpose=field_purpose(field))

    def seal_system(self, text: str, *, purpose: str) -> str:
        """Encrypt a secret that belongs to no case (an agency's webhook secret) with the system key;
        ``purpose`` binds it to where it belongs (e.g. the agency)."""
        key = self.system_key()
        return SEALED_PREFIX + base64.urlsafe_b64encode(key.encrypt(text.encode(), purpose.encode())).decode()

    def open_system(self, value: str, *, purpose: str) -> str:
        if not value.startswith(SEALED_PREFIX):
            return value
        try:
            blob = base64.urlsafe_b64decode(value[len(SEALED_PREFIX) :])
            return self.system_key().decrypt(blob, purpose.encode()).decode()
        except (InvalidTag, ValueError):
            raise Unreadable(f"a sealed {purpose.split(':')[0]} does not decrypt") from None

    def seal_fields(self, case_id: str, value: Any, keys: frozenset[str]) -> Any:
        """A copy of a JSON-like value with every string under one of ``keys`` sealed, at any depth,
        each bound to its case and its field's name (so it can't be moved to another field)."""
        return _walk(value, keys, lambda field, s: self.seal(case_id, s, purpose=field_purpose(field)))

    def open_fields(self, case_id: str, value: Any, keys: frozenset[str]) -> Any:
        return _walk(value, keys, lambda field, s: self.open(case_id, s, purpose=field_purpose(field)))

    def keyed_hash(self, value: str, *, purpose: str) -> str:
        """A keyed hash (HMAC-SHA256): equal values match, but nobody without the key can test a
        guess against it, as they could against a plain hash of a low-entropy value."""
        key = self._named(HASH_KEY_ID).key
        return hmac.new(key, f"{purpose}:{value}".encode(), hashlib.sha256).hexdigest()

    def audit_mac(self, data: bytes) -> str:
        """HMAC-SHA256 with the audit trail's key (stored only wrapped by the KEK): a MAC that someone
        with write access to the database alone cannot recompute for an edited row."""
        return hmac.new(self._named(AUDIT_KEY_ID).key, b"audit:" + data, hashlib.sha256).hexdigest()


def _aad(case_id: str, purpose: str) -> bytes:
    return f"{purpose}:{case_id}".encode()


def erase_fields(value: Any, keys: frozenset[str]) -> Any:
    """A copy with every non-empty string under one of ``keys`` replaced by ``ERASED``."""
    return _walk(value, keys, lambda _field, s: ERASED if s else s)


def field_purpose(field: str) -> str:
    return f"text:{field}"


def _walk(value: Any, keys: frozenset[str], fn: Any, *, under: str | None = None) -> Any:
    """Apply ``fn(field, text)`` to every string under one of ``keys`` (the nearest such key names it)."""
    if isinstance(value, dict):
        return {k: _walk(v, keys, fn, under=k if k in keys else under) for k, v in value.items()}
    if isinstance(value, list):
        return [_walk(v, keys, fn, under=under) for v in value]
    if under is not None and isinstance(value, str):
        return fn(under, value)
    return value


def kek_from_settings(settings: Any, *, pause_silent_vault: bool = False) -> KeyEncryptionKey:
    """The KEK the settings name: a key file (created on the embedded default only), or a key of
    Vault's transit engine (left alone a while after it stayed silent, with ``pause_silent_vault``:
    the API's processes, ``reintegration.vault``)."""
    if settings.kek_provider == "vault":
        return VaultTransitKeyEncryptionKey.from_settings(settings, pause_when_silent=pause_silent_vault)
    return LocalKeyEncryptionKey.from_file(settings.kek_path, create=settings.environment == "development")


def previous_keks_from_settings(settings: Any) -> list[KeyEncryptionKey]:
    """The KEKs a rotation moves away from (``kek_previous_files``): read, never created."""
    return [LocalKeyEncryptionKey.from_file(path) for path in settings.kek_previous_files]
