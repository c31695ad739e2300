"""Bearer tokens: the development signing key, minting for the CLI, and verification.

On the embedded default a random HS256 key is created under ``data/`` on first use. It is a
development default: in production it is refused (neither made, read nor used to mint) and tokens
come from the organisation's OpenID Connect provider, verified against its JWKS.

Errors:
    InvalidToken              the token is missing, malformed, expired or not ours (401)
    VerifierUnavailable       the provider's JWKS could not be fetched (503)
    DevelopmentKeyRefused     the development signing key asked for in production
"""

from __future__ import annotations

import hmac
import os
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol

import jwt
from pydantic import BaseModel, Field, ValidationError

from reintegration.settings import Settings
from workflows.model import HUMAN_ROLES, Role

ALGORITHM = "HS256"
ALL_COUNTRIES = "*"


class Claims(BaseModel):
    """Who is calling: the claims of ``api.md``."""

    sub: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._@:|-]{0,199}$")
    role: Role
    agency: str | None = Field(default=None, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._@:-]{0,99}$")
    # ISO 3166-1 alpha-2 codes, or ALL_COUNTRIES ("*") for a caller of every country. Scope fails
    # closed: a token without the claim (an identity provider's mapping mistake) sees no country.
    countries: list[Annotated[str, Field(pattern=r"^([A-Z]{2}|\*)$")]] | None = None
    name: str | None = None
    # Which routes the token is good for: "api" (every /v1 route) or "codec" (the Web UI's payload
    # codec only, see ``mint_codec``). Not a claim of the provider's: set from the token's audience.
    scope: Literal["api", "codec"] = "api"

    @property
    def all_countries(self) -> bool:
        return ALL_COUNTRIES in (self.countries or [])

    @property
    def country_scope(self) -> list[str] | None:
        """``None`` for a caller of every country; otherwise the countries named (none without the claim)."""
        return None if self.all_countries else [c for c in self.countries or [] if c != ALL_COUNTRIES]

    def sees_country(self, country: str) -> bool:
        return self.all_countries or country in (self.countries or [])


class InvalidToken(Exception):
    """The token is missing, malformed, expired or not ours."""


class VerifierUnavailable(Exception):
    """The identity provider's keys could not be fetched, so no token can be checked now."""


class DevelopmentKeyRefused(RuntimeError):
    """The development signing key was asked for where it must not exist."""


def signing_key(settings: Settings) -> bytes:
    """The development signing key, created with owner-only permissions on first use."""
    if settings.environment == "production":
        raise DevelopmentKeyRefused(
            "production accepts tokens from the OIDC provider only; the development signing key is refused"
        )
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
    now = datetime.now(UTC)
    claims = Claims(sub=sub, role=role, agency=agency, countries=countries, name=name)
    payload = {
        **claims.model_dump(mode="json", exclude_none=True, exclude={"scope"}),
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "iat": now,
        "exp": now + (ttl or timedelta(hours=settings.token_ttl_hours)),
    }
    return jwt.encode(payload, signing_key(settings), algorithm=ALGORITHM)


def verify(settings: Settings, token: str, key: bytes) -> Claims:
    """A development token: HS256 with the local key, our issuer and the API's audience (a codec
    token, whose audience is the codec's, is refused here)."""
    try:
        payload = jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM],
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            options={"require": ["exp", "sub", "iss", "aud"]},
        )
    except jwt.PyJWTError as exc:
        raise InvalidToken(type(exc).__name__) from None
    return _claims(payload)


def mint_codec(
    settings: Settings, *, sub: str, countries: list[str], session: str, ttl: timedelta = timedelta(hours=12)
) -> str:
    """A token for the development Web UI's payload codec only: its own audience (refused by every
    ``/v1`` route), a supervisor's scope, and bound to the running stack's ``session`` (the API
    refuses it once that stack has stopped)."""
    now = datetime.now(UTC)
    claims = Claims(sub=sub, role=Role.supervisor, countries=countries)
    payload = {
        **claims.model_dump(mode="json", exclude_none=True, exclude={"scope"}),
        "sid": session,
        "iss": settings.jwt_issuer,
        "aud": settings.codec_audience,
        "iat": now,
        "exp": now + ttl,
    }
    return jwt.encode(payload, signing_key(settings), algorithm=ALGORITHM)


