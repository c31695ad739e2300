"""Security review, finding 3: redirecting an agency's deliveries is not a way to read cases.

An admin (who may read no case) pointed an agency's webhook at a server of its own and received the
next task with the person's data. Now a new address is used only once a partner of the agency
confirms it with the challenge sent there; the confirmed address keeps the tasks meanwhile and is
told of the change; the audit trail names the new host; and outside development no message goes to
a loopback, private, link-local or metadata address, checked again at each delivery.
"""

from __future__ import annotations

import ipaddress
import json
import uuid
from datetime import UTC, datetime

import httpx
import pytest
from fastapi import FastAPI, Request
from sqlmodel import Session, select

from api.main import create_app
from reintegration.db import AgencyRecord, AuditRecord, DeliveryRecord
from reintegration.settings import Settings
from reintegration.webhooks import UnsafeAddress, checked_addresses, refused_address
from tests.conftest import free_port, running_stack, served
from tests.delivery_helpers import simulator, until
from tests.journey import Journey

ATTACKER_SECRET = "the-attackers-own-secret-0123456789abcdef"


def recorder() -> tuple[FastAPI, list[dict]]:
    """A server of the attacker's: it keeps every message it gets and answers each with 200."""
    app, seen = FastAPI(), []

    @app.post("/{path:path}")
    async def keep(path: str, request: Request) -> dict:
        seen.append(json.loads(await request.body()))
        return {"challenge": seen[-1].get("challenge")}  # echoing the challenge buys nothing

    return app, seen


def audit_rows(stack, action: str) -> list[AuditRecord]:
    with Session(stack.engine) as session:
        return list(
            session.exec(select(AuditRecord).where(AuditRecord.action == action).order_by(AuditRecord.seq)).all()
        )


async def test_an_admin_redirecting_an_agency_gets_no_case_data(stack):
    admin = stack.auth("admin", "admin-redirect")
    async with simulator(stack, services=["shelter"], act_after=None) as (agency, stats):
        attacker, seen = recorder()
        async with served(attacker) as evil:
            r = await stack.http.patch(
                f"/v1/agencies/{agency}",
                headers=admin,
                json={"webhook_url": f"{evil}/steal", "webhook_secret": ATTACKER_SECRET},
            )
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["webhook_pending"] is True and body["pending_webhook_url"] == f"{evil}/steal"
            # The attacker's server gets the verification (no case in it); the agency is told.
            await until(lambda: seen, what="the verification at the new address")
            assert seen[0]["event"] == "webhook.verification" and set(seen[0]) >= {"challenge", "agency_id"}
            await until(lambda: stats.notices, what="the notice at the confirmed address")
            assert stats.notices == [{"agency_id": agency, "new_host": "127.0.0.1"}]
            # The admin cannot confirm; a partner of another agency cannot; a wrong challenge does not.
            challenge = {"challenge": seen[0]["challenge"], "host": "127.0.0.1"}
            url = f"/v1/agencies/{agency}/webhook/confirm"
            assert (await stack.http.post(url, json=challenge, headers=admin)).status_code == 403
            other = stack.auth("partner", "p-other", agency="shelter-es")
            assert (await stack.http.post(url, json=challenge, headers=other)).status_code == 403
            mine = stack.auth("partner", f"partner-{agency}", agency=agency)
            wrong = await stack.http.post(url, json={"challenge": "x" * 43, "host": "127.0.0.1"}, headers=mine)
            assert wrong.status_code == 422
            # The agency's partners see which host waits for their word; others do not.
            own_view = (await stack.http.get(f"/v1/agencies/{agency}", headers=mine)).json()
            assert own_view["pending_webhook_host"] == "127.0.0.1" and own_view["pending_webhook_url"] is None
            assert (await stack.http.get(f"/v1/agencies/{agency}", headers=other)).json()[
                "pending_webhook_host"
            ] is None
            # Told "confirm code X" for a host it does not run, a partner names its own host: refused.
            elsewhere = await stack.http.post(url, json={**challenge, "host": "hooks.agency.example.org"}, headers=mine)
            assert elsewhere.status_code == 422 and "pending_webhook_host" in elsewhere.json()["detail"]
            # The next task, with the person's data, goes to the confirmed address only.
            j = Journey(stack)
            await j.open()
            task = await j.assign("shelter", agency)
            await until(lambda: task["task_id"] in stats.received, what="the task at the confirmed address")
            assert [m["event"] for m in seen] == ["webhook.verification"]
            assert "Maria" not in json.dumps(seen)
        # The audit trail names the new host (never a path), and who tried what.
        [change] = [
            r
            for r in audit_rows(stack, "agency.update")
            if r.detail.get("agency_id") == agency and "pending_webhook_host" in r.detail
        ]
        assert change.actor_sub == "admin-redirect" and change.detail["pending_webhook_host"] == "127.0.0.1"
        assert "steal" not in json.dumps(change.detail)
        tries = [r for r in audit_rows(stack, "agency.webhook-confirm") if r.detail.get("agency_id") == agency]
        refusals = [(r.actor_sub, r.status, r.detail.get("matched")) for r in tries if r.status != 200]
        assert refusals == [(f"partner-{agency}", 422, False)] * 2  # the wrong challenge, the wrong host


