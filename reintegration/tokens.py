"""Bearer tokens: the development signing key, minting for the CLI, and verification.

On the embedded default a random HS256 key is created under ``data/`` on first use. It is a
development default: production settings refuse to start without an OIDC provider.
"""

from __future__ import annotations

import os
import secrets
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Annotated

import jwt
from pydantic import BaseModel, Field, ValidationError

from reintegration.settings import Settings
from workflows.model import HUMAN_ROLES, Role

ALGORITHM = "HS256"


class Claims(BaseModel):
    """Who is calling: the claims of ``api.md``."""

    sub: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._@:-]{0,199}$")
    role: Role
    agency: str | None = Field(default=None, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._@:-]{0,99}$")
    countries: list[Annotated[str, Field(pattern=r"^[A-Z]{2}$")]] | None = None
    name: str | None = None

    def sees_country(self, country: str) -> bool:
        return self.countries is None or country in self.countries


class InvalidToken(Exception):
    """The token is missing, malformed, expired or not ours."""


def signing_key(settings: Settings) -> bytes:
    """The development signing key, created with owner-only permissions on first use."""
    path: Path = settings.signing_key_path
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, secrets.token_hex(32).encode())
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
    return path.read_bytes().strip()


def mint(
    settings: Settings,
    *,
    role: Role,
    sub: str,
    agency: str | None = None,
    countries: list[str] | None = None,
    name: str | None = None,
    ttl: timedelta | None = None,
) -> str:
    now = datetime.now(timezone.utc)
    claims = Claims(sub=sub, role=role, agency=agency, countries=countries, name=name)
    payload = {
        **claims.model_dump(mode="json", exclude_none=True),
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "iat": now,
        "exp": now + (ttl or timedelta(hours=settings.token_ttl_hours)),
    }
    return jwt.encode(payload, signing_key(settings), algorithm=ALGORITHM)


def verify(settings: Settings, token: str, key: bytes) -> Claims:
    try:
        payload = jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM],
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            options={"require": ["exp", "sub", "iss", "aud"]},
        )
        claims = Claims.model_validate(payload, strict=False)
    except (jwt.PyJWTError, ValidationError) as exc:
        raise InvalidToken(type(exc).__name__) from None
    if claims.role not in HUMAN_ROLES:
        raise InvalidToken("no such role")
    if claims.role == Role.partner and not claims.agency:
        raise InvalidToken("a partner token names its agency")
    return claims
