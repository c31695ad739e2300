"""Signing in to the workspace with the organisation's OpenID Connect provider: the authorization
code flow with PKCE (RFC 7636, ``S256``), as the client ``oidc_client_id`` of ``oidc_issuer``.

1. ``GET /workspace/oidc/login?next=...`` reads the provider's discovery document (cached), makes a
   fresh state, nonce and PKCE code verifier, and keeps them with ``next`` in a short-lived cookie
   sealed with the system key (AES-GCM: nobody can read or forge it outside this deployment, and
   every replica of the API can open it), ``HttpOnly``, ``SameSite=Lax``, ``Secure`` outside
   development, sent to ``/workspace/oidc`` only. The browser goes to the provider with the state,
   the nonce and the code challenge (``S256``); the verifier never leaves this side.
2. ``GET /workspace/oidc/callback`` takes the cookie away whatever happens, so a login is used once
   (and its state is remembered as used until the cookie would have expired). The state must be
   the cookie's; the code is exchanged with the verifier, the client authenticated with its secret
   (read from ``oidc_client_secret_file``); the ID token must verify against the provider's JWKS,
   with its issuer, this client as audience, an expiry to come and the cookie's nonce. Its claims
   are mapped exactly as a bearer token's (``reintegration.tokens``: ``oidc_role_claim``,
   ``oidc_agency_claim``, ``oidc_countries_claim``; scope fails closed), and a workspace session
   starts (``sessions.start``), audited as ``web.sign-in``.

Anything else (no cookie or an old one, another state, an error from the provider, a code or an ID
token that does not verify, a role the API does not know) opens nothing: the page says what
happened in words, and the log says why in a word, never with a token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import quote_plus

import httpx
import structlog
from authlib.oauth2.auth import ClientAuth
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri, prepare_token_request
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from api.audit import Auditor, request_ids
from api.deps import SessionDep, SettingsDep, keyring_of
from api.errors import NotFound
from api.languages import N_
from api.web import render, sessions
from api.web.context import safe_next
from reintegration.crypto import SEALED_PREFIX, Keyring, Unreadable
from reintegration.settings import Settings
from reintegration.tokens import Claims, InvalidToken, OidcVerifier, VerifierUnavailable
from workflows.model import HUMAN_ROLES

log = structlog.get_logger("api")
router = APIRouter(include_in_schema=False)

LOGIN_COOKIE = "workspace_oidc"
LOGIN_PATH = "/workspace/oidc"
CALLBACK = "/workspace/oidc/callback"
LOGIN_SECONDS = 600  # from the sign-in button to the provider's answer
PURPOSE = "workspace-oidc-login"  # what the sealed cookie is bound to
DISCOVERY_SECONDS = 3600.0  # how long the provider's discovery document is trusted
TIMEOUT_SECONDS = 5.0
# What a refusal answers: its HTTP status (the page says the rest, in words).
STATUS = {
    "expired": 400,
    "state": 400,
    "denied": 400,
    "provider": 400,
    "token": 400,
    "role": 403,
    "claims": 403,
    "unavailable": 503,
}


class SignInFailed(Exception):
    """Why a sign-in opens nothing, in a word (a key of ``STATUS``)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --- The provider --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Provider:
    """What discovery says of the provider, and the verifier of its ID tokens for this client."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    auth_methods: tuple[str, ...]
    verifier: OidcVerifier
    fetched_at: float


_providers: dict[tuple[str, str], Provider] = {}
_providers_lock = threading.Lock()


def provider(settings: Settings) -> Provider:
    """The configured provider, from its discovery document (fetched again after an hour)."""
    assert settings.oidc_issuer and settings.oidc_client_id
    key = (settings.oidc_issuer, settings.oidc_client_id)
    with _providers_lock:
        known = _providers.get(key)
    if known is not None and time.monotonic() - known.fetched_at < DISCOVERY_SECONDS:
        return known
    found = _discover(settings)
    with _providers_lock:
        _providers[key] = found
    return found


def _discover(settings: Settings) -> Provider:
    assert settings.oidc_issuer and settings.oidc_client_id
    url = settings.oidc_issuer.rstrip("/") + "/.well-known/openid-configuration"
    try:
        answer = httpx.get(url, timeout=TIMEOUT_SECONDS, headers={"Accept": "application/json"})
        answer.raise_for_status()
        document = answer.json()
    except (httpx.HTTPError, ValueError) as exc:
        log.warning("workspace sign-in: discovery failed", error=type(exc).__name__)
        raise SignInFailed("unavailable") from None
    if not isinstance(document, dict):
        raise _unusable("not a discovery document")
    issuer = document.get("issuer")
    # OpenID Connect Discovery: the document's issuer is the one asked for, and the ID tokens' too.
    if not isinstance(issuer, str) or issuer.rstrip("/") != settings.oidc_issuer.rstrip("/"):
        raise _unusable("another issuer")
    schemes = ("https://",) if settings.environment != "development" else ("https://", "http://")
    endpoints: dict[str, str] = {}
    for name in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
        value = document.get(name)
        if not isinstance(value, str) or not value.startswith(schemes):
            raise _unusable(f"no usable {name}")
        endpoints[name] = value
    methods = document.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
    return Provider(
        issuer=issuer,
        authorization_endpoint=endpoints["authorization_endpoint"],
        token_endpoint=endpoints["token_endpoint"],
        auth_methods=tuple(m for m in methods if isinstance(m, str)),
        verifier=OidcVerifier(
            issuer=issuer,
            audience=settings.oidc_client_id,
            jwks_url=endpoints["jwks_uri"],
            algorithms=settings.oidc_algorithms,
            role_claim=settings.oidc_role_claim,
            agency_claim=settings.oidc_agency_claim,
            countries_claim=settings.oidc_countries_claim,
            cache_seconds=settings.oidc_jwks_cache_seconds,
            refresh_cooldown_seconds=settings.oidc_jwks_refresh_cooldown_seconds,
            leeway_seconds=settings.oidc_leeway_seconds,
            sole_key_without_kid=True,
        ),
        fetched_at=time.monotonic(),
    )


def _unusable(why: str) -> SignInFailed:
    log.warning("workspace sign-in: the provider's discovery document is unusable", why=why)
    return SignInFailed("unavailable")


def redirect_uri(settings: Settings) -> str:
    return settings.public_url.rstrip("/") + CALLBACK


# --- The login in flight: a sealed cookie, used once ----------------------------------------------


@dataclass(frozen=True)
class Login:
    state: str
    nonce: str
    verifier: str
    next: str
    at: float


def _seal(keyring: Keyring, login: Login) -> str:
    text = json.dumps({"s": login.state, "n": login.nonce, "v": login.verifier, "x": login.next, "t": login.at})
    return keyring.seal_system(text, purpose=PURPOSE)


def _open(keyring: Keyring, value: str | None) -> Login:
    """The login this browser started, if it is ours and recent; ``SignInFailed("expired")`` otherwise."""
    if not value or len(value) > 4000 or not value.startswith(SEALED_PREFIX):
        raise SignInFailed("expired")
    try:
        data = json.loads(keyring.open_system(value, purpose=PURPOSE))
        login = Login(state=data["s"], nonce=data["n"], verifier=data["v"], next=data["x"], at=float(data["t"]))
    except (Unreadable, ValueError, KeyError, TypeError):
        raise SignInFailed("expired") from None
    if not 0 <= time.time() - login.at <= LOGIN_SECONDS:
        raise SignInFailed("expired")
    return login


_used: dict[str, float] = {}  # hash of a used state: when its cookie would have expired
_used_lock = threading.Lock()


def _first_use(login: Login) -> bool:
    """True the first time this process sees the login's state come back (the cookie is cleared at
    once too, and the provider takes each code once: this is the third lock on the door)."""
    digest = hashlib.sha256(login.state.encode()).hexdigest()
    now = time.time()
    with _used_lock:
        for gone in [k for k, until in _used.items() if until < now]:
            del _used[gone]
        if digest in _used:
            return False
        _used[digest] = login.at + LOGIN_SECONDS
        return True


def _set_login_cookie(response: Response, value: str, settings: Settings) -> None:
    response.set_cookie(
        LOGIN_COOKIE,
        value,
        max_age=LOGIN_SECONDS,
        path=LOGIN_PATH,
        secure=settings.environment != "development",
        httponly=True,
        samesite="lax",
    )


def _clear_login_cookie(response: Response, settings: Settings) -> None:
    response.delete_cookie(
        LOGIN_COOKIE, path=LOGIN_PATH, secure=settings.environment != "development", httponly=True, samesite="lax"
    )


# --- The routes ----------------------------------------------------------------------------------


@router.get("/workspace/oidc/login")
def login(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    next: Annotated[str | None, Query(max_length=300)] = None,  # noqa: A002 - the conventional name
) -> Response:
    """To the provider, with a new state, nonce and PKCE challenge (a plain function: discovery and
    the system key may block, so FastAPI runs it in a thread)."""
    if not settings.oidc_client_id:
        raise NotFound(N_("no such page"))
    try:
        found = provider(settings)
    except SignInFailed as failed:
        return _refused(request, failed.reason)
    started = Login(
        state=secrets.token_urlsafe(32),
        nonce=secrets.token_urlsafe(32),
        verifier=secrets.token_urlsafe(64),  # 86 characters of RFC 7636's unreserved set
        next=safe_next(next),
        at=time.time(),
    )
    url = prepare_grant_uri(
        found.authorization_endpoint,
        client_id=settings.oidc_client_id,
        response_type="code",
        redirect_uri=redirect_uri(settings),
        scope=" ".join(settings.oidc_scopes),
        state=started.state,
        nonce=started.nonce,
        code_challenge=create_s256_code_challenge(started.verifier),
        code_challenge_method="S256",
    )
    response = RedirectResponse(url, status_code=303, headers={"Cache-Control": "no-store"})
    _set_login_cookie(response, _seal(keyring_of(session), started), settings)
    return response


@router.get(CALLBACK)
def callback(request: Request, session: SessionDep, settings: SettingsDep) -> Response:
    """The provider's answer: a session for the person it signed in, or a page that says why not."""
    if not settings.oidc_client_id:
        raise NotFound(N_("no such page"))
    response: Response
    try:
        _provider_error(request)
        started = _open(keyring_of(session), request.cookies.get(LOGIN_COOKIE))
        claims = _answer(request, settings, started)
    except SignInFailed as failed:
        log.warning("workspace sign-in refused", reason=failed.reason)
        response = _refused(request, failed.reason)
    else:
        response = RedirectResponse(started.next, status_code=303)
        sessions.start(session, response, claims, settings)
        request_id, client_request_id = request_ids(request)
        Auditor(session=session, user=claims, request_id=request_id, client_request_id=client_request_id).record(
            "web.sign-in"
        )
    _clear_login_cookie(response, settings)  # whatever happened: each login is used once
    return response


