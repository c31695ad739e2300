"""Hostile and careless input over HTTP: bodies over the size limit (413), callers over their rate
limit (429 with Retry-After), request ids and the access log (ids, never a query string or personal
data), and the log processor that redacts personal fields at any depth.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import re
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import jwt
import pytest
from sqlmodel import Session, func, select

from reintegration.db import AuditRecord, CaseRecord
from reintegration.logs import REDACTED, _drop_personal_fields, tap
from tests.conftest import Stack, running_stack
from tests.journey import Journey, case_body, day
from tests.workspace import Person

LIMIT = 16 * 1024  # the limited stack's max_body_bytes


@pytest.fixture(scope="module")
async def limited(temporal_env, tmp_path_factory) -> AsyncIterator[Stack]:
    async with running_stack("sqlite", temporal_env, tmp_path_factory.mktemp("limited"), max_body_bytes=LIMIT) as s:
        yield s


@pytest.fixture
async def throttled(temporal_env, tmp_path_factory) -> AsyncIterator[Stack]:
    """A stack of its own per test: 3 requests at once, then one a second, per caller."""
    async with running_stack(
        "sqlite", temporal_env, tmp_path_factory.mktemp("throttled"), rate_limit_per_minute=60, rate_limit_burst=3
    ) as s:
        yield s


def cases_of(stack: Stack, caseworker: str) -> int:
    with Session(stack.engine) as session:
        return session.exec(
            select(func.count()).select_from(CaseRecord).where(CaseRecord.owner_caseworker == caseworker)
        ).one()


async def raw_request(
    stack: Stack, head: list[str], chunks: AsyncIterator[bytes] | None = None
) -> tuple[int, dict[str, str], dict, int]:
    """Send a request by hand (headers, then a body as it comes); the status, headers, JSON body and bytes sent.

    The body is written a chunk at a time, looking for an answer between chunks, so it stops soon
    after the server has refused it.
    """
    url = urlsplit(stack.base_url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
    await writer.drain()
    sent = 0
    status_line = b""
    if chunks is not None:
        async for chunk in chunks:
            try:
                status_line = await asyncio.wait_for(reader.readline(), 0.02)
                break
            except TimeoutError:
                pass
            try:
                writer.write(chunk)
                await writer.drain()
            except ConnectionError:
                break
            sent += len(chunk)
    if not status_line:
        status_line = await asyncio.wait_for(reader.readline(), 30)
    headers: dict[str, str] = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, value = line.decode("latin-1").split(":", 1)
        headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers["content-length"]))
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()
    return int(status_line.split()[1]), headers, json.loads(body), sent


def request_head(stack: Stack, method: str, path: str, auth: dict[str, str], *extra: str) -> list[str]:
    return [
        f"{method} {path} HTTP/1.1",
        f"Host: {urlsplit(stack.base_url).netloc}",
        "Content-Type: application/json",
        f"Authorization: {auth['Authorization']}",
        *extra,
    ]


def assert_too_large(status: int, headers: dict[str, str], body: dict) -> None:
    assert status == 413, body
    assert headers["content-type"] == "application/problem+json"
    assert body["status"] == 413 and body["title"] == "Payload too large" and str(LIMIT) in body["detail"]
    assert re.fullmatch(r"[0-9a-f]{32}", headers["x-request-id"])


# --- Body size ----------------------------------------------------------------------------------


async def test_a_declared_length_over_the_limit_is_refused_before_the_body_is_sent(limited):
    j = Journey(limited, caseworker="cw-big-declared")
    head = request_head(limited, "POST", "/v1/cases", j.cw, "Idempotency-Key: big-1", "Content-Length: 50000000")
    status, headers, body, _ = await raw_request(limited, head)  # not one byte of the 50 MB follows
    assert_too_large(status, headers, body)
    assert headers["connection"] == "close"
    # Nothing changed: no case, and the Idempotency-Key was not claimed by the refused request.
    assert cases_of(limited, "cw-big-declared") == 0
    r = await limited.http.post("/v1/cases", json=case_body(), headers={**j.cw, "Idempotency-Key": "big-1"})
    assert r.status_code == 201, r.text
    assert cases_of(limited, "cw-big-declared") == 1


async def test_a_mebibyte_of_headers_is_refused_and_the_connection_closed(stack):
    """Anyone may send headers before a token is checked. h11 (``uvicorn_options``) keeps at most 16
    KiB of a request it has not yet read whole (besides what one read of the socket brings): a
    mebibyte of headers is refused (a 400, or the connection reset under the lines still coming),
    where httptools would keep it all in memory and answer; the server goes on."""
    url = urlsplit(stack.base_url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    try:
        writer.write(f"GET /health HTTP/1.1\r\nHost: {url.netloc}\r\n".encode())
        with contextlib.suppress(ConnectionError):  # the server may close before the last line is sent
            for i in range(1024):
                writer.write(f"X-Filler-{i}: {'x' * 1000}\r\n".encode())
                await writer.drain()
            writer.write(b"\r\n")
            await writer.drain()
        try:
            answer = await asyncio.wait_for(reader.read(), timeout=30)  # to the end: the server closes
        except ConnectionError:  # closed with our lines unread: the kernel resets the connection
            answer = b""
    finally:
        writer.close()
    assert answer == b"" or answer.startswith(b"HTTP/1.1 400 "), answer[:200]  # never answered
    assert (await stack.http.get("/health")).status_code == 200


async def test_an_endless_chunked_body_is_counted_as_it_streams_and_refused(limited):
    j = Journey(limited, caseworker="cw-big-chunked")
    total = 64 * 1024 * 1024

    async def endless() -> AsyncIterator[bytes]:
        yield b'1b\r\n{"person": {"first_name": "\r\n'  # 27 bytes of JSON, then names for ever
        data = b"A" * 4096
        for _ in range(total // len(data)):
            yield b"1000\r\n" + data + b"\r\n"

    head = request_head(limited, "POST", "/v1/cases", j.cw, "Transfer-Encoding: chunked")
    status, headers, body, sent = await raw_request(limited, head, endless())
    assert_too_large(status, headers, body)
    assert sent < 64 * LIMIT  # refused as it streamed past the limit, not after reading all 64 MiB
    assert cases_of(limited, "cw-big-chunked") == 0

    async def fitting() -> AsyncIterator[bytes]:
        data = json.dumps(case_body()).encode()
        for start in range(0, len(data), 100):
            part = data[start : start + 100]
            yield f"{len(part):x}\r\n".encode() + part + b"\r\n"
        yield b"0\r\n\r\n"

    status, headers, body, _ = await raw_request(limited, head, fitting())
    assert status == 201, body  # a chunked body under the limit is an ordinary request
    assert cases_of(limited, "cw-big-chunked") == 1


async def test_a_step_or_task_action_over_the_limit_changes_nothing(limited):
    j = Journey(limited, caseworker="cw-big-step")
    await j.open()
    task = await j.assign("shelter", "shelter-es")
    big = {"level": "high", "assessed_on": day(1), "threats": ["x" * 200] * 100}  # about 20 KiB
    r = await limited.http.post(f"/v1/cases/{j.case_id}/steps/risk-assessment", json=big, headers=j.cw)
    assert r.status_code == 413 and r.headers["content-type"] == "application/problem+json"
    r = await limited.http.post(
        f"/v1/tasks/{task['task_id']}/accept", json={"notes": "n" * 20000}, headers=j.partner("shelter-es")
    )
    assert r.status_code == 413
    case = await j.get()
    assert [e["name"] for e in case["timeline"]].count("risk-assessment") == 0
    assert "accepted" not in [e["name"] for e in case["timeline"]]
    # The same step, within the limit, is recorded.
    await j.step("risk-assessment", {"level": "low", "assessed_on": day(1)})


async def test_the_largest_valid_body_fits_the_default_limit(stack):
    """Every note at its 2,000 characters, in characters JSON escapes as 12 bytes each."""
    j = Journey(stack)
    await j.open()
    await j.step("risk-assessment", {"level": "high", "assessed_on": day(1)})  # a plan is due now
    wide = "\U0001f600"  # outside the BMP: \\ud83d\\ude00 when the client escapes non-ASCII
    measure = {"measure": wide * 200, "due_date": day(30), "notes": wide * 2000}  # no service: no tasks
    plan = {"measures": [measure] * 20, "agreed_on": day(2)}
    content = json.dumps(plan).encode()
    assert LIMIT < len(content) < stack.settings.max_body_bytes
    r = await stack.http.post(
        f"/v1/cases/{j.case_id}/steps/safety-plan",
        content=content,
        headers={**j.cw, "Content-Type": "application/json"},
    )
    assert r.status_code == 200, r.text
    assert "safety-plan" in [e["name"] for e in (await j.get())["timeline"]]


# --- Rate limits --------------------------------------------------------------------------------


async def test_a_caller_over_the_rate_limit_gets_429_with_retry_after_and_others_do_not(throttled):
    me = throttled.auth("caseworker", "cw-busy", countries=["ES"])
    other = throttled.auth("caseworker", "cw-calm", countries=["ES"])
    answers = [await throttled.http.get("/v1/cases", headers=me) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    refused = answers[-1]
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["status"] == 429 and refused.json()["title"] == "Too many requests"
    retry_after = refused.headers["retry-after"]
    assert retry_after.isdigit() and 1 <= int(retry_after) <= 2
    assert (await throttled.http.get("/v1/cases", headers=other)).status_code == 200
    # Any route, any method: it is the caller's budget.
    r = await throttled.http.post("/v1/cases", json=case_body(), headers=me)
    assert r.status_code == 429
    await asyncio.sleep(int(retry_after))
    assert (await throttled.http.get("/v1/cases", headers=me)).status_code == 200


async def test_a_forged_token_spends_its_senders_budget_not_the_subjects(throttled):
    victim = throttled.auth("caseworker", "cw-victim", countries=["ES"])
    forged = jwt.encode(
        {
            "sub": "cw-victim",
            "role": "caseworker",
            "iss": throttled.settings.jwt_issuer,
            "aud": throttled.settings.jwt_audience,
            "exp": 9999999999,
        },
        "not-our-key-" * 4,
        algorithm="HS256",
    )
    answers = [await throttled.http.get("/v1/cases", headers={"Authorization": f"Bearer {forged}"}) for _ in range(5)]
    assert [a.status_code for a in answers] == [401, 401, 401, 429, 429]  # the sender's address is spent
    assert [(await throttled.http.get("/v1/cases", headers=victim)).status_code for _ in range(3)] == [200] * 3


@pytest.fixture
async def slow_refill(temporal_env, tmp_path_factory) -> AsyncIterator[Stack]:
    """3 requests at once, then one a minute: a slow moment of a loaded machine refills nothing."""
    async with running_stack(
        "sqlite", temporal_env, tmp_path_factory.mktemp("slow-refill"), rate_limit_per_minute=1, rate_limit_burst=3
    ) as s:
        yield s


async def test_requests_without_a_token_are_limited_by_address_but_health_never(slow_refill):
    throttled = slow_refill
    answers = [await throttled.http.get("/v1/cases") for _ in range(3)]
    assert [a.status_code for a in answers] == [401, 401, 401]
    for path in ("/v1/cases", "/openapi.json", "/v1/no-such-thing"):
        r = await throttled.http.get(path)
        assert r.status_code == 429 and r.headers["retry-after"].isdigit(), path
    # A bearer header on a route that never reads it is charged to the address too.
    r = await throttled.http.get("/openapi.json", headers={"Authorization": "Bearer whatever"})
    assert r.status_code == 429
    for _ in range(20):
        assert (await throttled.http.get("/health")).status_code == 200
        assert (await throttled.http.get("/ready")).status_code != 429
    # A valid token is not held back by its address's budget.
    cw = throttled.auth("caseworker", "cw-same-address", countries=["ES"])
    assert (await throttled.http.get("/v1/cases", headers=cw)).status_code == 200


async def test_a_made_up_token_buys_no_requests_that_fail_before_it_is_checked(temporal_env, tmp_path):
    """A malformed body or an unknown path is refused before the token is verified: such requests
    are counted against their address all the same, without holding back verified callers."""
    async with running_stack("sqlite", temporal_env, tmp_path, rate_limit_per_minute=1, rate_limit_burst=3) as s:
        garbage = {"Authorization": "Bearer not-a-token", "Content-Type": "application/json"}
        answers = [await s.http.post("/v1/cases", content=b"{not json", headers=garbage) for _ in range(3)]
        answers += [await s.http.get("/v1/no-such-thing", headers=garbage) for _ in range(2)]
        assert [a.status_code for a in answers] == [422, 422, 422, 429, 429]
        assert answers[-1].headers["retry-after"].isdigit()
        cw = s.auth("caseworker", "cw-same-address", countries=["ES"])
        assert (await s.http.get("/v1/cases", headers=cw)).status_code == 200


async def test_the_document_names_413_and_429(stack):
    document = (await stack.http.get("/openapi.json")).json()
    for path, item in document["paths"].items():
        for method, operation in item.items():
            codes = set(operation["responses"])
            if path in ("/health", "/ready"):
                assert "429" not in codes
                continue
            assert "429" in codes, (method, path)
            assert "Retry-After" in operation["responses"]["429"]["headers"]
            if "requestBody" in operation:
                assert "413" in codes, (method, path)


# --- Request ids and the access log ----------------------------------------------------------------


def access_lines(captured: str) -> list[dict]:
    lines = []
    for line in captured.splitlines():
        line = line[line.find("{") :]
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if isinstance(entry, dict) and entry.get("event") == "request":
                lines.append(entry)
    return lines


async def test_request_ids_are_the_servers_and_a_clients_is_kept_beside(stack):
    """Security review, finding 6: the id the audit trail files a request under is the server's own."""
    j = Journey(stack)
    await j.open()
    r = await stack.http.get(
        f"/v1/cases/{j.case_id}", params={"include": "person"}, headers={**j.cw, "X-Request-ID": "client-42.a_b"}
    )
    server_id = r.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", server_id) and server_id != "client-42.a_b"
    with Session(stack.engine) as session:
        [row] = session.exec(
            select(AuditRecord).where(AuditRecord.case_id == j.case_id, AuditRecord.action == "person.read")
        ).all()
    assert row.request_id == server_id and row.detail["client_request_id"] == "client-42.a_b"
    # Two requests with one client id are two ids in the trail.
    again = await stack.http.get("/v1/cases", headers={**j.cw, "X-Request-ID": "client-42.a_b"})
    assert again.headers["x-request-id"] != server_id
    for bad in ("has space", "x" * 101, "semi;colon", "percent%20", "slash/x"):
        r = await stack.http.get("/v1/cases", headers={**j.cw, "X-Request-ID": bad})
        assert re.fullmatch(r"[0-9a-f]{32}", r.headers["x-request-id"]), bad
    seen = set()
    for path, headers in (("/v1/cases", {}), ("/health", {}), ("/v1/cases/nope", j.cw), ("/v1/cases", j.cw)):
        r = await stack.http.get(path, headers=headers)
        assert re.fullmatch(r"[0-9a-f]{32}", r.headers["x-request-id"]), path
        seen.add(r.headers["x-request-id"])
    assert len(seen) == 4  # one per request
    r = await stack.http.post("/v1/cases", json={"unknown": 1}, headers=j.cw)
    assert r.status_code == 422 and r.headers["x-request-id"]


