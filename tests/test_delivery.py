"""Task delivery to partner agencies' webhooks, against the partner simulator over real HTTP."""

from __future__ import annotations

import time

import httpx
from sqlmodel import Session, select

from reintegration.db import DeliveryRecord, TaskRecord
from tests.delivery_helpers import SECRET, simulator, until
from tests.journey import Journey, day


def delivery(stack, delivery_id: str) -> DeliveryRecord | None:
    with Session(stack.engine) as session:
        return session.get(DeliveryRecord, delivery_id)


async def test_delivery_is_retried_through_failures_with_one_effect(stack):
    async with simulator(stack, services=["shelter"], fail_first=3, act_after=None) as (agency, stats):
        j = Journey(stack)
        await j.open()
        task = await j.assign("shelter", agency)
        await until(lambda: task["task_id"] in stats.received, what="the delivery")
        record = await until(
            lambda: (d := delivery(stack, task["task_id"])) and d.status == "delivered" and d,
            what="the delivery recorded",
        )
        assert stats.failed_on_purpose == 3 and record.attempts >= 4
        assert stats.received[task["task_id"]] == 1
        [event] = [e for e in stats.events if e["key"] == task["task_id"]]
        assert event["event"] == "task.assigned"
        assert event["task"]["service"] == "shelter" and event["task"]["case_reference"] == j.case["reference"]
        assert "case_id" not in event["task"]


async def test_a_slow_agency_gets_the_task_again_and_drops_the_repeat(stack):
    async with simulator(stack, services=["shelter"], slow_seconds=2.5, act_after=None) as (agency, stats):
        j = Journey(stack)
        await j.open()
        task = await j.assign("shelter", agency)
        await until(
            lambda: (d := delivery(stack, task["task_id"])) and d.status == "delivered", timeout=60, what="the delivery"
        )
        assert stats.received[task["task_id"]] >= 2  # the first answer came after the client gave up
        assert len([e for e in stats.events if e["key"] == task["task_id"]]) == 1  # one effect


async def test_the_agency_acts_through_the_api_and_the_journey_moves_on(stack):
    async with simulator(stack, services=["shelter"], act_after=0.1) as (agency, stats):
        j = Journey(stack)
        await j.open()
        await j.step("risk-assessment", {"level": "high", "assessed_on": day(1)})
        await j.step(
            "safety-plan",
            {
                "agreed_on": day(1),
                "measures": [{"measure": "shelter placement", "service": "shelter", "agency_id": agency}],
            },
        )
        [task] = j.case["open_tasks"]
        await until(lambda: task["task_id"] in stats.acted, what="the simulator to complete the task")
        case = await j.get()
        assert case["open_tasks"] == [] and "security-guarantee" in case["allowed_steps"]
        assert stats.act_errors == []


async def test_a_refused_delivery_goes_back_to_the_caseworker_for_reassignment(stack):
    async with (
        simulator(stack, services=["medical"], reject_status=410) as (refusing, _),
        simulator(stack, services=["medical"], act_after=None) as (working, stats),
    ):
        j = Journey(stack)
        await j.open()
        task = await j.assign("medical", refusing)

        async def failed():
            case = await j.get()
            return [t for t in case["open_tasks"] if t["status"] == "delivery_failed"]

        [failed_task] = await until(failed, what="the task marked delivery_failed")
        assert failed_task["task_id"] == task["task_id"]
        assert delivery(stack, task["task_id"]).status == "failed"
        r = await stack.http.post(
            f"/v1/cases/{j.case_id}/tasks/{task['task_id']}/reassign", json={"agency_id": working}, headers=j.cw
        )
        assert r.status_code == 200 and r.json()["status"] == "assigned", r.text
        await until(lambda: f"{task['task_id']}.2" in stats.received, what="the delivery to the new agency")
        timeline = [e["name"] for e in (await j.get())["timeline"]]
        assert "delivery-failed" in timeline and "reassigned" in timeline


async def test_bad_signatures_are_refused_by_the_simulator(stack):
    """An agency registered with a secret its system does not know refuses the signed verification of
    its address, so the address is never confirmed and no task is ever sent there."""
    async with simulator(
        stack, services=["shelter"], secret=SECRET, registered_secret="another-secret-that-the-agency-does-not-know"
    ) as (agency, stats):
        await until(lambda: stats.bad_signatures >= 1, what="the verification refused for its signature")
        admin = stack.auth("admin", "a")
        seen = (await stack.http.get(f"/v1/agencies/{agency}", headers=admin)).json()
        assert seen["webhook_configured"] is False and seen["webhook_pending"] is True and stats.confirmed == []
        j = Journey(stack)
        await j.open()
        task = await j.assign("shelter", agency)  # in the read model now: no message for an unconfirmed address
        assert delivery(stack, task["task_id"]) is None and task["task_id"] not in stats.received
        # A forged message straight at the simulator is refused too, and counts as nothing.
        async with httpx.AsyncClient() as raw:
            r = await raw.post(
                seen["pending_webhook_url"],
                content=b'{"event":"task.assigned"}',
                headers={
                    "X-Reintegration-Timestamp": str(int(time.time())),
                    "X-Reintegration-Signature": "sha256=00",
                    "Idempotency-Key": "forged",
                },
            )
        assert r.status_code == 401 and "forged" not in stats.received