def verify_codec(settings: Settings, token: str, key: bytes) -> Claims:
    """A codec token (``mint_codec``) of the stack running now; ``InvalidToken`` for anything else."""
    if not settings.codec_session:
        raise InvalidToken("no codec session")  # no stack started by `reintegration run`: none is valid
    try:
        payload = jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM],
            audience=settings.codec_audience,
            issuer=settings.jwt_issuer,
            options={"require": ["exp", "sub", "iss", "aud", "sid"]},
        )
    except jwt.PyJWTError as exc:
        raise InvalidToken(type(exc).__name__) from None
    if not hmac.compare_digest(str(payload.get("sid")), settings.codec_session):
        raise InvalidToken("another session's codec token")
    claims = _claims({k: v for k, v in payload.items() if k != "sid"})
    return claims.model_copy(update={"scope": "codec"})


def _claims(payload: dict[str, Any]) -> Claims:
    payload = {k: v for k, v in payload.items() if k != "scope"}  # ours to set, never a token's
    try:
        claims = Claims.model_validate(payload, strict=False)
    except ValidationError as exc:
        raise InvalidToken(type(exc).__name__) from None
    if claims.role not in HUMAN_ROLES:
        raise InvalidToken("no such role")
    if claims.role == Role.partner and not claims.agency:
        raise InvalidToken("a partner token names its agency")
    return claims


class Verifier(Protocol):
    def verify(self, token: str) -> Claims:
        """The caller's claims, or ``InvalidToken``; may block (call it from a thread)."""
        ...

    def key_set(self) -> object:
        """What the verifier checks signatures against now, changing whenever that changes (a new
        key set fetched from the provider): a token verified against another is checked again."""
        ...


