"""How many statements a page costs the database: a fixed number, whatever the page's length.

A list that reads one row more for each item it shows slows down with every item a user's page
holds (a partner's inbox of fifty tasks made 150 queries more than one of a single task, all on
the request's thread). Measured on the API's own engine, through the real HTTP app. And how often a
command waits for a worker thread: a fixed few times too.
"""

from __future__ import annotations

import asyncio
import threading
import traceback
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import anyio.to_thread
from sqlalchemy import event

from tests.journey import Journey

AGENCY = "shelter-es"


@contextmanager
def statements(engine: Any, *, on_this_thread: bool = False) -> Iterator[list[str]]:
    """The SQL statements the engine runs inside the block; with ``on_this_thread``, only those run
    on this thread, the event loop's (the API is served on it here): a request's database work
    belongs in a worker thread, and an ORM object read on the loop after its session's transaction
    ended loads itself there."""
    seen: list[str] = []
    loop_thread = threading.get_ident()

    def count(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if not on_this_thread or threading.get_ident() == loop_thread:
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", count)


async def test_a_partners_page_of_tasks_costs_the_same_statements_for_one_task_or_ten(stack):
    for _ in range(10):
        j = Journey(stack)
        await j.open()  # with consent to share data: the partner's view opens the person's fields
        await j.assign("shelter", AGENCY)
    partner = Journey(stack).partner(AGENCY)
    engine = stack.app_state().engine
    counted = {}
    for limit in (1, 10):
        await stack.http.get("/v1/tasks", headers=partner, params={"limit": limit})  # the caller's first sign-in aside
        with statements(engine) as seen:
            r = await stack.http.get("/v1/tasks", headers=partner, params={"limit": limit, "status": "assigned"})
        assert r.status_code == 200, r.text
        items = r.json()["items"]
        assert len(items) == limit and all(item["person"] for item in items)
        counted[limit] = len(seen)
    assert counted[10] == counted[1], counted


async def test_the_staffs_lists_cost_the_same_statements_for_one_item_or_ten(stack):
    for _ in range(10):
        j = Journey(stack)
        await j.open()
        await j.assign("shelter", AGENCY)
    caseworker = j.cw
    engine = stack.app_state().engine
    for path, headers, params in (
        ("/v1/tasks", caseworker, {"status": "assigned"}),
        ("/v1/cases", caseworker, {}),
    ):
        counted = {}
        for limit in (1, 10):
            await stack.http.get(path, headers=headers, params={**params, "limit": limit})
            with statements(engine) as seen:
                r = await stack.http.get(path, headers=headers, params={**params, "limit": limit})
            assert r.status_code == 200, r.text
            assert len(r.json()["items"]) == limit
            counted[limit] = len(seen)
        assert counted[10] == counted[1], (path, counted)


@contextmanager
def thread_hops() -> Iterator[list[str]]:
    """The times a request's handling waits for a worker thread (``anyio.to_thread.run_sync``, which
    FastAPI's thread pool uses too, and ``asyncio.to_thread``) inside the block: each costs about as
    much CPU as reading a case (``make bench``). Only requests' own: their tasks run under uvicorn's
    protocol, the background tasks of the processes here do not."""
    hops: list[str] = []
    real_anyio, real_asyncio = anyio.to_thread.run_sync, asyncio.to_thread

    def counting(real: Any) -> Any:
        async def counted(func: Any, *args: Any, **kwargs: Any) -> Any:
            frames = traceback.extract_stack()
            if any("uvicorn/protocols" in f.filename for f in frames):
                caller = next(f for f in reversed(frames[:-1]) if "/anyio/" not in f.filename)
                hops.append(f"{caller.filename.rsplit('/', 1)[-1]}:{caller.name}")
            return await real(func, *args, **kwargs)

        return counted

    anyio.to_thread.run_sync = counting(real_anyio)  # type: ignore[assignment]
    asyncio.to_thread = counting(real_asyncio)
    try:
        yield hops
    finally:
        anyio.to_thread.run_sync = real_anyio  # type: ignore[assignment]
        asyncio.to_thread = real_asyncio


async def test_a_command_waits_for_a_worker_thread_twice(stack):
    """A step, a task's assignment and a partner's action without an Idempotency-Key: their checks,
    the case's route and the session's release in one hop, the answer read back and its audit row in
    the other (a step waited seven times before, a partner's action five)."""
    j = Journey(stack)
    await j.open()
    partner = j.partner(AGENCY)
    await stack.http.get("/v1/tasks", headers=partner)  # the partner's first sign-in aside
    with thread_hops() as hops:
        await j.step("risk-assessment", {"level": "low", "threats": [], "assessed_on": "2026-01-02"})
    assert hops == ["pipeline.py:checked", "pipeline.py:answer"], hops
    with thread_hops() as hops:
        task = await j.assign("shelter", AGENCY)
    assert hops == ["pipeline.py:checked", "pipeline.py:answer"], hops
    with thread_hops() as hops:
        await j.task_action(task["task_id"], AGENCY, "accept")
    assert hops == ["pipeline.py:checked", "pipeline.py:answer"], hops
    audited = (await stack.http.get(f"/v1/cases/{j.case_id}/audit", headers=j.supervisor)).json()
    actions = [row["action"] for row in audited["items"]]
    for action in ("step.risk-assessment", "task.assign", "task.accept"):
        assert actions.count(action) == 1, actions  # each audited, once


async def test_commands_with_an_idempotency_key_run_no_statement_on_the_event_loop(stack):
    """With a key, the session's transaction ends before the command runs (the key is claimed first):
    a step, a reassignment and a transfer's acceptance read what they need as plain values."""
    j = Journey(stack, caseworker="cw-es-loop")
    await j.open()
    stack.token("caseworker", "cw-es-loop2", countries=["ES"])
    pt = stack.auth("caseworker", "cw-pt-loop", countries=["PT"])
    engine = stack.app_state().engine

    def keyed(headers: dict[str, str]) -> dict[str, str]:
        return {**headers, "Idempotency-Key": f"loop-{uuid.uuid4().hex}"}

    with statements(engine, on_this_thread=True) as seen:
        r = await stack.http.post(
            f"/v1/cases/{j.case_id}/steps/risk-assessment",
            json={"level": "low", "threats": [], "assessed_on": "2026-01-02"},
            headers=keyed(j.cw),
        )
        assert r.status_code == 200, r.text
        r = await stack.http.post(
            f"/v1/cases/{j.case_id}/reassign", json={"caseworker": "cw-es-loop2"}, headers=keyed(j.supervisor)
        )
        assert r.status_code == 200, r.text
    assert seen == [], seen
    r = await stack.http.post(
        f"/v1/cases/{j.case_id}/transfers",
        json={"to_country": "PT", "to_caseworker": "cw-pt-loop", "reason": "moved"},
        headers=j.supervisor,
    )
    assert r.status_code == 201, r.text
    with statements(engine, on_this_thread=True) as seen:
        r = await stack.http.post(f"/v1/transfers/{r.json()['transfer_id']}/accept", json={}, headers=keyed(pt))
        assert r.status_code == 200, r.text
    assert seen == [], seen


async def test_the_apis_database_work_runs_in_no_more_threads_at_once_than_its_setting(stack):
    """``REINTEGRATION_API_THREADS`` (2 by default): twenty-one reads at once, each statement made slow,
    all answer, and never more than that many threads are in the database together (anyio's pool
    let forty take turns on the interpreter, which cost each read more CPU: ``make bench``). Its own
    threads, not anyio's pool: what waits on the network there never holds them."""
    j = Journey(stack)
    await j.open()
    limit = stack.settings.api_threads
    assert limit == 2
    assert stack.app_state().database_threads.total_tokens == limit
    assert anyio.to_thread.current_default_thread_limiter().total_tokens == 40  # anyio's pool, untouched
    inside: set[int] = set()
    most = 0
    lock = threading.Lock()

    def slow(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        nonlocal most
        with lock:
            inside.add(threading.get_ident())
            most = max(most, len(inside))
        threading.Event().wait(0.02)
        with lock:
            inside.discard(threading.get_ident())

    engine = stack.app_state().engine
    event.listen(engine, "before_cursor_execute", slow)
    try:
        paths = (f"/v1/cases/{j.case_id}", "/v1/cases", "/v1/tasks")
        answers = await asyncio.gather(*(stack.http.get(paths[i % 3], headers=j.cw) for i in range(21)))
    finally:
        event.remove(engine, "before_cursor_execute", slow)
    assert [r.status_code for r in answers] == [200] * 21
    assert most == limit, most  # as many as allowed were used, and no more


async def test_a_case_read_takes_the_case_row_as_plain_values_equal_to_the_orms(stack):
    """``case_row`` (a case's read): every column as the ORM loads it, in an object no session can
    track (so nothing read is ever written back), and nothing for a case that does not exist."""
    import pytest
    from sqlalchemy.orm.exc import UnmappedInstanceError
    from sqlmodel import Session

    from api.journeys import case_row
    from reintegration.db import CaseRecord

    j = Journey(stack)
    await j.open()
    with Session(stack.engine) as session:
        plain = case_row(session, j.case_id)
        loaded = session.get(CaseRecord, j.case_id)
        assert plain is not None and loaded is not None
        assert plain.model_dump() == loaded.model_dump()
        with pytest.raises(UnmappedInstanceError):
            session.add(plain)
        assert case_row(session, "no-such-case") is None


async def test_a_case_read_sends_the_case_as_fastapi_would_its_timeline_serialized_once(stack):
    """``GET /v1/cases/{id}`` sends its own bytes (``case_json``): the same case, field for field, as
    the model's own JSON of ``read_case_now``'s answer (what FastAPI sent for it), with its ETag; the
    timeline's JSON is made by the first read of a version and reused by the next (the same bytes)."""
    import json

    import anyio.to_thread
    from fastapi import Response
    from sqlmodel import Session

    from api.audit import Auditor
    from api.cases import read_case_now

    j = Journey(stack)
    await j.open()
    await j.step("risk-assessment", {"level": "low", "threats": [], "assessed_on": "2026-01-02"})
    first = await stack.http.get(f"/v1/cases/{j.case_id}", headers=j.cw)
    again = await stack.http.get(f"/v1/cases/{j.case_id}", headers=j.cw)
    assert first.status_code == again.status_code == 200
    assert first.headers["content-type"] == "application/json"
    assert first.content == again.content and first.headers["ETag"] == again.headers["ETag"]
    body = first.json()
    assert len(body["timeline"]) >= 2 and body["version"] >= 1

    state = stack.app_state()
    kept = state.keyring.opened(j.case_id, "case-view", body["version"])
    assert kept is not None and set(kept.timeline_json) == {"timeline"}  # made once, kept with the view

    def reference() -> dict:
        user = state.verifier.verify(j.cw["Authorization"].split()[1])
        with Session(state.engine, info={"keyring": state.keyring}) as session:
            response = Response()
            auditor = Auditor(session=session, user=user, request_id="reference")
            public = read_case_now(session, j.case_id, user, state.settings, auditor, response)
            assert response.headers["ETag"] == first.headers["ETag"]
            return json.loads(public.model_dump_json(by_alias=True))

    assert body == await anyio.to_thread.run_sync(reference)


def timeline_reads(seen: list[str]) -> list[str]:
    """The API's reads of a case's timeline among ``statements`` (not the worker's writes)."""
    return [s for s in seen if s.startswith("SELECT timeline.at")]


async def test_a_commands_answer_reads_only_the_timelines_new_rows_of_an_open_case(stack):
    """A command's answer builds on the view the API keeps of the version before: it reads only the
    timeline's rows written since (the statement with the position), and its timeline is the one a
    whole read gives, entry for entry. The answer that closes the case reads the timeline whole: a
    closed case's rows are rewritten by its erasure."""
    j = Journey(stack)
    await j.open()
    state = stack.app_state()
    first = await j.step("risk-assessment", {"level": "low", "threats": [], "assessed_on": "2026-01-02"})
    before = state.keyring.opened(j.case_id, "case-view", first["version"])
    assert before is not None and before.last_position is not None

    with statements(state.engine) as seen:
        answer = await j.step("security-guarantee", {"confirmed_on": "2026-01-02"})
    reads = timeline_reads(seen)
    assert len(reads) == 1 and "timeline.position >" in reads[0], reads
    after = state.keyring.opened(j.case_id, "case-view", answer["version"])
    assert after is not None and after.timeline[: len(before.timeline)] == before.timeline
    assert all(a is b for a, b in zip(before.timeline, after.timeline, strict=False))  # built on, not read again
    assert len(after.timeline) > len(before.timeline) and after.last_position > before.last_position

    with statements(state.engine) as seen:
        closed = await j.step("withdraw-consent", {"withdrawn_on": "2026-01-03"})
    assert closed["status"] == "closed" and state.keyring.opened(j.case_id, "case-view", closed["version"])
    reads = timeline_reads(seen)
    assert len(reads) == 1 and "timeline.position >" not in reads[0], reads  # though it had one to build on

    state.keyring.forget(j.case_id)  # the next read opens the case afresh: the whole timeline
    with statements(state.engine) as seen:
        whole = await j.get()
    reads = timeline_reads(seen)
    assert len(reads) == 1 and "timeline.position >" not in reads[0], reads
    assert whole["timeline"] == closed["timeline"]
    assert whole["timeline"][: len(answer["timeline"])] == answer["timeline"]


async def test_a_view_is_never_built_on_across_a_closure_or_a_reopening(stack):
    """The erasure rewrites a closed case's timeline: a closed case's view is never built on (the
    reopening's answer reads the timeline whole), and a view from before the closure (another API
    process may keep one) is not built on once the rows since hold the closure or the reopening."""
    import anyio.to_thread
    from sqlmodel import Session

    from api.cases import opened_case
    from api.journeys import case_row

    j = Journey(stack)
    await j.open()
    await j.to_reintegration_by_residence()
    state = stack.app_state()
    kept = state.keyring.latest_opened(j.case_id, "case-view")
    assert kept is not None and kept[1].last_position is not None
    open_view = kept[1]
    await j.through_reintegration_to_closure()
    assert j.case["status"] == "closed"
    closed_view = state.keyring.opened(j.case_id, "case-view", j.case["version"])
    assert closed_view is not None and closed_view.last_position is None

    with statements(state.engine) as seen:
        r = await stack.http.post(
            f"/v1/cases/{j.case_id}/reopen",
            json={"stage": "reintegration", "reason": "A new need."},
            headers=j.supervisor,
        )
    assert r.status_code == 200, r.text
    reads = timeline_reads(seen)
    assert len(reads) == 1 and "timeline.position >" not in reads[0], reads

    def built_on_the_open_view() -> tuple:
        with Session(state.engine, info={"keyring": state.keyring}) as session:
            case = case_row(session, j.case_id)
            assert case is not None and case.status != "closed"
            with statements(state.engine) as seen:
                view = opened_case(session, state.keyring, case, timeline=True, before=open_view)
            return view, opened_case(session, state.keyring, case, timeline=True), timeline_reads(seen)

    view, whole, reads = await anyio.to_thread.run_sync(built_on_the_open_view)
    assert len(reads) == 2 and "timeline.position >" in reads[0] and "timeline.position >" not in reads[1], reads
    assert view.timeline == whole.timeline and view.timeline[0] is not open_view.timeline[0]  # read again
    assert view.last_position == whole.last_position is not None


async def test_a_session_that_holds_a_connection_goes_on_outside_the_database_threads(stack):
    """``database_threads``: a request's session takes one of the database's threads while it holds
    no connection; one whose transaction holds a connection already goes on in anyio's pool, so that
    requests holding connections never wait for threads whose holders wait for a connection."""
    from sqlalchemy import text
    from sqlmodel import Session

    from api.deps import database_threads

    state = stack.app_state()
    with Session(state.engine, info={"keyring": state.keyring, "threads": state.database_threads}) as session:
        assert database_threads(session) is state.database_threads
        session.execute(text("SELECT 1"))  # the transaction now holds a connection
        assert database_threads(session) is None
        session.commit()  # given back
        assert database_threads(session) is state.database_threads
