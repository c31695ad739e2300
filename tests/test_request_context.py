"""The outermost middleware (``api.access_log.RequestContext``): one id, one access line and one
count in the metrics for every answer, the ones made before routing (413) and after an unexpected
error (500) too; its headers added once, whatever the route set; and nothing of one request in the
lines of the next on the same connection. And the database sessions a request was given, closed
once it is answered (``api.deps.CloseSessions``)."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
import warnings
from pathlib import Path
from typing import Any

import anyio
import httpx
from fastapi import Response
from sqlalchemy import text
from sqlmodel import Session, select

from api.deps import SessionDep
from api.errors import NotFound
from api.main import create_app
from reintegration.db import AgencyRecord
from reintegration.logs import tap
from reintegration.settings import Settings
from reintegration.tokens import mint
from tests.conftest import free_port, served
from tests.test_metrics import samples, value
from workflows.model import Role

LIMIT = 2048


def access_lines(text: str) -> dict[str, dict]:
    """The access lines written, by the server's request id."""
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    return {line["request_id"]: line for line in lines if line.get("event") == "request"}


async def test_every_answer_has_one_id_one_access_line_and_one_count(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        temporal_address=f"127.0.0.1:{free_port()}",  # nobody there: the API serves anyway
        temporal_connect_wait_seconds=0.1,
        max_body_bytes=LIMIT,
    )
    app = create_app(settings)

    @app.get("/v1/test-only/broken/{case_id}")
    async def broken(case_id: str) -> None:
        raise RuntimeError("Maria Ionescu")  # a message that quotes a value: never written

    @app.get("/v1/test-only/cached")
    async def cached() -> Response:
        # A route that sets these itself: the middleware's replace them, never a second copy.
        return Response(b"{}", headers={"Cache-Control": "max-age=60", "X-Request-ID": "made-up"})

    async with served(app, lifespan="on") as url, httpx.AsyncClient(base_url=url) as http:
        with tap() as logs:
            health = await http.get("/health", headers={"X-Request-ID": "client-1"})
            failed = await http.get("/v1/test-only/broken/c-1")
            too_big = await http.post("/v1/cases", content=b"x" * (LIMIT + 1), headers={"X-Request-ID": "big"})
            kept = await http.get("/v1/test-only/cached")
            await asyncio.sleep(0.1)  # the access line is written as the response finishes
        scrape = (await http.get("/metrics")).text

    assert (health.status_code, failed.status_code, too_big.status_code) == (200, 500, 413)
    ids = [r.headers["x-request-id"] for r in (health, failed, too_big, kept)]
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids) and len(set(ids)) == 4
    assert failed.json()["status"] == 500 and failed.headers["cache-control"] == "no-store"
    assert "cache-control" not in health.headers  # not under /v1/: not the API's data
    assert kept.headers.get_list("cache-control") == ["no-store"]
    assert kept.headers.get_list("x-request-id") == [ids[3]]

    lines = access_lines(logs.getvalue())
    assert set(ids) <= set(lines)
    assert lines[ids[0]]["client_request_id"] == "client-1" and lines[ids[0]]["path"] == "/health"
    broke = lines[ids[1]]
    assert (broke["status"], broke["path"], broke["case_id"]) == (500, "/v1/test-only/broken/{case_id}", "c-1")
    assert (lines[ids[2]]["status"], lines[ids[2]]["path"]) == (413, "/v1/cases")  # refused before routing
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", broke["timestamp"])
    errors = [json.loads(line) for line in logs.getvalue().splitlines() if "unexpected error" in line]
    assert [e["request_id"] for e in errors] == [ids[1]] and errors[0]["error"] == "RuntimeError"
    assert "Maria" not in logs.getvalue()
    # Each request's fields in its own lines only: none of one in the next on the same connection.
    assert "client_request_id" not in broke and "case_id" not in lines[ids[2]]

    found = samples(scrape)
    requests = "reintegration_http_requests_total"
    assert value(found, requests, method="GET", route="/health", status="200") == 1
    assert value(found, requests, method="GET", route="/v1/test-only/broken/{case_id}", status="500") == 1
    assert value(found, requests, method="POST", route="/v1/cases", status="413") == 1
    assert value(found, "reintegration_http_errors_total", route="/v1/test-only/broken/{case_id}") == 1


async def test_the_sessions_a_request_was_given_are_closed_however_it_ends(tmp_path: Path) -> None:
    """``get_session``'s sessions are closed once the request is answered (``CloseSessions``): the
    connection of one that ended inside a transaction (a 404 raised in its thread) goes back too."""
    settings = Settings(
        data_dir=tmp_path, temporal_address=f"127.0.0.1:{free_port()}", temporal_connect_wait_seconds=0.1
    )
    app = create_app(settings)
    token = mint(settings, role=Role.caseworker, sub="cw-sessions", countries=["ES"])
    auth = {"Authorization": f"Bearer {token}"}
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        async with served(app, lifespan="on") as url, httpx.AsyncClient(base_url=url) as http:
            pool = app.state.engine.pool
            answers = await asyncio.gather(
                *(http.get("/v1/cases", headers=auth) for _ in range(10)),
                *(http.get(f"/v1/cases/{uuid.uuid4()}", headers=auth) for _ in range(10)),
            )
            assert sorted({r.status_code for r in answers}) == [200, 404]
            # An answer may reach the client just before its sessions are closed: a moment after.
            for _ in range(100):
                if pool.checkedout() == 0:
                    break
                await asyncio.sleep(0.02)
            assert pool.checkedout() == 0
    # Closed, not left to the garbage collector (which gives a connection back too, and says so).
    assert not [w for w in warned if "garbage collector" in str(w.message)]


async def test_an_errors_answer_leaves_after_its_sessions_are_closed(tmp_path: Path) -> None:
    """A change that failed is rolled back before its error's answer leaves: its locks are not held
    while the caller sends the next request. Its answer's start is where the connections are counted."""
    settings = Settings(
        data_dir=tmp_path, temporal_address=f"127.0.0.1:{free_port()}", temporal_connect_wait_seconds=0.1
    )
    app = create_app(settings)
    held_at_start: dict[int, int] = {}

    @app.post("/v1/test-only/failed-change")
    async def failed_change(session: SessionDep) -> None:
        def change() -> None:
            session.execute(text("UPDATE agencies SET name = 'half-changed'"))  # holds the write lock
            raise NotFound("no such thing")

        await anyio.to_thread.run_sync(change)

    async def counting(scope: Any, receive: Any, send: Any) -> None:
        async def counted(message: Any) -> None:
            if message["type"] == "http.response.start":
                held_at_start[message["status"]] = app.state.engine.pool.checkedout()
            await send(message)

        await app(scope, receive, counted)

    token = mint(settings, role=Role.admin, sub="admin-sessions")
    async with served(counting, lifespan="on") as url, httpx.AsyncClient(base_url=url) as http:
        auth = {"Authorization": f"Bearer {token}"}
        assert (await http.post("/v1/test-only/failed-change", headers=auth)).status_code == 404
        assert (await http.get("/v1/agencies", headers=auth)).status_code == 200
    assert held_at_start[404] == 0  # rolled back, its connection back in the pool, before the 404 left
    with Session(app.state.engine) as session:
        names = session.exec(select(AgencyRecord.name)).all()
    assert names and "half-changed" not in names  # the development seed's agencies, unchanged
