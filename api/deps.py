"""Dependencies shared by the routers: settings, database session, Temporal client, caller."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.engine import Engine
from sqlmodel import Session
from temporalio.client import Client

from api.errors import Forbidden, Unauthorized, Unavailable
from reintegration.settings import Settings
from reintegration.tokens import Claims, InvalidToken, verify
from workflows.model import Role

bearer = HTTPBearer(auto_error=False, description="A JWT from `reintegration token` (or the OIDC provider)")


def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


def get_engine(request: Request) -> Engine:
    return request.app.state.engine


def get_session(request: Request) -> Iterator[Session]:
    with Session(request.app.state.engine) as session:
        yield session


def get_client(request: Request) -> Client:
    client = request.app.state.temporal
    if client is None:
        raise Unavailable("Temporal is not reachable yet")
    return client


def current_user(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> Claims:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized()
    try:
        return verify(request.app.state.settings, credentials.credentials, request.app.state.signing_key)
    except InvalidToken:
        raise Unauthorized("the bearer token is invalid or expired") from None


IDENTIFIER = r"^[A-Za-z0-9][A-Za-z0-9._@:-]{0,199}$"
IdempotencyKey = Annotated[
    str | None, Header(max_length=200, pattern=IDENTIFIER, description="Same key and body: same response, one effect")
]

SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
EngineDep = Annotated[Engine, Depends(get_engine)]
SessionDep = Annotated[Session, Depends(get_session)]
ClientDep = Annotated[Client, Depends(get_client)]
CurrentUser = Annotated[Claims, Depends(current_user)]


def require(*roles: Role):  # type: ignore[no-untyped-def]
    """A dependency that lets only these roles through (403 for any other)."""

    def _check(user: CurrentUser) -> Claims:
        if user.role not in roles:
            raise Forbidden(f"a {user.role.value} may not do this")
        return user

    return Depends(_check)
