"""Notifications to people (issue 15): the users' directory, the in-app inbox, e-mail over a real SMTP
server run here (aiosmtpd), each sent once, none lost while the server is down; and the refusals of a
case given to someone the directory does not know."""

from __future__ import annotations

import asyncio
import email
import email.policy
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage as Message
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from sqlmodel import Session, col, select
from temporalio.testing import ActivityEnvironment

from activities.mail import MailActivities
from reintegration.db import UserNotificationRecord
from tests.conftest import Stack, free_port, running_stack
from tests.journey import Journey, day


class Mailbox:
    """What the SMTP server received: every message, parsed."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's name
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        message["X-Envelope-To"] = ",".join(envelope.rcpt_tos)
        self.messages.append(message)
        return "250 OK"

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:  # noqa: N802
        if address.startswith("full-"):
            return "452 4.2.2 Mailbox full"  # a lasting trouble of one reader's, answered as temporary
        envelope.rcpt_tos.append(address)
        return "250 OK"

    def to(self, address: str) -> list[Message]:
        return [m for m in self.messages if m["To"] == address]


class SmtpServer:
    """A real SMTP server on a fixed port, that can be stopped and started again."""

    def __init__(self) -> None:
        self.port, self.mailbox = free_port(), Mailbox()
        self._controller: Controller | None = None

    def start(self) -> None:
        self._controller = Controller(self.mailbox, hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None


@pytest.fixture(scope="module")
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
async def mailing(temporal_env, tmp_path_factory, smtp) -> AsyncIterator[Stack]:
    async with running_stack(
        "sqlite",
        temporal_env,
        tmp_path_factory.mktemp("mail"),
        smtp_host="127.0.0.1",
        smtp_port=smtp.port,
        smtp_security="none",
        smtp_timeout_seconds=2,
        mail_from="Reintegration <notify@reintegration.test>",
        public_url="https://workspace.example.org",
    ) as s:
        yield s


async def until(check: Any, seconds: float = 20.0) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError("not in time")
        await asyncio.sleep(0.1)


def admin(stack: Stack) -> dict[str, str]:
    return stack.auth("admin", "admin-1")


async def add_user(stack: Stack, user_id: str, **body: Any) -> dict[str, Any]:
    r = await stack.http.put(f"/v1/users/{user_id}", json=body, headers=admin(stack))
    assert r.status_code == 200, r.text
    return r.json()


def rows(stack: Stack, **where: Any) -> list[UserNotificationRecord]:
    with Session(stack.engine) as session:
        query = select(UserNotificationRecord)
        for key, value in where.items():
            query = query.where(col(getattr(UserNotificationRecord, key)) == value)
        return list(session.exec(query).all())


async def test_a_partner_and_the_caseworker_are_told_in_the_inbox_and_by_e_mail_once(mailing, smtp):
    tag = "t1"
    j = Journey(mailing, caseworker=f"cw-es-{tag}")
    await add_user(mailing, f"cw-es-{tag}", role="caseworker", countries=["ES"], email=f"cw-{tag}@example.org")
    await add_user(mailing, f"clinic-{tag}", role="partner", agency="clinic-es", email=f"clinic-{tag}@example.org")
    await add_user(
        mailing, f"clinic-quiet-{tag}", role="partner", agency="clinic-es", email="q@example.org", notify="none"
    )
    await j.open()
    task = await j.assign("medical", "clinic-es")

    # The agency's users are told: by e-mail at once, and in the inbox (the quiet one in the inbox only).
    mails = await until(lambda: smtp.mailbox.to(f"clinic-{tag}@example.org"))
    reference = j.case["reference"]
    assert len(mails) == 1 and mails[0]["Subject"] == f"[{reference}] A task was assigned to your agency"
    body = mails[0].get_content()
    assert f"https://workspace.example.org/workspace/inbox/{task['task_id']}" in body
    assert "Service: medical" in body and j.case_id not in body  # a partner never sees a case's id
    for personal in ("Maria", "Ionescu", "1990"):  # the person's data (tests/journey.py) is in no e-mail
        assert personal not in mails[0].as_string()
    partner = mailing.auth("partner", f"clinic-{tag}", agency="clinic-es")
    inbox = (await mailing.http.get("/v1/me/notifications", headers=partner)).json()["items"]
    assert [(n["kind"], n["case_reference"], n["case_id"], n["email"]) for n in inbox] == [
        ("task.assigned", reference, None, "sent")
    ]
    quiet = mailing.auth("partner", f"clinic-quiet-{tag}", agency="clinic-es")
    assert [n["email"] for n in (await mailing.http.get("/v1/me/notifications", headers=quiet)).json()["items"]] == [
        "none"
    ]
    assert not smtp.mailbox.to("q@example.org")

    # The agency declines: the caseworker is told (never the one who acted).
    r = await mailing.http.post(f"/v1/tasks/{task['task_id']}/decline", json={"reason": "full"}, headers=partner)
    assert r.status_code == 200, r.text
    mails = await until(lambda: smtp.mailbox.to(f"cw-{tag}@example.org"))
    assert mails[0]["Subject"] == f"[{reference}] A task was declined and needs another agency"
    assert f"https://workspace.example.org/workspace/cases/{j.case_id}" in mails[0].get_content()
    assert "full" not in mails[0].get_content()  # what someone typed stays out
    assert [n.kind for n in rows(mailing, user_id=f"clinic-{tag}")] == ["task.assigned"]

    # Marked read: mine only, once.
    ids = [n["notification_id"] for n in inbox]
    r = await mailing.http.post("/v1/me/notifications/read", json={"notification_ids": ids}, headers=j.cw)
    assert r.json() == {"marked": 0, "unread": 1}  # another user's ids change nothing
    r = await mailing.http.post("/v1/me/notifications/read", json={"notification_ids": ids}, headers=partner)
    assert r.json() == {"marked": 1, "unread": 0}
    r = await mailing.http.post("/v1/me/notifications/read", json={"all": True}, headers=partner)
    assert r.json() == {"marked": 0, "unread": 0}
    assert (await mailing.http.get("/v1/me/notifications", headers=partner, params={"unread": True})).json()[
        "items"
    ] == []
    r = await mailing.http.post("/v1/me/notifications/read", json={}, headers=partner)
    assert r.status_code == 422

    # Every e-mail once: one per notification that asked for one, whatever the retries.
    await asyncio.sleep(1.0)
    sent = [n for n in rows(mailing) if n.email_status == "sent"]
    ids_mailed = [m["Message-ID"] for m in smtp.mailbox.messages]
    assert len(ids_mailed) == len(set(ids_mailed))
    assert {f"<{n.notification_id}@reintegration.test>" for n in sent} <= set(ids_mailed)


async def test_e_mails_wait_while_the_mail_server_is_down_and_go_once_when_it_is_back(mailing, smtp):
    tag = "t2"
    j = Journey(mailing, caseworker=f"cw-es-{tag}")
    await add_user(mailing, f"shelter-{tag}", role="partner", agency="shelter-es", email=f"shelter-{tag}@example.org")
    await j.open()
    smtp.stop()
    try:
        await j.assign("shelter", "shelter-es")
        await asyncio.sleep(2.5)  # several attempts fail (retried every second at most in the tests)
        [row] = await until(lambda: rows(mailing, user_id=f"shelter-{tag}"))
        assert row.email_status == "pending"
    finally:
        smtp.start()
    mails = await until(lambda: smtp.mailbox.to(f"shelter-{tag}@example.org"))
    await asyncio.sleep(1.5)
    assert len(smtp.mailbox.to(f"shelter-{tag}@example.org")) == 1
    assert mails[0]["Message-ID"] == f"<{row.notification_id}@reintegration.test>"
    [row] = rows(mailing, user_id=f"shelter-{tag}")
    assert row.email_status == "sent" and row.email_attempts >= 2


async def test_a_daily_digest_gathers_a_users_notifications_into_one_e_mail(mailing, smtp):
    tag = "t3"
    sup = f"sup-{tag}"
    await add_user(mailing, sup, role="supervisor", countries=["ES"], email=f"{sup}@example.org", language="es")
    me = mailing.auth("supervisor", sup, countries=["ES"])
    r = await mailing.http.patch("/v1/me", json={"notify": "digest"}, headers=me)
    assert r.status_code == 200 and r.json()["notify"] == "digest" and r.json()["language"] == "es"
    j = Journey(mailing, caseworker=f"cw-es-{tag}")
    await add_user(mailing, f"cw-es-{tag}", role="caseworker", countries=["ES"])
    await j.open()
    await add_user(mailing, f"cw-es-{tag}b", role="caseworker", countries=["ES"])
    r = await mailing.http.post(
        f"/v1/cases/{j.case_id}/reassign", json={"caseworker": f"cw-es-{tag}b"}, headers=mailing.auth("supervisor", sup)
    )
    assert r.status_code == 200, r.text
    # The new owner has no address: the inbox only. The reassigning supervisor is not told of her own act.
    [assigned] = rows(mailing, user_id=f"cw-es-{tag}b")
    assert (assigned.kind, assigned.email_status) == ("case.assigned", "none")
    [taken] = rows(mailing, user_id=f"cw-es-{tag}")
    assert taken.kind == "case.reassigned"
    assert rows(mailing, user_id=sup) == []

    # Two stall notices for the supervisor wait for her digest (made here as the clock would).
    await j.step("risk-assessment", {"level": "low", "threats": [], "assessed_on": day(1)})
    with Session(mailing.engine) as session:
        for n, kind in enumerate(("supervision.stalled", "supervision.escalated")):
            session.add(
                UserNotificationRecord(
                    notification_id=f"{n:040x}",
                    user_id=sup,
                    event_id=f"ev-{tag}-{n}",
                    case_id=j.case_id,
                    case_reference=j.case["reference"],
                    kind=kind,
                    facts={"item": "security-guarantee", "stage": "protection"},
                    created_at=assigned.created_at,
                    email_status="digest",
                )
            )
        session.commit()
    activities = MailActivities(engine=mailing.engine, settings=mailing.settings)
    cutoff = "2999-01-01T07:00:00+00:00"
    env = ActivityEnvironment()
    assert await env.run(activities.send_digests, cutoff) == 1
    assert await env.run(activities.send_digests, cutoff) == 0  # sent: a repeat sends nothing
    [digest] = smtp.mailbox.to(f"{sup}@example.org")
    assert digest["Subject"] == "Sus notificaciones: 2"  # in her language
    text = digest.get_content()
    assert text.count(j.case["reference"]) == 2 and "security-guarantee" in text
    assert {n.email_status for n in rows(mailing, user_id=sup)} == {"sent"}
    assert len({n.digest_id for n in rows(mailing, user_id=sup)}) == 1


async def test_the_directory_is_the_admins_and_each_user_changes_only_their_own_settings(mailing):
    a = admin(mailing)
    cw = mailing.auth("caseworker", "cw-dir-1", countries=["ES"])
    me = (await mailing.http.get("/v1/me", headers=cw)).json()
    assert (me["user_id"], me["role"], me["countries"], me["created_by"]) == (
        "cw-dir-1",
        "caseworker",
        ["ES"],
        "sign-in",
    )
    assert (await mailing.http.get("/v1/users", headers=cw)).status_code == 403
    assert (await mailing.http.put("/v1/users/x-1", json={"role": "caseworker"}, headers=cw)).status_code == 403
    assert (await mailing.http.patch("/v1/me", json={"notify": "sometimes"}, headers=cw)).status_code == 422
    assert (await mailing.http.patch("/v1/me", json={"email": "me@example.org"}, headers=cw)).status_code == 422
    assert (await mailing.http.patch("/v1/me", json={}, headers=cw)).status_code == 422
    for bad in (
        {"role": "partner"},  # no agency
        {"role": "partner", "agency": "no-such-agency"},
        {"role": "caseworker", "agency": "clinic-es"},
        {"role": "caseworker", "countries": ["Spain"]},
        {"role": "caseworker", "email": "not an address"},
        {"role": "wizard"},
    ):
        r = await mailing.http.put("/v1/users/new-1", json=bad, headers=a)
        assert r.status_code == 422, (bad, r.text)
    assert (await mailing.http.get("/v1/users/new-1", headers=a)).status_code == 404
    added = await add_user(mailing, "new-1", role="caseworker", countries=["PT"], email="new-1@example.org")
    assert added["created_by"] == "admin" and added["signed_in_at"] is None
    r = await mailing.http.patch("/v1/users/new-1", json={"active": False, "email": None}, headers=a)
    assert r.status_code == 200 and (r.json()["active"], r.json()["email"]) == (False, None)
    listed = (await mailing.http.get("/v1/users", headers=a, params={"role": "caseworker", "limit": 500})).json()
    assert {"new-1", "cw-dir-1"} <= {u["user_id"] for u in listed["items"]}


async def test_a_case_goes_only_to_a_known_active_caseworker_of_its_country(mailing):
    j = Journey(mailing, caseworker="cw-es-own")
    await j.open()
    await add_user(mailing, "cw-pt-own", role="caseworker", countries=["PT"])
    await add_user(mailing, "cw-es-gone", role="caseworker", countries=["ES"], active=False)
    await add_user(mailing, "partner-own", role="partner", agency="clinic-es")
    for who, why in (
        ("nobody-1", "unknown caseworker: nobody-1"),
        ("cw-pt-own", "cw-pt-own is not a caseworker of ES"),
        ("cw-es-gone", "cw-es-gone is deactivated"),
        ("partner-own", "partner-own is not a caseworker"),
    ):
        r = await mailing.http.post(f"/v1/cases/{j.case_id}/reassign", json={"caseworker": who}, headers=j.supervisor)
        assert r.status_code == 422 and r.json()["detail"].startswith(why), r.text
    assert (await j.get())["owner"]["caseworker"] == "cw-es-own"  # changed nothing

    j = Journey(mailing, caseworker="cw-es-own")
    await j.to_return(assessment="safe", documents=True)
    version = (await j.get())["version"]
    plan = {"travel_date": day(10), "route": "MAD-OTP", "escort": True}
    await j.step("travel-plan", {**plan, "receiving_caseworker": "cw-ro-nobody"}, expect=422)
    await j.step("travel-plan", {**plan, "receiving_caseworker": "cw-es-own"}, expect=422)  # not of RO
    assert (await j.get())["version"] == version
    await j.step("travel-plan", {**plan, "receiving_caseworker": "cw-ro-1"})


async def test_one_readers_trouble_never_holds_back_the_others_digests(mailing, smtp):
    tag = "t6"
    j = Journey(mailing, caseworker=f"cw-es-{tag}")
    await j.open()
    for user in (f"full-{tag}", f"fine-{tag}"):
        await add_user(mailing, user, role="supervisor", countries=["ES"], email=f"{user}@example.org", notify="digest")
    with Session(mailing.engine) as session:
        for n, user in enumerate((f"full-{tag}", f"fine-{tag}")):
            session.add(
                UserNotificationRecord(
                    notification_id=f"{n + 16:040x}",
                    user_id=user,
                    event_id=f"ev-{tag}-{n}",
                    case_id=j.case_id,
                    case_reference=j.case["reference"],
                    kind="supervision.stalled",
                    facts={"item": "risk-assessment"},
                    created_at=datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=n),  # the full one first
                    email_status="digest",
                )
            )
        session.commit()
    activities = MailActivities(engine=mailing.engine, settings=mailing.settings)
    env = ActivityEnvironment()
    assert await env.run(activities.send_digests, "2998-01-01T07:00:00+00:00") == 1
    assert len(smtp.mailbox.to(f"fine-{tag}@example.org")) == 1
    [full] = rows(mailing, user_id=f"full-{tag}")
    assert (full.email_status, full.email_attempts) == ("digest", 1)  # tried again the next day
    for _ in range(4):
        await env.run(activities.send_digests, "2998-01-01T07:00:00+00:00")
    [full] = rows(mailing, user_id=f"full-{tag}")
    assert (full.email_status, full.email_attempts) == ("failed", 5)
    assert len(smtp.mailbox.to(f"fine-{tag}@example.org")) == 1
