"""The API's metrics: requests, latency and errors by route template, and ``GET /metrics``.

``RequestMetrics`` is called by the outermost middleware (``api.access_log.RequestContext``) as each
request is answered, so that it counts every answer, refusals before routing (``413``, ``429``) and
the ``500`` of an unexpected error too (a middleware of its own wrapped each request once more, at a
few µs of its CPU). Its label is
the matched route's template (``/v1/cases/{case_id}``), never the path as sent; a request that
matched no route is ``unmatched``; one refused before routing is labelled with the documented route
its path matches (rare, so found the slow way). ``/metrics`` is read as
``reintegration.metrics.MetricsAccess`` says (a bearer token, or development), and is not in the
OpenAPI document.
"""

from __future__ import annotations

import os
from typing import Any

from fastapi import FastAPI, Request, Response
from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.types import Scope

from api.access_log import DocumentedTemplates, routed_template
from api.errors import Unauthorized
from reintegration.metrics import CONTENT_TYPE, MULTIPROCESS_DIR, MetricsAccess
from reintegration.settings import Settings

UNMATCHED = "unmatched"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER_METHOD = "other"  # a method nobody routes: a client's word, never a label
# Seconds: the API's answers take milliseconds to a second; an export streams for longer.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ApiMetrics:
    """The API's three metrics, and their children by label kept at hand (one lookup per request)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "reintegration_http_requests",
            "Requests answered, by method, route template and status",
            ["method", "route", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "reintegration_http_request_duration_seconds",
            "Time from a request's arrival to the end of its answer, by method and route template",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.errors = Counter(
            "reintegration_http_errors",
            "Requests answered with a 5xx status, by method and route template",
            ["method", "route"],
            registry=registry,
        )
        self._children: dict[tuple[str, str, int], tuple[Any, Any, Any]] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            # Bounded: known methods, the app's route templates, the statuses it answers.
            status_label = str(status)
            children = self._children[key] = (
                self.requests.labels(method, route, status_label),
                self.latency.labels(method, route),
                self.errors.labels(method, route) if status >= 500 else None,
            )
        requests, latency, errors = children
        requests.inc()
        latency.observe(seconds)
        if errors is not None:
            errors.inc()


class RequestMetrics:
    """Counts and times every HTTP request by method, route template and status: called by the
    outermost middleware (``api.access_log.RequestContext``) once each request is answered, so that
    refusals before routing (``413``, ``429``) and the ``500`` of an unexpected error count too."""

    def __init__(self, metrics: ApiMetrics, application: FastAPI) -> None:
        self.metrics = metrics
        self._documented = DocumentedTemplates(application, mounts=True)

    def observe(self, scope: Scope, status: int, seconds: float) -> None:
        method = scope["method"]
        self.metrics.observe(method if method in METHODS else OTHER_METHOD, self._route(scope, status), status, seconds)

    def _route(self, scope: Scope, status: int) -> str:
        """The template of the route the request matched (the router put it in the scope)."""
        routed = routed_template(scope)
        if routed is not None:
            return routed
        if status == 404:
            return UNMATCHED  # the router tried every route
        # Answered before routing (413, 429) or by a mount (the workspace's static files).
        return self._documented.match(scope["path"]) or UNMATCHED


def install(app: FastAPI, settings: Settings) -> RequestMetrics | None:
    """Serve ``GET /metrics`` and give what counts the API's requests (for ``RequestContext``),
    unless production has no metrics token (then neither: ``/metrics`` is an unknown path, ``404``)."""
    access = MetricsAccess.from_settings(settings)
    if not access.served:
        return None
    registry = CollectorRegistry()
    metrics = ApiMetrics(registry)
    if MULTIPROCESS_DIR in os.environ:
        # Several API processes (``reintegration.metrics.shared_across_processes``): each counts
        # into files, and any one answers for all of them.
        exposed = CollectorRegistry()
        MultiProcessCollector(exposed)  # type: ignore[no-untyped-call]  # prometheus_client leaves it untyped
    else:
        ProcessCollector(registry=registry)
        exposed = registry

    def read_metrics(request: Request) -> Response:  # a plain def: exposition runs in the thread pool
        if access.check(request.headers.get("authorization")) != 200:
            raise Unauthorized()
        return Response(generate_latest(exposed), media_type=CONTENT_TYPE)

    app.add_api_route("/metrics", read_metrics, methods=["GET"], include_in_schema=False)
    return RequestMetrics(metrics, app)
