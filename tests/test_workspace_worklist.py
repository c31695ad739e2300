"""My work and the notifications in the workspace, over HTTP against the real stack: each role's
worklist with its reasons in words, overdue marked and linking to where the work is done (as
``GET /v1/me/worklist`` lists it); the notifications the worker writes, marked read all at once;
and how a person is told, stored as ``PATCH /v1/me`` stores it."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from datetime import datetime

from api.web import i18n
from api.web import worklist as worklist_page
from tests.conftest import Stack
from tests.journey import Journey, day
from tests.test_workspace_partner import assign, new_agency
from tests.workspace import Person, csrf_token

WORKLIST = "/workspace/worklist"
NOTIFICATIONS = "/workspace/notifications"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def cards(html: str) -> list[str]:
    """The items of the page's list of cards, in order."""
    found = re.search(r'<ul class="cards">(.*?)</ul>', html, re.S)
    return re.findall(r"<li>(.*?)</li>", found.group(1), re.S) if found else []


async def until_page_has(person: Person, path: str, text: str, seconds: float = 20.0) -> str:
    """The page once it shows ``text`` (the worker writes notifications after the command returns)."""
    deadline = time.monotonic() + seconds
    while True:
        html = await person.page(path)
        if text in html:
            return html
        assert time.monotonic() < deadline, f"{text!r} never appeared on {path}"
        await asyncio.sleep(0.1)


async def test_a_caseworkers_work_lists_her_due_steps_and_the_late_task_with_reasons_and_links(stack, monkeypatch):
    cw = unique("cw-es-wl")
    j = Journey(stack, caseworker=cw)
    await j.open()
    agency = await new_agency(stack, "shelter")
    await assign(stack, j, "shelter", agency, due_date=day(-2))  # the agency is late with it
    api = (await stack.http.get("/v1/me/worklist", headers=j.cw)).json()["items"]
    assert [i["why"] for i in api] == ["task-overdue", "step-due", "step-due"], api
    person = await Person(stack).sign_in("caseworker", cw, countries="ES")
    try:
        page = await person.page(WORKLIST)
        assert '<a href="/workspace/worklist" aria-current="page">My work</a>' in page
        assert "Waiting on you: 3. Overdue: 1." in page
        late, risk, security = cards(page)
        assert f'<a href="/workspace/cases/{j.case_id}">Shelter for case {j.case["reference"]}</a>' in late
        assert '<span class="badge overdue">Overdue</span> The agency is late with the task' in late
        assert f'<a href="/workspace/cases/{j.case_id}">Risk assessment for case {j.case["reference"]}</a>' in risk
        assert "A step of yours is due" in risk and "Overdue" not in risk
        due = i18n.format_datetime(datetime.fromisoformat(api[1]["due_at"]), "en")
        assert due in risk
        assert "Security guarantee" in security

        monkeypatch.setattr(worklist_page, "SHOWN", 2)  # the page shows the most urgent and counts the rest
        page = await person.page(WORKLIST)
        assert len(cards(page)) == 2 and "Only the 2 most urgent are shown. Not shown: 1 more." in page
    finally:
        await person.aclose()


async def test_an_empty_worklist_says_so_and_an_admin_has_none(stack):
    person = await Person(stack).sign_in("caseworker", unique("cw-es-idle"), countries="ES")
    try:
        page = await person.page(WORKLIST)
        assert "Nothing is waiting on you right now." in page and cards(page) == []
    finally:
        await person.aclose()
    admin = await Person(stack).sign_in("admin", unique("admin-wl"))
    try:
        page = await admin.page(WORKLIST, expect=403)
        assert "Not for your role" in page
        assert 'href="/workspace/worklist"' not in page  # nor in an admin's navigation
        assert "No notifications yet." in await admin.page(NOTIFICATIONS)  # every role has notifications
    finally:
        await admin.aclose()


