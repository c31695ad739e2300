"""The database's schema, kept by Alembic migrations (``reintegration/migrations/versions``).

``upgrade_schema`` brings a database to the newest revision. The API, the worker and
``reintegration db upgrade`` call it on start; one process migrates at a time (PostgreSQL: an
advisory lock; SQLite: a lock file beside the database), the others wait for it and then find
nothing left to do. A database made by the last release without migrations (its tables, no
``alembic_version``) is stamped at the baseline first, then upgraded in place; one older than
that is refused with what to do.

Every schema change ships with its migration: change the models, then
``alembic revision --autogenerate -m "what changed"`` from the repository, read what it wrote,
and keep ``tests/test_migrations.py`` green (head matches the models on SQLite and PostgreSQL).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine

from reintegration.db import OutdatedSchema, metadata

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
BASELINE = "0001"
# Columns that later revisions add: a database stamped at the baseline may lack these, no others.
AFTER_BASELINE = {
    ("agencies", c)
    for c in (
        "pending_webhook_url",
        "pending_webhook_secret",
        "webhook_challenge",
        "webhook_verification_id",
        "webhook_requested_at",
        "webhook_confirmed_at",
    )
} | {("persons", "version"), ("cases", "awaiting_approval")}
# Tables that later revisions add, likewise.
AFTER_BASELINE_TABLES = frozenset(
    {
        "web_sessions",
        "read_model_changes",
        "case_notes",
        "person_index",
        "case_links",
        "documents",
        "users",
        "user_notifications",
        "reassignments",
        "case_transfers",
        "plan_drafts",
        "case_facts",
    }
)
ADVISORY_LOCK = 7_310_442_118  # pg_advisory_lock key of the project's migrations


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head() -> str:
    return str(ScriptDirectory.from_config(alembic_config()).get_current_head())


def current(engine: Engine) -> str | None:
    """The revision the database is at (None: not under migrations yet)."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade_schema(engine: Engine, revision: str = "head") -> str | None:
    """Bring the database to ``revision`` (the newest by default); returns the revision it is at."""
    with _migration_lock(engine) as connection:
        _stamp_legacy(connection)
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
        connection.commit()
        return MigrationContext.configure(connection).get_current_revision()


def _stamp_legacy(connection: Connection) -> None:
    """A database the last release made with ``create_all``: mark it as the baseline it is."""
    tables = set(inspect(connection).get_table_names())
    if "alembic_version" in tables or "cases" not in tables:
        return
    inspector = inspect(connection)
    missing = [
        f"{table.name}.{column.name}"
        for table in metadata().sorted_tables
        if table.name not in AFTER_BASELINE_TABLES
        for have in [{c["name"] for c in inspector.get_columns(table.name)} if table.name in tables else set()]
        for column in table.columns
        if column.name not in have and (table.name, column.name) not in AFTER_BASELINE
    ]
    if missing:
        raise OutdatedSchema(
            f"the database was made by a version older than the first with migrations (it lacks "
            f"{', '.join(missing[:5])}): move it (and data/ on the embedded default) aside and start again"
        )
    config = alembic_config()
    config.attributes["connection"] = connection
    command.stamp(config, BASELINE)
    connection.commit()


@contextmanager
def _migration_lock(engine: Engine) -> Iterator[Connection]:
    """A connection on which this process alone migrates until the block ends."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": ADVISORY_LOCK})
            connection.commit()  # the lock is the session's: it outlives this transaction
            try:
                yield connection
            finally:
                connection.rollback()
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": ADVISORY_LOCK})
                connection.commit()
        return
    database = engine.url.database
    lock_path = Path(f"{database}.migrate-lock") if database and database != ":memory:" else None
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600) if lock_path else None
    try:
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        with engine.connect() as connection:
            yield connection
    finally:
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
