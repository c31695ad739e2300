"""Security review, findings 4 and 6: a stored answer is not a second door, and what partners see
follows today's rules.

Replaying one's own Idempotency-Key on a task accept gave the person's data back after consent to
sharing was withdrawn and the task cancelled. Now a repeat shows what today's rules allow, stored
answers expire, the open-case repeat is held to the caller's scope, and keyed commands on an erased
case are refused cleanly.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from sqlmodel import Session, select

from api.idempotency import SEALED, purge_expired
from reintegration.db import AuditRecord, IdempotencyRecord
from tests.journey import Journey, case_body, day


def person_reads(stack, task_id: str) -> list[AuditRecord]:
    with Session(stack.engine) as session:
        return list(
            session.exec(
                select(AuditRecord).where(AuditRecord.task_id == task_id, AuditRecord.action == "task.read-person")
            ).all()
        )


async def test_a_replayed_accept_shows_no_person_once_consent_is_withdrawn(stack):
    j = Journey(stack)
    await j.open()  # data_sharing consent given
    task = await j.assign("shelter", "shelter-es")
    headers = {**j.partner("shelter-es"), "Idempotency-Key": "accept-then-withdrawn"}
    first = await stack.http.post(
        f"/v1/tasks/{task['task_id']}/accept", json={"notes": "a bed is free"}, headers=headers
    )
    assert first.status_code == 200 and first.json()["person"]["first_name"] == "Maria"
    await j.step("withdraw-consent", {"withdrawn_on": day(1)})  # closes the case, cancels the task
    reads = len(person_reads(stack, task["task_id"]))
    replay = await stack.http.post(
        f"/v1/tasks/{task['task_id']}/accept", json={"notes": "a bed is free"}, headers=headers
    )
    assert replay.status_code == 200, replay.text
    body = replay.json()
    assert body["person"] is None and body["status"] == "cancelled" and "Maria" not in replay.text
    assert body["notes"] == ""  # a cancelled task keeps no notes for its agency
    assert len(person_reads(stack, task["task_id"])) == reads  # nothing personal left, nothing read
    # Nothing personal was stored for the key in the first place (the stored answer, opened).
    with Session(stack.engine) as session:
        record = session.get(IdempotencyRecord, ("partner-shelter-es", "accept-then-withdrawn"))
    stored = json.loads(stack.keyring.open(j.case_id, record.response["sealed"], purpose=SEALED))
    assert stored["task_id"] == task["task_id"] and stored["person"] is None and "Maria" not in json.dumps(stored)
    assert first.headers["cache-control"] == "no-store" and replay.headers["cache-control"] == "no-store"


async def test_a_deactivated_agencys_partners_see_no_person(stack):
    admin = stack.auth("admin", "admin-1")
    agency = "clinic-deact"
    r = await stack.http.post(
        "/v1/agencies",
        headers=admin,
        json={
            "agency_id": agency,
            "name": "Clinic to close",
            "org_type": "HealthServiceOrganisation",
            "country": "ES",
            "services": ["medical"],
        },
    )
    assert r.status_code in (201, 409)
    await stack.http.patch(f"/v1/agencies/{agency}", json={"active": True}, headers=admin)
    j = Journey(stack)
    await j.open()
    r = await stack.http.post(
        f"/v1/cases/{j.case_id}/tasks",
        headers=j.cw,
        json={"service": "medical", "agency_id": agency, "notes": "speaks Romanian only"},
    )
    task = r.json()
    partner = {**j.partner(agency), "Idempotency-Key": "accept-deact"}
    first = await stack.http.post(f"/v1/tasks/{task['task_id']}/accept", json={}, headers=partner)
    assert first.json()["person"]["first_name"] == "Maria" and first.json()["notes"] == "speaks Romanian only"
    await stack.http.patch(f"/v1/agencies/{agency}", json={"active": False}, headers=admin)
    seen = (await stack.http.get(f"/v1/tasks/{task['task_id']}", headers=j.partner(agency))).json()
    assert seen["person"] is None and seen["notes"] == ""
    replay = await stack.http.post(f"/v1/tasks/{task['task_id']}/accept", json={}, headers=partner)
    assert replay.status_code == 200 and replay.json()["person"] is None
    listed = (await stack.http.get("/v1/tasks", headers=j.partner(agency))).json()["items"]
    assert all(t["person"] is None for t in listed)


async def test_stored_answers_expire(stack):
    j = Journey(stack)
    await j.open()
    task = await j.assign("shelter", "shelter-es")
    headers = {**j.partner("shelter-es"), "Idempotency-Key": "accept-expiring"}
    url = f"/v1/tasks/{task['task_id']}/accept"
    assert (await stack.http.post(url, json={}, headers=headers)).status_code == 200
    pk = ("partner-shelter-es", "accept-expiring")

    def stored(age: timedelta) -> None:
        """Mark the stored answer (a status no request gives) and age it."""
        with Session(stack.engine) as session:
            record = session.get(IdempotencyRecord, pk)
            record.status_code, record.response = 299, {"stored": True}
            record.created_at = datetime.now(UTC) - age
            session.add(record)
            session.commit()

    stored(timedelta(hours=23))
    assert (await stack.http.post(url, json={}, headers=headers)).status_code == 299  # within 24 hours: served
    stored(stack.settings.idempotency_ttl + timedelta(minutes=1))
    again = await stack.http.post(url, json={}, headers=headers)
    # Expired: not served; the key is new again, and the workflow still knows the command (one effect).
    assert again.status_code == 200 and again.json()["status"] == "accepted", again.text
    with Session(stack.engine) as session:
        assert session.get(IdempotencyRecord, pk).status_code == 200
    # The purge deletes expired answers and keeps the others.
    stored(timedelta(days=3))
    with Session(stack.engine) as session:
        fresh = session.exec(
            select(IdempotencyRecord).where(IdempotencyRecord.status_code.is_not(None), IdempotencyRecord.key != pk[1])
        ).all()
        fresh = [
            (r.sub, r.key)
            for r in fresh
            if datetime.now(UTC) - r.created_at.replace(tzinfo=r.created_at.tzinfo or UTC) < timedelta(hours=1)
        ]
    assert purge_expired(stack.engine, stack.settings.idempotency_ttl) >= 1
    with Session(stack.engine) as session:
        assert session.get(IdempotencyRecord, pk) is None
        assert all(session.get(IdempotencyRecord, k) is not None for k in fresh)


async def test_the_open_case_replay_checks_scope_like_a_first_request(stack):
    key = {"Idempotency-Key": "open-then-moved"}
    es = stack.auth("caseworker", "cw-moved", countries=["ES"])
    first = await stack.http.post("/v1/cases", json=case_body(), headers={**es, **key})
    assert first.status_code == 201
    # The same user, now working in Portugal only: the repeat is refused as a first request would be.
    pt = stack.auth("caseworker", "cw-moved", countries=["PT"])
    replay = await stack.http.post("/v1/cases", json=case_body(), headers={**pt, **key})
    assert replay.status_code == 422 and "ES" in replay.json()["detail"]
    assert first.json()["case_id"] not in replay.text


async def test_keyed_commands_on_an_erased_case_are_refused_cleanly(stack):
    j = Journey(stack)
    await j.open()
    task = await j.assign("shelter", "shelter-es")
    accept = {**j.partner("shelter-es"), "Idempotency-Key": "accept-before-erasure"}
    assert (await stack.http.post(f"/v1/tasks/{task['task_id']}/accept", json={}, headers=accept)).status_code == 200
    step = {**j.cw, "Idempotency-Key": "risk-before-erasure"}
    url = f"/v1/cases/{j.case_id}/steps/risk-assessment"
    assert (await stack.http.post(url, json={"level": "low", "assessed_on": day(1)}, headers=step)).status_code == 200
    await j.step("withdraw-consent", {"withdrawn_on": day(2)})
    r = await stack.http.delete(f"/v1/cases/{j.case_id}/personal-data", headers=stack.auth("admin", "admin-1"))
    assert r.status_code == 200, r.text
    attempts = [
        ("POST", f"/v1/tasks/{task['task_id']}/accept", {}, accept),  # a key used before the erasure
        ("POST", url, {"level": "low", "assessed_on": day(1)}, step),
        (
            "POST",
            f"/v1/tasks/{task['task_id']}/complete",
            {"outcome": "done"},
            {**j.partner("shelter-es"), "Idempotency-Key": "complete-after"},
        ),
        (
            "POST",
            f"/v1/cases/{j.case_id}/steps/monitoring",
            {"visited_on": day(5), "economic": 0.5, "social": 0.5, "psychosocial": 0.5},
            {**j.cw, "Idempotency-Key": "monitoring-after"},
        ),
        (
            "POST",
            f"/v1/cases/{j.case_id}/tasks",
            {"service": "medical", "agency_id": "clinic-es"},
            {**j.cw, "Idempotency-Key": "assign-after"},
        ),
        (
            "POST",
            f"/v1/cases/{j.case_id}/tasks/{task['task_id']}/cancel",
            {"reason": "erased"},
            {**j.cw, "Idempotency-Key": "cancel-after"},
        ),
        (
            "POST",
            f"/v1/cases/{j.case_id}/withdraw-consent",
            {"withdrawn_on": day(3)},
            {**j.cw, "Idempotency-Key": "withdraw-after"},
        ),
    ]
    for method, path, body, headers in attempts:
        for _ in range(2):  # the first time and its repeat
            r = await stack.http.request(method, path, json=body, headers=headers)
            assert r.status_code in (409, 410), (path, r.status_code, r.text)
            assert "Maria" not in r.text
