"""The workspace's doors: sign-in, sessions, CSRF, headers and languages, against the real app."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from fastapi import Response
from sqlalchemy import update
from sqlmodel import Session, col, select

from api.web import sessions
from reintegration.db import WebSessionRecord
from reintegration.tokens import Claims
from tests.workspace import Person, csrf_token
from workflows.model import Role


async def test_the_root_leads_to_sign_in_and_back(stack):
    person = Person(stack)
    try:
        r = await person.http.get("/")
        assert (r.status_code, r.headers["location"]) == (303, "/workspace")
        r = await person.http.get("/workspace")
        assert (r.status_code, r.headers["location"]) == (303, "/workspace/sign-in?next=/workspace")
        r = await person.http.post(
            "/workspace/sign-in",
            data={"role": "caseworker", "sub": "cw-es-1", "countries": "ES", "next": "/workspace/cases"},
        )
        assert (r.status_code, r.headers["location"]) == (303, "/workspace/cases")
        cookie = r.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/" in cookie
        assert "Secure" not in cookie  # development is plain http; production sets it
        assert "Max-Age" not in cookie and "expires" not in cookie.lower()  # ends with the browser
        r = await person.http.get("/workspace")
        assert (r.status_code, r.headers["location"]) == (303, "/workspace/cases")
    finally:
        await person.aclose()


async def test_sign_in_never_sends_anyone_to_another_site(stack):
    person = Person(stack)
    try:
        for target in ("https://evil.example/", "//evil.example/x", "/workspace/../x\\y", "/v1/cases"):
            r = await person.http.post(
                "/workspace/sign-in", data={"role": "caseworker", "sub": "cw-es-1", "countries": "ES", "next": target}
            )
            assert r.headers["location"] == "/workspace", target
    finally:
        await person.aclose()


async def test_a_bad_sign_in_is_explained_and_opens_nothing(stack):
    person = Person(stack)
    try:
        for data in (
            {"role": "system", "sub": "x", "countries": "ES"},
            {"role": "caseworker", "sub": "", "countries": "ES"},
            {"role": "caseworker", "sub": "cw-1", "countries": "Spain"},
        ):
            r = await person.http.post("/workspace/sign-in", data=data)
            assert r.status_code in (422,), (data, r.status_code)
            assert "set-cookie" not in r.headers
        r = await person.http.get("/workspace")
        assert r.headers["location"].startswith("/workspace/sign-in")
    finally:
        await person.aclose()


async def test_pages_carry_a_strict_content_security_policy(stack):
    person = Person(stack)
    try:
        r = await person.http.get("/workspace/sign-in")
        policy = r.headers["content-security-policy"]
        assert "default-src 'self'" in policy and "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
        assert "unsafe-inline" not in policy
        assert "<script>" not in r.text and " style=" not in r.text  # nothing inline for the policy to refuse
        assert r.headers["x-frame-options"] == "DENY" and r.headers["cache-control"] == "no-store"
    finally:
        await person.aclose()


async def test_a_form_without_its_csrf_token_changes_nothing(stack):
    person = await Person(stack).sign_in("caseworker", "cw-es-1", countries="ES")
    try:
        r = await person.http.post("/workspace/sign-out", data={})
        assert r.status_code == 403 and "was not sent" in r.text
        r = await person.http.post("/workspace/sign-out", data={"csrf_token": "forged"})
        assert r.status_code == 403
        assert (await person.http.get("/workspace")).headers["location"] == "/workspace/cases"  # still signed in
    finally:
        await person.aclose()


async def test_signing_out_ends_the_session_for_every_copy_of_its_cookie(stack):
    person = await Person(stack).sign_in("caseworker", "cw-es-1", countries="ES")
    try:
        copied = dict(person.http.cookies)
        token = csrf_token(await person.page("/workspace/cases"))  # any page of a signed-in person
        r = await person.http.post("/workspace/sign-out", data={"csrf_token": token})
        assert (r.status_code, r.headers["location"]) == (303, "/workspace/sign-in")
        person.http.cookies.update(copied)
        r = await person.http.get("/workspace")
        assert r.headers["location"].startswith("/workspace/sign-in")
    finally:
        await person.aclose()


async def test_a_session_ends_when_idle_and_at_its_absolute_limit(stack):
    for column in ("last_seen_at", "created_at"):
        person = await Person(stack).sign_in("caseworker", f"cw-{column}", countries="ES")
        try:
            assert (await person.http.get("/workspace")).headers["location"] == "/workspace/cases"
            long_ago = datetime.now(UTC) - timedelta(days=30)
            with Session(stack.engine) as session:
                session.execute(
                    update(WebSessionRecord)
                    .where(col(WebSessionRecord.claims)["sub"].as_string() == f"cw-{column}")
                    .values({column: long_ago})
                )
                session.commit()
            assert (await person.http.get("/workspace")).headers["location"].startswith("/workspace/sign-in")
        finally:
            await person.aclose()


async def test_the_language_comes_from_the_browser_or_the_persons_choice(stack):
    person = Person(stack, language="fr-CA,fr;q=0.9,en;q=0.5")
    try:
        r = await person.http.get("/workspace/sign-in")
        assert r.headers["content-language"] == "fr" and '<html lang="fr">' in r.text
        r = await person.http.post("/workspace/language", data={"language": "es", "next": "/workspace/sign-in"})
        assert r.headers["location"] == "/workspace/sign-in"
        r = await person.http.get("/workspace/sign-in")
        assert r.headers["content-language"] == "es"
        r = await person.http.post("/workspace/language", data={"language": "xx"})
        assert (await person.http.get("/workspace/sign-in")).headers["content-language"] == "es"  # unchanged
    finally:
        await person.aclose()


async def test_an_admin_lands_on_the_agencies_and_only_an_admin_sees_their_webhook_addresses(stack):
    agency = f"web-agency-{uuid.uuid4().hex[:6]}"
    r = await stack.http.post(
        "/v1/agencies",
        headers=stack.auth("admin", "admin-1"),
        json={
            "agency_id": agency,
            "name": "Hogar Web",
            "org_type": "NGO",
            "country": "ES",
            "services": ["housing"],
            "webhook_url": f"http://127.0.0.1:9/{agency}",
            "webhook_secret": "s" * 40,
        },
    )
    assert r.status_code == 201, r.text
    admin = await Person(stack).sign_in("admin", "admin-web")
    caseworker = await Person(stack).sign_in("caseworker", "cw-es-1", countries="ES")
    try:
        r = await admin.http.get("/workspace")
        assert r.headers["location"] == "/workspace/agencies"
        html = await admin.page("/workspace/agencies")
        assert "Hogar Web" in html and f"http://127.0.0.1:9/{agency}" in html
        seen = await caseworker.page("/workspace/agencies")  # the registry is everyone's to read
        assert "Hogar Web" in seen and f"http://127.0.0.1:9/{agency}" not in seen
    finally:
        await admin.aclose()
        await caseworker.aclose()


async def test_forms_another_site_makes_the_browser_send_are_refused(stack):
    person = await Person(stack).sign_in("caseworker", "cw-es-1", countries="ES")
    try:
        for headers in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}, {"Origin": "null"}):
            stranger = Person(stack)
            try:
                r = await stranger.http.post(
                    "/workspace/sign-in", data={"role": "admin", "sub": "attacker"}, headers=headers
                )
                assert r.status_code == 403 and "set-cookie" not in r.headers  # no login CSRF
                r = await stranger.http.post("/workspace/language", data={"language": "fr"}, headers=headers)
                assert r.status_code == 403 and "set-cookie" not in r.headers
            finally:
                await stranger.aclose()
            token = csrf_token(await person.page("/workspace/cases"))
            r = await person.http.post("/workspace/sign-out", data={"csrf_token": token}, headers=headers)
            assert r.status_code == 403  # even with the right token
        same = {"Origin": str(person.http.base_url).rstrip("/"), "Sec-Fetch-Site": "same-origin"}
        r = await person.http.post("/workspace/language", data={"language": "fr"}, headers=same)
        assert r.status_code == 303
    finally:
        await person.aclose()


async def test_ended_sessions_are_purged(stack):
    idle = await Person(stack).sign_in("caseworker", "cw-purge-idle", countries="ES")
    old = await Person(stack).sign_in("caseworker", "cw-purge-old", countries="ES")
    live = await Person(stack).sign_in("caseworker", "cw-purge-live", countries="ES")
    try:
        long_ago = datetime.now(UTC) - timedelta(days=30)
        with Session(stack.engine) as session:
            for sub, column in (("cw-purge-idle", "last_seen_at"), ("cw-purge-old", "created_at")):
                session.execute(
                    update(WebSessionRecord)
                    .where(col(WebSessionRecord.claims)["sub"].as_string() == sub)
                    .values({column: long_ago})
                )
            session.commit()
        assert sessions.purge_ended(stack.engine, stack.settings) >= 2
        with Session(stack.engine) as session:
            left = {r.claims["sub"] for r in session.exec(select(WebSessionRecord))}
        assert "cw-purge-live" in left and not {"cw-purge-idle", "cw-purge-old"} & left
    finally:
        for person in (idle, old, live):
            await person.aclose()


def test_outside_development_the_session_cookie_is_host_only_and_secure(stack):
    production = stack.settings.model_copy(update={"environment": "production"})
    response = Response()
    with Session(stack.engine) as session:
        sessions.start(session, response, Claims(sub="cw-prod", role=Role.caseworker, countries=["ES"]), production)
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("__Host-workspace_session=") and "Secure" in cookie and "Path=/" in cookie
    assert "Domain" not in cookie and "HttpOnly" in cookie
