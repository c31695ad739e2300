"""A database made by an earlier version is refused at start with a clear message (no migrations yet)."""

from __future__ import annotations

import sqlite3

import pytest

from reintegration.db import OutdatedSchema, create_tables, make_engine
from reintegration.settings import Settings


def test_a_table_lacking_a_column_is_refused_with_what_to_do(tmp_path):
    settings = Settings(data_dir=tmp_path)
    engine = make_engine(settings)
    create_tables(engine)
    create_tables(engine)  # a second start of the same version is fine
    engine.dispose()
    with sqlite3.connect(tmp_path / "reintegration.db") as db:  # as an earlier version left it
        db.execute("DROP INDEX ix_idempotency_keys_case_id")
        db.execute("ALTER TABLE idempotency_keys DROP COLUMN case_id")
    engine = make_engine(settings)
    with pytest.raises(OutdatedSchema, match=r"idempotency_keys\.case_id.*move the old database"):
        create_tables(engine)
    engine.dispose()
