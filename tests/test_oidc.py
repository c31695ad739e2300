"""Production authentication: tokens from an OpenID Connect provider, verified against its JWKS
(served here by a real HTTP server with keys made in the test), and the settings production refuses.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pydantic import ValidationError

from reintegration.settings import Settings
from reintegration.tokens import (
    DevelopmentKeyRefused,
    InvalidToken,
    OidcVerifier,
    VerifierUnavailable,
    make_verifier,
    mint,
    signing_key,
)
from tests.conftest import Stack, running_stack
from workflows.model import Role

ROOT = Path(__file__).resolve().parents[1]
ISSUER = "https://id.example.org/realms/care"
AUDIENCE = "reintegration-api"


class Provider:
    """An identity provider's JWKS endpoint on a real HTTP server; its keys are made here."""

    def __init__(self) -> None:
        self.private: dict[str, Any] = {}  # kid: private key
        self.published: list[str] = []
        self.hits = 0
        self.delay = 0.0
        self.failing = False
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                provider.hits += 1
                time.sleep(provider.delay)
                if provider.failing:
                    self.send_error(502)
                    return
                body = json.dumps(provider.jwks()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/realms/care/certs"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def add(self, kid: str, kind: str = "RS256", *, publish: bool = True) -> None:
        self.private[kid] = (
            rsa.generate_private_key(public_exponent=65537, key_size=2048)
            if kind == "RS256"
            else ec.generate_private_key(ec.SECP256R1())
        )
        if publish:
            self.published.append(kid)

    def jwks(self) -> dict[str, Any]:
        keys = []
        for kid in self.published:
            key = self.private[kid]
            if isinstance(key, rsa.RSAPrivateKey):
                jwk = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True) | {"alg": "RS256"}
            else:
                jwk = jwt.algorithms.ECAlgorithm.to_jwk(key.public_key(), as_dict=True) | {"alg": "ES256"}
            keys.append(jwk | {"kid": kid, "use": "sig"})
        return {"keys": keys}

    def token(self, kid: str, *, sign_with: str | None = None, headers: dict | None = None, **claims: Any) -> str:
        key = self.private[sign_with or kid]
        alg = "RS256" if isinstance(key, rsa.RSAPrivateKey) else "ES256"
        return jwt.encode(claims_of(**claims), key, algorithm=alg, headers={"kid": kid, **(headers or {})})

    def public_pem(self, kid: str) -> bytes:
        return (
            self.private[kid]
            .public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        )

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def claims_of(**over: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "cw-oidc-1",
        "role": "caseworker",
        "countries": ["ES"],
        "iat": now,
        "exp": now + 600,
        **over,
    }
    return {k: v for k, v in claims.items() if v is not None}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict, claims: dict) -> str:
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}."


def hmac_signed(secret: bytes, header: dict, claims: dict) -> str:
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def provider() -> Iterator[Provider]:
    p = Provider()
    p.add("k1")
    p.add("ec1", "ES256")
    yield p
    p.close()


@pytest.fixture(scope="module")
async def oidc(temporal_env, tmp_path_factory, provider) -> AsyncIterator[Stack]:
    # No refresh cooldown here, to count fetches; the cooldown has its own test on the verifier.
    async with running_stack(
        "sqlite",
        temporal_env,
        tmp_path_factory.mktemp("oidc"),
        oidc_issuer=ISSUER,
        oidc_audience=AUDIENCE,
        oidc_jwks_url=provider.url,
        oidc_jwks_refresh_cooldown_seconds=0,
    ) as s:
        yield s


# --- Over HTTP -----------------------------------------------------------------------------------


async def test_the_providers_tokens_are_accepted_and_development_tokens_no_longer(oidc, provider):
    r = await oidc.http.get("/v1/cases", headers=bearer(provider.token("k1")))
    assert r.status_code == 200, r.text
    supervisor = provider.token("ec1", sub="sup-oidc", role="supervisor", countries=None)  # ES256
    assert (await oidc.http.get("/v1/supervision/summary", headers=bearer(supervisor))).status_code == 200
    partner = provider.token("k1", sub="p-oidc", role="partner", agency="shelter-es", countries=None)
    r = await oidc.http.get("/v1/tasks", headers=bearer(partner))
    assert r.status_code == 200, r.text
    development = mint(oidc.settings, role=Role.caseworker, sub="cw-dev", countries=["ES"])
    assert (await oidc.http.get("/v1/cases", headers=bearer(development))).status_code == 401


