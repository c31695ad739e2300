"""Dependencies shared by the routers: settings, database session, Temporal client, caller."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

import anyio
import structlog
from fastapi import Depends, Header, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.engine import Engine
from sqlmodel import Session
from temporalio.client import Client

from api.errors import Forbidden, Unauthorized, Unavailable
from api.languages import N_
from api.limits import RateLimits, client_key, subject_key
from reintegration.crypto import Keyring
from reintegration.settings import Settings
from reintegration.tokens import Claims, InvalidToken, Verifier, VerifierUnavailable
from workflows.model import Role

bearer = HTTPBearer(auto_error=False, description="A JWT from `reintegration token` (or the OIDC provider)")


def get_settings_dep(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def get_session(request: Request) -> Iterator[Session]:
    """A session per request; it carries the keyring, so what reads sealed data can open it."""
    with Session(request.app.state.engine, info={"keyring": request.app.state.keyring}) as session:
        yield session


def keyring_of(session: Session) -> Keyring:
    """The keyring of the API session (see ``get_session``)."""
    keyring: Keyring = session.info["keyring"]
    return keyring


def release_connection(session: Session | None) -> None:
    """End the request session's transaction, so its connection goes back to the pool, before the
    request waits (for Temporal, or for the first request with its ``Idempotency-Key``).

    A burst of requests each holding a connection while they wait would leave none for the
    requests that could finish: they would wait for the pool's timeout. The session reconnects on
    its next use. (Database work runs in worker threads: ``api.pipeline``.)
    """
    if session is not None:
        session.commit()


def get_client(request: Request) -> Client:
    client: Client | None = request.app.state.temporal  # None until the lifespan has connected
    if client is None:
        raise Unavailable(N_("Temporal is not reachable yet"))
    return client


async def current_user(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> Claims:
    """The verified caller, whose rate limit is charged: a forged token spends only its sender's address's."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized()  # AnonymousRateLimit has charged the client's address
    limits: RateLimits = request.app.state.rate_limits
    verifier: Verifier = request.app.state.verifier
    try:
        # Off the event loop: an OIDC verifier may fetch the provider's keys over HTTP.
        claims = await anyio.to_thread.run_sync(verifier.verify, credentials.credentials)
    except InvalidToken:
        request.state.rate_charged = True
        limits.charge(client_key(request.scope))
        raise Unauthorized(N_("the bearer token is invalid or expired")) from None
    except VerifierUnavailable:
        raise Unavailable(N_("the identity provider's keys cannot be fetched")) from None
    request.state.rate_charged = True  # charged here, one way or the other (see AnonymousRateLimit)
    limits.charge(subject_key(claims.sub))
    request.state.claims = claims  # for the access log
    structlog.contextvars.bind_contextvars(sub=claims.sub, role=claims.role.value)
    return claims


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

    def _check(user: CurrentUser) -> Claims:
        if user.role not in roles:
            raise Forbidden(N_("a {role} may not do this"), params={"role": user.role.value})
        return user

    return Depends(_check)
