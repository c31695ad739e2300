"""Backup and restore of everything a deployment keeps, taken while it runs.

A backup is a folder: Temporal's store (on the embedded default, ``temporal.db``), the application
database (SQLite: ``reintegration.db``; PostgreSQL: ``reintegration.pgdump``, ``pg_dump``'s custom
format), the blobs of the documents it names (the local store's ``blobs/``), and ``manifest.json``,
written last: every file with its size and SHA-256, the schema revision, the audit trail's head and
the ids of the key-encryption keys that wrapped the data keys. A folder without a manifest is not a
backup (one that stopped half-way).

The SQLite stores are copied with SQLite's online backup, each in a read transaction begun before
either is copied (a consistent snapshot of each file while the writers go on, which WAL lets them
do); PostgreSQL with ``pg_dump`` in a snapshot exported by the transaction that reads the
manifest's facts, so the dump and the facts are the same moment. Temporal on PostgreSQL (a
cluster) keeps its own databases, dumped with its own tools before this runs (README: "Backup and
restore").

Never in a backup, unless asked on the embedded default (``include_keys``): the key-encryption key
and the signing key. Every identifying value in a backup is encrypted with a case's data key, and
the data keys only wrapped by the KEK: a backup kept apart from the KEK reveals nobody, and the
operator keeps the KEK (and the other secrets) somewhere else, backed up on their own.

A restore checks the whole backup against its manifest before it writes anything (a damaged backup
is refused), goes only into an empty data folder and an empty database, and checks that the
key-encryption keys it is given (the current one, and a rotation's previous ones) open every key
of the backup; whatever it refuses, it changes nothing. The staged files are moved in only where
nothing appeared meanwhile (checked again just before, and moved without ever replacing a file), so
a restore completes or leaves the data folder as it was. An audit anchor file whose heads are beyond
the restored trail (it outlives a restore) is moved aside, and a new one starts at the restored head.

Errors (a message that names files and tools, never a value from the data):

- ``BackupError``: the base.
  - ``Refused``: a bad request (a folder that is not empty, a damaged backup, another KEK, a
    backup of another kind of database); nothing was changed.
  - ``Failed``: a part could not be copied or restored (a tool failed, a store was unreadable);
    what this call had written is removed again.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import secrets
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import create_engine, inspect, select, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import col

from reintegration import anchor as anchors
from reintegration.audit import parse_head, read_head
from reintegration.blobs import BlobMissing, LocalBlobStore
from reintegration.crypto import (
    DataKeyRecord,
    KeyEncryptionKey,
    LocalKeyEncryptionKey,
    kek_from_settings,
    previous_keks_from_settings,
)
from reintegration.db import DocumentRecord, make_engine
from reintegration.settings import Settings
from reintegration.vault import VaultUnavailable

MANIFEST = "manifest.json"
TEMPORAL_FILE = "temporal.db"
DATABASE_FILE = "reintegration.db"
DUMP_FILE = "reintegration.pgdump"
BLOBS = "blobs"
KEYS = "keys"
KEK_FILE = f"{KEYS}/kek"
SIGNING_KEY_FILE = f"{KEYS}/dev-signing-key"
READ_CHUNK = 1024 * 1024
# A file of a backup, by its path inside it: nothing else is read from, or written out of, a backup.
_BLOB_PATH = re.compile(rf"^{BLOBS}/(?P<key>[A-Za-z0-9][A-Za-z0-9._-]{{0,127}})$")
# What PostgreSQL's tools may print that quotes a row (a key's value, the line a COPY failed at):
# never passed on.
_QUOTING_LINES = re.compile(r"^\s*(DETAIL|CONTEXT|LINE \d+|HINT|QUERY|WHERE)\b|^\s")


class BackupError(Exception):
    """A backup or a restore that did not happen; the message says why, naming no data."""


class Refused(BackupError):
    """A bad request: nothing was changed."""


class Failed(BackupError):
    """A part could not be copied or restored; what this call wrote was removed again."""


FileRole = Literal["temporal", "database", "database-dump", "blob", "key"]


class BackupFile(BaseModel):
    """One file of a backup, as the manifest lists it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str = Field(max_length=200)
    role: FileRole
    bytes: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class Manifest(BaseModel):
    """What a backup holds and the facts of the moment it was taken (``manifest.json``)."""

    model_config = ConfigDict(extra="forbid")

    format: Literal[1] = 1
    created_at: datetime
    database: Literal["sqlite", "postgresql"]
    schema_revision: str | None
    # The audit trail's last row in the backup (``SEQ:MAC``), for ``audit verify --expect-head``.
    audit_head: str | None
    # The key-encryption keys that wrapped the backup's data keys: a restore must be given them all.
    kek_ids: list[str]
    temporal: Literal["sqlite", "external"]
    # Where the workflows live and are worked on: a restored deployment must name the same.
    temporal_namespace: str
    temporal_task_queue: str
    blob_store: Literal["local", "s3"]
    documents: int = Field(ge=0)
    # Documents whose blob was gone when the blobs were copied (deleted with their case meanwhile).
    documents_without_blob: int = Field(ge=0)
    keys_included: bool
    files: list[BackupFile]

    def file(self, role: FileRole) -> BackupFile | None:
        return next((f for f in self.files if f.role == role), None)


