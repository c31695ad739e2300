"""How many statements a page costs the database: a fixed number, whatever the page's length.

A list that reads one row more for each item it shows slows down with every item a user's page
holds (a partner's inbox of fifty tasks made 150 queries more than one of a single task, all on
the request's thread). Measured on the API's own engine, through the real HTTP app.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event

from tests.journey import Journey

AGENCY = "shelter-es"


@contextmanager
def statements(engine: Any) -> Iterator[list[str]]:
    """The SQL statements the engine runs inside the block."""
    seen: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
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