async def test_one_access_line_per_request_with_ids_and_no_query_or_personal_data(stack):
    j = Journey(stack)
    with tap() as logs:
        await j.open()
        r = await stack.http.get(
            f"/v1/cases/{j.case_id}", params={"include": "person"}, headers={**j.cw, "X-Request-ID": "trace-read-1"}
        )
        assert r.status_code == 200 and r.json()["person"]["first_name"] == "Maria"
        await stack.http.get(
            "/v1/cases", params={"caseworker": "Maria-Ionescu"}, headers={"X-Request-ID": "trace-anonymous"}
        )
        await asyncio.sleep(0.1)  # the access line is written as the response finishes
    captured = logs.getvalue()
    lines = {e.get("client_request_id"): e for e in access_lines(captured)}  # the caller's id, beside ours
    read = lines["trace-read-1"]
    assert read["method"] == "GET" and read["path"] == "/v1/cases/{case_id}" and read["status"] == 200
    assert read["sub"] == "cw-es-1" and read["role"] == "caseworker"
    assert read["case_id"] == j.case_id and read["workflow_id"] == f"case-{j.case_id}"
    assert isinstance(read["duration_ms"], float)
    anonymous = lines["trace-anonymous"]
    assert anonymous["status"] == 401 and anonymous["path"] == "/v1/cases" and anonymous["sub"] is None
    opened = [e for e in access_lines(captured) if e["method"] == "POST" and e["path"] == "/v1/cases"]
    assert len(opened) == 1 and opened[0]["status"] == 201 and opened[0]["case_id"] == j.case_id
    for marker in ("include=", "caseworker=", "Maria", "Ionescu", "Madrid", "1998-03-14"):
        assert marker not in captured, marker


