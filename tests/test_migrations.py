"""Migrations: the schema at head is the models', on SQLite and PostgreSQL; databases upgrade in
place with their rows; concurrent starts migrate once."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import Engine

from reintegration.db import OutdatedSchema, make_engine, metadata
from reintegration.migrate import BASELINE, current, head, upgrade_schema
from reintegration.settings import Settings
from tests.conftest import _drop_postgres_database, _postgres_database


@pytest.fixture(params=["sqlite", "postgres"])
def empty(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """An empty database of each engine."""
    name = None
    if request.param == "postgres":
        name, url = _postgres_database()
        settings = Settings(data_dir=tmp_path, database_url=url)
    else:
        settings = Settings(data_dir=tmp_path)
    engine = make_engine(settings)
    try:
        yield engine
    finally:
        engine.dispose()
        if name:
            _drop_postgres_database(name)


def differences(engine: Engine) -> list:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return compare_metadata(context, metadata())


def test_an_empty_database_upgraded_to_head_matches_the_models(empty):
    assert upgrade_schema(empty) == head()
    assert differences(empty) == []
    assert upgrade_schema(empty) == head()  # a second start finds nothing to do


def _insert_agency(engine: Engine) -> None:
    now = datetime.now(UTC)
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO agencies (agency_id, name, org_type, country, services, webhook_url, webhook_secret, "
                "active, created_at, updated_at) VALUES ('shelter-x', 'Shelter', 'NGO', 'ES', '[\"shelter\"]', "
                "'https://hooks.example.org/x', 'sealed', true, :now, :now)"
            ),
            {"now": now},
        )
        connection.execute(
            text(
                "INSERT INTO idempotency_keys (sub, key, request_hash, resource_id, status_code, created_at) "
                "VALUES ('cw-1', 'k-1', 'h', 'r-1', 201, :now)"
            ),
            {"now": now},
        )


def _rows(engine: Engine) -> tuple:
    with engine.connect() as connection:
        agency = connection.execute(text("SELECT agency_id, webhook_url, pending_webhook_url FROM agencies")).all()
        keys = connection.execute(text("SELECT sub, key, status_code FROM idempotency_keys")).all()
    return [tuple(r) for r in agency], [tuple(r) for r in keys]


def test_a_database_at_the_baseline_upgrades_with_its_rows_intact(empty):
    upgrade_schema(empty, BASELINE)
    assert current(empty) == BASELINE
    _insert_agency(empty)
    upgrade_schema(empty)
    assert current(empty) == head() and differences(empty) == []
    assert _rows(empty) == ([("shelter-x", "https://hooks.example.org/x", None)], [("cw-1", "k-1", 201)])


def test_a_database_the_last_release_made_without_migrations_is_upgraded_in_place(empty):
    upgrade_schema(empty, BASELINE)
    _insert_agency(empty)
    with empty.begin() as connection:  # as `create_all` left it: the tables, no version
        connection.execute(text("DROP TABLE alembic_version"))
    upgrade_schema(empty)
    assert current(empty) == head() and differences(empty) == []
    assert _rows(empty)[0] == [("shelter-x", "https://hooks.example.org/x", None)]


def test_a_database_older_than_the_baseline_is_refused_with_what_to_do(tmp_path):
    engine = make_engine(Settings(data_dir=tmp_path))
    try:
        with engine.begin() as connection:
            connection.execute(text("CREATE TABLE cases (case_id VARCHAR(64) PRIMARY KEY)"))
        with pytest.raises(OutdatedSchema, match=r"older than the first with migrations \(it lacks .*move it"):
            upgrade_schema(engine)
        assert "alembic_version" not in inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_processes_starting_at_once_migrate_once(empty):
    results, errors = [], []

    def start() -> None:
        try:
            results.append(upgrade_schema(empty))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == [] and results == [head()] * 4
    assert differences(empty) == []


def test_the_command_upgrades_and_tells_the_revision(tmp_path):
    cli = Path(sys.executable).parent / "reintegration"
    env = {"REINTEGRATION_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(cli), "db", *args], env=env, capture_output=True, text=True, timeout=120)

    assert run("current").stdout.strip() == f"database schema: none; newest {head()}"
    first = run("upgrade")
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == [
        f"database schema: none -> {head()}",
        "persons indexed for search: 0",
        "cases given their facts for the reports: 0",
    ]
    again = run("upgrade")
    assert again.returncode == 0
    assert again.stdout.splitlines() == [
        f"database schema: {head()} (newest)",
        "persons indexed for search: 0",
        "cases given their facts for the reports: 0",
    ]
