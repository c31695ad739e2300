"""Dependencies shared by the routers: settings, database session, Temporal client, caller."""

from __future__ import annotations

import base64
import binascii
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Annotated, Any, TypeVar

import anyio
from fastapi import Depends, Header, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts
from sqlalchemy.engine import Engine
from sqlmodel import Session
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from temporalio.client import Client

from api.errors import Forbidden, Unauthorized, Unavailable
from api.languages import N_
from api.limits import RateLimits, bearer_token, client_key, subject_key
from reintegration import directory
from reintegration.crypto import Keyring
from reintegration.logs import bind_request
from reintegration.settings import Settings
from reintegration.tokens import Claims, InvalidToken, Verifier, VerifierUnavailable
from workflows.model import Role

T = TypeVar("T")

# How the OpenAPI document names the bearer token its operations take (``document_bearer``).
BEARER_SCHEME = {
    "HTTPBearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "A JWT from `reintegration token` (or the OIDC provider)",
    }
}


# The dependencies that do no I/O are ``async def``: FastAPI runs a plain ``def`` dependency in a
# worker thread, and each such hop costs more than the dependency itself (measured in ``make bench``).


async def get_settings_dep(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


# Where a request keeps the database sessions its dependencies made (``get_session``), for
# ``CloseSessions`` to close once it is answered.
_SESSIONS = "database_sessions"


async def get_session(request: Request) -> Session:
    """A session per request; it carries the keyring, so what reads sealed data can open it.

    Made on the event loop (a session connects only when first used, in the handler's thread), and
    closed by ``CloseSessions``. A dependency that yields the session and closes it after cost about
    60 µs more of every request's CPU (in process): FastAPI wraps each such dependency in a context
    manager, entered and exited on every request."""
    state = request.app.state
    threads = getattr(state, "database_threads", None)  # None: anyio's pool (an app started without its lifespan)
    session = Session(state.engine, info={"keyring": state.keyring, "threads": threads})
    request.scope.setdefault("state", {}).setdefault(_SESSIONS, []).append(session)
    return session


class CloseSessions:
    """Close the database sessions a request was given (``get_session``), however it ends: once it is
    answered, or, for an error's answer, before it leaves, so that a failed change's locks are let go
    (rolled back) before the caller can send the next request. On the event loop when a session holds
    no connection, else in a thread (closing rolls back)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_after_rollback(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] >= 400:
                await _close_sessions(scope)
            await send(message)

        try:
            await self.app(scope, receive, send_after_rollback)
        finally:
            await _close_sessions(scope)


async def _close_sessions(scope: Scope) -> None:
    """Close the request's sessions (each, even if another's close fails) and forget them."""
    failed: Exception | None = None
    for session in scope.get("state", {}).pop(_SESSIONS, ()):
        try:
            if session.in_transaction():
                await anyio.to_thread.run_sync(session.close)
            else:
                session.close()
        except Exception as exc:
            failed = failed or exc
    if failed is not None:
        raise failed


class VerifiedTokens:
    """Tokens verified lately and their claims, so that a caller's next requests skip the signature
    check (and its thread): each kept for ``ttl_seconds`` at most, never past its own expiry, and only
    while the verifier's key set is the one it was verified against (a key the provider withdrew
    stops its tokens at the next fetch, as without this); the last ``max_tokens`` of them.
    Thread-safe; per process."""

    def __init__(
        self, *, ttl_seconds: float = 60.0, max_tokens: int = 10_000, clock: Callable[[], float] = time.time
    ) -> None:
        self.ttl, self.max_tokens, self._clock = ttl_seconds, max_tokens, clock
        self._claims: OrderedDict[str, tuple[Claims, float, object]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, token: str, key_set: object) -> Claims | None:
        with self._lock:
            found = self._claims.get(token)
            if found is None:
                return None
            claims, until, verified_against = found
            if until <= self._clock() or verified_against is not key_set:
                del self._claims[token]
                return None
            return claims

    def put(self, token: str, claims: Claims, key_set: object) -> None:
        until = self._clock() + self.ttl
        expires = token_expiry(token)
        if expires is not None:
            until = min(until, expires)
        with self._lock:
            self._claims[token] = (claims, until, key_set)
            self._claims.move_to_end(token)
            while len(self._claims) > self.max_tokens:
                self._claims.popitem(last=False)


class SignedIn:
    """The callers this process has recorded in the users' directory (``reintegration.directory``):
    the first request of each (or after their token's role, countries or agency changed) records
    the sign-in; the others write nothing. Thread-safe; per process; bounded."""

    def __init__(
        self, max_users: int = 100_000, ttl_seconds: float = 600.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        # Recorded again after ``ttl_seconds``: claims that changed on another process and back here
        # are brought up to date within that time.
        self._seen: OrderedDict[tuple[Any, ...], float] = OrderedDict()
        self._lock = threading.Lock()
        self.max_users, self.ttl, self._clock = max_users, ttl_seconds, clock

    def first(self, claims: Claims) -> bool:
        with self._lock:
            until = self._seen.get(directory.seen_key(claims))
            return until is None or until <= self._clock()

    def record(self, engine: Engine, claims: Claims) -> None:
        with Session(engine) as session:
            directory.record_sign_in(session, claims)
        with self._lock:
            self._seen[directory.seen_key(claims)] = self._clock() + self.ttl
            self._seen.move_to_end(directory.seen_key(claims))
            while len(self._seen) > self.max_users:
                self._seen.popitem(last=False)


def token_expiry(token: str) -> float | None:
    """The ``exp`` of a token already verified (its payload read without checking it again)."""
    try:
        body = token.split(".")[1]
        exp = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))).get("exp")
    except (IndexError, ValueError, binascii.Error, AttributeError):
        return None
    return float(exp) if isinstance(exp, int | float) else None


def keyring_of(session: Session) -> Keyring:
    """The keyring of the API session (see ``get_session``)."""
    keyring: Keyring = session.info["keyring"]
    return keyring


async def read_in_thread(session: Session, work: Callable[[], T]) -> T:
    """A read route's database work in one of the thread pool's threads, its transaction ended there
    (the session then closes on the event loop), the answer validated back on the loop: one thread
    hop per request, where a plain ``def`` route takes two (FastAPI validates a plain route's answer
    in the pool as well). Under load each hop is a wait for the interpreter's lock (``make bench``)."""

    def run() -> T:
        answer = work()
        release_connection(session)
        return answer

    return await anyio.to_thread.run_sync(run, limiter=database_threads(session))


def database_threads(session: Session) -> anyio.CapacityLimiter | None:
    """The threads that run the request's database work (``read_in_thread``, ``Pipeline``): at most
    ``Settings.api_threads`` at once in the process, apart from anyio's pool, which runs the plain
    routes and whatever waits on the network (an identity provider, a store, Temporal).

    A session whose transaction holds a connection already (a command between two of its steps) goes
    on in anyio's pool (``None``): waiting for one of these threads while holding a connection, a
    burst of such requests could hold every connection of the pool while the threads' holders wait
    for one."""
    if session.in_transaction():
        return None
    threads: anyio.CapacityLimiter | None = session.info.get("threads")
    return threads


def release_connection(session: Session | None) -> None:
    """End the request session's transaction, so its connection goes back to the pool, before the
    request waits (for Temporal, or for the first request with its ``Idempotency-Key``).

    A burst of requests each holding a connection while they wait would leave none for the
    requests that could finish: they would wait for the pool's timeout. The session reconnects on
    its next use. (Database work runs in worker threads: ``api.pipeline``.)
    """
    if session is not None:
        session.commit()


def temporal_client(request: Request) -> Client:
    """The Temporal client, or 503 while the lifespan is still connecting."""
    client: Client | None = request.app.state.temporal  # None until the lifespan has connected
    if client is None:
        raise Unavailable(N_("Temporal is not reachable yet"))
    return client


async def get_client(request: Request) -> Client:
    return temporal_client(request)


async def current_user(request: Request) -> Claims:
    """The verified caller, whose rate limit is charged: a forged token spends only its sender's address's.

    The token is read from the header here, not by a dependency of its own (``HTTPBearer``): FastAPI
    solves each dependency of each request anew, and that one cost about 20 µs of every request's
    CPU in process. The OpenAPI document still says which operations take it (``document_bearer``)."""
    token = bearer_token(request.headers.get("authorization"))
    if token is None:
        raise Unauthorized()  # AnonymousRateLimit has charged the client's address
    limits: RateLimits = request.app.state.rate_limits
    verifier: Verifier = request.app.state.verifier
    verified: VerifiedTokens = request.app.state.verified_tokens
    try:
        claims = verified.get(token, verifier.key_set())
        if claims is None:
            # Off the event loop: an OIDC verifier may fetch the provider's keys over HTTP.
            claims = await anyio.to_thread.run_sync(verifier.verify, token)
            verified.put(token, claims, verifier.key_set())
    except InvalidToken:
        request.state.rate_charged = True
        limits.charge(client_key(request.scope))
        raise Unauthorized(N_("the bearer token is invalid or expired")) from None
    except VerifierUnavailable:
        raise Unavailable(N_("the identity provider's keys cannot be fetched")) from None
    request.state.rate_charged = True  # charged here, one way or the other (see AnonymousRateLimit)
    limits.charge(subject_key(claims.sub))
    request.state.claims = claims  # for the access log
    signed_in: SignedIn = request.app.state.signed_in
    if signed_in.first(claims):
        await anyio.to_thread.run_sync(signed_in.record, request.app.state.engine, claims)
    bind_request(sub=claims.sub, role=claims.role.value)
    return claims


def _takes_the_caller(dependant: Dependant) -> bool:
    return any(d.call is current_user or _takes_the_caller(d) for d in dependant.dependencies)


def document_bearer(schema: dict[str, Any], routes: Iterable[BaseRoute]) -> dict[str, Any]:
    """Say in the OpenAPI document that each operation whose route has the caller (``current_user``,
    at any depth of its dependencies) takes the bearer token: as FastAPI would say it of a route
    with ``HTTPBearer`` among its dependencies."""
    paths = schema.get("paths", {})
    for route in iter_route_contexts(list(routes)):  # each route as mounted, in included routers too
        if (
            isinstance(route.original_route, APIRoute)
            and route.include_in_schema
            and _takes_the_caller(route.dependant)
        ):
            for method in route.methods or ():
                operation = paths.get(route.path_format, {}).get(method.lower())
                if operation is not None:
                    operation["security"] = [{name: []} for name in BEARER_SCHEME]
    # Copies: the schema is changed after (``errors.document``) and must leave the constant alone.
    schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
    schemes.update({name: dict(scheme) for name, scheme in BEARER_SCHEME.items()})
    return schema


IDENTIFIER = r"^[A-Za-z0-9][A-Za-z0-9._@:-]{0,199}$"
IdempotencyKey = Annotated[
    str | None, Header(max_length=200, pattern=IDENTIFIER, description="Same key and body: same response, one effect")
]

SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
EngineDep = Annotated[Engine, Depends(get_engine)]
SessionDep = Annotated[Session, Depends(get_session)]
ClientDep = Annotated[Client, Depends(get_client)]
CurrentUser = Annotated[Claims, Depends(current_user)]


def require(*roles: Role) -> Any:
    """A dependency that lets only these roles through (403 for any other): ``Annotated[Claims, require(...)]``."""

    async def _check(user: CurrentUser) -> Claims:
        if user.role not in roles:
            raise Forbidden(N_("a {role} may not do this"), params={"role": user.role.value})
        return user

    return Depends(_check)
