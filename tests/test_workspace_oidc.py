"""Signing in to the workspace with OpenID Connect (authorization code with PKCE), against a real
provider served over HTTP on this machine: ``oidc-provider-mock`` (Authlib's authorization server),
behind a thin layer of the test's that requires PKCE of every code (the mock checks no challenge)
and can hand back an ID token made for another client. Also: what production refuses.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import secrets
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import oidc_provider_mock
import psycopg
import pytest
import werkzeug.serving
from fastapi.responses import Response
from pydantic import ValidationError

from api.main import create_app
from api.web import oidc
from reintegration.settings import Settings
from tests.conftest import NAMESPACE, POSTGRES_ADMIN, Stack, free_port, running_stack, served

CLIENT_ID = "workspace"
AUDIENCE = "reintegration-api"


def s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


class Provider:
    """The mock provider on a free port, with the test's layer in front of it:

    * every code must be redeemed with the PKCE verifier of the challenge it was issued for
      (``S256``; a code issued without one is refused), as a provider that requires PKCE does;
    * ``swap_id_token``, when set, replaces the ID token of the next token answer (a provider that
      issues a token for another audience)."""

    def __init__(self) -> None:
        self.app = oidc_provider_mock.app(require_nonce=True)
        self.challenges: dict[str, tuple[str | None, str | None]] = {}  # code: (challenge, method)
        self.authorizations: list[dict[str, str]] = []  # the query of each authorization request
        self.redeemed: list[dict[str, str]] = []  # the form of each token request
        self.pkce_refusals = 0
        self.swap_id_token: str | None = None
        self.server = werkzeug.serving.make_server("127.0.0.1", 0, self._layer, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)

    def user(self, sub: str, **claims: Any) -> None:
        r = httpx.put(f"{self.url}/users/{sub}", json=claims)
        assert r.status_code == 204, r.text

    # --- the layer ---------------------------------------------------------------------------

    def _layer(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path, method = environ.get("PATH_INFO", ""), environ["REQUEST_METHOD"]
        if path == "/oauth2/authorize" and method == "POST":
            return self._authorize(environ, start_response)
        if path == "/oauth2/token" and method == "POST":
            return self._token(environ, start_response)
        return self.app(environ, start_response)

    def _authorize(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
        self.authorizations.append(query)
        seen: dict[str, Any] = {}

        def capture(status: str, headers: list[tuple[str, str]], *rest: Any) -> Any:
            seen["headers"] = headers
            return start_response(status, headers, *rest)

        body = list(self.app(environ, capture))
        location = dict(seen["headers"]).get("Location", "")
        code = parse_qs(urlsplit(location).query).get("code")
        if code:
            self.challenges[code[0]] = (query.get("code_challenge"), query.get("code_challenge_method"))
        return body

    def _token(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        raw = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        form = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
        self.redeemed.append(form)
        challenge, method = self.challenges.get(form.get("code", ""), (None, None))
        verifier = form.get("code_verifier")
        if form.get("grant_type") == "authorization_code" and (
            challenge is None or method != "S256" or verifier is None or s256(verifier) != challenge
        ):
            self.pkce_refusals += 1
            payload = json.dumps({"error": "invalid_grant", "error_description": "PKCE verification failed"}).encode()
            start_response("400 Bad Request", [("Content-Type", "application/json")])
            return [payload]
        environ["wsgi.input"] = io.BytesIO(raw)
        if self.swap_id_token is None:
            return self.app(environ, start_response)
        seen: dict[str, Any] = {}

        def capture(status: str, headers: list[tuple[str, str]], *rest: Any) -> Any:
            seen["status"], seen["headers"] = status, headers
            return lambda _: None

        answer = json.loads(b"".join(self.app(environ, capture)))
        answer["id_token"], self.swap_id_token = self.swap_id_token, None
        payload = json.dumps(answer).encode()
        headers = [(k, v) for k, v in seen["headers"] if k.lower() != "content-length"]
        start_response(seen["status"], [*headers, ("Content-Length", str(len(payload)))])
        return [payload]

    # --- the test playing another client of the same provider --------------------------------

    def id_token_for(self, client_id: str, sub: str, nonce: str) -> str:
        """An ID token the provider signs for ``client_id`` (another audience), with ``nonce``."""
        verifier = secrets.token_urlsafe(48)
        query = {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": "http://127.0.0.1/elsewhere",
            "scope": "openid",
            "state": "x",
            "nonce": nonce,
            "code_challenge": s256(verifier),
            "code_challenge_method": "S256",
        }
        r = httpx.post(f"{self.url}/oauth2/authorize?{urlencode(query)}", data={"sub": sub})
        code = parse_qs(urlsplit(r.headers["location"]).query)["code"][0]
        r = httpx.post(
            f"{self.url}/oauth2/token",
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": query["redirect_uri"],
                "code_verifier": verifier,
                "client_id": client_id,
                "client_secret": "theirs",
            },
        )
        assert r.status_code == 200, r.text
        return str(r.json()["id_token"])


@pytest.fixture(scope="module")
def provider() -> Iterator[Provider]:
    p = Provider()
    try:
        yield p
    finally:
        p.close()


@pytest.fixture(scope="module")
async def oidc_stack(provider: Provider, temporal_env, tmp_path_factory) -> AsyncIterator[Stack]:
    """The system with the workspace signing people in through the provider (development otherwise)."""
    data = tmp_path_factory.mktemp("data-oidc")
    secret = data / "oidc-client-secret"
    secret.write_text(secrets.token_urlsafe(32) + "\n")
    async with running_stack(
        "sqlite",
        temporal_env,
        data,
        oidc_issuer=provider.url,
        oidc_audience=AUDIENCE,
        oidc_jwks_url=f"{provider.url}/jwks",
        oidc_client_id=CLIENT_ID,
        oidc_client_secret_file=secret,
    ) as s:
        yield s


class Browser:
    """A person's browser: our site (cookies kept) and the provider (where the person signs in)."""

    def __init__(self, stack: Stack, provider: Provider) -> None:
        self.http = httpx.AsyncClient(base_url=stack.base_url, timeout=60, follow_redirects=False)
        self.provider = provider

    async def start(self, next_page: str = "/workspace") -> str:
        """Press the sign-in button: the provider's authorization address it leads to."""
        r = await self.http.get("/workspace/oidc/login", params={"next": next_page})
        assert r.status_code == 303, r.text
        assert r.headers["location"].startswith(f"{self.provider.url}/oauth2/authorize?")
        cookie = r.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/workspace/oidc" in cookie
        return r.headers["location"]

    async def authorize(self, address: str, sub: str) -> str:
        """Sign in at the provider as ``sub``: the callback address (path and query) it sends back to."""
        async with httpx.AsyncClient() as at_provider:
            r = await at_provider.post(address, data={"sub": sub})
        assert r.status_code == 302, r.text
        back = urlsplit(r.headers["location"])
        assert back.path == "/workspace/oidc/callback"
        return f"{back.path}?{back.query}"

    async def sign_in(self, sub: str, next_page: str = "/workspace") -> httpx.Response:
        return await self.http.get(await self.authorize(await self.start(next_page), sub))

    async def aclose(self) -> None:
        await self.http.aclose()


