"""Tracing (reintegration/tracing.py): one request's spans, from the API's server span through the
Temporal client's update, the workflow and its activities, to the database and the partner's
webhook, form one trace; and no span carries the person's data, typed text or a query string."""

from __future__ import annotations

import re
import uuid
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from api.main import create_app
from reintegration import tracing
from reintegration.codec import data_converter
from reintegration.db import keyring_from_settings, make_engine
from reintegration.migrate import upgrade_schema
from reintegration.settings import Settings
from reintegration.webhooks import delivery_client
from tests.conftest import NAMESPACE, Stack, served
from tests.delivery_helpers import simulator, until
from tests.journey import Journey
from workflows import ids

# What the test types: none of it may appear anywhere in a span.
FIRST, SECOND, BIRTHDATE = "Zenobia", "Quillfeather", "1987-06-05"
NOTE = "Meet her by the blue kiosk, she fears the cousin"
SEARCHED = f"{FIRST} {SECOND}"
ASSIGN = "POST /v1/cases/{case_id}/tasks"
SQL_SCOPE = "opentelemetry.instrumentation.sqlalchemy"
HTTPX_SCOPE = "opentelemetry.instrumentation.httpx"


@asynccontextmanager
async def traced_stack(env: WorkflowEnvironment, data_dir: Path, exporter: InMemorySpanExporter, **overrides: Any):
    """As tests/conftest.py's ``running_stack`` (SQLite), with tracing on: the API and the worker each
    with its provider (its service name), both exporting to ``exporter``, wired as api/main.py and
    worker.py wire them."""
    settings = Settings(
        data_dir=data_dir,
        temporal_address=env.client.service_client.config.target_host,
        temporal_namespace=NAMESPACE,
        temporal_task_queue=f"journeys-traced-{uuid.uuid4().hex[:6]}",
        rate_limit_per_minute=60_000,
        rate_limit_burst=10_000,
        delivery_timeout_seconds=1.5,
        delivery_retry_initial_seconds=0.2,
        delivery_retry_max_seconds=1.0,
        tracing=True,
        **overrides,
    )
    api_provider = tracing.configure_tracing(settings, service_name=tracing.API_SERVICE, exporter=exporter)
    worker_provider = tracing.configure_tracing(settings, service_name=tracing.WORKER_SERVICE, exporter=exporter)
    engine = make_engine(settings)
    upgrade_schema(engine)
    keyring = keyring_from_settings(settings)
    tracing.instrument_engine(engine, worker_provider)
    tracing.instrument_engine(keyring.engine, worker_provider)
    client = Client(
        env.client.service_client,
        namespace=settings.temporal_namespace,
        data_converter=data_converter(keyring),
        interceptors=tracing.client_interceptors(worker_provider),
    )
    worker_http = delivery_client(settings)
    tracing.instrument_http(worker_http, worker_provider)
    app = create_app(settings, tracer_provider=api_provider)
    try:
        async with served(app, lifespan="on") as base_url:
            http = httpx.AsyncClient(base_url=base_url, timeout=120)  # the test's own: no trace context sent
            stack = Stack(
                backend="sqlite",
                settings=settings,
                client=client,
                engine=engine,
                http=http,
                base_url=base_url,
                keyring=keyring,
                worker_http=worker_http,
                app=app,
            )
            await stack.start_worker()
            try:
                yield stack
            finally:
                await stack.stop_worker()
                await http.aclose()
                await worker_http.aclose()
    finally:
        tracing.uninstrument_app(app)  # it patched Starlette's BackgroundTask for every app
        engine.dispose()
        keyring.dispose()
        for provider in (api_provider, worker_provider):
            assert provider is not None
            provider.shutdown()


def service(span: ReadableSpan) -> str:
    return str(span.resource.attributes["service.name"])


def scope(span: ReadableSpan) -> str:
    return span.instrumentation_scope.name if span.instrumentation_scope else ""


