"""The real parts for the tests: a Temporal dev server, a database (SQLite, and the machine's
PostgreSQL for the production path), the worker, and the API served over HTTP on a free port.
"""

from __future__ import annotations

import asyncio
import random
import socket
import uuid
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import uvicorn
from sqlmodel import Session
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from api.main import create_app
from reintegration import directory
from reintegration.codec import data_converter
from reintegration.crypto import Keyring
from reintegration.db import keyring_from_settings, make_engine
from reintegration.migrate import upgrade_schema
from reintegration.settings import Settings
from reintegration.temporal import temporal_cli
from reintegration.tokens import Claims, mint
from reintegration.webhooks import delivery_client
from worker import build_worker
from workflows.model import Role

pytest_plugins = ["tests.watchdog"]

NAMESPACE = "reintegration"
POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres?connect_timeout=10"


_HANDED_OUT: set[int] = set()


def _ephemeral_low() -> int:
    """Where the kernel's range for ``bind(0)`` starts (Linux's default when it cannot be read)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A port free now on 127.0.0.1, below the kernel's range of ephemeral ports, and never the same
    twice in this process. A server started on it binds it only a moment later, and Temporal's
    development server meanwhile picks its own ports (its HTTP API's, its services') by ``bind(0)``:
    picked from that same range, ours was taken from under it, twice in one run of the suite
    ("bind: address already in use" on its HTTP API, the server never answering)."""
    low = _ephemeral_low()
    first = 10000 if low > 12000 else 1024
    for _ in range(500):
        port = random.randrange(first, low) if low - first > 1000 else 0
        if port in _HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port
    raise RuntimeError("no free port below the ephemeral range")


@pytest.fixture(scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    from tests.watchdog import watch_loop  # the plugin, imported by pytest_plugins above

    watch_loop(asyncio.get_running_loop())
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
    # A request still open when the block ends is cancelled after 10 s, not waited for without end.
    # h11 as the API's own processes (``uvicorn_options``), whatever else is installed.
    defaults = {"log_level": "warning", "timeout_graceful_shutdown": 10, "http": "h11"}
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, **{**defaults, **config}))
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
    app: Any = None  # the API's application, served in this process

    def app_state(self) -> Any:
        """The API's state (its blob store, say), as its requests see it."""
        return self.app.state

    def token(
        self, role: str, sub: str, *, agency: str | None = None, countries: list[str] | tuple[str, ...] | None = ("*",)
    ) -> str:
        """A development token; every country unless ``countries`` says otherwise (``None``: no claim)."""
        countries = list(countries) if countries is not None and role != "partner" else None
        key = (role, sub, agency, tuple(countries) if countries is not None else None)
        if key not in self._tokens:
            self._tokens[key] = mint(self.settings, role=Role(role), sub=sub, agency=agency, countries=countries)
            # A token minted is a user signed in: the directory knows them (as ``reintegration token``).
            with Session(self.engine) as session:
                directory.record_sign_in(session, Claims(sub=sub, role=Role(role), agency=agency, countries=countries))
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
        app = create_app(settings)
        async with served(app, lifespan="on") as base_url:
            # Idle connections dropped before uvicorn's keep-alive timeout (5 s, httpx's default expiry
            # too): a request sent on one as the server closed it failed with ReadError.
            http = httpx.AsyncClient(base_url=base_url, timeout=120, limits=httpx.Limits(keepalive_expiry=2.0))
            stack = Stack(
                backend=backend,
                settings=settings,
                client=client,
                engine=engine,
                http=http,
                base_url=base_url,
                keyring=keyring,
                worker_http=delivery_client(settings),
                app=app,
            )
            await stack.start_worker()
            try:
                yield stack
            finally:
                if stack.worker is not None:
                    await _stop_worker_or_say_why_not(stack)
                await http.aclose()
                await stack.worker_http.aclose()
    finally:
        engine.dispose()
        keyring.dispose()
        if pg_name:
            _drop_postgres_database(pg_name)


WORKER_STOP_SECONDS = 120.0