def no_session(r: httpx.Response) -> bool:
    return "workspace_session=" not in r.headers.get("set-cookie", "")


async def test_a_person_signs_in_through_the_provider_and_lands_on_their_home(oidc_stack, provider):
    provider.user("cw-oidc-1", role="caseworker", countries=["ES"], name="Ana Caseworker")
    provider.user("sup-oidc-1", role="supervisor", countries="ES PT")
    person = Browser(oidc_stack, provider)
    try:
        page = await person.http.get("/workspace/sign-in")
        assert 'href="/workspace/oidc/login?next=' in page.text  # the button, when a client is configured
        address = await person.start("/workspace/cases")
        query = parse_qs(urlsplit(address).query)
        assert query["client_id"] == [CLIENT_ID] and query["response_type"] == ["code"]
        assert query["redirect_uri"] == ["http://127.0.0.1:8000/workspace/oidc/callback"]  # public_url's
        assert "openid" in query["scope"][0].split() and query["nonce"] and query["state"]
        assert query["code_challenge_method"] == ["S256"] and len(query["code_challenge"][0]) == 43
        r = await person.http.get(await person.authorize(address, "cw-oidc-1"))
        assert (r.status_code, r.headers["location"]) == (303, "/workspace/cases")
        cookies = r.headers.get_list("set-cookie")
        session_cookie = next(c for c in cookies if c.startswith("workspace_session="))
        assert "HttpOnly" in session_cookie and "SameSite=lax" in session_cookie
        assert any(c.startswith("workspace_oidc=") and "Max-Age=0" in c for c in cookies)  # used once
        # The code was redeemed with the verifier of the challenge sent, by the authenticated client.
        redeemed = provider.redeemed[-1]
        assert s256(redeemed["code_verifier"]) == query["code_challenge"][0]
        assert redeemed["code_verifier"] not in address
        r = await person.http.get("/workspace")
        assert (r.status_code, r.headers["location"]) == (303, "/workspace/cases")  # a caseworker's home
        with oidc_stack.engine.connect() as db:
            actions = [
                row[0] for row in db.exec_driver_sql("SELECT action FROM audit_trail WHERE actor_sub = 'cw-oidc-1'")
            ]
        assert "web.sign-in" in actions
        # Another person, another role: their role's home; countries given as a string map the same.
        other = Browser(oidc_stack, provider)
        try:
            r = await other.sign_in("sup-oidc-1")
            assert r.status_code == 303
            r = await other.http.get("/workspace")
            assert r.headers["location"] == "/workspace/dashboard"
        finally:
            await other.aclose()
    finally:
        await person.aclose()


