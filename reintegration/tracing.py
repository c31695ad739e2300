"""OpenTelemetry tracing, opt-in (``REINTEGRATION_TRACING=true``): one request's spans from the API,
through Temporal (the client's call, the workflow's update, its activities) to the database and the
partner's webhook, exported over OTLP/HTTP.

Each process makes its own ``TracerProvider`` (``configure_tracing``) and hands it to what it
instruments: the FastAPI app (``instrument_app``), each SQLAlchemy engine (``instrument_engine``),
the webhooks' HTTP client (``instrument_http``) and the Temporal client (``client_interceptors``;
a worker inherits its client's interceptors). The global provider is never set: a test's
in-memory exporter sees its own stack's spans only.

What leaves the process carries no personal data: ``ScrubbingSpanProcessor`` rebuilds every ended
span, whatever the sampler decided, from an allowlist of attributes (any attribute not named there
is dropped, whichever instrumentation or version added it), and no case id: not Temporal's
workflow ids (``case-<case id>...``), only its run ids. The API's paths become their route
templates (``/v1/cases/{case_id}``), query strings never leave, an outgoing request keeps its
scheme, host and port only (a webhook's path or query can hold a token), headers and bodies are
never recorded, SQL statements keep their placeholders (never the parameters' values), and an
exception keeps its type: never its message or stack trace (a driver's or a validator's message can
quote typed text), in span events and status descriptions alike.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
import opentelemetry.context
import temporalio.client
import temporalio.worker
from opentelemetry.context import Context
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import Attributes, AttributeValue
from temporalio.api.common.v1 import Payload
from temporalio.contrib.opentelemetry import TracingInterceptor, TracingWorkflowInboundInterceptor

from reintegration.settings import Settings

if TYPE_CHECKING:  # the worker imports this module without the web stack
    from fastapi import FastAPI
    from sqlalchemy.engine import Engine

API_SERVICE = "reintegration-api"
WORKER_SERVICE = "reintegration-worker"
_SCOPE = "reintegration"

# Trace context only across Temporal: a caller's W3C baggage (anything it chose to send) is not
# carried into workflows, activities, and from there to the partners' webhooks.
_PROPAGATOR = TraceContextTextMapPropagator()

# Probes polled every few seconds would drown the traces.
_UNTRACED_PATHS = "/health$,/ready$"


def configure_tracing(
    settings: Settings, *, service_name: str, exporter: SpanExporter | None = None
) -> TracerProvider | None:
    """The process's tracer provider, or None when tracing is off (``Settings.tracing``).

    Spans go to ``exporter`` as they end (the tests' in-memory one), or else in batches to the OTLP
    collector that the standard variables name (``OTEL_EXPORTER_OTLP_ENDPOINT`` or
    ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, ``_HEADERS``, ``_TIMEOUT``, ``_CERTIFICATE``...; the
    default http://localhost:4318). ``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES`` and
    ``OTEL_TRACES_SAMPLER`` / ``_ARG`` are honoured too. Either way through ``ScrubbingSpanProcessor``.
    The provider exports what is left and stops when the process exits (the SDK's own atexit).
    """
    if not settings.tracing:
        return None
    resource = Resource.create({} if os.environ.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: service_name})
    provider = TracerProvider(resource=resource)
    inner: SpanProcessor
    if exporter is not None:
        inner = SimpleSpanProcessor(exporter)
    else:
        # Imported only when tracing is on: the exporter brings protobuf and requests with it.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        inner = BatchSpanProcessor(OTLPSpanExporter())
    provider.add_span_processor(ScrubbingSpanProcessor(inner))
    return provider


# --- what is instrumented -------------------------------------------------------------------------


def instrument_app(app: FastAPI, provider: TracerProvider | None) -> None:
    """A server span for each request (named after its route's template), the outermost middleware."""
    if provider is None:
        return
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(
        app,
        tracer_provider=provider,
        meter_provider=NoOpMeterProvider(),
        excluded_urls=_UNTRACED_PATHS,
        # ASGI's receive/send spans, one per body chunk: noise.
        exclude_spans=["receive", "send"],
    )


def uninstrument_app(app: FastAPI) -> None:
    """Undo ``instrument_app`` (it also patches Starlette's ``BackgroundTask`` for every app)."""
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.uninstrument_app(app)


def instrument_engine(engine: Engine, provider: TracerProvider | None) -> None:
    """A client span for each statement this engine executes: its SQL with placeholders (the
    instrumentation never records parameters), no SQL comment added (sqlcommenter off).

    This engine only: ``SQLAlchemyInstrumentor().instrument`` would patch ``create_engine`` and
    ``Engine.connect`` for the whole process, once, with the first provider it is given."""
    if provider is None:
        return
    from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
    from opentelemetry.instrumentation.sqlalchemy.version import __version__

    usage = NoOpMeterProvider().get_meter(_SCOPE).create_up_down_counter("db.client.connections.usage")
    EngineTracer(  # type: ignore[no-untyped-call]  # the instrumentation's class has no annotations
        provider.get_tracer("opentelemetry.instrumentation.sqlalchemy", __version__),
        engine,
        usage,
        enable_commenter=False,
        commenter_options={},
        enable_attribute_commenter=False,
    )


def instrument_http(client: httpx.AsyncClient, provider: TracerProvider | None) -> None:
    """A client span for each request this client sends (the partners' webhooks); its transport,
    the address guard's included, is wrapped, not replaced."""
    if provider is None:
        return
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    HTTPXClientInstrumentor.instrument_client(client, tracer_provider=provider, meter_provider=NoOpMeterProvider())


def client_interceptors(provider: TracerProvider | None) -> list[temporalio.client.Interceptor]:
    """For ``Client.connect(interceptors=...)``: spans for the client's calls (StartWorkflow,
    StartWorkflowUpdate, ...) with the trace context in their headers. A worker built on this
    client inherits them (workflow and activity spans): none is to be given to the Worker again."""
    if provider is None:
        return []
    return [TemporalTracing(provider.get_tracer(_SCOPE))]


# --- Temporal -------------------------------------------------------------------------------------


class TemporalTracing(TracingInterceptor):
    """The SDK's ``TracingInterceptor``, but an update belongs to its sender's trace.

    The SDK's workflow side puts every span of an update (and of the activities its handler runs)
    under the span that *started* the workflow, months ago for a case, and only links the update's
    sender. Here the update's validation and handler run in the sender's context (the API request
    that sent it), linked to the workflow's own span instead: one request's spans form one trace.
    """

    def __init__(self, tracer: Any) -> None:
        super().__init__(tracer)
        self.text_map_propagator = _PROPAGATOR

    def workflow_interceptor_class(
        self, input: temporalio.worker.WorkflowInterceptorClassInput
    ) -> type[TracingWorkflowInboundInterceptor]:
        super().workflow_interceptor_class(input)  # registers the span-making extern function
        return _UpdateInSenderTrace


class _Outbound:
    """Where ``_completed_span`` writes the context of the span it made (as an outbound call's headers)."""

    def __init__(self) -> None:
        self.headers: Mapping[str, Payload] = {}


class _UpdateInSenderTrace(TracingWorkflowInboundInterceptor):
    def __init__(self, next: temporalio.worker.WorkflowInboundInterceptor) -> None:
        super().__init__(next)
        self.text_map_propagator = _PROPAGATOR

    def _sender_context(self, input: temporalio.worker.HandleUpdateInput) -> Context | None:
        header = input.headers.get(self.header_key)
        if not header:
            return None
        carrier = self.payload_converter.from_payloads([header])[0]
        if not carrier:
            return None
        return self._set_on_context(self.text_map_propagator.extract(carrier))

    def _span(self, name: str) -> Context | None:
        """A completed span under the current context, linked to the workflow's; its context
        (None on replay, where no span is made)."""
        made = _Outbound()
        self._completed_span(
            name,
            link_context_carrier=self._load_workflow_context_carrier(),
            add_to_outbound=made,
            kind=SpanKind.SERVER,
        )
        header = made.headers.get(self.header_key)
        if header is None:
            return None
        carrier = self.payload_converter.from_payloads([header])[0]
        return self._set_on_context(self.text_map_propagator.extract(carrier))

    def handle_update_validator(self, input: temporalio.worker.HandleUpdateInput) -> None:
        sender = self._sender_context(input)
        if sender is None:
            return super().handle_update_validator(input)
        with _attached(sender):
            self._span(f"ValidateUpdate:{input.update}")
            # The SDK's own validator span is the one just made: past it, to the next interceptor.
            temporalio.worker.WorkflowInboundInterceptor.handle_update_validator(self, input)

    async def handle_update_handler(self, input: temporalio.worker.HandleUpdateInput) -> Any:
        sender = self._sender_context(input)
        if sender is None:
            return await super().handle_update_handler(input)
        with _attached(sender):
            handling = self._span(f"HandleUpdate:{input.update}")
            # The activities the handler starts are children of the update's span.
            with _attached(handling or sender):
                return await temporalio.worker.WorkflowInboundInterceptor.handle_update_handler(self, input)


@contextmanager
def _attached(context: Context) -> Iterator[None]:
    """Attach for the block; detach only where it is still current. An update handler abandoned by
    an evicted workflow is finalized wherever garbage collection runs, in another ``contextvars``
    context: its token is not valid there and there is nothing to detach (the SDK does the same)."""
    token = opentelemetry.context.attach(context)
    try:
        yield
    finally:
        if opentelemetry.context.get_current() is context:
            try:
                token.var.reset(token)
            except ValueError:
                pass


# --- no personal data -----------------------------------------------------------------------------

# Every attribute that may leave, from the HTTP (old and stable conventions), database and Temporal
# instrumentations. Anything else is dropped: the client's address and user agent, url.query,
# headers, db.user, temporalWorkflowID (every workflow of a case is named ``case-<case id>...``, a
# delivery's with its task id: workflows/ids.py), temporalUpdateID (a user's subject and their
# Idempotency-Key), an exception's message and stack trace. temporalRunID is a random UUID and
# temporalActivityID the activity's sequence number in its workflow. Span names carry no id either:
# the route's template, the SQL operation, or Temporal's workflow, update and activity types.
# http.target, url.path, url.full and http.url are rewritten (_urls).
KEPT_ATTRIBUTES = frozenset(
    {
        "http.method",
        "http.request.method",
        "http.request.method_original",
        "http.status_code",
        "http.response.status_code",
        "http.route",
        "http.scheme",
        "url.scheme",
        "http.host",
        "http.flavor",
        "network.protocol.version",
        "server.address",
        "server.port",
        "net.host.port",
        "net.peer.name",
        "net.peer.port",
        "error.type",
        "db.system",
        "db.system.name",
        "db.name",
        "db.namespace",
        "db.statement",
        "db.query.text",
        "db.operation",
        "db.operation.name",
        "temporalRunID",
        "temporalActivityID",
        "temporalActivityType",
        "exception.type",
        "exception.escaped",
    }
)

_EXCEPTION_TYPE = re.compile(r"([A-Za-z_][\w.]*)(?::|$)")


def _origin(url: str) -> str:
    """scheme://host[:port] of an address: no credentials, path or query."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def _urls(attributes: Mapping[str, AttributeValue], kind: SpanKind) -> dict[str, AttributeValue]:
    """The request's address without what it can carry: a server span's path is its route's template
    (none without a route: an unknown path is any text), a client span's address its origin."""
    route = attributes.get("http.route")
    rewritten: dict[str, AttributeValue] = {}
    if isinstance(route, str):
        for key in ("http.target", "url.path"):
            if key in attributes:
                rewritten[key] = route
    for key in ("http.url", "url.full"):
        value = attributes.get(key)
        if isinstance(value, str):
            if kind == SpanKind.SERVER and isinstance(route, str):
                rewritten[key] = _origin(value) + route
            elif kind != SpanKind.SERVER:
                rewritten[key] = _origin(value)
    return rewritten


# The peer of a server span is the caller: its address is dropped, and its port with it.
_CALLER = frozenset({"net.peer.port"})


def scrub_attributes(attributes: Attributes, kind: SpanKind = SpanKind.INTERNAL) -> dict[str, AttributeValue]:
    if not attributes:
        return {}
    allowed = KEPT_ATTRIBUTES - _CALLER if kind == SpanKind.SERVER else KEPT_ATTRIBUTES
    kept = {key: value for key, value in attributes.items() if key in allowed}
    kept.update(_urls(attributes, kind))
    return kept


def _status(status: Status) -> Status:
    """An error keeps its exception's type (``ApplicationError: <message>`` -> ``ApplicationError``)."""
    if status.status_code != StatusCode.ERROR:
        return Status(status.status_code)
    match = _EXCEPTION_TYPE.match(status.description or "")
    return Status(StatusCode.ERROR, match.group(1) if match else None)


def scrub(span: ReadableSpan) -> ReadableSpan:
    """The span as it may leave the process (see the module's docstring)."""
    return ReadableSpan(
        name=span.name.split("?", 1)[0],
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=scrub_attributes(span.attributes, span.kind),
        events=[Event(e.name, scrub_attributes(e.attributes), e.timestamp) for e in span.events],
        links=[Link(link.context, scrub_attributes(link.attributes)) for link in span.links],
        kind=span.kind,
        status=_status(span.status),
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


class ScrubbingSpanProcessor(SpanProcessor):
    """Hands each ended span, scrubbed, to the processor that exports it. The SDK gives ``on_end``
    a snapshot of the span: the scrubbed copy is what leaves, independent of any sampler."""

    def __init__(self, inner: SpanProcessor) -> None:
        self._inner = inner

    def on_start(self, span: Any, parent_context: Context | None = None) -> None:
        self._inner.on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        self._inner.on_end(scrub(span))

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


__all__ = [
    "API_SERVICE",
    "WORKER_SERVICE",
    "ScrubbingSpanProcessor",
    "TemporalTracing",
    "client_interceptors",
    "configure_tracing",
    "instrument_app",
    "instrument_engine",
    "instrument_http",
    "scrub",
    "uninstrument_app",
]