async def test_any_other_token_is_401(oidc, provider):
    provider.add("stranger", publish=False)  # a key the provider never published
    now = int(time.time())
    bad = {
        "wrong issuer": provider.token("k1", iss="https://evil.example.org/realms/care"),
        "wrong audience": provider.token("k1", aud="another-api"),
        "expired": provider.token("k1", exp=now - 300),
        "not yet valid": provider.token("k1", nbf=now + 300),
        "no expiry": provider.token("k1", exp=None),
        "no subject": provider.token("k1", sub=None),
        "not one of our roles": provider.token("k1", role="superuser"),
        "a partner without agency": provider.token("k1", role="partner"),
        "signed by another key under a published kid": provider.token("k1", sign_with="stranger"),
        "signed by an unpublished key, with a jku to fetch it from": provider.token(
            "stranger", headers={"jku": "http://127.0.0.1:9/jwks.json"}
        ),
        "no kid": jwt.encode(claims_of(), provider.private["k1"], algorithm="RS256"),
        "HS256 with the development key": mint(oidc.settings, role=Role.caseworker, sub="cw-oidc-1"),
        "HS256 with the development key, the provider's claims": jwt.encode(
            claims_of(), signing_key(oidc.settings), algorithm="HS256", headers={"kid": "k1"}
        ),
        "HS256 keyed with the provider's public key": hmac_signed(
            provider.public_pem("k1"), {"alg": "HS256", "typ": "JWT", "kid": "k1"}, claims_of()
        ),
        "alg none": unsigned({"alg": "none", "typ": "JWT", "kid": "k1"}, claims_of()),
        "alg None": unsigned({"alg": "None", "typ": "JWT", "kid": "k1"}, claims_of()),
        "RS256 header on an EC key": jwt.encode(
            claims_of(), provider.private["k1"], algorithm="RS256", headers={"kid": "ec1"}
        ),
        "garbage": "not.a.jwt",
    }
    for label, token in bad.items():
        r = await oidc.http.get("/v1/cases", headers=bearer(token))
        assert r.status_code == 401, label
        assert r.headers["content-type"] == "application/problem+json" and r.headers["www-authenticate"] == "Bearer"
    assert (await oidc.http.get("/v1/cases", headers=bearer(provider.token("k1")))).status_code == 200


async def test_a_rotated_key_is_fetched_once_and_a_withdrawn_one_refused(oidc, provider):
    assert (await oidc.http.get("/v1/cases", headers=bearer(provider.token("k1")))).status_code == 200
    provider.add("k2")
    provider.published.remove("k1")
    fetched = provider.hits
    r = await oidc.http.get("/v1/cases", headers=bearer(provider.token("k2")))
    assert r.status_code == 200, r.text
    assert provider.hits == fetched + 1  # the unknown kid refreshed the key set, once
    for _ in range(3):
        assert (await oidc.http.get("/v1/cases", headers=bearer(provider.token("k2")))).status_code == 200
    assert provider.hits == fetched + 1  # then it is cached
    # k1 left the refreshed set: refused, after one more look.
    assert (await oidc.http.get("/v1/cases", headers=bearer(provider.token("k1")))).status_code == 401
    assert provider.hits == fetched + 2
    provider.published.append("k1")