async def test_the_provider_requires_pkce_and_an_injected_code_opens_nothing(oidc_stack, provider):
    """A code obtained in another login (another challenge) brought to this browser's callback with
    this browser's state: the verifier does not match the code's challenge, the provider refuses it."""
    provider.user("cw-oidc-2", role="caseworker", countries=["ES"])
    victim, attacker = Browser(oidc_stack, provider), Browser(oidc_stack, provider)
    try:
        victims = await victim.start()
        attackers_callback = await attacker.authorize(await attacker.start(), "cw-oidc-2")
        code = parse_qs(urlsplit(attackers_callback).query)["code"][0]
        state = parse_qs(urlsplit(victims).query)["state"][0]
        refusals = provider.pkce_refusals
        r = await victim.http.get("/workspace/oidc/callback", params={"code": code, "state": state})
        assert r.status_code == 400 and no_session(r)
        assert "could not be verified" in r.text
        assert provider.pkce_refusals == refusals + 1  # refused at the provider: the verifier was this login's
        r = await victim.http.get("/workspace")
        assert r.headers["location"].startswith("/workspace/sign-in")
    finally:
        await victim.aclose()
        await attacker.aclose()


async def test_a_replayed_callback_opens_nothing(oidc_stack, provider):
    provider.user("cw-oidc-3", role="caseworker", countries=["ES"])
    person, thief = Browser(oidc_stack, provider), Browser(oidc_stack, provider)
    try:
        address = await person.start()
        login_cookie = person.http.cookies.get("workspace_oidc")
        assert login_cookie
        callback = await person.authorize(address, "cw-oidc-3")
        r = await person.http.get(callback)
        assert r.status_code == 303 and not no_session(r)
        # The same browser again: the login's cookie is gone.
        r = await person.http.get(callback)
        assert r.status_code == 400 and no_session(r) and "already used" in r.text
        # The same state, code and login cookie, from another browser: used once, refused.
        thief.http.cookies.set("workspace_oidc", login_cookie, path="/workspace/oidc")
        r = await thief.http.get(callback)
        assert r.status_code == 400 and no_session(r)
        r = await thief.http.get("/workspace")
        assert r.headers["location"].startswith("/workspace/sign-in")
    finally:
        await person.aclose()
        await thief.aclose()