def test_personal_fields_are_redacted_at_any_depth_without_changing_what_was_logged():
    body = {
        "person": {"first_name": "Maria"},
        "identification": {"place": "Madrid", "country": "ES"},
        "items": [{"mobile_phone": "+40 700", "service": "shelter"}],
        "First_Name": "Maria",
    }
    event = {
        "event": "opened",
        "case_id": "c-1",
        "body": body,
        "birthdate": "1998-03-14",
        "facts": ({"identity_number": "RO123"},),
    }
    out = _drop_personal_fields(None, "info", dict(event))
    assert out["case_id"] == "c-1" and out["birthdate"] == REDACTED
    assert out["body"]["person"] == REDACTED and out["body"]["First_Name"] == REDACTED
    assert out["body"]["identification"] == {"place": REDACTED, "country": "ES"}
    assert out["body"]["items"] == [{"mobile_phone": REDACTED, "service": "shelter"}]
    assert out["facts"] == [{"identity_number": REDACTED}]
    assert body["person"] == {"first_name": "Maria"} and body["items"][0]["mobile_phone"] == "+40 700"


async def test_a_refused_request_is_logged_with_its_route(limited):
    j = Journey(limited, caseworker="cw-big-logged")
    with tap() as logs:
        r = await limited.http.post(
            "/v1/cases",
            content=b"x" * (LIMIT + 1),
            headers={**j.cw, "Content-Type": "application/json", "X-Request-ID": "too-big"},
        )
        await asyncio.sleep(0.1)
    assert r.status_code == 413
    [line] = [e for e in access_lines(logs.getvalue()) if e.get("client_request_id") == "too-big"]
    assert line["status"] == 413 and line["path"] == "/v1/cases" and line["method"] == "POST"