async def test_the_agency_confirms_its_new_address_and_tasks_follow(stack):
    async with simulator(stack, services=["shelter"], act_after=None) as (agency, first):
        async with simulator(stack, services=["shelter"], act_after=None) as (_, second_stats):
            pass  # only to show a fresh simulator confirms by itself (tests/delivery_helpers.py)
        assert first.confirmed and second_stats.confirmed
        admin = stack.auth("admin", "admin-1")
        seen = (await stack.http.get(f"/v1/agencies/{agency}", headers=admin)).json()
        assert seen["webhook_configured"] is True and seen["webhook_pending"] is False
        assert seen["webhook_confirmed_at"] is not None
        [confirmed] = [
            r
            for r in audit_rows(stack, "agency.webhook-confirm")
            if r.detail.get("agency_id") == agency and r.status == 200
        ]
        assert confirmed.actor_sub == f"partner-{agency}" and confirmed.detail["webhook_host"] == "127.0.0.1"
        # A second confirmation with the same challenge finds nothing waiting.
        mine = stack.auth("partner", f"partner-{agency}", agency=agency)
        r = await stack.http.post(
            f"/v1/agencies/{agency}/webhook/confirm", json={"challenge": "y" * 43, "host": "127.0.0.1"}, headers=mine
        )
        assert r.status_code == 409


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.5.4",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "::1",
        "fe80::1",
        "fc00::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "fd00:ec2::254",
        "2002:a9fe:a9fe::1",
        "2002:7f00:1::1",  # 6to4 carrying 169.254.169.254 and 127.0.0.1
    ],
)
def test_addresses_inside_are_refused(address):
    assert refused_address(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2001:4860:4860::8888"])
def test_public_addresses_are_allowed(address):
    assert refused_address(ipaddress.ip_address(address)) is None


def test_a_named_private_network_is_allowed_but_never_loopback_or_metadata():
    assert refused_address(ipaddress.ip_address("10.8.0.7"), ["10.8.0.0/16"]) is None
    assert refused_address(ipaddress.ip_address("10.9.0.7"), ["10.8.0.0/16"]) == "a private address"
    with pytest.raises(ValueError, match="may never receive tasks"):
        Settings(webhook_private_networks=["169.254.0.0/16"])
    with pytest.raises(ValueError, match="not a network"):
        Settings(webhook_private_networks=["the office"])


async def test_a_host_name_is_checked_on_every_address_it_resolves_to():
    with pytest.raises(UnsafeAddress, match="loopback"):
        await checked_addresses("localhost", 443)
    with pytest.raises(UnsafeAddress, match="does not resolve"):
        await checked_addresses("no-such-host.invalid", 443)


def test_production_refuses_to_turn_the_guard_off():
    with pytest.raises(ValueError, match="REINTEGRATION_WEBHOOK_GUARD=false"):
        Settings(environment="production", webhook_guard=False)
    assert Settings().webhook_guard_on is False and Settings(webhook_guard=True).webhook_guard_on is True


async def test_with_the_guard_no_message_goes_inside(temporal_env, tmp_path):
    """Registered addresses are checked, and so is each delivery: an address that resolves inside
    since it was confirmed (a DNS change) gets nothing, and the task goes back to the caseworker."""
    async with running_stack("sqlite", temporal_env, tmp_path, webhook_guard=True) as guarded:
        admin = guarded.auth("admin", "admin-guard")
        agency = f"guarded-{uuid.uuid4().hex[:6]}"
        body = {
            "agency_id": agency,
            "name": "Guarded",
            "org_type": "NGO",
            "country": "ES",
            "services": ["shelter"],
            "webhook_secret": ATTACKER_SECRET,
        }
        for url in (
            "http://127.0.0.1:9/hook",
            "http://localhost:9/hook",
            "http://169.254.169.254/latest/meta-data",
            "http://10.0.0.8/hook",
            "http://[::1]:9/hook",
        ):
            r = await guarded.http.post("/v1/agencies", headers=admin, json={**body, "webhook_url": url})
            assert r.status_code == 422 and "resolves to" in r.json()["detail"], (url, r.text)
        r = await guarded.http.post(
            "/v1/agencies", headers=admin, json={k: v for k, v in body.items() if k != "webhook_secret"}
        )
        assert r.status_code == 201
        # The address was fine when confirmed; it resolves inside now. Nothing is sent there.
        attacker, seen = recorder()
        async with served(attacker) as inside:
            with Session(guarded.engine) as session:
                record = session.get(AgencyRecord, agency)
                record.webhook_url = f"{inside}/hook"
                record.webhook_secret = guarded.keyring.seal_system(ATTACKER_SECRET, purpose=f"webhook-secret:{agency}")
                record.webhook_confirmed_at = datetime.now(UTC)
                session.add(record)
                session.commit()
            j = Journey(guarded)
            await j.open()
            task = await j.assign("shelter", agency)

            async def failed():
                case = await j.get()
                return [t for t in case["open_tasks"] if t["status"] == "delivery_failed"]

            await until(failed, what="the task back with the caseworker")
            with Session(guarded.engine) as session:
                assert session.get(DeliveryRecord, task["task_id"]).status == "failed"
            assert seen == []


async def test_without_temporal_an_agency_still_changes_and_no_address_is_left_pending(stack):
    """Deactivating a compromised agency must not wait for Temporal; a new address whose verification
    cannot be sent is not left half-set."""
    admin = stack.auth("admin", "admin-1")
    agency = f"no-temporal-{uuid.uuid4().hex[:6]}"
    r = await stack.http.post(
        "/v1/agencies",
        headers=admin,
        json={"agency_id": agency, "name": "Offline", "org_type": "NGO", "country": "ES", "services": ["shelter"]},
    )
    assert r.status_code == 201
    lonely = stack.settings.model_copy(
        update={"temporal_address": f"127.0.0.1:{free_port()}", "temporal_connect_wait_seconds": 0.1}
    )
    async with served(create_app(lonely), lifespan="on") as url, httpx.AsyncClient(base_url=url) as http:
        r = await http.patch(f"/v1/agencies/{agency}", json={"active": False, "name": "Closed"}, headers=admin)
        assert r.status_code == 200 and r.json()["active"] is False
        r = await http.patch(
            f"/v1/agencies/{agency}",
            headers=admin,
            json={"webhook_url": "http://127.0.0.1:9/hook", "webhook_secret": ATTACKER_SECRET},
        )
        assert r.status_code == 503 and "set the address again" in r.json()["detail"]
    seen = (await stack.http.get(f"/v1/agencies/{agency}", headers=admin)).json()
    assert seen["webhook_pending"] is False and seen["webhook_configured"] is False and seen["name"] == "Closed"
