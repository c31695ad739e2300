"""Metrics in Prometheus' text format: who may read them, the worker's own metrics and its server.

- ``MetricsAccess``: the rule both ``/metrics`` obey (the API's, ``api/metrics.py``, and the
  worker's). With ``REINTEGRATION_METRICS_TOKEN_FILE`` set, only ``Authorization: Bearer <that
  token>`` reads them (else ``401``); without it, development serves them to anyone and production
  not at all (``404``): nothing is exposed by default.
- The worker's counters, where the worker itself acts: deliveries delivered, retried and failed
  (``activities/delivery.py``), e-mails sent, retried and failed (``activities/mail.py``). Each
  process counts its own from its start, as Prometheus expects of counters.
- ``DatabaseGauges``: what the database says now (open cases by stage and country, stalled cases
  by country, overdue tasks by agency, deliveries waiting or failed, e-mails and supervisors'
  notifications by state), read when scraped and kept ``cache_seconds`` (15 s), so that scrapes
  never load the database. Every worker replica reports the same figures: aggregate them across
  replicas with ``max``, never ``sum``.
- ``WorkerMetricsServer``: the worker's ``/metrics``, the Temporal SDK's runtime metrics (fetched
  from the address the SDK's runtime serves them on, ``sdk_runtime``) followed by the project's.

No label ever holds a case, task, user or notification id, nor anything a person typed: stage
names, ISO country codes, agency ids and fixed states only.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import os
import shutil
import socket
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import structlog
from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Counter,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy import case, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, col
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from reintegration.db import (
    AgencyRecord,
    CaseRecord,
    DeliveryRecord,
    NotificationRecord,
    TaskRecord,
    UserNotificationRecord,
)
from reintegration.overdue import overdue_condition
from reintegration.settings import MIN_SECRET_LENGTH, Settings, is_placeholder_secret
from workflows.model import CaseStatus

log = structlog.get_logger("metrics")

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
# The environment variable prometheus_client reads at its import: the API's processes write their
# counts to files there, so that any one of them answers /metrics for all (``shared_across_processes``).
MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"

# No "<name>_created" series beside each counter and histogram: nobody reads them, and they double
# what a scrape carries.
disable_created_metrics()  # type: ignore[no-untyped-call]  # prometheus_client leaves it untyped


# --- Who may read /metrics -------------------------------------------------------------------------


def read_token(path: Path | None) -> str | None:
    """The bearer token in ``path`` (None without one); refused if it is a placeholder or short."""
    if path is None:
        return None
    token = path.read_text().strip()
    if is_placeholder_secret(token):
        raise ValueError(
            f"REINTEGRATION_METRICS_TOKEN_FILE holds a placeholder or a short token (give {MIN_SECRET_LENGTH}+ "
            "random characters)"
        )
    return token


class MetricsAccess:
    """Whether a request may read ``/metrics``: ``check`` answers 200, 401 or 404."""

    def __init__(self, token: str | None, *, open_without_token: bool) -> None:
        self._token = token.encode() if token is not None else None
        self._open = open_without_token

    @classmethod
    def from_settings(cls, settings: Settings) -> MetricsAccess:
        return cls(read_token(settings.metrics_token_file), open_without_token=settings.environment == "development")

    @property
    def served(self) -> bool:
        """Whether ``/metrics`` exists at all (production without a token: no)."""
        return self._token is not None or self._open

    def check(self, authorization: str | None) -> int:
        if self._token is None:
            return 200 if self._open else 404
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self._token):
            return 200
        return 401


# --- The worker's counters --------------------------------------------------------------------------

WORKER_REGISTRY = CollectorRegistry()
ProcessCollector(registry=WORKER_REGISTRY)  # process_cpu_seconds_total, process_resident_memory_bytes...

DELIVERIES_DELIVERED = Counter(
    "reintegration_deliveries_delivered",
    "Messages to agencies' webhooks the agency took (2xx), by agency",
    ["agency_id"],
    registry=WORKER_REGISTRY,
)
DELIVERY_RETRIES = Counter(
    "reintegration_delivery_retries",
    "Attempts to deliver to an agency's webhook that failed and are retried (no answer, 5xx, 408, 425, 429)",
    ["agency_id"],
    registry=WORKER_REGISTRY,
)
DELIVERIES_FAILED = Counter(
    "reintegration_deliveries_failed",
    "Deliveries given up: the agency refused the message (4xx) or its address is refused",
    ["agency_id"],
    registry=WORKER_REGISTRY,
)
EMAILS_SENT = Counter(
    "reintegration_emails_sent",
    "E-mails the mail server took: one notification's, or a daily digest",
    ["kind"],
    registry=WORKER_REGISTRY,
)
EMAIL_RETRIES = Counter(
    "reintegration_email_retries",
    "E-mails the mail server did not take for now (down, busy, 4xx): retried",
    ["kind"],
    registry=WORKER_REGISTRY,
)
EMAILS_FAILED = Counter(
    "reintegration_emails_failed",
    "E-mails refused for good (5xx) or given up",
    ["kind"],
    registry=WORKER_REGISTRY,
)


# --- The database's figures ------------------------------------------------------------------------

CACHE_SECONDS = 15.0
EMAIL_STATES = ("pending", "digest", "sent", "failed")  # "none": no e-mail for that notification
SUPERVISION_STATES = ("pending", "sent")


class DatabaseGauges:
    """Gauges read from the database when scraped, at most once every ``cache_seconds``; a failed
    read keeps the last figures and says so (``reintegration_database_gauges_up 0``)."""

    def __init__(
        self,
        engine: Engine,
        *,
        cache_seconds: float = CACHE_SECONDS,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._engine, self._cache_seconds, self._clock = engine, cache_seconds, clock
        self._lock = threading.Lock()
        self._families: list[Metric] = []
        self._read_at: float | None = None
        self._up = 0.0

    def collect(self) -> Iterable[Metric]:
        with self._lock:  # one read at a time: scrapes that meet wait for it and share it
            if self._read_at is None or time.monotonic() - self._read_at >= self._cache_seconds:
                try:
                    self._families, self._up = self._read(), 1.0
                except SQLAlchemyError as exc:
                    log.warning("metrics not read from the database", error=type(exc).__name__)
                    self._up = 0.0
                self._read_at = time.monotonic()
            families, up = list(self._families), self._up
        yield from families
        yield GaugeMetricFamily(
            "reintegration_database_gauges_up",
            "1 when the last read of the database's figures succeeded, 0 when it failed (the figures are older)",
            value=up,
        )

    def _read(self) -> list[Metric]:
        now = self._clock()
        with Session(self._engine) as session:
            return [
                *self._cases(session),
                self._overdue_tasks(session, now),
                self._deliveries(session),
                self._by_state(
                    session,
                    col(UserNotificationRecord.email_status),
                    EMAIL_STATES,
                    "reintegration_emails",
                    "People's e-mail notifications by state (pending, digest: waiting for the daily digest, sent, "
                    "failed)",
                ),
                self._by_state(
                    session,
                    col(NotificationRecord.status),
                    SUPERVISION_STATES,
                    "reintegration_supervision_notifications",
                    "Notices of stalled cases to the supervisors' channel, by state",
                ),
            ]

    def _cases(self, session: Session) -> list[Metric]:
        stage, country, stalled = col(CaseRecord.stage), col(CaseRecord.owner_country), col(CaseRecord.stalled)
        rows = session.execute(
            select(stage, country, stalled, func.count())
            .where(col(CaseRecord.status) == CaseStatus.active.value)
            .group_by(stage, country, stalled)
        ).all()
        open_cases: dict[tuple[str, str], int] = defaultdict(int)
        stalled_cases: dict[str, int] = defaultdict(int)
        for stage_name, country_code, is_stalled, n in rows:
            open_cases[(stage_name, country_code)] += int(n)
            stalled_cases[country_code] += int(n) if is_stalled else 0  # 0 where none is: said, not absent
        opened = GaugeMetricFamily(
            "reintegration_open_cases", "Open cases by stage and owning country", labels=["stage", "country"]
        )
        for (stage_name, country_code), n in sorted(open_cases.items()):
            opened.add_metric([stage_name, country_code], n)
        stalling = GaugeMetricFamily(
            "reintegration_stalled_cases",
            "Open cases that are stalled (an item overdue, or no activity for too long), by owning country",
            labels=["country"],
        )
        for country_code, n in sorted(stalled_cases.items()):
            stalling.add_metric([country_code], n)
        return [opened, stalling]

    def _overdue_tasks(self, session: Session, now: datetime) -> Metric:
        agency = col(TaskRecord.agency_id)
        counts = {a: 0 for a in session.scalars(select(col(AgencyRecord.agency_id)).where(col(AgencyRecord.active)))}
        for agency_id, n in session.execute(
            select(agency, func.count()).where(overdue_condition(now)).group_by(agency)
        ).all():
            counts[agency_id] = int(n)
        family = GaugeMetricFamily(
            "reintegration_overdue_tasks",
            "Open tasks overdue now (not accepted in time, or past their due day), by agency",
            labels=["agency_id"],
        )
        for agency_id, n in sorted(counts.items()):
            family.add_metric([agency_id], n)
        return family

    def _deliveries(self, session: Session) -> Metric:
        status, agency = col(DeliveryRecord.status), col(DeliveryRecord.agency_id)
        # Grouped by columns only: PostgreSQL finds an expression with parameters in the select and the
        # GROUP BY different (each its own parameters); the retries are an aggregate instead.
        tried = func.sum(case((col(DeliveryRecord.attempts) > 0, 1), else_=0))
        waiting = status.in_(("pending", "failed"))
        rows = session.execute(
            select(status, agency, func.count(), tried).where(waiting).group_by(status, agency)
        ).all()
        counts: dict[tuple[str, str], int] = defaultdict(int)
        for state_name, agency_id, n, retrying in rows:
            if state_name == "pending":  # tried already: waiting for its next attempt
                counts[("retrying", agency_id)] += int(retrying or 0)
                counts[("pending", agency_id)] += int(n) - int(retrying or 0)
            else:
                counts[(state_name, agency_id)] += int(n)
        family = GaugeMetricFamily(
            "reintegration_deliveries",
            "Messages to agencies' webhooks not delivered: pending (not tried yet), retrying (tried, waiting for "
            "the next attempt), failed (given up), by agency",
            labels=["status", "agency_id"],
        )
        for (state_name, agency_id), n in sorted(counts.items()):
            if n:
                family.add_metric([state_name, agency_id], n)
        return family

    @staticmethod
    def _by_state(session: Session, column: Any, states: tuple[str, ...], name: str, documentation: str) -> Metric:
        counts = dict.fromkeys(states, 0)
        for state_name, n in session.execute(
            select(column, func.count()).where(column.in_(states)).group_by(column)
        ).all():
            counts[state_name] = int(n)
        family = GaugeMetricFamily(name, documentation, labels=["status"])
        for state_name, n in counts.items():
            family.add_metric([state_name], n)
        return family


# --- The worker's /metrics -------------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def sdk_runtime(bind_address: str) -> Runtime:
    """The Temporal SDK's runtime, serving its metrics (workers' slots, polls, task latencies,
    requests to the frontend...) in Prometheus' format at ``bind_address`` (a loopback address:
    the worker's own server adds them to its ``/metrics``)."""
    return Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=bind_address)))


