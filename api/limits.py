"""Limits on what one request, and one caller, may ask of the API.

- ``BodyLimit``: a body over ``max_body_bytes`` is refused with ``413``, from its Content-Length
  before any of it is read, or by counting a chunked body as it streams in. Nothing runs to the end
  on a refused body, so nothing changes.
- ``RateLimits``: a token bucket per caller, in process memory: with several API processes each
  holds its share of the budget (``RateLimits.share_of``).
  ``current_user`` charges the verified ``sub`` (a forged token cannot spend someone else's budget)
  and, for a bad token, the client's address; ``AnonymousRateLimit`` charges the client's address
  for every other request. ``/health`` and ``/ready`` are never limited.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from fastapi.security.utils import get_authorization_scheme_param
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import PayloadTooLarge, TooManyRequests, problem, responses

UNLIMITED_PATHS = frozenset({"/health", "/ready"})
# The workspace's stylesheet and other static files: the same few bytes for everyone, never charged
# (a page and its stylesheet are one thing to the person who opens it).
UNLIMITED_PREFIXES = ("/static/",)
# Under these, every route authenticates with ``current_user``, which charges the caller itself;
# except the development codec routes, whose token rides in the path: charged to the address always.
AUTHENTICATED_PREFIXES = ("/v1/", "/codec/")
PATH_TOKEN_PREFIX = "/codec/t/"


# The workspace's session cookies (api/web/sessions.py): a page request that carries one is charged
# by the workspace itself, to the signed-in person (or, for a cookie that opens no session, to the
# address), so that colleagues behind one office address do not share one budget.
WORKSPACE_PREFIX = "/workspace"
SESSION_COOKIES = ("workspace_session=", "__Host-workspace_session=")


def _charged_by_current_user(scope: Scope) -> bool:
    path = scope["path"]
    if path.startswith(WORKSPACE_PREFIX):
        cookies = _header(scope, b"cookie") or ""
        return any(c.strip().startswith(SESSION_COOKIES) for c in cookies.split(";"))
    return path.startswith(AUTHENTICATED_PREFIXES) and not path.startswith(PATH_TOKEN_PREFIX) and _has_bearer(scope)


class _BodyTooLarge(Exception):
    """Raised into the application by ``receive`` once the body passes the limit."""


def _refusal(exc: PayloadTooLarge | TooManyRequests) -> JSONResponse:
    return problem(exc.status, exc.title, exc.detail, exc.headers)


# A document's upload: its own limit (``REINTEGRATION_DOCUMENT_MAX_BYTES``), checked again, exactly,
# by the upload itself; the workspace's form carries its fields and boundaries besides.
UPLOAD_PATHS = re.compile(r"^/(v1/(cases|tasks)/[^/]+/documents|workspace/(cases|inbox)/[^/]+/documents)$")
FORM_OVERHEAD = 64 * 1024


class BodyLimit:
    """Refuse request bodies over ``max_bytes`` with ``413``, without buffering them first; the paths
    ``larger`` names have a limit of their own."""

    def __init__(self, app: ASGIApp, *, max_bytes: int, larger: tuple[re.Pattern[str], int] | None = None) -> None:
        self.app, self.default_max, self.larger = app, max_bytes, larger

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes = self.default_max
        if self.larger is not None and self.larger[0].match(scope.get("path", "")) and scope.get("method") == "POST":
            max_bytes = self.larger[1]
        declared = _header(scope, b"content-length")
        if declared and declared.isascii() and declared.isdigit() and int(declared) > max_bytes:
            await _refusal(PayloadTooLarge(max_bytes))(scope, receive, send)
            return
        received, over, started = 0, False, False

        async def counting_receive() -> Message:
            nonlocal received, over
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    over = True
                    raise _BodyTooLarge()
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if over and not started:
                return  # whatever the application made of the cut-off body, the answer is 413
            started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not over:
                raise
        if over and not started:
            await _refusal(PayloadTooLarge(max_bytes))(scope, receive, send)


class RateLimits:
    """Token buckets by key: ``burst`` requests at once, ``per_minute`` sustained. Thread-safe."""

    def __init__(
        self, *, per_minute: int, burst: int, max_keys: int = 100_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = per_minute / 60.0  # tokens per second
        self.burst = float(burst)
        self.max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key: (tokens, at)
        self._lock = threading.Lock()

    @classmethod
    def share_of(cls, *, per_minute: int, burst: int, shares: int) -> RateLimits:
        """This process's share of each caller's budget when ``shares`` processes serve the API: their
        buckets are in their own memory, so each holds ``1/shares`` of the rate and of the burst (one
        request at least) and together they never grant a caller more than the budget. A caller whose
        requests all reach one process (one kept-alive connection) is limited sooner: the price of
        needing no shared store on every request."""
        shares = max(1, shares)
        return cls(per_minute=max(1, per_minute // shares), burst=max(1, burst // shares))

    def take(self, key: str) -> float:
        """Spend one token of ``key``: 0 if there was one, else the seconds until there is."""
        now = self._clock()
        with self._lock:
            tokens, at = self._buckets.pop(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) * self.rate)
            wait = 0.0
            if tokens >= 1.0:
                tokens -= 1.0
            else:
                wait = (1.0 - tokens) / self.rate
            self._buckets[key] = (tokens, now)  # most recently used last
            if len(self._buckets) > self.max_keys:
                # The least recently used bucket is forgotten: it is (nearly) full again anyway.
                self._buckets.popitem(last=False)
            return wait

    def charge(self, key: str) -> None:
        """Spend one token of ``key`` or raise ``TooManyRequests`` with the whole seconds to wait."""
        wait = self.take(key)
        if wait > 0:
            raise TooManyRequests(retry_after=max(1, math.ceil(wait)))


def client_key(scope: Scope) -> str:
    """The rate-limit key of a caller without a valid token: its address (as the server sees it)."""
    client = scope.get("client")
    return f"address:{client[0] if client else 'unknown'}"


def subject_key(sub: str) -> str:
    return f"sub:{sub}"


class AnonymousRateLimit:
    """Charge the client's address for each request that ``current_user`` will not charge."""

    def __init__(
        self, app: ASGIApp, *, limits: RateLimits, page_refusal: Callable[[Scope, TooManyRequests], ASGIApp]
    ) -> None:
        self.app, self.limits, self.page_refusal = app, limits, page_refusal

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in UNLIMITED_PATHS or scope["path"].startswith(UNLIMITED_PREFIXES):
            await self.app(scope, receive, send)
            return
        # With a bearer token, current_user charges its subject (or, for a bad token, the address);
        # a request refused before that (a malformed body, an unknown path) is charged by
        # ``charge_unverified`` in the error handlers.
        if not _charged_by_current_user(scope):
            try:
                self.limits.charge(client_key(scope))
            except TooManyRequests as exc:
                await (self.page_refusal(scope, exc) if _is_page(scope) else _refusal(exc))(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _is_page(scope: Scope) -> bool:
    """A page of the workspace (or its root): refused with a page, not a JSON problem."""
    path: str = scope["path"]
    return path == "/" or path.startswith(WORKSPACE_PREFIX)


def charge_unverified(request: Request) -> None:
    """Charge a request refused before its bearer token was verified (it failed validation, or its
    path is unknown) to its address's bucket of such requests, raising ``TooManyRequests`` when it
    is empty: a made-up token buys no unlimited requests, and verified callers at the same address
    are not held back by it."""
    if getattr(request.state, "rate_charged", False) or not _charged_by_current_user(request.scope):
        return  # charged already, or to the address on the way in
    request.state.rate_charged = True
    request.app.state.rate_limits.charge(f"unverified:{client_key(request.scope)}")


def _header(scope: Scope, name: bytes) -> str | None:
    headers: Iterable[tuple[bytes, bytes]] = scope["headers"]  # as the ASGI specification has them
    for key, value in headers:
        if key == name:
            return value.decode("latin-1").strip()
    return None


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization`` header's value ``Bearer <token>``, read as FastAPI's
    ``HTTPBearer`` reads it; ``None`` without one. ``current_user`` verifies it, and the limits here
    read it the same way to know whether ``current_user`` will charge the request."""
    scheme, credentials = get_authorization_scheme_param(authorization)
    return credentials if scheme.lower() == "bearer" and credentials else None


def _has_bearer(scope: Scope) -> bool:
    # Without "Bearer <token>", current_user refuses without charging anyone.
    return bearer_token(_header(scope, b"authorization")) is not None


def document(schema: dict[str, Any]) -> dict[str, Any]:
    """Add ``413`` to every operation with a body and ``429`` to every limited one, in the OpenAPI document."""
    for path, item in schema.get("paths", {}).items():
        if path in UNLIMITED_PATHS:
            continue
        for operation in item.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            extra = responses(*((413, 429) if "requestBody" in operation else (429,)))
            for status, response in extra.items():
                operation["responses"].setdefault(str(status), response)
    return schema