def _provider_error(request: Request) -> None:
    """The provider said no (the person cancelled, or it refused): nothing opens either way, so
    this is said even when the answer carries no state (some providers leave it out)."""
    error = request.query_params.get("error")
    if error is not None:
        log.info("workspace sign-in: the provider answered an error", error=error[:40])
        raise SignInFailed("denied" if error in ("access_denied", "login_required", "consent_required") else "provider")


def _answer(request: Request, settings: Settings, started: Login) -> Claims:
    query = request.query_params
    state = query.get("state") or ""
    if len(state) > 500 or not hmac.compare_digest(state.encode(), started.state.encode()):
        raise SignInFailed("state")
    if not _first_use(started):
        raise SignInFailed("expired")
    code = query.get("code") or ""
    if not code or len(code) > 2000:
        raise SignInFailed("provider")
    found = provider(settings)
    id_token = _exchange(settings, found, code, started.verifier)
    return _verified(settings, found, id_token, started.nonce)


def _client_secret(settings: Settings) -> str | None:
    if settings.oidc_client_secret_file is None:
        return None
    try:
        return settings.oidc_client_secret_file.read_text().strip() or None
    except OSError as exc:
        log.error("workspace sign-in: the client secret file is unreadable", error=type(exc).__name__)
        raise SignInFailed("unavailable") from None