async def test_the_workspace_charges_each_person_and_answers_over_the_limit_with_a_page(temporal_env, tmp_path):
    """Colleagues behind one office address keep budgets of their own; over it, a page says to wait."""
    async with running_stack("sqlite", temporal_env, tmp_path, rate_limit_per_minute=1, rate_limit_burst=3) as s:
        first, second, stranger = Person(s), Person(s), Person(s)
        try:
            await first.sign_in("caseworker", "cw-limit-1", countries="ES")  # the sign-in: the address's
            await second.sign_in("caseworker", "cw-limit-2", countries="ES")
            seen = [(await first.http.get("/workspace/cases")).status_code for _ in range(4)]
            assert seen == [200, 200, 200, 429]
            refused = await first.http.get("/workspace/cases")
            assert refused.headers["content-type"].startswith("text/html") and "Retry-After" in refused.headers
            assert "Too many requests" in refused.text
            assert (await second.http.get("/workspace/cases")).status_code == 200  # a budget of its own
            assert (await first.http.get("/static/workspace.css")).status_code == 200  # never charged
            stranger.http.cookies.set("workspace_session", "made-up")
            codes = [(await stranger.http.get("/workspace/cases")).status_code for _ in range(3)]
            assert codes[-1] == 429  # a cookie that opens nothing spends its address's budget
        finally:
            for person in (first, second, stranger):
                await person.aclose()