class DevelopmentVerifier:
    """Tokens minted with the development signing key (``reintegration token``)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._key = signing_key(settings)

    def verify(self, token: str) -> Claims:
        return verify(self._settings, token, self._key)

    def key_set(self) -> object:
        return self._key

    def verify_codec(self, token: str) -> Claims:
        return verify_codec(self._settings, token, self._key)


class OidcVerifier:
    """Tokens of the organisation's OpenID Connect provider, checked against its JWKS.

    Blocking: an unknown key id fetches the JWKS over HTTP. Call ``verify`` from a thread.
    """

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        jwks_url: str,
        algorithms: list[str],
        role_claim: str = "role",
        agency_claim: str = "agency",
        countries_claim: str = "countries",
        cache_seconds: float = 300.0,
        refresh_cooldown_seconds: float = 30.0,
        leeway_seconds: int = 30,
        timeout_seconds: float = 5.0,
        sole_key_without_kid: bool = False,
    ) -> None:
        self._issuer, self._audience, self._algorithms = issuer, audience, list(algorithms)
        self._role_claim, self._agency_claim, self._countries_claim = role_claim, agency_claim, countries_claim
        self._leeway = leeway_seconds
        # OpenID Connect lets an ID token name no key when the provider publishes exactly one.
        self._sole_key_without_kid = sole_key_without_kid
        # Only the key set is cached, and it expires: PyJWT's per-kid cache never does, so a key the
        # provider withdrew would stay trusted. An unknown kid refetches once, at most once a cooldown.
        self._jwks = jwt.PyJWKClient(
            jwks_url,
            cache_jwk_set=True,
            lifespan=cache_seconds,
            cooldown_duration=refresh_cooldown_seconds,
            timeout=timeout_seconds,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> OidcVerifier:
        assert settings.oidc_issuer and settings.oidc_audience and settings.oidc_jwks_url
        return cls(
            issuer=settings.oidc_issuer,
            audience=settings.oidc_audience,
            jwks_url=settings.oidc_jwks_url,
            algorithms=settings.oidc_algorithms,
            role_claim=settings.oidc_role_claim,
            agency_claim=settings.oidc_agency_claim,
            countries_claim=settings.oidc_countries_claim,
            cache_seconds=settings.oidc_jwks_cache_seconds,
            refresh_cooldown_seconds=settings.oidc_jwks_refresh_cooldown_seconds,
            leeway_seconds=settings.oidc_leeway_seconds,
        )

    def verify(self, token: str) -> Claims:
        return self.claims(self.decode(token))

    def key_set(self) -> object:
        cache = self._jwks.jwk_set_cache
        return cache.jwk_set_with_timestamp if cache is not None else None  # a new object at each fetch

    def decode(self, token: str) -> dict[str, Any]:
        """The token's payload once its signature (against the provider's JWKS), issuer, audience and
        expiry hold; ``InvalidToken`` otherwise (``VerifierUnavailable`` without the key set)."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidToken(type(exc).__name__) from None
        # Refused before any key is looked up: "none", HS256 and whatever else is not on the list.
        if header.get("alg") not in self._algorithms:
            raise InvalidToken("algorithm refused")
        kid = header.get("kid")
        sole = kid is None and self._sole_key_without_kid
        if not sole and (not isinstance(kid, str) or not 0 < len(kid) <= 200):
            raise InvalidToken("no key id")
        try:
            if not isinstance(kid, str):  # an ID token naming no key: the provider's only one
                keys = self._jwks.get_signing_keys()
                if len(keys) != 1:
                    raise InvalidToken("no key id")
                key = keys[0]
            else:
                # A known kid straight from the cached set: get_signing_key holds a lock while it
                # refreshes for an unknown kid, and a slow provider would hold every caller up behind it.
                key = jwt.PyJWKClient.match_kid(self._jwks.get_signing_keys(), kid) or self._jwks.get_signing_key(kid)
        except jwt.PyJWKClientConnectionError:
            raise VerifierUnavailable("the identity provider's keys could not be fetched") from None
        except ValueError:  # the JWKS endpoint answered something that is not JSON
            raise VerifierUnavailable("the identity provider's key set is unreadable") from None
        except jwt.PyJWTError as exc:  # no such kid, even after a refresh
            raise InvalidToken(type(exc).__name__) from None
        try:
            # The key's own algorithm must match the header's too (PyJWT checks): no RSA key used as HMAC.
            payload = jwt.decode(
                token,
                key,
                algorithms=self._algorithms,
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": ["exp", "sub", "iss", "aud"]},
            )
        except jwt.PyJWTError as exc:
            raise InvalidToken(type(exc).__name__) from None
        return payload

    def claims(self, payload: dict[str, Any]) -> Claims:
        """The caller's claims in a verified payload, mapped as configured (scope fails closed)."""
        return _claims(self._mapped(payload))

    def mapped(self, payload: dict[str, Any]) -> dict[str, Any]:
        """The provider's claims under api.md's names, before they are checked."""
        return self._mapped(payload)

    def _mapped(self, payload: dict[str, Any]) -> dict[str, Any]:
        role = _claim(payload, self._role_claim)
        if isinstance(role, list):  # e.g. Keycloak's realm_access.roles: exactly one of ours
            ours = [r for r in role if r in {h.value for h in HUMAN_ROLES}]
            role = ours[0] if len(ours) == 1 else None
        countries = _claim(payload, self._countries_claim)
        if isinstance(countries, str):
            countries = [c for c in countries.replace(",", " ").split() if c]
        return {
            "sub": payload.get("sub"),
            "role": role,
            "agency": _claim(payload, self._agency_claim),
            "countries": countries,
            "name": payload.get("name"),
        }


def _claim(payload: dict[str, Any], name: str) -> Any:
    """A claim by name, or by a dotted path into nested claims (``realm_access.roles``)."""
    value: Any = payload
    for part in name.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def make_verifier(settings: Settings) -> Verifier:
    """OIDC when an issuer is configured (always in production), else the development key."""
    if settings.oidc_issuer:
        return OidcVerifier.from_settings(settings)
    return DevelopmentVerifier(settings)