async def test_a_wrong_or_missing_state_and_an_error_from_the_provider_open_nothing(oidc_stack, provider):
    provider.user("cw-oidc-4", role="caseworker", countries=["ES"])
    person = Browser(oidc_stack, provider)
    try:
        callback = await person.authorize(await person.start(), "cw-oidc-4")
        query = parse_qs(urlsplit(callback).query)
        r = await person.http.get("/workspace/oidc/callback", params={"code": query["code"][0], "state": "forged"})
        assert r.status_code == 400 and no_session(r)
        assert "does not belong to the sign-in started here" in r.text
        r = await person.http.get(callback)  # the right state after a wrong one: that login is spent
        assert r.status_code == 400 and no_session(r)

        callback = await person.authorize(await person.start(), "cw-oidc-4")
        r = await person.http.get(
            "/workspace/oidc/callback", params={"code": parse_qs(urlsplit(callback).query)["code"][0]}
        )
        assert r.status_code == 400 and no_session(r)

        address = await person.start()
        async with httpx.AsyncClient() as at_provider:  # the person cancels at the provider
            r = await at_provider.post(address, data={"sub": "cw-oidc-4", "action": "deny"})
        back = urlsplit(r.headers["location"])
        assert "error=access_denied" in back.query
        r = await person.http.get(f"{back.path}?{back.query}")
        assert r.status_code == 400 and no_session(r) and "cancelled or refused" in r.text

        r = await person.http.get("/workspace/oidc/callback", params={"code": "x", "state": "y"})  # no login at all
        assert r.status_code == 400 and no_session(r)
        assert "token" not in r.text.lower()  # words, never the token's details
    finally:
        await person.aclose()


async def test_an_id_token_for_another_audience_opens_nothing(oidc_stack, provider):
    provider.user("cw-oidc-5", role="caseworker", countries=["ES"])
    person = Browser(oidc_stack, provider)
    try:
        address = await person.start()
        nonce = parse_qs(urlsplit(address).query)["nonce"][0]
        # Signed by the provider, this login's nonce, the same person: but made for another client.
        provider.swap_id_token = provider.id_token_for("another-app", "cw-oidc-5", nonce)
        r = await person.http.get(await person.authorize(address, "cw-oidc-5"))
        assert provider.swap_id_token is None  # our callback did receive the other client's token
        assert r.status_code == 400 and no_session(r) and "could not be verified" in r.text
    finally:
        await person.aclose()


async def test_a_role_the_api_does_not_know_opens_nothing(oidc_stack, provider):
    provider.user("who-1", role="superhero", countries=["ES"])
    provider.user("sys-1", role="system", countries=["ES"])  # a role of the engine's, never a person's
    provider.user("none-1", countries=["ES"])
    provider.user("partner-1", role="partner")  # a partner names its agency
    person = Browser(oidc_stack, provider)
    try:
        for sub in ("who-1", "sys-1", "none-1"):
            r = await person.sign_in(sub)
            assert r.status_code == 403 and no_session(r), sub
            assert "has no role in this workspace" in r.text
        r = await person.sign_in("partner-1")
        assert r.status_code == 403 and no_session(r) and "the agency it works for" in r.text
        r = await person.http.get("/workspace")
        assert r.headers["location"].startswith("/workspace/sign-in")
    finally:
        await person.aclose()