async def test_fetching_keys_never_blocks_the_api_and_an_unreachable_provider_is_503(oidc, provider):
    provider.add("k3")
    provider.delay = 3.0
    before = provider.hits
    slow = asyncio.create_task(oidc.http.get("/v1/cases", headers=bearer(provider.token("k3"))))
    while provider.hits == before:
        await asyncio.sleep(0.02)  # until the fetch of the key set is under way
    assert (await oidc.http.get("/health")).status_code == 200
    # A known key is not held up behind the fetch for another: both are answered while it hangs.
    assert (await oidc.http.get("/v1/cases", headers=bearer(provider.token("k2")))).status_code == 200
    assert not slow.done()
    assert (await slow).status_code == 200
    provider.delay = 0.0
    provider.failing = True
    provider.add("k4")
    try:
        r = await oidc.http.get("/v1/cases", headers=bearer(provider.token("k4")))
    finally:
        provider.failing = False
    assert r.status_code == 503 and r.headers["retry-after"].isdigit()
    assert r.headers["content-type"] == "application/problem+json"
    # Known keys keep working while the provider is down.
    provider.failing = True
    try:
        assert (await oidc.http.get("/v1/cases", headers=bearer(provider.token("k3")))).status_code == 200
    finally:
        provider.failing = False


# --- The verifier --------------------------------------------------------------------------------


def verifier(provider: Provider, **kw: Any) -> OidcVerifier:
    return OidcVerifier(issuer=ISSUER, audience=AUDIENCE, jwks_url=provider.url, algorithms=["RS256", "ES256"], **kw)


def test_unknown_kids_do_not_make_the_verifier_hammer_the_provider(provider):
    v = verifier(provider, refresh_cooldown_seconds=30)
    assert v.verify(provider.token("k1")).sub == "cw-oidc-1"
    fetched = provider.hits
    for n in range(5):
        with pytest.raises(InvalidToken):
            v.verify(provider.token(f"forged-{n}", sign_with="k1"))
    assert provider.hits == fetched  # within the cooldown, forged kids cost no fetch


def test_a_withdrawn_key_is_refused_once_the_cached_set_expires(provider):
    provider.add("short-lived")
    v = verifier(provider, cache_seconds=0.5, refresh_cooldown_seconds=0)
    assert v.verify(provider.token("short-lived")).role == Role.caseworker
    provider.published.remove("short-lived")
    time.sleep(0.6)
    with pytest.raises(InvalidToken):
        v.verify(provider.token("short-lived"))


def test_claim_names_follow_the_provider():
    p = Provider()
    try:
        p.add("kc")
        v = OidcVerifier(
            issuer=ISSUER,
            audience=AUDIENCE,
            jwks_url=p.url,
            algorithms=["RS256"],
            role_claim="realm_access.roles",
            countries_claim="country_codes",
        )
        token = p.token(
            "kc",
            role=None,
            countries=None,
            realm_access={"roles": ["offline_access", "caseworker"]},
            country_codes="ES PT",
        )
        claims = v.verify(token)
        assert claims.role == Role.caseworker and claims.countries == ["ES", "PT"]
        with pytest.raises(InvalidToken):  # two of our roles: which one? neither
            v.verify(p.token("kc", role=None, realm_access={"roles": ["caseworker", "admin"]}))
        p.failing = True  # a verifier with no keys yet, and a provider that is down
        fresh = OidcVerifier(issuer=ISSUER, audience=AUDIENCE, jwks_url=p.url, algorithms=["RS256"])
        with pytest.raises(VerifierUnavailable):
            fresh.verify(p.token("kc"))
    finally:
        p.close()


# --- Production settings -------------------------------------------------------------------------


@pytest.fixture
def production(tmp_path: Path) -> dict[str, Any]:
    kek = tmp_path / "kek"
    kek.write_text(secrets.token_hex(32) + "\n")
    api_key = tmp_path / "temporal-api-key"
    api_key.write_text(secrets.token_urlsafe(32))
    client_secret = tmp_path / "oidc-client-secret"
    client_secret.write_text(secrets.token_urlsafe(32))
    return {
        "environment": "production",
        "data_dir": tmp_path / "data",
        "temporal_api_key_file": api_key,
        "database_url": "postgresql+psycopg://app@db.internal:5432/reintegration",
        "oidc_issuer": ISSUER,
        "oidc_audience": AUDIENCE,
        "oidc_jwks_url": "https://id.example.org/realms/care/protocol/openid-connect/certs",
        "kek_file": kek,
        # The workspace's sign-in (tests/test_workspace_oidc.py has what production refuses of it).
        "oidc_client_id": "workspace",
        "oidc_client_secret_file": client_secret,
        "public_url": "https://care.example.org",
    }