def worker_registry(engine: Engine, *, cache_seconds: float = CACHE_SECONDS, **gauges: Any) -> CollectorRegistry:
    """The project's metrics on a worker: this process's counters and the database's gauges."""
    registry = CollectorRegistry()
    registry.register(WORKER_REGISTRY)
    registry.register(DatabaseGauges(engine, cache_seconds=cache_seconds, **gauges))
    return registry


REQUEST_TIMEOUT_SECONDS = 10.0
SDK_TIMEOUT_SECONDS = 5.0


class WorkerMetricsServer:
    """``GET /metrics`` on the worker: the SDK's text (from ``sdk_url``), then the project's
    (``registry``), under ``access``'s rule. A small HTTP/1.1 server on the worker's own event loop:
    one request per connection, nothing but ``/metrics``."""

    def __init__(self, *, access: MetricsAccess, registry: CollectorRegistry, sdk_url: str | None) -> None:
        self._access, self._registry, self._sdk_url = access, registry, sdk_url
        self._http = httpx.AsyncClient(trust_env=False, timeout=SDK_TIMEOUT_SECONDS)
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._serve, host, port)

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        await self._http.aclose()

    async def exposition(self) -> bytes:
        """The SDK's metrics followed by the project's, in Prometheus' text format."""
        sdk = b""
        if self._sdk_url is not None:
            try:
                response = await self._http.get(self._sdk_url)
                response.raise_for_status()
                sdk = response.content
            except httpx.HTTPError as exc:
                log.warning("the Temporal SDK's metrics not read", error=type(exc).__name__)
            if sdk and not sdk.endswith(b"\n"):
                sdk += b"\n"
        # Off the event loop: the database's gauges may read it.
        return sdk + await asyncio.to_thread(generate_latest, self._registry)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            status, body = await self._answer(reader)
            reason = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found"}.get(status, "Error")
            headers = [
                f"HTTP/1.1 {status} {reason}",
                f"Content-Type: {CONTENT_TYPE if status == 200 else 'text/plain; charset=utf-8'}",
                f"Content-Length: {len(body)}",
                "Cache-Control: no-store",
                "Connection: close",
            ]
            if status == 401:
                headers.append("WWW-Authenticate: Bearer")
            writer.write(("\r\n".join(headers) + "\r\n\r\n").encode("latin-1") + body)
            await writer.drain()
        except (ConnectionError, TimeoutError):
            pass  # the scraper went away
        except Exception as exc:  # noqa: BLE001 - a metrics request never stops the worker
            log.warning("metrics request failed", error=type(exc).__name__)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), timeout=REQUEST_TIMEOUT_SECONDS)

    async def _answer(self, reader: asyncio.StreamReader) -> tuple[int, bytes]:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=REQUEST_TIMEOUT_SECONDS)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            return 400, b"bad request\n"
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        method, _, rest = request_line.partition(" ")
        target = rest.partition(" ")[0]
        if method != "GET" or target.partition("?")[0] != "/metrics":
            return 404, b"not found\n"
        authorization = None
        for line in header_lines:
            name, _, value = line.partition(":")
            if name.strip().lower() == "authorization":
                authorization = value.strip()
        status = self._access.check(authorization)
        if status != 200:
            return status, (b"a valid bearer token is required\n" if status == 401 else b"not found\n")
        return 200, await self.exposition()