@dataclass
class Restored:
    """What a restore put in place, and what the operator still has to do."""

    manifest: Manifest
    data_dir: Path
    database: str  # "the SQLite file ..." or "the PostgreSQL database ..." (no password)
    notes: list[str] = field(default_factory=list)


# --- Files ---------------------------------------------------------------------------------------


def _private_file(path: Path) -> None:
    """Create an empty file only its owner can read (a backup holds every case, encrypted)."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def _digest(path: Path) -> tuple[int, str]:
    sha, size = hashlib.sha256(), 0
    with path.open("rb") as f:
        while chunk := f.read(READ_CHUNK):
            sha.update(chunk)
            size += len(chunk)
    return size, sha.hexdigest()


def _write_private(target: Path, chunks: Iterable[bytes]) -> tuple[int, str]:
    """Write the chunks to a new private file ``target``, fsynced; their size and SHA-256."""
    sha, size = hashlib.sha256(), 0
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        for chunk in chunks:
            sha.update(chunk)
            size += len(chunk)
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    return size, sha.hexdigest()


def _chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(READ_CHUNK):
            yield chunk


def _copy_file(source: Path, target: Path) -> tuple[int, str]:
    """Copy ``source`` to a new private file ``target``, fsynced; its size and SHA-256 as read."""
    return _write_private(target, _chunks(source))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _is_empty_dir(path: Path, *, allowed: set[Path] | None = None) -> bool:
    allowed = {p.resolve() for p in (allowed or set())}
    return path.is_dir() and all(entry.resolve() in allowed for entry in path.iterdir())


@contextmanager
def _pinned_sqlite(source: Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection to a live SQLite store, in a read transaction: the store's moment is
    fixed here (WAL keeps it for this reader while the writers go on), however long the copy takes.

    Read-only, so it never checkpoints or otherwise writes the live store, whoever else has it open."""
    try:
        connection = sqlite3.connect(source.resolve().as_uri() + "?mode=ro", uri=True, timeout=30, isolation_level=None)
    except sqlite3.Error as exc:
        raise Failed(f"{source.name} could not be opened ({type(exc).__name__}: {exc})") from None
    try:
        try:
            connection.execute("BEGIN")
            connection.execute("SELECT count(*) FROM sqlite_master").fetchone()  # the read transaction begins
        except sqlite3.Error as exc:
            raise Failed(f"{source.name} could not be read ({type(exc).__name__}: {exc})") from None
        yield connection
    finally:
        connection.close()


def _copy_pinned(source: sqlite3.Connection, name: str, target: Path) -> None:
    """The pinned store copied in one backup step (in its read transaction), made a plain file (no
    WAL beside it) and checked."""
    _private_file(target)
    try:
        copy = sqlite3.connect(target)
        try:
            source.backup(copy)  # pages=-1: everything in one step
            copy.execute("PRAGMA journal_mode=DELETE")
            (check,) = copy.execute("PRAGMA quick_check").fetchone()
        finally:
            copy.close()
    except sqlite3.Error as exc:
        raise Failed(f"{name} could not be copied ({type(exc).__name__}: {exc})") from None
    if check != "ok":
        raise Failed(f"the copy of {name} does not pass SQLite's check")


# --- The facts of a database ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Facts:
    schema_revision: str | None
    audit_head: str | None
    kek_ids: list[str]
    blob_keys: list[str]


def _facts(connection: Connection) -> _Facts:
    """The schema revision, the audit head, the KEKs that wrapped live data keys and the documents'
    blobs, as this connection's transaction sees them."""
    tables = set(inspect(connection).get_table_names())
    revision = None
    if "alembic_version" in tables:
        revision = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    found = read_head(connection, tables)
    head = f"{found[0]}:{found[1]}" if found is not None else None
    kek_ids: list[str] = []
    if DataKeyRecord.__tablename__ in tables:
        kek_ids = sorted(
            str(k)
            for k in connection.execute(
                select(col(DataKeyRecord.kek_id)).where(col(DataKeyRecord.wrapped).is_not(None)).distinct()
            ).scalars()
        )
    blob_keys: list[str] = []
    if DocumentRecord.__tablename__ in tables:
        blob_keys = sorted(str(k) for k in connection.execute(select(col(DocumentRecord.blob_key))).scalars())
    return _Facts(None if revision is None else str(revision), head, kek_ids, blob_keys)


def _sqlite_facts(path: Path) -> _Facts:
    address = path.resolve().as_uri() + "?mode=ro"
    engine = create_engine("sqlite://", creator=lambda: sqlite3.connect(address, uri=True))
    try:
        with engine.connect() as connection:
            return _facts(connection)
    finally:
        engine.dispose()