async def test_withdrawal_tells_the_agency_its_task_is_cancelled(stack):
    async with simulator(stack, services=["shelter"], act_after=None) as (agency, stats):
        j = Journey(stack)
        await j.open()
        task = await j.assign("shelter", agency)
        await until(lambda: task["task_id"] in stats.received, what="the delivery")
        await j.step("withdraw-consent", {"withdrawn_on": day(1)})
        key = f"{task['task_id']}.cancel.1"
        await until(lambda: key in stats.received, what="the cancellation")
        [event] = [e for e in stats.events if e["key"] == key]
        assert event["event"] == "task.cancelled" and event["task"]["status"] == "cancelled"


async def test_the_partner_sees_only_what_the_service_needs_and_only_with_consent(stack):
    with_consent = Journey(stack)
    await with_consent.open()  # data_sharing consent given
    without = Journey(stack)
    await without.open(consent=False)
    await without.step("consent", {"assistance": True, "data_sharing": False, "given_on": day(0)})
    fields = stack.settings.partner_fields
    for service, agency in (
        ("shelter", "shelter-es"),
        ("medical", "clinic-es"),
        ("psychosocial", "clinic-es"),
        ("police-protection", "shelter-es"),
    ):
        for journey, consented in ((with_consent, True), (without, False)):
            task = await journey.assign(service, agency)
            seen = (await stack.http.get(f"/v1/tasks/{task['task_id']}", headers=journey.partner(agency))).json()
            if consented:
                assert set(seen["person"]) == set(fields[service]), service
                assert seen["person"]["first_name"] == "Maria"
                assert "identity_number" not in seen["person"] or "identity_number" in fields[service]
            else:
                assert seen["person"] is None and "Maria" not in str(seen)
    # Every service's field list is honoured (the same function serves deliveries and the API).
    from reintegration.partner_view import person_for_partner

    with Session(stack.engine) as session:
        row = session.exec(select(TaskRecord).where(TaskRecord.case_id == with_consent.case_id)).first()
        for service, wanted in fields.items():
            row.service = service
            assert list(person_for_partner(session, stack.keyring, row, fields)) == wanted
            session.expire(row)


async def test_reassignment_withdraws_the_task_from_the_first_agency_and_keeps_its_reason(stack):
    async with (
        simulator(stack, services=["shelter"], act_after=None) as (first, first_stats),
        simulator(stack, services=["shelter"], act_after=None) as (second, second_stats),
    ):
        j = Journey(stack)
        await j.open()
        task = await j.assign("shelter", first)
        await until(lambda: task["task_id"] in first_stats.received, what="the first delivery")
        [event] = [e for e in first_stats.events if e["key"] == task["task_id"]]
        assert event["had_person"] is True  # data_sharing consent: the shelter gets what it needs
        await j.task_action(task["task_id"], first, "decline", {"reason": "a conflict of interest with the family"})
        declined = (await stack.http.get(f"/v1/tasks/{task['task_id']}", headers=j.partner(first))).json()
        assert declined["person"] is None  # nothing personal once declined
        r = await stack.http.post(
            f"/v1/cases/{j.case_id}/tasks/{task['task_id']}/reassign", json={"agency_id": second}, headers=j.cw
        )
        assert r.status_code == 200, r.text
        await until(lambda: f"{task['task_id']}.cancel.1" in first_stats.received, what="the withdrawal")
        await until(lambda: f"{task['task_id']}.2" in second_stats.received, what="the second delivery")
        seen = (await stack.http.get(f"/v1/tasks/{task['task_id']}", headers=j.partner(second))).json()
        assert seen["decline_reason"] == "" and "conflict" not in str(seen)
        [event] = [e for e in second_stats.events if e["key"] == f"{task['task_id']}.2"]
        assert "conflict" not in str(event)


async def test_the_simulator_drops_a_replay_under_another_key(stack):
    from activities.delivery import sign

    async with simulator(stack, services=["shelter"], act_after=None) as (agency, stats):
        url = (await stack.http.get(f"/v1/agencies/{agency}", headers=stack.auth("admin", "a"))).json()["webhook_url"]
        body = b'{"delivery_id":"d-1","event":"task.assigned","task":{"service":"shelter"}}'
        stamp = str(int(time.time()))
        headers = {"X-Reintegration-Timestamp": stamp, "X-Reintegration-Signature": sign(SECRET, stamp, body)}
        async with httpx.AsyncClient() as raw:
            ok = await raw.post(url, content=body, headers={**headers, "Idempotency-Key": "d-1"})
            replay = await raw.post(url, content=body, headers={**headers, "Idempotency-Key": "d-2"})
            again = await raw.post(url, content=body, headers={**headers, "Idempotency-Key": "d-1"})
            old = str(int(time.time()) - 3600)
            stale = await raw.post(
                url,
                content=body,
                headers={
                    "X-Reintegration-Timestamp": old,
                    "Idempotency-Key": "d-1",
                    "X-Reintegration-Signature": sign(SECRET, old, body),
                },
            )
        assert (ok.status_code, replay.status_code, again.status_code, stale.status_code) == (200, 400, 200, 401)
        assert stats.received["d-1"] == 2 and len([e for e in stats.events if e["key"] == "d-1"]) == 1