def parent_chain(span: ReadableSpan, by_id: dict[int, ReadableSpan]) -> list[ReadableSpan] | None:
    """The span's ancestors, nearest first, up to the trace's root; None if one is missing."""
    chain = []
    while span.parent is not None:
        parent = by_id.get(span.parent.span_id)
        if parent is None:
            return None
        chain.append(parent)
        span = parent
    return chain


def everything_in(span: ReadableSpan) -> str:
    """Every text a span exports: its name, status, attributes, events, links and resource."""
    texts = [span.name, span.status.description or ""]
    for attributes in [span.attributes, span.resource.attributes, *(e.attributes for e in span.events)]:
        texts += [f"{k}={v}" for k, v in (attributes or {}).items()]
    texts += [e.name for e in span.events]
    texts += [f"{k}={v}" for link in span.links for k, v in (link.attributes or {}).items()]
    return "\n".join(texts)


@pytest.mark.parametrize("sandbox", [False, True], ids=["unsandboxed", "sandboxed"])
async def test_one_request_is_one_trace_from_the_api_to_the_partner_without_personal_data(
    temporal_env, tmp_path, sandbox
):
    exporter = InMemorySpanExporter()
    async with traced_stack(temporal_env, tmp_path, exporter, workflow_sandbox=sandbox) as stack:
        async with simulator(stack, services=["shelter"], act_after=None) as (agency, stats):
            j = Journey(stack)
            await j.open(first_name=FIRST, second_name=SECOND, birthdate=BIRTHDATE)
            # The one request: a task for the agency, with a typed note, and a query string that
            # carries the person's name (the API ignores it; a trace must not keep it).
            r = await stack.http.post(
                f"/v1/cases/{j.case_id}/tasks",
                params={"q": SEARCHED},
                json={"service": "shelter", "agency_id": agency, "notes": NOTE},
                headers=j.cw,
            )
            assert r.status_code == 201, r.text
            task_id = r.json()["task_id"]
            await until(lambda: task_id in stats.received, what="the task delivered to the partner")

            def request_trace() -> list[ReadableSpan]:
                spans = exporter.get_finished_spans()
                servers = [s for s in spans if s.kind == SpanKind.SERVER and s.name == ASSIGN]
                assert len(servers) <= 1  # the one request (its span ends just after its response)
                return [s for s in spans if servers and s.context.trace_id == servers[0].context.trace_id]

            def complete() -> bool:
                spans = request_trace()
                by_id = {s.context.span_id: s for s in spans}
                names = {s.name for s in spans}
                return "RunActivity:deliver_to_agency" in names and all(
                    parent_chain(s, by_id) is not None for s in spans
                )

            # The delivery's spans end a moment after the partner has the task.
            await until(complete, what="every span of the request's trace exported")

            # Every workflow the test made: the case's, the task's delivery, the webhook's verification.
            delivery_id = ids.message_workflow_id(j.case_id, "delivery", task_id)

            async def workflows_made() -> set[str] | None:
                query = f"TaskQueue = '{stack.settings.temporal_task_queue}'"
                made = {e.id async for e in stack.client.list_workflows(query)}
                return made if {ids.workflow_id(j.case_id), delivery_id} <= made else None

            workflow_ids = await until(workflows_made, what="the test's workflows listed")
            assert any(w.startswith(f"agency-{agency}-webhook-") for w in workflow_ids), workflow_ids

    spans = exporter.get_finished_spans()
    in_trace = request_trace()
    by_id = {s.context.span_id: s for s in in_trace}
    [server] = [s for s in in_trace if s.parent is None]
    assert server.name == ASSIGN and service(server) == tracing.API_SERVICE
    assert server.attributes is not None and server.attributes["http.route"] == "/v1/cases/{case_id}/tasks"
    assert j.case_id not in everything_in(server)  # the path's template, never the path

    # Each span of the trace leads, parent by parent, to the request's server span.
    chains = {s.context.span_id: parent_chain(s, by_id) for s in in_trace if s is not server}
    assert all(chain and chain[-1] is server for chain in chains.values())

    def one(name: str, **where: Any) -> ReadableSpan:
        found = [s for s in in_trace if s.name == name and all(getattr(s, k) == v for k, v in where.items())]
        assert found, f"no span {name!r} in the request's trace: {sorted({s.name for s in in_trace})}"
        return found[0]

    def under(span: ReadableSpan, ancestor: ReadableSpan) -> bool:
        return ancestor in (chains.get(span.context.span_id) or [])

    # The API's Temporal client sends the update; the worker validates and handles it, in this trace.
    update = one("StartWorkflowUpdate:task", kind=SpanKind.CLIENT)
    assert service(update) == tracing.API_SERVICE and under(update, server)
    handled = one("HandleUpdate:task")
    assert service(handled) == tracing.WORKER_SERVICE and under(handled, update)
    assert under(one("ValidateUpdate:task"), update)
    # Its activities: the agencies' check and the projection, which writes the database.
    projection = one("RunActivity:project_case")
    assert under(projection, handled) and under(one("RunActivity:check_agencies"), handled)
    writes = [s for s in in_trace if scope(s) == SQL_SCOPE and under(s, projection)]
    assert any(s.name.startswith(("INSERT", "UPDATE")) for s in writes), [s.name for s in writes]
    # The API's own reads are in it too.
    assert any(scope(s) == SQL_SCOPE and service(s) == tracing.API_SERVICE for s in in_trace)
    # The projection starts the task's delivery, whose activity calls the partner's webhook.
    started = one("StartWorkflow:TaskDelivery", kind=SpanKind.CLIENT)
    assert under(started, projection)
    assert under(one("RunWorkflow:TaskDelivery"), started)
    delivery = one("RunActivity:deliver_to_agency")
    assert under(delivery, one("StartActivity:deliver_to_agency")) and under(delivery, started)
    [webhook] = [s for s in in_trace if scope(s) == HTTPX_SCOPE and s.name == "POST"]
    assert webhook.kind == SpanKind.CLIENT and under(webhook, delivery)
    assert webhook.attributes is not None
    url = webhook.attributes.get("url.full") or webhook.attributes.get("http.url")
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", str(url)), url  # scheme, host and port: no path, no query

    # No span of the whole test (openings, verifications, the partner's confirmation included)
    # carries the person's names or birthdate, the typed note, or the query string; nor the case's
    # id, the task's, or any workflow's id (a case's are ``case-<case id>...``, a delivery's ends
    # with its task's id), in its name, attributes, events, links or status.
    assert len(spans) > len(in_trace)
    made_ids = [j.case_id, task_id, *workflow_ids]
    for span in spans:
        text = everything_in(span).lower()
        for typed in (FIRST, SECOND, BIRTHDATE, NOTE, "blue kiosk", *made_ids):
            assert typed.lower() not in text, f"{typed!r} in span {span.name!r}:\n{everything_in(span)}"
        assert "?" not in span.name
        for key in ("http.url", "url.full", "http.target", "url.path"):
            assert "?" not in str((span.attributes or {}).get(key, "")), (span.name, key)
        for key in ("url.query", "client.address", "net.peer.ip", "user_agent.original", "http.user_agent"):
            assert key not in (span.attributes or {}), (span.name, key)
        for key in ("temporalWorkflowID", "temporalUpdateID"):
            assert key not in (span.attributes or {}), (span.name, key)


