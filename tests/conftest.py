"""The real parts for the tests: a Temporal dev server, a database (SQLite, and the machine's
PostgreSQL for the production path), the worker, and the API served over HTTP on a free port.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import uvicorn
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from api.main import create_app
from reintegration.codec import data_converter
from reintegration.crypto import Keyring
from reintegration.db import keyring_from_settings, make_engine
from reintegration.migrate import upgrade_schema
from reintegration.settings import Settings
from reintegration.temporal import temporal_cli
from reintegration.tokens import mint
from reintegration.webhooks import delivery_client
from worker import build_worker
from workflows.model import Role

NAMESPACE = "reintegration"
POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        namespace=NAMESPACE,
        data_converter=pydantic_data_converter,
        dev_server_existing_path=str(temporal_cli()),
        dev_server_extra_args=["--sqlite-pragma", "journal_mode=wal", "--sqlite-pragma", "synchronous=normal"],
    )
    yield env
    await env.shutdown()


@asynccontextmanager
async def served(app: Any, **config: Any) -> AsyncIterator[str]:
    """An ASGI app served over HTTP by uvicorn on a free port, until the block ends; yields its URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, **{"log_level": "warning", **config}))
    serving = asyncio.create_task(server.serve())
    while not server.started:
        if serving.done():
            serving.result()  # it failed to start: say why
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await serving


@dataclass
class Stack:
    """One running system: settings, database, worker (stoppable) and the API over HTTP."""

    backend: str
    settings: Settings
    client: Client
    engine: Any
    http: httpx.AsyncClient
    base_url: str
    keyring: Keyring
    worker_http: httpx.AsyncClient = field(default_factory=httpx.AsyncClient)
    worker: Worker | None = None
    worker_task: asyncio.Task | None = None
    _tokens: dict = field(default_factory=dict)

    def token(
        self, role: str, sub: str, *, agency: str | None = None, countries: list[str] | tuple[str, ...] | None = ("*",)
    ) -> str:
        """A development token; every country unless ``countries`` says otherwise (``None``: no claim)."""
        countries = list(countries) if countries is not None and role != "partner" else None
        key = (role, sub, agency, tuple(countries) if countries is not None else None)
        if key not in self._tokens:
            self._tokens[key] = mint(self.settings, role=Role(role), sub=sub, agency=agency, countries=countries)
        return self._tokens[key]

    def auth(self, role: str, sub: str, **kw: Any) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(role, sub, **kw)}"}

    async def start_worker(self) -> None:
        self.worker = build_worker(self.client, self.settings, self.engine, self.worker_http, self.keyring)
        self.worker_task = asyncio.create_task(self.worker.run())

    async def stop_worker(self) -> None:
        assert self.worker is not None and self.worker_task is not None
        await self.worker.shutdown()
        await self.worker_task
        self.worker = self.worker_task = None


def _postgres_database() -> tuple[str, str]:
    name = f"reintegration_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name, f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"


def _drop_postgres_database(name: str) -> None:
    with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@asynccontextmanager
async def running_stack(
    backend: str, env: WorkflowEnvironment, data_dir: Path, **overrides: Any
) -> AsyncIterator[Stack]:
    """Database, worker and the API over HTTP on a free port, against the given Temporal server."""
    database_url, pg_name = None, None
    if backend == "postgres":
        pg_name, database_url = _postgres_database()
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "database_url": database_url,
        "temporal_address": env.client.service_client.config.target_host,
        "temporal_namespace": NAMESPACE,
        "temporal_task_queue": f"journeys-{backend}-{uuid.uuid4().hex[:6]}",
        # The suite's many calls come from a few test users: rate limits are tested on stacks of
        # their own (tests/test_hostile_input.py).
        "rate_limit_per_minute": 60_000,
        "rate_limit_burst": 10_000,
        # Partner webhooks in the tests are local and fast: retry soon, give up waiting soon.
        "delivery_timeout_seconds": 1.5,
        "delivery_retry_initial_seconds": 0.2,
        "delivery_retry_max_seconds": 1.0,
        # As `reintegration run` gives its API: the codec tokens of this "stack" (tests/test_run_stack.py).
        "codec_session": f"tests-{uuid.uuid4().hex}",
    }
    settings = Settings(**{**values, **overrides})
    engine = make_engine(settings)
    upgrade_schema(engine)
    keyring = keyring_from_settings(settings)
    # The worker's and the tests' client encrypts payloads, as in service.
    client = Client(
        env.client.service_client, namespace=settings.temporal_namespace, data_converter=data_converter(keyring)
    )
    try:
        async with served(create_app(settings), lifespan="on") as base_url:
            http = httpx.AsyncClient(base_url=base_url, timeout=120)
            stack = Stack(
                backend=backend,
                settings=settings,
                client=client,
                engine=engine,
                http=http,
                base_url=base_url,
                keyring=keyring,
                worker_http=delivery_client(settings),
            )
            await stack.start_worker()
            try:
                yield stack
            finally:
                if stack.worker is not None:
                    await stack.stop_worker()
                await http.aclose()
                await stack.worker_http.aclose()
    finally:
        engine.dispose()
        keyring.dispose()
        if pg_name:
            _drop_postgres_database(pg_name)


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
async def stack(
    request: pytest.FixtureRequest, temporal_env: WorkflowEnvironment, tmp_path_factory
) -> AsyncIterator[Stack]:
    async with running_stack(request.param, temporal_env, tmp_path_factory.mktemp(f"data-{request.param}")) as s:
        yield s