def test_a_line_logged_while_a_request_is_served_carries_its_route_and_only_well_formed_ids():
    """``route_fields``: each line logged once the router matched the request carries the route's
    template and the case's, its workflow's and the task's ids from the path, asked for only when a
    line is logged; an id that is not one (a name, a sentence) is left out, and what the code bound
    itself (``bind_ids``, in the request's thread or another) wins."""
    import functools
    import threading
    from types import SimpleNamespace

    import structlog

    from api.access_log import bind_ids, route_fields
    from reintegration.logs import RequestLog, current_request

    log = structlog.get_logger("test.request_fields")
    routed = {"route": SimpleNamespace(path="/v1/tasks/{task_id}/notes"), "path_params": {"task_id": "t-1"}}
    odd = {"route": SimpleNamespace(path="/v1/cases/{case_id}"), "path_params": {"case_id": "Maria Ionescu, Madrid"}}
    with tap() as logs:
        log.info("outside any request")
        for scope in (routed, odd, {}):
            token = current_request.set(RequestLog({}, functools.partial(route_fields, scope)))
            try:
                log.info("inside")
            finally:
                current_request.reset(token)
        token = current_request.set(RequestLog({"request_id": "r-1"}, functools.partial(route_fields, routed)))
        try:
            # Bound in a thread the request's work went to (as anyio's copy the context): the
            # request's lines after it carry it too.
            context = contextvars.copy_context()
            worker = threading.Thread(target=context.run, args=(functools.partial(bind_ids, case_id="c-1"),))
            worker.start()
            worker.join()
            routed["path_params"] = {"task_id": "t-1", "case_id": "c-2"}
            # What the context the request started in held (an earlier request's id) never wins.
            with structlog.contextvars.bound_contextvars(request_id="stale"):
                log.info("bound")
        finally:
            current_request.reset(token)
        log.info("after the request")
    lines = [json.loads(line) for line in logs.getvalue().splitlines() if line.startswith("{")]
    outside, inside, unrouted_odd, unrouted, bound, after = lines
    assert "path" not in outside and "task_id" not in outside
    assert (inside["path"], inside["task_id"]) == ("/v1/tasks/{task_id}/notes", "t-1") and "case_id" not in inside
    assert unrouted_odd["path"] == "/v1/cases/{case_id}" and "case_id" not in unrouted_odd
    assert "path" not in unrouted and "Maria" not in logs.getvalue()
    assert (bound["case_id"], bound["workflow_id"], bound["task_id"]) == ("c-1", "case-c-1", "t-1")
    assert bound["request_id"] == "r-1"
    assert not {"case_id", "request_id", "path"} & set(after)  # gone with the request
