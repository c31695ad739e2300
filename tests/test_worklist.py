"""My work (issue 15): what waits on a caseworker, a partner and a supervisor, overdue first, each
item saying why; and who is told of a hand-over. The ordering and paging rules are pure functions,
tested here without a server; the rest against the running stack."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import Session, col, select

from api.errors import Unprocessable
from api.worklist import WorkItem, ordered, paged
from reintegration.db import UserNotificationRecord
from tests.journey import Journey

NOW = datetime(2026, 12, 6, 12, tzinfo=UTC)


def item(ref: str, due: datetime | None, *, why: str = "step-due") -> WorkItem:
    return WorkItem(
        why=why,  # type: ignore[arg-type]
        name="risk-assessment",
        case_reference=ref,
        case_id="c",
        task_id=None,
        due_at=due,
        overdue=due is not None and due < NOW,
        link="/workspace/cases/c",
    )


def test_overdue_items_come_first_most_overdue_first_then_the_soonest_due_and_undated_last():
    items = [
        item("A", NOW + timedelta(days=3)),
        item("B", None),
        item("C", NOW - timedelta(hours=1)),
        item("D", NOW - timedelta(days=5)),
        item("E", NOW + timedelta(hours=2)),
    ]
    assert [i.case_reference for i in ordered(items)] == ["D", "C", "E", "A", "B"]


def test_a_worklist_pages_by_position_so_an_item_done_meanwhile_skips_nothing():
    items = ordered([item(f"R{n}", NOW + timedelta(hours=n)) for n in range(7)] + [item("Z", None)])
    first, cursor = paged(items, 3, None)
    assert [i.case_reference for i in first] == ["R0", "R1", "R2"] and cursor
    shorter = [i for i in items if i.case_reference != "R1"]  # done between the two pages
    second, cursor = paged(shorter, 3, cursor)
    assert [i.case_reference for i in second] == ["R3", "R4", "R5"]
    last, cursor = paged(shorter, 3, cursor)
    assert [i.case_reference for i in last] == ["R6", "Z"] and cursor is None
    for forged in ("not-base64!", "YWJj"):
        with pytest.raises(Unprocessable):
            paged(items, 3, forged)


async def worklist(stack, headers, **params):
    r = await stack.http.get("/v1/me/worklist", headers=headers, params=params)
    assert r.status_code == 200, r.text
    return r.json()


async def test_each_role_sees_what_waits_on_them(stack):
    cw = "cw-es-work"
    j = Journey(stack, caseworker=cw)
    await j.open()
    mine = await worklist(stack, j.cw)
    ours = [i for i in mine["items"] if i["case_reference"] == j.case["reference"]]
    assert [(i["why"], i["name"], i["link"]) for i in ours] == [
        ("step-due", "risk-assessment", f"/workspace/cases/{j.case_id}"),  # due in 3 days
        ("step-due", "security-guarantee", f"/workspace/cases/{j.case_id}"),  # in 14
    ]
    assert ours[0]["due_at"] < ours[1]["due_at"] and not ours[0]["overdue"]

    # A task the agency declines comes back to her; the agency's partner had it to accept.
    task = await j.assign("medical", "clinic-es")
    partner = j.partner("clinic-es")
    theirs = [i for i in (await worklist(stack, partner, limit=500))["items"] if i["task_id"] == task["task_id"]]
    assert [(i["why"], i["name"], i["case_id"], i["link"]) for i in theirs] == [
        ("task-to-accept", "medical", None, f"/workspace/inbox/{task['task_id']}")
    ]
    await j.task_action(task["task_id"], "clinic-es", "decline", {"reason": "no beds"})
    mine = await worklist(stack, j.cw, why=["task-declined"])
    assert [(i["why"], i["task_id"]) for i in mine["items"]] == [("task-declined", task["task_id"])]
    assert not [i for i in (await worklist(stack, partner, limit=500))["items"] if i["task_id"] == task["task_id"]]

    # Another caseworker's work is not hers; an admin has none; bad filters are refused.
    other = await worklist(stack, stack.auth("caseworker", "cw-es-other", countries=["ES"]))
    assert j.case["reference"] not in {i["case_reference"] for i in other["items"]}
    r = await stack.http.get("/v1/me/worklist", headers=stack.auth("admin", "admin-w"))
    assert r.status_code == 403
    r = await stack.http.get("/v1/me/worklist", headers=j.cw, params={"why": "everything"})
    assert r.status_code == 422


async def test_a_supervisor_sees_the_closures_to_approve_of_her_region_only(stack):
    j = Journey(stack, caseworker="cw-es-close")
    await j.open()
    await j.through_protection()
    await j.to_reintegration_by_residence_from_pathway()
    await j.through_reintegration_to_closure(approve=False)
    region = stack.auth("supervisor", "sup-es-w", countries=["ES"])
    elsewhere = stack.auth("supervisor", "sup-pt-w", countries=["PT"])
    items = (await worklist(stack, region, why=["closure-to-approve"], limit=500))["items"]
    assert [(i["name"], i["case_id"]) for i in items if i["case_id"] == j.case_id] == [("approve-closure", j.case_id)]
    items = (await worklist(stack, elsewhere, why=["closure-to-approve"], limit=500))["items"]
    assert j.case_id not in {i["case_id"] for i in items}


async def test_the_receiving_and_the_sending_caseworkers_are_told_of_the_hand_over(stack):
    j = Journey(stack, caseworker="cw-es-hand")
    j.partner("origin-office-ro")  # signed in before the task comes
    await j.open()
    await j.through_protection()
    await j.to_reintegration_by_return_from_pathway()
    with Session(stack.engine) as session:
        told = session.exec(
            select(UserNotificationRecord.user_id, UserNotificationRecord.kind).where(
                col(UserNotificationRecord.case_id) == j.case_id
            )
        ).all()
    assert ("cw-ro-1", "case.incoming") in told  # named in the travel plan
    assert {("cw-ro-1", "case.handed-over"), ("cw-es-hand", "case.handed-over")} <= set(told)
    assert ("partner-origin-office-ro", "task.assigned") in told
    # Who acted is not told of their own act: the caseworker assigned the tasks herself.
    assert ("cw-es-hand", "task.assigned") not in told