async def start_worker_metrics(settings: Settings, engine: Engine, *, sdk_address: str | None) -> WorkerMetricsServer:
    """The worker's ``/metrics`` on ``worker_metrics_host``:``worker_metrics_port``."""
    assert settings.worker_metrics_port is not None
    access = MetricsAccess.from_settings(settings)
    server = WorkerMetricsServer(
        access=access,
        registry=worker_registry(engine),
        sdk_url=f"http://{sdk_address}/metrics" if sdk_address else None,
    )
    await server.start(settings.worker_metrics_host, settings.worker_metrics_port)
    if not access.served:
        log.warning(
            "the worker's /metrics answers 404 until REINTEGRATION_METRICS_TOKEN_FILE is set (production)",
            port=settings.worker_metrics_port,
        )
    else:
        log.info("worker metrics served", host=settings.worker_metrics_host, port=settings.worker_metrics_port)
    return server


# --- Several API processes -------------------------------------------------------------------------


@contextlib.contextmanager
def shared_across_processes(processes: int) -> Iterator[None]:
    """With several API processes (uvicorn's workers), each writes its counts to files in a private
    folder made for this run, and whichever process a scrape reaches answers for all of them (the
    API then reports no ``process_*`` metrics: they would be one process's). Removed at the end."""
    if processes <= 1 or MULTIPROCESS_DIR in os.environ:
        yield
        return
    folder = tempfile.mkdtemp(prefix="reintegration-metrics-")
    os.environ[MULTIPROCESS_DIR] = folder
    try:
        yield
    finally:
        os.environ.pop(MULTIPROCESS_DIR, None)
        shutil.rmtree(folder, ignore_errors=True)