def test_scrubbing_keeps_types_and_templates_never_messages_queries_or_addresses():
    exporter = InMemorySpanExporter()
    provider = tracing.configure_tracing(Settings(tracing=True), service_name="test", exporter=exporter)
    assert provider is not None
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span(
        "GET /v1/cases/{case_id}",
        kind=SpanKind.SERVER,
        attributes={
            "http.route": "/v1/cases/{case_id}",
            "http.target": f"/v1/cases/1234?q={FIRST}",
            "url.path": "/v1/cases/1234",
            "url.query": f"q={FIRST}",
            "http.url": f"http://api.example:8000/v1/cases/1234?q={FIRST}",
            "client.address": "203.0.113.7",
            "net.peer.ip": "203.0.113.7",
            "net.peer.port": 50123,
            "user_agent.original": "Mozilla/5.0",
            "http.request.header.authorization": ("Bearer abc",),
            "http.status_code": 500,
        },
    ) as span:
        try:
            raise ValueError(f"{FIRST} {SECOND} born {BIRTHDATE}")
        except ValueError as exc:
            span.record_exception(exc)
            span.set_status(trace.Status(StatusCode.ERROR, f"ValueError: {exc}"))
        with tracer.start_as_current_span(
            "POST",
            kind=SpanKind.CLIENT,
            attributes={
                "url.full": "https://user:pw@partner.example:8443/hooks/T0/s3cret?token=abc",
                "http.method": "POST",
            },
        ):
            pass
        with tracer.start_as_current_span("SELECT reintegration", kind=SpanKind.CLIENT) as sql:
            sql.set_attribute("db.statement", "SELECT * FROM persons WHERE blind_index = ?")
            sql.set_attribute("db.user", "reintegration")
            sql.set_status(trace.Status(StatusCode.ERROR, f"(sqlite3.IntegrityError) [parameters: ('{FIRST}',)]"))
    # A Temporal span: its workflow's id names the case (and a delivery's, the task), its update's id
    # the user; in its attributes, an event's and a link's, and its status.
    case_id, task_id, run_id = (str(uuid.uuid4()) for _ in range(3))
    workflow_id = ids.message_workflow_id(case_id, "delivery", task_id)
    temporal_ids = {"temporalWorkflowID": workflow_id, "temporalRunID": run_id, "temporalUpdateID": "u:caseworker-1"}
    linked = trace.Link(span.get_span_context(), {**temporal_ids, "temporalActivityID": "1"})
    with tracer.start_as_current_span(
        "RunActivity:deliver_to_agency",
        kind=SpanKind.SERVER,
        attributes={**temporal_ids, "temporalActivityID": "1", "temporalActivityType": "deliver_to_agency"},
        links=[linked],
    ) as activity:
        activity.add_event("retry", {"temporalWorkflowID": workflow_id})
        activity.set_status(trace.Status(StatusCode.ERROR, f"ApplicationError: no task {task_id} in {workflow_id}"))
    client, query, server, temporal = exporter.get_finished_spans()
    assert dict(server.attributes or {}) == {
        "http.route": "/v1/cases/{case_id}",
        "http.target": "/v1/cases/{case_id}",
        "url.path": "/v1/cases/{case_id}",
        "http.url": "http://api.example:8000/v1/cases/{case_id}",
        "http.status_code": 500,
    }
    [event] = server.events
    assert event.name == "exception" and (event.attributes or {})["exception.type"] == "ValueError"
    assert set(event.attributes or {}) <= {"exception.type", "exception.escaped"}  # no message, no stack trace
    assert server.status.status_code == StatusCode.ERROR and server.status.description == "ValueError"
    assert dict(client.attributes or {}) == {"url.full": "https://partner.example:8443", "http.method": "POST"}
    assert dict(query.attributes or {}) == {"db.statement": "SELECT * FROM persons WHERE blind_index = ?"}
    assert query.status.description is None
    assert dict(temporal.attributes or {}) == {
        "temporalRunID": run_id,
        "temporalActivityID": "1",
        "temporalActivityType": "deliver_to_agency",
    }
    assert [dict(link.attributes or {}) for link in temporal.links] == [
        {"temporalRunID": run_id, "temporalActivityID": "1"}
    ]
    assert [(e.name, dict(e.attributes or {})) for e in temporal.events] == [("retry", {})]
    assert temporal.status.description == "ApplicationError"
    for span in (client, query, server, temporal):
        for leaked in (FIRST, case_id, task_id, workflow_id, "caseworker-1"):
            assert leaked not in everything_in(span), (leaked, span.name)
    provider.shutdown()


def test_tracing_is_off_unless_asked():
    assert tracing.configure_tracing(Settings(), service_name="test", exporter=InMemorySpanExporter()) is None
    assert tracing.client_interceptors(None) == []
