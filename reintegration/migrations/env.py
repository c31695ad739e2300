"""Alembic's environment: the project's tables, on the connection ``reintegration.migrate`` gives.

Run through ``reintegration db upgrade`` (or on start), never with a URL of its own: the caller
holds the migration lock on that connection. ``alembic revision --autogenerate`` works from the
repository too (``alembic.ini``), against ``DATABASE_URL`` or the embedded default.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection

from reintegration.db import metadata
from reintegration.settings import get_settings

config = context.config


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata(),
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:  # the alembic command line, from the repository
    engine = create_engine(get_settings().sqlalchemy_url)
    with engine.connect() as own:
        _run(own)
    engine.dispose()
