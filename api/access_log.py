"""Request ids, the ids a request concerns in every log line, and one access line per request.

``RequestContext`` makes the request's id, returns it on the response (``X-Request-ID``), keeps it
in ``request.state.request_id`` (the audit trail records it) and puts it, with the method, in every
line logged while the request is served (``reintegration.logs.RequestLog``). A client's own
well-formed ``X-Request-ID`` is kept beside it (``client_request_id``), never instead: a client
cannot choose the id the audit trail files its actions under, nor give two requests one id. Each
line logged once the router has matched the request carries the route's path template and the
case, workflow and task ids of its path (``route_fields``). Neither a query string nor a body is
ever logged: both can hold personal data.
"""

from __future__ import annotations

import functools
import os
import re
import time
from typing import TYPE_CHECKING

import structlog
from fastapi import FastAPI
from starlette.routing import Mount, compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import problem
from reintegration.logs import RequestLog, bind_request, current_request
from reintegration.tokens import Claims
from workflows import ids

if TYPE_CHECKING:
    from api.metrics import RequestMetrics

REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,100}")
PRIVATE_PREFIXES = ("/v1/", "/codec/")
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@:-]{0,99}")  # a path's id, before the route validated it

log = structlog.get_logger("api.access")


def routed_template(scope: Scope) -> str | None:
    """The path template of the route the router matched (FastAPI leaves it in the scope), if any."""
    path = getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) and path else None


class DocumentedTemplates:
    """The documented route whose template a path matches (and, with ``mounts``, the mount's, as
    ``/workspace/static/{path}``): for a request answered before routing (413, 429) or by a mount,
    which the router left no route for. Rare, so found the slow way: a list built on first use (the
    app's routes are all there by then), fixed paths before those with parameters (``/v1/tasks/x``
    matches both kinds otherwise)."""

    def __init__(self, application: FastAPI, *, mounts: bool = False) -> None:
        self.application, self.mounts = application, mounts
        self._templates: list[tuple[re.Pattern[str], str]] | None = None

    def match(self, path: str) -> str | None:
        if self._templates is None:
            app = self.application
            paths = {p for p in [*app.openapi()["paths"], app.openapi_url, app.docs_url, app.redoc_url] if p}
            templates = [(compile_path(p)[0], p) for p in sorted(paths, key=lambda p: p.count("{"))]
            if self.mounts:
                templates += [(r.path_regex, f"{r.path}/{{path}}") for r in app.router.routes if isinstance(r, Mount)]
            self._templates = templates
        return next((template for regex, template in self._templates if regex.match(path)), None)


def bind_ids(*, case_id: str | None = None, task_id: str | None = None) -> None:
    """Put the case (and its workflow) and task a request concerns into every log line after this."""
    bound: dict[str, str] = {}
    if case_id and _ID.fullmatch(case_id):
        bound.update(case_id=case_id, workflow_id=ids.workflow_id(case_id))
    if task_id and _ID.fullmatch(task_id):
        bound["task_id"] = task_id
    if bound:
        bind_request(**bound)


def route_fields(scope: Scope) -> dict[str, str]:
    """The route's path template and the case (and its workflow) and task ids in its path, once the
    router has matched it: what each line logged while the request is served carries
    (``reintegration.logs.RequestLog.routed``, asked for only when a line is logged)."""
    fields: dict[str, str] = {}
    template = routed_template(scope)
    if template is not None:
        fields["path"] = template
    params = scope.get("path_params") or {}
    case_id, task_id = params.get("case_id"), params.get("task_id")
    if isinstance(case_id, str) and _ID.fullmatch(case_id):
        fields.update(case_id=case_id, workflow_id=ids.workflow_id(case_id))
    if isinstance(task_id, str) and _ID.fullmatch(task_id):
        fields["task_id"] = task_id
    return fields


class RequestContext:
    """Request id in, request id out, ids in the logs, the access line and, with ``metrics``, the
    request counted and timed (``api.metrics``): the outermost middleware."""

    def __init__(self, app: ASGIApp, *, application: FastAPI, metrics: RequestMetrics | None = None) -> None:
        self.app, self.application, self.metrics = app, application, metrics
        self._documented = DocumentedTemplates(application)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"x-request-id"), None)
        client_request_id = given if given is not None and REQUEST_ID.fullmatch(given) else None
        request_id = os.urandom(16).hex()  # 32 hex digits as uuid4().hex gave (128 random bits), at a fifth of its CPU
        state = scope.setdefault("state", {})
        state["request_id"], state["client_request_id"] = request_id, client_request_id
        status = 500  # unless a response starts
        started = time.perf_counter()
        responded = False
        added = [(b"x-request-id", request_id.encode())]
        if scope["path"].startswith(PRIVATE_PREFIXES):
            # What the API answers may hold personal data, read under today's rules: no browser or
            # proxy keeps a copy to show again when those rules would refuse.
            added.append((b"cache-control", b"no-store"))
        replaced = {name for name, _ in added}

        async def send_with_id(message: Message) -> None:
            nonlocal status, responded
            if message["type"] == "http.response.start":
                status, responded = message["status"], True
                headers = [h for h in message.get("headers", ()) if h[0] not in replaced]
                message["headers"] = headers + added
            await send(message)

        # The request's fields in every line logged while it is served (``RequestLog``): its own,
        # ahead of whatever the context it started in held (a keep-alive connection's next request
        # can start within the previous one), and gone with it.
        bound = {"request_id": request_id, "method": scope["method"]}
        if client_request_id:
            bound["client_request_id"] = client_request_id
        token = current_request.set(RequestLog(bound, functools.partial(route_fields, scope)))
        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            # Answered here and not raised on: the server would log the traceback, whose messages
            # can quote values (personal data). The type is enough to find it in the code.
            log.error("unexpected error", error=type(exc).__name__)
            if not responded:
                await problem(500, "Internal error", "an unexpected error occurred; it has been logged")(
                    scope, receive, send_with_id
                )
        finally:
            try:
                seconds = time.perf_counter() - started
                given_claims = scope["state"].get("claims")  # set by current_user, once the caller is known
                claims = given_claims if isinstance(given_claims, Claims) else None
                log.info(
                    "request",
                    path=self._template(scope),
                    status=status,
                    duration_ms=round(seconds * 1000, 1),
                    sub=claims.sub if claims else None,
                    role=claims.role.value if claims else None,
                )
                if self.metrics is not None:
                    self.metrics.observe(scope, status, seconds)
            finally:
                current_request.reset(token)

    def _template(self, scope: Scope) -> str:
        """The route's path template, never the path as sent (nor its query string)."""
        # Refused before routing (413, 429) or not a FastAPI route: the documented path it matches.
        return routed_template(scope) or self._documented.match(scope["path"]) or "(no route)"
