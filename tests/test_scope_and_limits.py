"""Security review, findings 5 and 6: scope fails closed; no unlimited or spoofed requests.

A caseworker or supervisor token without a countries claim (an identity provider's mapping mistake)
saw every country. Now no claim means no country, and every country is said explicitly (``*``).
The development codec routes are charged to the rate limiter like every unauthenticated request,
and the server believes forwarded headers only from configured proxies (none by default).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import jwt
import pytest

from api.main import create_app
from reintegration.cli import uvicorn_options
from reintegration.tokens import (
    Claims,
    InvalidToken,
    OidcVerifier,
    mint,
    signing_key,
    verify,
)
from tests.conftest import running_stack, served
from tests.journey import Journey
from workflows.model import Role


async def test_a_token_without_countries_sees_no_country(stack):
    j = Journey(stack)
    await j.open()
    task = await j.assign("shelter", "shelter-es")
    for role in ("caseworker", "supervisor"):
        nowhere = stack.auth(role, f"{role}-no-claim", countries=None)
        assert (await stack.http.get(f"/v1/cases/{j.case_id}", headers=nowhere)).status_code == 404
        assert (await stack.http.get(f"/v1/tasks/{task['task_id']}", headers=nowhere)).status_code == 404
        listed = (await stack.http.get("/v1/cases", headers=nowhere)).json()
        assert listed["items"] == []
        assert (await stack.http.get("/v1/tasks", headers=nowhere)).json()["items"] == []
    supervisor = stack.auth("supervisor", "sup-no-claim", countries=None)
    summary = (await stack.http.get("/v1/supervision/summary", headers=supervisor)).json()
    assert summary["total"] == 0
    assert (await stack.http.get("/v1/supervision/stalled", headers=supervisor)).json()["items"] == []
    export = await stack.http.get("/v1/exports/htcds", headers=supervisor)
    assert export.status_code == 200 and export.text == ""
    # Opening a case is refused too: a caseworker without countries works nowhere.
    r = await stack.http.post("/v1/cases", json={"x": 1}, headers=stack.auth("caseworker", "cw-none", countries=None))
    assert r.status_code == 422
    # An admin without countries may erase nothing.
    admin = stack.auth("admin", "admin-no-claim", countries=None)
    assert (await stack.http.delete(f"/v1/cases/{j.case_id}/personal-data", headers=admin)).status_code == 404
    # Every country, said explicitly.
    everywhere = stack.auth("supervisor", "sup-every", countries=["*"])
    assert (await stack.http.get(f"/v1/cases/{j.case_id}", headers=everywhere)).status_code == 200


def test_the_all_countries_value_and_no_claim():
    assert Claims(sub="s", role=Role.supervisor, countries=["*"]).sees_country("ES")
    assert Claims(sub="s", role=Role.supervisor, countries=["*"]).country_scope is None
    for countries in (None, []):
        claims = Claims(sub="s", role=Role.supervisor, countries=countries)
        assert not claims.sees_country("ES") and claims.country_scope == []
    assert Claims(sub="s", role=Role.caseworker, countries=["PT"]).country_scope == ["PT"]
    with pytest.raises(ValueError):
        Claims(sub="s", role=Role.supervisor, countries=["all"])


def test_an_identity_provider_without_the_claim_gives_no_country():
    verifier = OidcVerifier.__new__(OidcVerifier)
    verifier._role_claim, verifier._agency_claim, verifier._countries_claim = "role", "agency", "countries"
    mapped = verifier._mapped({"sub": "sup-1", "role": "supervisor"})
    assert mapped["countries"] is None
    assert verifier._mapped({"sub": "s", "role": "supervisor", "countries": "*"})["countries"] == ["*"]
    assert verifier._mapped({"sub": "s", "role": "supervisor", "countries": "ES PT"})["countries"] == ["ES", "PT"]


def test_scope_is_the_servers_to_say_and_a_codec_audience_is_refused_by_the_api(stack):
    key = signing_key(stack.settings)
    payload = jwt.decode(
        mint(stack.settings, role=Role.supervisor, sub="s", countries=["ES"]), options={"verify_signature": False}
    )
    smuggled = jwt.encode({**payload, "scope": "codec"}, key, algorithm="HS256")
    assert verify(stack.settings, smuggled, key).scope == "api"
    codec_audience = jwt.encode({**payload, "aud": stack.settings.codec_audience}, key, algorithm="HS256")
    with pytest.raises(InvalidToken):
        verify(stack.settings, codec_audience, key)


def test_the_token_command_says_what_no_countries_means(tmp_path):
    cli = Path(sys.executable).parent / "reintegration"
    env = {"REINTEGRATION_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [str(cli), "token", "--role", "supervisor", "--sub", "sup-1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and "sees no country" in done.stderr
    done = subprocess.run(
        [str(cli), "token", "--role", "supervisor", "--sub", "sup-1", "--countries", "*"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and done.stderr == ""
    done = subprocess.run(
        [str(cli), "token", "--role", "supervisor", "--sub", "sup-1", "--countries", "ES,all"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2


async def test_codec_path_requests_are_rate_limited_even_with_a_bearer_header(temporal_env, tmp_path):
    async with running_stack(
        "sqlite", temporal_env, tmp_path, rate_limit_per_minute=1, rate_limit_burst=3, codec_session="s-1"
    ) as throttled:
        token = throttled.token("supervisor", "sup-1")
        statuses = []
        for _ in range(6):  # a made-up token in the path, a valid one in the header: charged to the address
            r = await throttled.http.post(
                "/codec/t/not.a.token/decode", content="{}", headers={"Authorization": f"Bearer {token}"}
            )
            statuses.append(r.status_code)
        assert statuses[:3] == [401, 401, 401] and statuses[3:] == [429, 429, 429], statuses
        # A CORS preflight, answered before any route, is charged to the address too.
        preflight = {"Origin": "http://127.0.0.1:8233", "Access-Control-Request-Method": "POST"}
        assert (await throttled.http.options("/codec/decode", headers=preflight)).status_code == 429


async def test_forwarded_headers_are_believed_only_from_configured_proxies(temporal_env, tmp_path):
    async with running_stack("sqlite", temporal_env, tmp_path, rate_limit_per_minute=1, rate_limit_burst=2) as s:
        for trusted, expected in (([], [200, 200, 429]), (["127.0.0.1"], [200, 200, 200])):
            settings = s.settings.model_copy(update={"trusted_proxies": trusted})
            options = {k: v for k, v in uvicorn_options(settings).items() if k not in ("host", "port")}
            async with served(create_app(settings), lifespan="on", **options) as url:
                async with httpx.AsyncClient(base_url=url) as http:
                    statuses = [
                        (await http.get("/v1/nothing-here", headers={"X-Forwarded-For": f"203.0.113.{i}"})).status_code
                        for i in range(3)
                    ]
            # Each request claims another address: believed, three buckets; not believed, one (ours).
            assert [429 if c == 429 else 200 for c in statuses] == expected, (trusted, statuses)


def test_each_of_several_api_processes_holds_its_share_of_the_rate_limit_and_uvicorn_runs_them():
    from api.limits import RateLimits
    from reintegration.settings import Settings

    whole = RateLimits.share_of(per_minute=600, burst=120, shares=1)
    half = RateLimits.share_of(per_minute=600, burst=120, shares=2)
    assert (whole.rate, whole.burst) == (10.0, 120.0)
    assert (half.rate, half.burst) == (5.0, 60.0)
    tiny = RateLimits.share_of(per_minute=1, burst=1, shares=8)  # never below one request
    assert tiny.burst == 1.0 and tiny.rate > 0
    spent = [half.take("sub:x") for _ in range(61)]
    assert spent[:60] == [0.0] * 60 and spent[60] > 0  # the 61st waits: half of the burst
    assert "workers" not in uvicorn_options(Settings())
    assert uvicorn_options(Settings())["http"] == "h11"  # bounds what it keeps of headers (test_hostile_input)
    assert uvicorn_options(Settings(api_processes=3))["workers"] == 3