def test_the_login_cookie_is_secure_outside_development():
    for environment, secure in (("development", False), ("production", True)):
        settings = Settings.model_construct(environment=environment)
        response = Response()
        oidc._set_login_cookie(response, "enc:v1:x", settings)
        assert ("Secure" in response.headers["set-cookie"]) is secure, environment


# --- Production ----------------------------------------------------------------------------------


@pytest.fixture
def production(tmp_path: Path) -> dict[str, Any]:
    kek = tmp_path / "kek"
    kek.write_text(secrets.token_hex(32) + "\n")
    secret = tmp_path / "oidc-client-secret"
    secret.write_text(secrets.token_urlsafe(32))
    return {
        "environment": "production",
        "data_dir": tmp_path / "data",
        "database_url": "postgresql+psycopg://app@db.internal:5432/reintegration",
        "temporal_allow_unauthenticated": True,
        "kek_file": kek,
        "oidc_issuer": "https://id.example.org/realms/care",
        "oidc_audience": AUDIENCE,
        "oidc_jwks_url": "https://id.example.org/realms/care/protocol/openid-connect/certs",
        "oidc_client_id": CLIENT_ID,
        "oidc_client_secret_file": secret,
        "public_url": "https://care.example.org",
    }


def refused(values: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as caught:
        Settings(**values)
    return str(caught.value)


def test_production_refuses_the_workspace_without_its_oidc_client_or_https(production):
    Settings(**production)
    for missing in ("oidc_client_id", "oidc_client_secret_file"):
        assert "the workspace needs its OIDC client" in refused({**production, missing: None}), missing
    assert "REINTEGRATION_PUBLIC_URL must be the workspace's https://" in refused(
        {**production, "public_url": "http://care.example.org"}
    )
    assert "REINTEGRATION_OIDC_ISSUER must be an https://" in refused(
        {**production, "oidc_issuer": "http://id.example.org/realms/care"}
    )
    # Every problem at once.
    message = refused({**production, "oidc_client_id": None, "public_url": "http://care.example.org"})
    assert "the workspace needs its OIDC client" in message and "REINTEGRATION_PUBLIC_URL" in message
    # Without the workspace, the API alone needs no client.
    Settings(**{**production, "workspace": False, "oidc_client_id": None, "public_url": "http://x.internal"})
    # A client needs its provider, and the scopes openid, whatever the environment.
    assert "REINTEGRATION_OIDC_CLIENT_ID needs REINTEGRATION_OIDC_ISSUER" in refused({"oidc_client_id": CLIENT_ID})
    assert "openid" in refused({"oidc_scopes": ["profile"]})


@pytest.mark.postgres
async def test_production_shows_no_development_sign_in(production, temporal_env):
    """A production API (PostgreSQL, checked settings): the sign-in page offers the provider only,
    the development form is refused, and a provider that cannot be reached is said so in words."""
    name = f"reintegration_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    settings = Settings(
        **{
            **production,
            "database_url": f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}",
            "temporal_address": temporal_env.client.service_client.config.target_host,
            "temporal_namespace": NAMESPACE,
            # A provider on this machine that answers nothing (the test reaches no other host).
            "oidc_issuer": f"https://127.0.0.1:{free_port()}/realms/care",
        }
    )
    try:
        async with served(create_app(settings), lifespan="on") as base_url:
            async with httpx.AsyncClient(base_url=base_url, timeout=60) as http:
                r = await http.get("/workspace/sign-in")
                assert r.status_code == 200
                assert 'action="/workspace/sign-in"' not in r.text and 'name="role"' not in r.text
                assert "Development sign-in" not in r.text
                assert 'href="/workspace/oidc/login?next=' in r.text
                r = await http.post("/workspace/sign-in", data={"role": "admin", "sub": "a-1", "countries": "*"})
                assert r.status_code == 404 and no_session(r)
                r = await http.get("/workspace/oidc/login")
                assert r.status_code == 503 and "cannot be reached now" in r.text
                assert "workspace_oidc=" not in r.headers.get("set-cookie", "")
    finally:
        with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