def _exchange(settings: Settings, found: Provider, code: str, verifier: str) -> str:
    """The ID token for the code: the token request carries the PKCE verifier and the client's
    authentication (its secret, as the provider says it takes it)."""
    secret = _client_secret(settings)
    if secret is None:
        method = "none"
    elif "client_secret_basic" in found.auth_methods or "client_secret_post" not in found.auth_methods:
        method = "client_secret_basic"
    else:
        method = "client_secret_post"
    body = prepare_token_request(
        "authorization_code", code=code, redirect_uri=redirect_uri(settings), code_verifier=verifier
    )
    headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}
    if method == "client_secret_basic":
        # RFC 6749 2.3.1: each part form-encoded before the Basic encoding.
        pair = f"{quote_plus(settings.oidc_client_id or '')}:{quote_plus(secret or '')}"
        headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        uri = found.token_endpoint
    else:
        uri, headers, body = ClientAuth(settings.oidc_client_id, secret, method).prepare(
            "POST", found.token_endpoint, headers, body
        )
    try:
        answer = httpx.post(uri, content=body, headers=headers, timeout=TIMEOUT_SECONDS)
    except httpx.HTTPError as exc:
        log.warning("workspace sign-in: the token endpoint is unreachable", error=type(exc).__name__)
        raise SignInFailed("unavailable") from None
    if answer.status_code >= 500:
        log.warning("workspace sign-in: the token endpoint failed", status=answer.status_code)
        raise SignInFailed("unavailable")
    try:
        tokens: Any = answer.json()
    except ValueError:
        tokens = None
    if answer.status_code != 200 or not isinstance(tokens, dict):
        error = tokens.get("error") if isinstance(tokens, dict) else None
        log.warning("workspace sign-in: the code was refused", status=answer.status_code, error=str(error)[:40])
        raise SignInFailed("token")
    id_token = tokens.get("id_token")
    if not isinstance(id_token, str) or len(id_token) > 20_000:
        raise SignInFailed("token")
    return id_token


