"""Idempotency-Key: the same key and request give the same response and one effect; another request, 422."""

from __future__ import annotations

import asyncio

from sqlmodel import Session, func, select

from reintegration.db import CaseRecord, TaskRecord
from tests.journey import Journey, case_body, day


async def test_opening_twice_with_one_key_opens_one_case(stack):
    j = Journey(stack, caseworker="cw-idem", countries=["ES"])
    headers = {**j.cw, "Idempotency-Key": "open-1"}
    answers = await asyncio.gather(*(stack.http.post("/v1/cases", json=case_body(), headers=headers) for _ in range(3)))
    assert [a.status_code for a in answers] == [201, 201, 201]
    assert len({a.json()["case_id"] for a in answers}) == 1
    again = await stack.http.post("/v1/cases", json=case_body(), headers=headers)
    assert again.status_code == 201 and again.json()["case_id"] == answers[0].json()["case_id"]
    other = await stack.http.post("/v1/cases", json=case_body(origin="MD"), headers=headers)
    assert other.status_code == 422 and "another request" in other.json()["detail"]
    with Session(stack.engine) as session:
        opened = session.exec(
            select(func.count()).select_from(CaseRecord).where(CaseRecord.owner_caseworker == "cw-idem")
        ).one()
    assert opened == 1


async def test_a_step_sent_twice_is_recorded_once_and_a_reused_key_is_refused(stack):
    j = Journey(stack)
    await j.open()
    url = f"/v1/cases/{j.case_id}/steps/risk-assessment"
    body = {"level": "low", "assessed_on": day(1)}
    headers = {**j.cw, "Idempotency-Key": "risk-1"}
    first, second = await asyncio.gather(*(stack.http.post(url, json=body, headers=headers) for _ in range(2)))
    assert first.status_code == second.status_code == 200
    assert first.json()["version"] == second.json()["version"]
    assert second.headers["etag"] == first.headers["etag"]
    reused = await stack.http.post(
        f"/v1/cases/{j.case_id}/steps/security-guarantee", json={"confirmed_on": day(2)}, headers=headers
    )
    assert reused.status_code == 422  # the key belongs to another request: refused, not dropped
    case = await j.get()
    assert [e["name"] for e in case["timeline"]].count("risk-assessment") == 1
    assert case["stage"] == "protection"


async def test_a_refusal_is_replayed_and_task_actions_are_idempotent(stack):
    j = Journey(stack)
    await j.open()
    headers = {**j.cw, "Idempotency-Key": "too-early"}
    body = {"confirmed_on": day(1)}
    url = f"/v1/cases/{j.case_id}/steps/security-guarantee"
    assert (await stack.http.post(url, json=body, headers=headers)).status_code == 409
    await j.step("risk-assessment", {"level": "low", "assessed_on": day(1)})
    replay = await stack.http.post(url, json=body, headers=headers)
    assert replay.status_code == 409  # the same response as the first time, even though it is allowed now
    assign = {**j.cw, "Idempotency-Key": "assign-1"}
    tasks = [
        await stack.http.post(f"/v1/cases/{j.case_id}/tasks", json={"service": "shelter"}, headers=assign)
        for _ in range(2)
    ]
    assert [t.status_code for t in tasks] == [201, 201] and tasks[0].json() == tasks[1].json()
    task_id = tasks[0].json()["task_id"]
    partner = {**j.partner("shelter-es"), "Idempotency-Key": "accept-1"}
    accepts = await asyncio.gather(
        *(stack.http.post(f"/v1/tasks/{task_id}/accept", json={}, headers=partner) for _ in range(2))
    )
    assert [a.status_code for a in accepts] == [200, 200]
    with Session(stack.engine) as session:
        assert len(session.exec(select(TaskRecord).where(TaskRecord.case_id == j.case_id)).all()) == 1
    case = await j.get()
    assert [e["name"] for e in case["timeline"]].count("accepted") == 1


async def test_a_caller_of_another_role_is_refused_before_the_key_is_read(stack):
    """403 for a partner's step, whatever its Idempotency-Key: the role is checked first, then the
    key (422 for a malformed one), as every command route has them."""
    j = Journey(stack)
    await j.open()
    path = f"/v1/cases/{j.case_id}/steps/risk-assessment"
    body = {"level": "low", "threats": [], "assessed_on": day(1)}
    for key in ("not a key", "k" * 201):
        partner = {**j.partner("shelter-es"), "Idempotency-Key": key}
        assert (await stack.http.post(path, json=body, headers=partner)).status_code == 403
        caseworker = {**j.cw, "Idempotency-Key": key}
        assert (await stack.http.post(path, json=body, headers=caseworker)).status_code == 422