def _sqlite_database(settings: Settings) -> Path | None:
    """The application's SQLite file, or None when the application runs on PostgreSQL."""
    url = make_url(settings.sqlalchemy_url)
    if url.get_backend_name() != "sqlite":
        return None
    if not url.database:
        raise Refused("the database URL names no SQLite file")
    return Path(url.database)


# --- PostgreSQL's tools --------------------------------------------------------------------------


def _libpq(settings: Settings) -> tuple[str, dict[str, str]]:
    """The database's address for pg_dump and pg_restore, and their environment: the password
    goes in the environment (PGPASSWORD), never on a command line, which every user can read."""
    url = make_url(settings.sqlalchemy_url)
    environment = {**os.environ}
    if url.password:
        environment["PGPASSWORD"] = str(url.password)
    address = url.set(drivername="postgresql", password=None).render_as_string(hide_password=False)
    return address, environment


def _shown_address(settings: Settings) -> str:
    url = make_url(settings.sqlalchemy_url)
    return url.set(drivername="postgresql", password=None).render_as_string(hide_password=True)


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise Refused(
            f"{name} is not on PATH: install PostgreSQL's client (the same major version as the server, "
            "or newer), or run it where the server is, as the README says"
        )
    return found


def _run_tool(command: list[str], environment: dict[str, str], what: str) -> None:
    done = subprocess.run(command, env=environment, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        # Only the tool's own lines: those that could quote a row (DETAIL, CONTEXT...) stay out.
        said = [line for line in done.stderr.splitlines() if line.strip() and not _QUOTING_LINES.match(line)]
        reason = "; ".join(line[:300] for line in said[-3:]) or "no message"
        raise Failed(f"{what} failed (exit {done.returncode}): {reason}")


# --- Backup --------------------------------------------------------------------------------------


@contextmanager
def _new_backup_folder(destination: Path) -> Iterator[Path]:
    """The destination, new or empty; on any failure, emptied (or removed) again."""
    created = not destination.exists()
    if not created and not _is_empty_dir(destination):
        raise Refused(f"{destination} is not an empty folder: a backup goes into a new one (nothing was written)")
    try:
        destination.mkdir(mode=0o700, parents=True, exist_ok=True)
        yield destination
    except BaseException:
        if created:
            shutil.rmtree(destination, ignore_errors=True)
        else:
            for entry in destination.iterdir():
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
        raise


def take_backup(
    settings: Settings,
    destination: Path,
    *,
    include_keys: bool = False,
    on_part: Callable[[str], None] | None = None,
) -> Manifest:
    """Back up Temporal's store (embedded), then the application database, then the documents'
    blobs, into ``destination`` (new, or an empty folder), while everything runs.

    The order is what makes the parts fit together. Every workflow history is encrypted with its
    case's data key, which the application database holds and which is written before the case's
    workflow starts: taken after Temporal's store, the database holds the key of every history in
    the backup (the other way round, a case opened in between would have a history nothing can
    read). What the other order would have spared is a read model a step ahead of its workflow
    when a step is taken in between, which ``reintegration reconcile --repair`` puts right after a
    restore; and "in between" is a moment only: both stores' snapshots are fixed one after the
    other before either is copied. The blobs come last: every document the database names was
    stored before its row was written, and a blob never changes.

    ``on_part`` is told as each store's moment is fixed ("temporal", "database") and when the
    blobs are copied ("blobs").
    """
    if include_keys and (settings.environment == "production" or settings.kek_provider != "file"):
        raise Refused(
            "--include-keys is for the embedded default's key files: production's keys are kept and backed up "
            "apart (nothing was written)"
        )
    sqlite_database = _sqlite_database(settings)
    temporal_store = settings.data_dir / TEMPORAL_FILE
    temporal_kind: Literal["sqlite", "external"] = "sqlite" if temporal_store.is_file() else "external"
    if sqlite_database is not None and not sqlite_database.is_file():
        raise Refused(f"there is no database at {sqlite_database}: nothing to back up")
    if sqlite_database is None:
        _tool("pg_dump")
    keys: list[tuple[Path, str]] = []
    if include_keys:
        keys = [(settings.kek_path, KEK_FILE), (settings.signing_key_path, SIGNING_KEY_FILE)]
        keys = [(source, name) for source, name in keys if source.is_file()]
    files: list[BackupFile] = []

    def done(part: str) -> None:
        if on_part is not None:
            on_part(part)

    def add(path: str, role: FileRole, folder: Path) -> None:
        size, digest = _digest(folder / path)
        files.append(BackupFile(path=path, role=role, bytes=size, sha256=digest))

    with _new_backup_folder(destination) as folder, ExitStack() as pins:
        # Each store's moment is fixed first, Temporal's, then the database's, a moment apart; then
        # they are copied, however long that takes: the stores differ by that moment only.
        temporal = pins.enter_context(_pinned_sqlite(temporal_store)) if temporal_kind == "sqlite" else None
        done("temporal")
        if sqlite_database is not None:
            database = pins.enter_context(_pinned_sqlite(sqlite_database))
            done("database")
            if temporal is not None:
                _copy_pinned(temporal, TEMPORAL_FILE, folder / TEMPORAL_FILE)
                add(TEMPORAL_FILE, "temporal", folder)
            _copy_pinned(database, DATABASE_FILE, folder / DATABASE_FILE)
            facts = _sqlite_facts(folder / DATABASE_FILE)
            add(DATABASE_FILE, "database", folder)
        else:
            snapshot, facts = pins.enter_context(_pinned_postgres(settings))
            done("database")
            if temporal is not None:
                _copy_pinned(temporal, TEMPORAL_FILE, folder / TEMPORAL_FILE)
                add(TEMPORAL_FILE, "temporal", folder)
            _dump_postgres(settings, snapshot, folder / DUMP_FILE)
            add(DUMP_FILE, "database-dump", folder)
        pins.close()
        missing = 0
        if settings.blob_store == "local":
            (folder / BLOBS).mkdir(mode=0o700)
            store = LocalBlobStore(settings.data_dir / BLOBS) if facts.blob_keys else None
            for key in facts.blob_keys:
                if store is None or _BLOB_PATH.fullmatch(f"{BLOBS}/{key}") is None:
                    raise Failed("a document's blob key is not one the blob store makes")
                try:
                    # Blobs are written once under a random key and never changed: copied as they are.
                    size, digest = _write_private(folder / BLOBS / key, store.get(key))
                except BlobMissing:
                    (folder / BLOBS / key).unlink(missing_ok=True)
                    missing += 1  # deleted with its case (an erasure) since the database was copied
                    continue
                files.append(BackupFile(path=f"{BLOBS}/{key}", role="blob", bytes=size, sha256=digest))
            _fsync_dir(folder / BLOBS)
        done("blobs")
        if keys:
            (folder / KEYS).mkdir(mode=0o700)
            for source, name in keys:
                size, digest = _copy_file(source, folder / name)
                files.append(BackupFile(path=name, role="key", bytes=size, sha256=digest))
        manifest = Manifest(
            created_at=datetime.now(UTC),
            database="sqlite" if sqlite_database is not None else "postgresql",
            schema_revision=facts.schema_revision,
            audit_head=facts.audit_head,
            kek_ids=facts.kek_ids,
            temporal=temporal_kind,
            temporal_namespace=settings.temporal_namespace,
            temporal_task_queue=settings.temporal_task_queue,
            blob_store=settings.blob_store,
            documents=len(facts.blob_keys),
            documents_without_blob=missing,
            keys_included=bool(keys),
            files=files,
        )
        # Written last, whole, under its own name: a folder with a manifest is a whole backup.
        partial = folder / f".{MANIFEST}.partial"
        _private_file(partial)
        with partial.open("w") as out:
            out.write(manifest.model_dump_json(indent=2) + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, folder / MANIFEST)
        _fsync_dir(folder)
    return manifest


@contextmanager
def _pinned_postgres(settings: Settings) -> Iterator[tuple[str, _Facts]]:
    """A transaction that fixes the database's moment: its snapshot, exported for pg_dump, and the
    facts the manifest records, read in it (the same moment as the dump)."""
    engine = make_engine(settings)
    try:
        with engine.connect() as connection:
            connection = connection.execution_options(isolation_level="REPEATABLE READ")
            with connection.begin():
                snapshot = str(connection.execute(text("SELECT pg_export_snapshot()")).scalar_one())
                facts = _facts(connection)
                yield snapshot, facts
    except SQLAlchemyError as exc:
        raise Failed(f"the database at {_shown_address(settings)} is unavailable ({type(exc).__name__})") from None
    finally:
        engine.dispose()


def _dump_postgres(settings: Settings, snapshot: str, target: Path) -> None:
    """``pg_dump`` of the database as the exported snapshot shows it."""
    address, environment = _libpq(settings)
    _private_file(target)  # pg_dump writes into it, keeping its owner-only mode
    _run_tool(
        [
            _tool("pg_dump"),
            "--format=custom",
            f"--snapshot={snapshot}",
            "--no-password",
            "--file",
            str(target),
            "--dbname",
            address,
        ],
        environment,
        "pg_dump",
    )


# --- Restore -------------------------------------------------------------------------------------


def _known_path(entry: BackupFile) -> bool:
    fixed = {
        "temporal": TEMPORAL_FILE,
        "database": DATABASE_FILE,
        "database-dump": DUMP_FILE,
    }
    if entry.role in fixed:
        return entry.path == fixed[entry.role]
    if entry.role == "key":
        return entry.path in (KEK_FILE, SIGNING_KEY_FILE)
    return _BLOB_PATH.fullmatch(entry.path) is not None


def read_manifest(source: Path) -> Manifest:
    """The backup's manifest, checked for what a restore relies on; ``Refused`` if it is not one."""
    path = source / MANIFEST
    if not path.is_file():
        raise Refused(f"{source} holds no {MANIFEST}: not a backup, or one that did not finish (nothing was restored)")
    try:
        manifest = Manifest.model_validate_json(path.read_bytes())
    except (ValidationError, ValueError):
        raise Refused(f"{path} is not a manifest this version reads (nothing was restored)") from None
    paths = [f.path for f in manifest.files]
    if len(set(paths)) != len(paths) or not all(_known_path(f) for f in manifest.files):
        raise Refused(f"{path} lists files a backup does not hold (nothing was restored)")
    roles = [f.role for f in manifest.files]
    wanted: FileRole = "database" if manifest.database == "sqlite" else "database-dump"
    if roles.count(wanted) != 1 or roles.count("temporal") != (manifest.temporal == "sqlite"):
        raise Refused(f"{path} does not list the stores it names (nothing was restored)")
    return manifest


def verify_backup(source: Path) -> Manifest:
    """Check every file of the backup against the manifest's sizes and SHA-256s."""
    manifest = read_manifest(source)
    for entry in manifest.files:
        path = source / entry.path
        if not path.is_file():
            raise Refused(f"the backup lacks {entry.path} (nothing was restored)")
        if _digest(path) != (entry.bytes, entry.sha256):
            raise Refused(f"{entry.path} does not match its checksum: the backup is damaged (nothing was restored)")
    return manifest


def _kek_check(settings: Settings, manifest: Manifest, source: Path) -> tuple[Path | None, list[str]]:
    """The key-encryption keys the restored deployment is given (the current one and any previous
    ones of a rotation) must open every key of the backup: restored without them, nothing of any
    case would open (and a development start would make a new key file). Returns the backup's key
    file to put in place (a backup with keys, and no key file there yet), and notes."""
    notes: list[str] = []
    to_place: Path | None = None
    current: KeyEncryptionKey
    try:
        if settings.kek_provider == "file":
            kek_file = settings.kek_path
            if not kek_file.is_file() and manifest.keys_included and (source / KEK_FILE).is_file():
                kek_file = to_place = source / KEK_FILE
                notes.append(f"the key-encryption key in the backup is put at {settings.kek_path}")
            if not kek_file.is_file():
                raise Refused(
                    f"no key-encryption key at {kek_file}: put the one kept apart from this backup there first "
                    "(or name it with REINTEGRATION_KEK_FILE); without it nothing restored could be read "
                    "(nothing was restored)"
                )
            current = LocalKeyEncryptionKey.from_file(kek_file)  # read, never created here
        else:
            current = kek_from_settings(settings)
        keks = [current, *previous_keks_from_settings(settings)]
    except (OSError, ValueError, VaultUnavailable) as exc:
        raise Refused(f"the key-encryption key cannot be used: {exc} (nothing was restored)") from None
    # Ids only: a KEK's id is a digest (or a Vault key's name and version) that reveals nothing of it.
    unopened = [kek_id for kek_id in manifest.kek_ids if not any(kek.unwraps(kek_id) for kek in keks)]
    if unopened:
        raise Refused(
            f"the key-encryption key given ({current.kek_id}) is not the one that wrapped this backup's keys "
            f"({', '.join(unopened)}) (nothing was restored)"
        )
    return to_place, notes


def _database_is_empty(settings: Settings) -> bool:
    engine = make_engine(settings)
    try:
        with engine.connect() as connection:
            found = connection.execute(
                text(
                    "SELECT count(*) FROM information_schema.tables "
                    "WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"
                )
            ).scalar_one()
        return int(found) == 0
    except SQLAlchemyError as exc:
        raise Refused(
            f"the database at {_shown_address(settings)} is unavailable ({type(exc).__name__}): create it empty "
            "first (nothing was restored)"
        ) from None
    finally:
        engine.dispose()


def restore_backup(settings: Settings, source: Path, *, on_part: Callable[[str], None] | None = None) -> Restored:
    """Restore a backup into the data folder and the database the settings name, both empty.

    Everything is checked first: the backup against its manifest, the kind of database, that the
    data folder is empty (but for the key files, which may be put there ahead of the restore, and
    the audit anchor file), that the database is empty, and that the key-encryption key is the
    backup's. The data folder's files are staged beside it and moved in once whole, after the
    database is restored in one transaction; a failure removes the staged files, and leaves the
    database as it was. What appeared meanwhile where a file goes stops the restore before it is
    moved in: nothing is ever replaced (the error says what state the database was left in).

    An audit anchor file (``audit_anchor_path``) whose newest head is beyond the restored trail's
    would have ``audit verify`` call the restored trail cut back: it is moved aside (to
    ``NAME.before-restore-TIME``) before anything else changes, refusing the restore if it cannot
    be, and a new file starts at the restored head.

    ``on_part`` is told as the files are staged ("staged") and the database restored ("database").
    """
    manifest = verify_backup(source)
    data_dir = settings.data_dir
    sqlite_database = _sqlite_database(settings)
    if manifest.database == "sqlite":
        if sqlite_database is None:
            raise Refused(
                "this backup's database is SQLite and DATABASE_URL names PostgreSQL: restore it where the "
                "settings name SQLite (nothing was restored)"
            )
        if sqlite_database.resolve() != (data_dir / DATABASE_FILE).resolve():
            raise Refused(f"a SQLite database is restored to {data_dir / DATABASE_FILE} only (nothing was restored)")
    elif sqlite_database is not None:
        raise Refused(
            "this backup's database is a PostgreSQL dump: set DATABASE_URL to an empty PostgreSQL database "
            "(nothing was restored)"
        )
    taken = (manifest.temporal_namespace, manifest.temporal_task_queue)
    if taken != (settings.temporal_namespace, settings.temporal_task_queue):
        raise Refused(
            f"this backup's workflows are in namespace {taken[0]} on task queue {taken[1]}; the settings name "
            f"{settings.temporal_namespace} and {settings.temporal_task_queue}, where no worker would find them "
            "(nothing was restored)"
        )
    if manifest.keys_included and settings.environment == "production":
        raise Refused("this backup holds the embedded default's development keys; production refuses them")
    if manifest.file("blob") is not None and settings.blob_store != "local":
        raise Refused(
            "this backup holds the documents of a local blob store and the settings name S3: restore with "
            "REINTEGRATION_BLOB_STORE=local (nothing was restored)"
        )
    # The anchor file outlives a restore (the development default's lies in the data folder).
    anchor_file = settings.audit_anchor_path
    key_files = {settings.kek_path, settings.signing_key_path, anchor_file}
    if data_dir.exists() and not _is_empty_dir(data_dir, allowed=key_files):
        raise Refused(f"{data_dir} is not empty: a backup is restored into an empty data folder (nothing was restored)")
    kek_to_place, notes = _kek_check(settings, manifest, source)
    dump = manifest.file("database-dump")
    if dump is not None:
        _tool("pg_restore")
        if not _database_is_empty(settings):
            raise Refused(
                f"the database at {_shown_address(settings)} is not empty: a backup is restored into an empty "
                "database (nothing was restored)"
            )
    try:
        restored_head = parse_head(manifest.audit_head) if manifest.audit_head else None
    except ValueError:
        raise Refused("the manifest's audit head is not SEQ:MAC (nothing was restored)") from None
    stale = _stale_anchor(anchor_file, restored_head)

    # Staged beside the data folder (the same file system), so moving it in is a rename.
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    # The first change: the stale anchor file moved aside (refused, nothing changed, if it cannot be).
    aside = _move_anchor_aside(anchor_file, stale) if stale is not None else None
    restored_database = False
    staging = data_dir.parent / f".{data_dir.name}.restoring-{secrets.token_hex(4)}"
    try:
        staging.mkdir(mode=0o700)
        for entry in manifest.files:
            if entry.role in ("database-dump", "key"):
                continue
            target = staging / entry.path
            target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            # Checked again as it is copied: the backup could have changed since it was verified.
            if _copy_file(source / entry.path, target) != (entry.bytes, entry.sha256):
                raise Refused(
                    f"{entry.path} changed while it was restored: the backup is damaged (nothing was restored)"
                )
        placed_keys: list[tuple[Path, Path]] = []
        if kek_to_place is not None:
            placed_keys.append((kek_to_place, settings.kek_path))
        if manifest.keys_included and (source / SIGNING_KEY_FILE).is_file() and not settings.signing_key_path.exists():
            placed_keys.append((source / SIGNING_KEY_FILE, settings.signing_key_path))
        if on_part is not None:
            on_part("staged")
        targets = [data_dir / entry.name for entry in staging.iterdir()] + [key for _, key in placed_keys]
        if dump is not None:
            # Checked again before the database is written: a stack started too early stops it here.
            _refuse_occupied(targets, data_dir, database=None)
            address, environment = _libpq(settings)
            _run_tool(
                [
                    _tool("pg_restore"),
                    "--exit-on-error",
                    "--single-transaction",
                    "--no-owner",
                    "--no-privileges",
                    "--no-password",
                    "--dbname",
                    address,
                    str(source / dump.path),
                ],
                environment,
                "pg_restore",
            )
            restored_database = True
            if on_part is not None:
                on_part("database")
        database = _shown_address(settings) if restored_database else None
        _refuse_occupied(targets, data_dir, database=database)  # again, just before moving in
        _move_in(staging, data_dir, placed_keys, database=database)
    except BaseException:
        if aside is not None:
            _put_anchor_back(aside, anchor_file)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if stale is not None and aside is not None:
        notes.append(
            f"{stale}, so it was moved aside to {aside} (keep it with the backups: it anchors the trail as it "
            "was before the restore)"
        )
    if restored_head is not None and not os.path.lexists(anchor_file) and not anchor_file.parent.is_dir():
        # Not created here where its folder is not: the workers' may not be mounted where this runs.
        notes.append(
            f"there is no audit anchor file at {anchor_file}, nor its folder, where this runs: where the workers "
            "keep it (mounted there), move it aside before they start, or `audit verify` calls the restored trail "
            "cut back"
        )
    elif restored_head is not None and not os.path.lexists(anchor_file):
        try:
            anchors.append(
                anchor_file, anchors.Anchor(seq=restored_head[0], mac=restored_head[1], at=datetime.now(UTC))
            )
            notes.append(
                f"a new audit anchor file {anchor_file} starts at the restored head {restored_head[0]}: "
                "`audit verify` checks the restored trail against it"
            )
        except OSError as exc:
            notes.append(
                f"the audit anchor file {anchor_file} could not be started at the restored head "
                f"({type(exc).__name__}): the workers start it as they anchor the head"
            )
    if dump is not None:
        database = f"the PostgreSQL database {_shown_address(settings)}"
    else:
        database = f"the SQLite file {data_dir / DATABASE_FILE}"
    if manifest.temporal == "external":
        notes.append(
            "Temporal's store is not in this backup (a Temporal cluster): restore its databases (temporal, "
            "temporal_visibility) from their own dumps, taken before this backup, as the README says"
        )
    if manifest.blob_store == "s3":
        notes.append("the documents' blobs are in the S3 bucket, not in this backup: the bucket keeps them")
    if manifest.documents_without_blob:
        notes.append(
            f"{manifest.documents_without_blob} document(s) lost their blob while the backup was taken "
            "(their case was erased meanwhile)"
        )
    return Restored(manifest=manifest, data_dir=data_dir, database=database, notes=notes)


def _stale_anchor(path: Path, restored_head: tuple[int, str] | None) -> str | None:
    """Why the anchor file must be moved aside before the restore (None: it need not): its newest
    head is beyond the restored trail's (or the same row with another MAC), so ``audit verify``
    would call the restored trail cut back; or it cannot be read."""
    try:
        newest = anchors.newest(path)
    except anchors.AnchorFileUnreadable as exc:
        return f"{exc}"
    if newest is None:
        return None
    restored = restored_head[0] if restored_head else 0
    if newest.seq > restored:
        return (
            f"the audit anchor file {path} anchors head {newest.seq}, beyond the restored trail's head {restored}: "
            "`audit verify` would call the restored trail cut back"
        )
    if restored_head is not None and newest.seq == restored and newest.mac != restored_head[1]:
        return (
            f"the audit anchor file {path} anchors another row {restored} than the restored trail's (its MAC "
            "differs): `audit verify` would call the restored trail rewritten"
        )
    return None


def _move_anchor_aside(path: Path, why: str) -> Path:
    """The anchor file moved to ``NAME.before-restore-TIME`` (never over another); ``Refused``,
    nothing changed, if it cannot be (its folder not writable by this user, ``chattr +a``)."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    for attempt in range(100):
        aside = path.with_name(f"{path.name}.before-restore-{stamp}{f'-{attempt}' if attempt else ''}")
        try:
            _move_no_replace(path, aside)
        except FileExistsError:
            continue
        except OSError as exc:
            raise Refused(
                f"{why}; it cannot be moved aside ({type(exc).__name__}): move it yourself, as its owner (after "
                f"`chattr -a` if it is append-only), to {aside}, keep it, and restore again (nothing was restored)"
            ) from None
        _fsync_dir(path.parent)
        return aside
    raise Refused(f"{why}; no free name to move it aside to, beside it (nothing was restored)")


def _put_anchor_back(aside: Path, path: Path) -> None:
    """A restore that did not happen: the anchor file where it was (unless one appeared there)."""
    with suppress(OSError):
        _move_no_replace(aside, path)


def _database_state(database: str | None) -> str:
    """What a restore that stops before moving in left in the database."""
    if database is None:
        return "nothing was restored"
    return (
        f"the PostgreSQL database {database} WAS restored (pg_restore committed): drop it and create it empty "
        "again before the next restore"
    )


def _refuse_occupied(targets: list[Path], data_dir: Path, *, database: str | None) -> None:
    """Refuse, before anything is moved in, if a file appeared where one goes since the checks."""
    present = [target for target in targets if os.path.lexists(target)]
    if present:
        raise Failed(
            f"{', '.join(str(p) for p in present)} appeared while the backup was restored (a stack started too "
            f"early?): nothing was moved into {data_dir}, which is as it was; {_database_state(database)}"
        )


def _move_no_replace(source: Path, target: Path) -> None:
    """Move ``source`` to ``target``, never replacing one: ``FileExistsError`` if it is there.

    A file is hard-linked to its new name (which fails if the name is taken) and then unlinked; a
    folder (or a file where links are not possible) is renamed after a check, and a rename onto a
    folder that is not empty fails rather than replacing it."""
    if not source.is_dir() or source.is_symlink():
        try:
            os.link(source, target, follow_symlinks=False)
        except FileExistsError:
            raise
        except OSError:
            pass  # no hard links on this file system: checked, then renamed
        else:
            os.unlink(source)
            return
    if os.path.lexists(target):
        raise FileExistsError(errno.EEXIST, "exists", str(target))
    try:
        os.rename(source, target)
    except OSError as exc:
        if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
            raise FileExistsError(errno.EEXIST, "exists", str(target)) from None
        raise


def _move_in(staging: Path, data_dir: Path, keys: list[tuple[Path, Path]], *, database: str | None) -> None:
    """The staged files into the data folder (one rename when it does not exist yet), then the key
    files put in place; nothing is ever replaced. If a target is taken meanwhile, or a move fails,
    what was moved goes back and what was written is removed: the data folder is as it was."""
    moves = [(staging, data_dir)] if not data_dir.exists() else [(e, data_dir / e.name) for e in staging.iterdir()]
    moved: list[tuple[Path, Path]] = []
    written: list[Path] = []
    try:
        for source, target in moves:
            _move_no_replace(source, target)
            moved.append((source, target))
        for key_source, key_target in keys:
            key_target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            try:
                _copy_file(key_source, key_target)  # O_EXCL: never over a key file that appeared
            except FileExistsError:
                raise
            except BaseException:
                key_target.unlink(missing_ok=True)  # this call created it
                raise
            written.append(key_target)
        _fsync_dir(data_dir)
    except BaseException as exc:
        for path in written:
            path.unlink(missing_ok=True)
        for source, target in reversed(moved):
            with suppress(OSError):  # best effort: the staging folder is what it goes back to
                _move_no_replace(target, source)
        if isinstance(exc, FileExistsError):
            raise Failed(
                f"{exc.filename} appeared while the backup was moved into {data_dir} (a stack started too early?): "
                f"nothing was replaced, and {data_dir} is as it was; {_database_state(database)}"
            ) from None
        raise


# --- The commands --------------------------------------------------------------------------------


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n / 1e3:.1f} kB"


def backup_command(settings: Settings, destination: Path, *, include_keys: bool = False) -> int:
    """``reintegration backup DEST``: 0 done, 1 refused or failed (nothing left behind), 3 the
    database unavailable."""
    try:
        manifest = take_backup(settings, destination, include_keys=include_keys)
    except BackupError as exc:
        print(f"reintegration backup: {exc}", file=sys.stderr)
        return 1
    except SQLAlchemyError as exc:
        print(f"reintegration backup: the database is unavailable ({type(exc).__name__})", file=sys.stderr)
        return 3
    except OSError as exc:  # a folder that cannot be written, a full disk: the message names a path only
        print(f"reintegration backup: {exc} (nothing left behind)", file=sys.stderr)
        return 1
    for entry in manifest.files:
        if entry.role in ("temporal", "database", "database-dump"):
            print(f"{entry.path:22} {_size(entry.bytes):>10}  {entry.sha256}")
    blobs = [f for f in manifest.files if f.role == "blob"]
    if manifest.blob_store == "local":
        print(f"{BLOBS + '/':22} {_size(sum(f.bytes for f in blobs)):>10}  {len(blobs)} document(s)")
    print(f"backup written to {destination} (schema {manifest.schema_revision or 'none'})")
    if manifest.audit_head:
        print(
            f"audit head {manifest.audit_head}: after a restore, "
            f"`reintegration audit verify --expect-head {manifest.audit_head}`"
        )
    if manifest.temporal == "external":
        print(
            "not in it: Temporal's store (a Temporal cluster): dump its databases temporal and temporal_visibility "
            "BEFORE this command, as the README's 'Backup and restore' says"
        )
    if manifest.blob_store == "s3":
        print(f"not in it: the documents' blobs, in the S3 bucket {settings.s3_bucket} (keep it versioned)")
    if manifest.documents_without_blob:
        print(f"note: {manifest.documents_without_blob} document(s) were erased with their case during the backup")
    if manifest.keys_included:
        print(
            "KEYS INCLUDED: this backup holds the key-encryption key; whoever has it can read every case. "
            "Keep it as you keep the key."
        )
    else:
        print(
            f"not in it, by design: the key-encryption key ({settings.kek_path}) and the other secrets. "
            "Keep them apart, backed up on their own: without the KEK this backup cannot be read, by anyone."
        )
    return 0


def restore_command(settings: Settings, source: Path) -> int:
    """``reintegration restore SRC``: 0 done, 1 refused (nothing changed) or failed."""
    try:
        restored = restore_backup(settings, source)
    except BackupError as exc:
        print(f"reintegration restore: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # staged files are removed again; the message names a path only
        print(f"reintegration restore: {exc}", file=sys.stderr)
        return 1
    manifest = restored.manifest
    print(f"restored the backup of {manifest.created_at.isoformat(timespec='seconds')} into {restored.data_dir}")
    print(f"database: {restored.database} (schema {manifest.schema_revision or 'none'})")
    for note in restored.notes:
        print(f"note: {note}")
    head = f" --expect-head {manifest.audit_head}" if manifest.audit_head else ""
    print(
        "next: start the stack on it (reintegration run), then `reintegration reconcile` (with --repair if it "
        f"finds drift: the workflows are the truth) and `reintegration audit verify{head}`"
    )
    return 0


__all__ = [
    "BackupError",
    "BackupFile",
    "Failed",
    "Manifest",
    "Refused",
    "Restored",
    "backup_command",
    "read_manifest",
    "restore_backup",
    "restore_command",
    "take_backup",
    "verify_backup",
]