def _verified(settings: Settings, found: Provider, id_token: str, nonce: str) -> Claims:
    """The person's claims in an ID token that verifies, mapped as a bearer token's are."""
    try:
        payload = found.verifier.decode(id_token)
    except VerifierUnavailable:
        raise SignInFailed("unavailable") from None
    except InvalidToken as exc:
        log.warning("workspace sign-in: the ID token does not verify", why=str(exc)[:60])
        raise SignInFailed("token") from None
    given = payload.get("nonce")
    if not isinstance(given, str) or not hmac.compare_digest(given.encode(), nonce.encode()):
        log.warning("workspace sign-in: the ID token does not verify", why="nonce")
        raise SignInFailed("token")
    audience, party = payload.get("aud"), payload.get("azp")
    # Several audiences: this client must be the authorized party (OpenID Connect Core 3.1.3.7).
    if (isinstance(audience, list) and len(audience) > 1 and party is None) or (
        party is not None and party != settings.oidc_client_id
    ):
        log.warning("workspace sign-in: the ID token does not verify", why="azp")
        raise SignInFailed("token")
    role = found.verifier.mapped(payload).get("role")
    if role not in {r.value for r in HUMAN_ROLES}:
        raise SignInFailed("role")
    try:
        return found.verifier.claims(payload)
    except InvalidToken as exc:
        log.warning("workspace sign-in: the ID token's claims are unusable", why=str(exc)[:60])
        raise SignInFailed("claims") from None


def _refused(request: Request, reason: str) -> HTMLResponse:
    # The language switch on this page goes back to the sign-in page, not to the spent callback.
    return render.page(
        request,
        "oidc_refused.html",
        {"reason": reason, "path": "/workspace/sign-in"},
        status=STATUS.get(reason, 400),
    )