async def test_a_partner_sees_the_task_to_accept_is_notified_of_it_and_marks_all_read(stack):
    agency = await new_agency(stack, "shelter")
    sub = unique("partner-wl")
    person = await Person(stack).sign_in("partner", sub, agency=agency)  # known before the task comes
    try:
        j = Journey(stack)
        await j.open()
        task_id = await assign(stack, j, "shelter", agency)
        reference = j.case["reference"]

        (item,) = cards(await person.page(WORKLIST))
        assert f'<a href="/workspace/inbox/{task_id}">Shelter for case {reference}</a>' in item
        assert "Accept or decline the task" in item

        page = await until_page_has(person, NOTIFICATIONS, "A task was assigned to your agency")
        (notice,) = cards(page)
        assert f'<a href="/workspace/inbox/{task_id}">A task was assigned to your agency</a>' in notice
        assert '<span class="badge unread">Unread</span>' in notice and reference in notice
        assert "<dt>Service</dt><dd>Shelter</dd>" in notice
        assert 'Notifications (1<span class="visually-hidden"> unread</span>)' in page  # the navigation's count

        r = await person.http.post(f"{NOTIFICATIONS}/read", data={"csrf_token": "forged"})
        assert r.status_code == 403
        r = await person.http.post(f"{NOTIFICATIONS}/read", data={"csrf_token": csrf_token(page)})
        assert (r.status_code, r.headers["location"]) == (303, f"{NOTIFICATIONS}?done=read")
        page = await person.page(r.headers["location"])
        assert "All your notifications are marked as read." in page
        assert "badge unread" not in page and ">Notifications</a>" in page
        mine = await stack.http.get("/v1/me/notifications", headers=stack.auth("partner", sub, agency=agency))
        assert [n["read_at"] is not None for n in mine.json()["items"]] == [True]
    finally:
        await person.aclose()


async def test_how_a_person_is_told_is_stored_and_a_wrong_choice_changes_nothing(stack):
    sub = unique("cw-es-notify")
    person = await Person(stack).sign_in("caseworker", sub, countries="ES")
    me = stack.auth("caseworker", sub, countries=["ES"])
    settings = f"{NOTIFICATIONS}/settings"
    try:
        page = await person.page(NOTIFICATIONS)
        assert re.search(r'value="email" checked', page)  # the directory's default
        r = await person.submit(settings, {"notify": "digest"}, page=NOTIFICATIONS)
        assert (r.status_code, r.headers["location"]) == (303, f"{NOTIFICATIONS}?done=settings#settings")
        page = await person.page(r.headers["location"].partition("#")[0])
        assert "Your choice is saved." in page and re.search(r'value="digest" checked', page)
        assert (await stack.http.get("/v1/me", headers=me)).json()["notify"] == "digest"

        for sent, says in (
            ({"notify": "weekly"}, "Choose one of the options."),
            ({}, "Choose how you want to be told."),
        ):
            r = await person.submit(settings, sent, page=NOTIFICATIONS)
            assert r.status_code == 422 and says in r.text and 'aria-invalid="true"' in r.text, sent
            assert (await stack.http.get("/v1/me", headers=me)).json()["notify"] == "digest"
        r = await person.http.post(settings, data={"notify": "none"})  # no CSRF token: refused
        assert r.status_code == 403
        assert (await stack.http.get("/v1/me", headers=me)).json()["notify"] == "digest"
    finally:
        await person.aclose()


async def test_my_work_and_the_notifications_in_spanish(stack: Stack):
    cw = unique("cw-es-es")
    j = Journey(stack, caseworker=cw)
    await j.open()
    person = await Person(stack, language="es").sign_in("caseworker", cw, countries="ES")
    try:
        agency = await new_agency(stack, "shelter")
        task_id = await assign(stack, j, "shelter", agency)
        await j.task_action(task_id, agency, "decline", {"reason": "sin camas"})  # back to her, and she is told
        page = await person.page(WORKLIST)
        assert '<html lang="es">' in page and "<h1>Mi trabajo</h1>" in page
        assert "La organización rechazó la tarea: asígnela a otra" in page and "Un paso suyo vence" in page
        assert f"Alojamiento protegido para el caso {j.case['reference']}" in page
        page = await until_page_has(person, NOTIFICATIONS, "Se rechazó una tarea y necesita otra organización")
        assert "<h1>Notificaciones</h1>" in page and "Sin leer" in page
        assert "Por correo electrónico, en el momento" in page and "Marcar todas como leídas" in page
    finally:
        await person.aclose()