async def _stop_worker_or_say_why_not(stack: Stack) -> None:
    """Stop a stack's worker as it is torn down; if it has not stopped in ``WORKER_STOP_SECONDS``,
    print where it waits and warn, and leave it: the run goes on with the next stack. (CI's run once
    hung between one stack's last test and the next one's first, until its limit, without saying
    where. The tests that stop a worker mid-journey wait for it, as ``Stack.stop_worker`` does.)"""
    stopping = asyncio.ensure_future(stack.stop_worker())
    await asyncio.wait({stopping}, timeout=WORKER_STOP_SECONDS)  # not wait_for: it would wait for a cancel
    if not stopping.done():
        from tests.watchdog import report  # the plugin, imported by pytest_plugins above

        what = f"the {stack.backend} stack's worker had not stopped after {WORKER_STOP_SECONDS:.0f} s; left behind"
        report(what)
        warnings.warn(what, pytest.PytestWarning, stacklevel=1)


# The tests on the shared ``stack`` run on SQLite, and on the machine's PostgreSQL (the production
# path) too where the database's dialect, locking or transactions decide the outcome: here, by module
# or by ``module::test``. Elsewhere both databases receive the same SQL from SQLAlchemy, and a second
# run would test Temporal and the API again, not the database. ``--postgres-everywhere`` runs them all
# on both. (Tests that make databases of their own, as tests/test_migrations.py does, choose for themselves.)
BOTH_DATABASES = frozenset(
    {
        # The chain's head is locked (SELECT ... FOR UPDATE; SQLite: a write transaction), verify reads
        # at REPEATABLE READ, and appenders in several processes must not fork the chain.
        "test_audit",
        # Concurrent requests with one key race for the claim's primary key (IntegrityError) and take
        # over an abandoned claim by an UPDATE whose rowcount decides.
        "test_idempotency",
        # Stored answers expire by timestamps compared in SQL; a stored created_at must round-trip
        # exactly to delete the expired claim.
        "test_replays",
        # Drift is repaired by UPDATE/DELETE ... WHERE version = the version read; cases listed in
        # timestamp order.
        "test_reconcile",
        # Keyset batches ordered by (opened_at, case_id); each batch is audited in the transaction
        # that reads it, before it is streamed.
        "test_exports",
        # The case facts' backfill and their writers (a correction, a PUT) meet by INSERT ... ON
        # CONFLICT DO NOTHING, and a write committed meanwhile must never be overwritten.
        "test_case_facts",
        # The summary is GROUP BY (a boolean among the keys), COUNT(DISTINCT) and a median by
        # OFFSET/LIMIT; the stalled list pages by a keyset on a timestamp.
        "test_supervision",
        # The projection's versioned UPDATE ... WHERE version <= :v and the rowcount it returns.
        "test_read_model",
        # The documented walkthrough, once on the production database: one test, cheap.
        "test_readme",
        # The cursor compares stored timestamps for equality and order in SQL.
        "test_access::test_pagination_walks_every_case_once",
        # Aware times against stored ones (timestamp columns on PostgreSQL, naive text on SQLite).
        "test_access::test_times_carry_their_zone_and_overdue_since_respects_it",
    }
)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--postgres-everywhere",
        action="store_true",
        help="run every test on the shared stack on PostgreSQL too, not only where the dialect matters",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "stack" in metafunc.fixturenames:
        module = metafunc.module.__name__.rpartition(".")[2]
        test = f"{module}::{metafunc.function.__name__}"
        both = metafunc.config.getoption("postgres_everywhere") or module in BOTH_DATABASES or test in BOTH_DATABASES
        # Indirect, so the session-scoped fixture makes one stack per database for the whole run.
        metafunc.parametrize("stack", ["sqlite", "postgres"] if both else ["sqlite"], indirect=True)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test run on the machine's PostgreSQL carries the ``postgres`` marker (``-m postgres``,
    ``-m "not postgres"``), whichever fixture chose the database."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and any(v == "postgres" for v in callspec.params.values() if isinstance(v, str)):
            item.add_marker(pytest.mark.postgres)


@pytest.fixture(scope="session")
async def stack(
    request: pytest.FixtureRequest, temporal_env: WorkflowEnvironment, tmp_path_factory
) -> AsyncIterator[Stack]:
    """The running system shared by the whole run, one per database (parametrized by pytest_generate_tests)."""
    async with running_stack(request.param, temporal_env, tmp_path_factory.mktemp(f"data-{request.param}")) as s:
        yield s
