"""The FastAPI application: lifespan (database, Temporal client, token verifier), routers, errors, limits."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import structlog
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from opentelemetry.sdk.trace import TracerProvider
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlmodel import Session

from api import agencies as agencies_api
from api import audit as audit_api
from api import (
    case_facts,
    cases,
    deps,
    documents,
    errors,
    exports,
    health,
    idempotency,
    limits,
    links,
    notes,
    person,
    privacy,
    reassignments,
    reopening,
    reports,
    steps,
    supervision,
    tasks,
    transfers,
    users,
    worklist,
)
from api.access_log import RequestContext
from api.metrics import install as install_metrics
from api.schemas import Problem
from api.supervision import KeptSummaries
from api.web import app as workspace
from api.web import sessions as web_sessions
from reintegration import affinity, agencies, heap, person_index, tracing
from reintegration import case_facts as case_facts_store
from reintegration.blobs import blob_store
from reintegration.db import keyring_from_settings, make_engine
from reintegration.logs import configure_logging
from reintegration.migrate import upgrade_schema
from reintegration.settings import Settings, get_settings
from reintegration.temporal import connect
from reintegration.tokens import make_verifier

log = structlog.get_logger("api")


def create_app(settings: Settings | None = None, *, tracer_provider: TracerProvider | None = None) -> FastAPI:
    settings = settings or get_settings()
    # Traces (REINTEGRATION_TRACING): this process's provider, or the caller's (a test's exporter).
    tracer_provider = tracer_provider or tracing.configure_tracing(settings, service_name=tracing.API_SERVICE)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        os.umask(0o077)  # what this process creates (a SQLite database, say) is its owner's only
        # The threads that run the requests' database work at once (``api.deps.database_threads``).
        app.state.database_threads = anyio.CapacityLimiter(settings.api_threads)
        configure_logging()
        app.state.settings = settings
        app.state.engine = make_engine(settings)
        upgrade_schema(app.state.engine)
        # A Vault that stays silent is left alone a while: its timeouts would hold the database threads.
        app.state.keyring = keyring_from_settings(settings, pause_silent_vault=True)
        tracing.instrument_engine(app.state.engine, tracer_provider)
        tracing.instrument_engine(app.state.keyring.engine, tracer_provider)
        app.state.blobs = blob_store(settings)
        app.state.summaries = KeptSummaries()
        if settings.environment == "development":
            with Session(app.state.engine) as session:
                try:
                    agencies.seed(session, app.state.keyring, settings.seed_agencies)
                except IntegrityError:  # another process of this API seeded them at the same moment
                    session.rollback()
        app.state.verifier = make_verifier(settings)  # OIDC when configured; never the development key in production
        app.state.temporal = None
        connecting = asyncio.create_task(_connect(app, settings))
        purging = asyncio.create_task(_purge_stored_answers(app, settings))
        indexing = asyncio.create_task(_index_persons(app))
        try:
            # Wait briefly so a normal start is ready at once; keep trying in the background after.
            await asyncio.wait({connecting}, timeout=settings.temporal_connect_wait_seconds)
            heap.settle()
            yield
        finally:
            connecting.cancel()
            purging.cancel()
            indexing.cancel()
            app.state.engine.dispose()
            app.state.keyring.dispose()

    app = FastAPI(
        title="Reintegration Orchestrator",
        version="1.0.0",
        summary="Durable case journeys for the assistance and reintegration of victims of trafficking",
        lifespan=lifespan,
    )
    app.state.tracer_provider = tracer_provider
    app.state.verified_tokens = deps.VerifiedTokens(ttl_seconds=settings.verified_token_seconds)
    app.state.signed_in = deps.SignedIn()
    app.state.rate_limits = limits.RateLimits.share_of(
        per_minute=settings.rate_limit_per_minute,
        burst=settings.rate_limit_burst,
        shares=settings.api_processes * settings.api_replicas,
    )
    errors.install(app, charge_unverified=limits.charge_unverified)
    # FastAPI tries the routers in this order, each route of each (no prefix skips a router): the
    # most read first, the steps' twenty-one routes after them. No two routers' paths overlap.
    app.include_router(health.router)
    app.include_router(cases.router)
    app.include_router(tasks.router)
    app.include_router(supervision.router)
    app.include_router(steps.router)
    app.include_router(agencies_api.router)
    app.include_router(audit_api.router)
    app.include_router(exports.router)
    app.include_router(notes.router)
    app.include_router(users.router)
    app.include_router(worklist.router)
    app.include_router(reassignments.router)
    app.include_router(transfers.router)
    app.include_router(documents.router)
    app.include_router(links.router)
    app.include_router(person.router)
    app.include_router(case_facts.router)
    app.include_router(reopening.router)
    app.include_router(reports.router)
    app.include_router(privacy.router)
    app.include_router(privacy.codec_router)
    if settings.workspace:  # the web pages (REINTEGRATION_WORKSPACE=false: the API alone)
        workspace.install(app)
    # Added innermost first. A request meets them in reverse: its id, access line and metrics, CORS
    # (so that refusals carry it too), the rate limit of callers without a token, the body limit,
    # then what closes the database sessions it was given. Documents' uploads (and the workspace's
    # form that carries one) are limited to their own size.
    app.add_middleware(deps.CloseSessions)
    app.add_middleware(
        limits.BodyLimit,
        max_bytes=settings.max_body_bytes,
        larger=(limits.UPLOAD_PATHS, settings.document_max_bytes + limits.FORM_OVERHEAD),
    )
    app.add_middleware(limits.AnonymousRateLimit, limits=app.state.rate_limits, page_refusal=workspace.too_many)
    app.add_middleware(privacy.CodecCors, origins=settings.temporal_ui_origins, limits=app.state.rate_limits)
    # Outermost: the request's id, its access line and its metrics (requests, latency and errors by
    # route template, and /metrics, unless production has no metrics token).
    app.add_middleware(RequestContext, application=app, metrics=install_metrics(app, settings))

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
            schema["components"]["schemas"]["Problem"] = Problem.model_json_schema()
            app.openapi_schema = limits.document(errors.document(deps.document_bearer(schema, app.routes)))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to extend the schema
    tracing.instrument_app(app, tracer_provider)  # outside every middleware: the request's server span
    return app


PURGE_EVERY_SECONDS = 900.0


async def _purge_stored_answers(app: FastAPI, settings: Settings) -> None:
    """Delete expired answers to Idempotency-Keys, and the workspace's ended sessions, now and every
    quarter hour (each API process does; the deletes are idempotent)."""
    while True:
        try:
            purged = await asyncio.to_thread(idempotency.purge_expired, app.state.engine, settings.idempotency_ttl)
            if purged:
                log.info("expired idempotent answers purged", count=purged)
            ended = await asyncio.to_thread(web_sessions.purge_ended, app.state.engine, settings)
            if ended:
                log.info("ended workspace sessions purged", count=ended)
        except SQLAlchemyError as exc:
            log.warning("expired answers or sessions not purged", error=type(exc).__name__)
        await asyncio.sleep(PURGE_EVERY_SECONDS)


async def _index_persons(app: FastAPI) -> None:
    """Give the blind indexes to the persons of cases opened before them (``person_index``), and the
    anonymous facts to their cases (``reintegration.case_facts``), once, in the background: a search
    or duplicate check finds them, and the reports count them, once this is done."""
    backfills = (
        (person_index.index_missing, "persons indexed", "persons not indexed", "persons"),
        (case_facts_store.keep_missing, "case facts kept for the reports", "case facts not kept", "cases"),
    )
    for backfill, done, failed, counted in backfills:
        try:
            count = await asyncio.to_thread(backfill, app.state.engine, app.state.keyring)
        except SQLAlchemyError as exc:
            log.warning(failed, error=type(exc).__name__)
            return
        if count:
            log.info(done, **{counted: count})


async def _connect(app: FastAPI, settings: Settings) -> None:
    app.state.temporal = await connect(
        settings,
        keyring=app.state.keyring,
        attempts=100000,
        delay=1.0,
        interceptors=tracing.client_interceptors(app.state.tracer_provider),
    )
    log.info("connected to temporal", temporal_address=settings.temporal_address, namespace=settings.temporal_namespace)


# Configured at import too: uvicorn's worker processes (REINTEGRATION_API_PROCESSES) import this
# module and log before the lifespan runs, and `log_config=None` leaves them no handler of uvicorn's.
configure_logging()
app = create_app()


def served() -> FastAPI:
    """The app as ``reintegration api`` serves it, called by uvicorn in each of its processes: the
    process first takes a CPU of its own (``reintegration.affinity``), before the lifespan starts
    any thread (the database's, Temporal's client's), which then run on it too."""
    affinity.pin_process(get_settings().cpu_affinity)
    return app