def refused(values: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as caught:
        Settings(**values)
    return str(caught.value)


def test_production_starts_only_with_oidc_postgresql_and_real_secrets(production):
    settings = Settings(
        **production,
        supervision_webhook_url="https://hooks.example.org/stalled",
        supervision_webhook_secret=secrets.token_urlsafe(32),
    )
    assert isinstance(make_verifier(settings), OidcVerifier)
    for missing in ("oidc_issuer", "oidc_audience", "oidc_jwks_url"):
        assert f"REINTEGRATION_{missing.upper()}" in refused({**production, missing: None}), missing
    assert "https://" in refused({**production, "oidc_jwks_url": "http://id.example.org/certs"})
    for url in (None, "sqlite:///data/reintegration.db"):
        assert "DATABASE_URL must point at PostgreSQL" in refused({**production, "database_url": url})
    hook = {**production, "supervision_webhook_url": "https://hooks.example.org/stalled"}
    for placeholder in ("change-me", "changeme", "CHANGEME", "secret", "development", "", "short but random 4x9"):
        assert "is a placeholder" in refused({**hook, "supervision_webhook_secret": placeholder}), placeholder
    assert "needs REINTEGRATION_SUPERVISION_WEBHOOK_SECRET" in refused(hook)
    assert "development signing key" in refused({**production, "jwt_signing_key_file": Path("data/dev-signing-key")})
    # Temporal's frontend: authenticated (mTLS or an API key), or an explicit word that nobody else reaches it.
    assert "mTLS" in refused({**production, "temporal_api_key_file": None})
    Settings(**{**production, "temporal_api_key_file": None, "temporal_allow_unauthenticated": True})
    # Every problem at once, so one start tells the operator everything.
    message = refused({"environment": "production", "data_dir": production["data_dir"]})
    assert "DATABASE_URL" in message and "OIDC is required" in message


def test_symmetric_and_none_algorithms_are_never_configurable(production):
    for algorithms in (["HS256"], ["RS256", "none"], []):
        assert "oidc_algorithms" in refused({**production, "oidc_algorithms": algorithms})
        assert "oidc_algorithms" in refused({"oidc_algorithms": algorithms})  # development too


def test_production_refuses_the_development_key_and_minting(production):
    settings = Settings(**production)
    with pytest.raises(DevelopmentKeyRefused):
        signing_key(settings)
    with pytest.raises(DevelopmentKeyRefused):
        mint(settings, role=Role.admin, sub="admin-1")
    env = {
        **os.environ,
        "REINTEGRATION_ENVIRONMENT": "production",
        "DATABASE_URL": production["database_url"],
        "REINTEGRATION_OIDC_ISSUER": ISSUER,
        "REINTEGRATION_OIDC_AUDIENCE": AUDIENCE,
        "REINTEGRATION_OIDC_JWKS_URL": production["oidc_jwks_url"],
        "REINTEGRATION_KEK_FILE": str(production["kek_file"]),
        "REINTEGRATION_TEMPORAL_API_KEY_FILE": str(production["temporal_api_key_file"]),
        "REINTEGRATION_DATA_DIR": str(production["data_dir"]),
        "REINTEGRATION_OIDC_CLIENT_ID": production["oidc_client_id"],
        "REINTEGRATION_OIDC_CLIENT_SECRET_FILE": str(production["oidc_client_secret_file"]),
        "REINTEGRATION_PUBLIC_URL": production["public_url"],
    }
    done = subprocess.run(
        [sys.executable, "-m", "reintegration.cli", "token", "--role", "admin", "--sub", "a-1"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and done.stdout == ""
    assert "development signing key is refused" in done.stderr
    assert not (production["data_dir"] / "dev-signing-key").exists()
