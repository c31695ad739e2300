"""The workspace in a real browser: Chromium, axe-core on every page, a screenshot of each.

The three journeys of issue 12: a caseworker opens a case and takes it to the return stage; a
partner accepts and completes a task from its inbox (in Spanish, at phone width); a supervisor finds
a stalled case with a filter, opens it, and approves a closure."""

from __future__ import annotations

import asyncio
import re

import pytest
from playwright.async_api import Locator

from tests.browser import PHONE, chromium, visit
from tests.journey import Journey, day
from tests.test_survey import planned
from tests.test_workspace_partner import assign, new_agency
from tests.test_workspace_supervisor import closure_requested, stalled_since_identification


async def set_field(form: Locator, name: str, value: str) -> None:
    """Fill a field as a person would, whatever the form made of it (a list to choose from, or text)."""
    field = form.locator(f"[name='{name}']").first
    if await field.evaluate("e => e.tagName") == "SELECT":
        await field.select_option(value)
    else:
        await field.fill(value)


@pytest.fixture(scope="module")
async def browser():
    async with chromium() as running:
        yield running


async def test_signing_in_in_spanish_at_phone_width(stack, browser):
    async with visit(browser, stack.base_url, "sign-in-es-phone", viewport=PHONE, language="es") as person:
        await person.goto("/")
        assert person.page.url.endswith("/workspace/sign-in?next=/workspace")
        assert await person.page.locator("html").get_attribute("lang") == "es"
        width = await person.page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"the page scrolls sideways at phone width ({width} px)"


async def test_a_caseworker_opens_a_case_and_takes_it_to_the_return_stage(stack, browser):
    async with visit(browser, stack.base_url, "caseworker") as person:
        await person.sign_in("caseworker", "cw-browser-1", countries="ES")
        await person.page.get_by_role("navigation").get_by_role("link", name="Open a case").click()
        await person.check()
        form = person.page.locator("form[action='/workspace/cases/new']")
        for name, value in {
            "person.first_name": "Zq-browser-first",
            "person.second_name": "Zq-browser-second",
            "person.birthdate": "1999-05-02",
            "identification.identified_on": day(0),
            "identification.place": "Zq-browser-place",
            "consent.given_on": day(0),
        }.items():
            await form.locator(f"[name='{name}']").fill(value)
        await set_field(form, "identification.country", "ES")
        await set_field(form, "origin_country", "RO")
        await form.locator("[name='identification.exploitation_types'][value='ForcedLabour']").check()
        await form.locator("[name='consent.assistance']").check()
        await form.locator("button[type=submit]").click()
        await person.page.wait_for_url(re.compile(r"/workspace/cases/[0-9a-f-]{36}([?#].*)?$"))
        await person.check("case-opened")
        case_url = person.page.url.split("?")[0].split("#")[0]
        assert "Zq-browser" not in case_url  # the page's address names the case, never the person
        for step, fields in (
            ("risk-assessment", {"level": "low", "assessed_on": day(1)}),
            ("security-guarantee", {"confirmed_on": day(2)}),
            ("pathway", {"pathway": "voluntary_return", "decided_on": day(3)}),
        ):
            await person.page.locator(f"a[href$='/steps/{step}']").click()
            await person.check(f"step-{step}")
            step_form = person.page.locator(f"form[action$='/steps/{step}']")
            for name, value in fields.items():
                await set_field(step_form, name, value)
            await step_form.locator("button[type=submit]").click()
            await person.page.wait_for_url(re.compile(re.escape(case_url) + r"([?#].*)?$"))
            await person.check(f"after-{step}")
        current = person.page.locator("ol.stages [aria-current='step']")
        assert "Voluntary return" in await current.inner_text()
    case_id = case_url.rsplit("/", 1)[1]
    r = await stack.http.get(f"/v1/cases/{case_id}", headers=stack.auth("caseworker", "cw-browser-1", countries=["ES"]))
    assert r.json()["stage"] == "return"


async def test_a_partner_accepts_and_completes_a_task_from_its_inbox_in_spanish_at_phone_width(stack, browser):
    j = Journey(stack)
    await j.open()
    task = await j.assign("shelter", "shelter-es")
    async with visit(browser, stack.base_url, "partner-es-phone", viewport=PHONE, language="es") as person:
        await person.sign_in("partner", "shelter-browser", agency="shelter-es")
        assert "/workspace/inbox" in person.page.url
        await person.page.locator(f"a[href='/workspace/inbox/{task['task_id']}']").click()
        await person.check("task")
        await person.page.locator("form[action*='/accept'] button[type=submit]").click()
        await person.check("accepted")
        complete = person.page.locator("form[action*='/complete']")
        await complete.locator("input[name='outcome'][value='done']").check()
        await complete.locator("[name='notes']").fill("Cama asignada.")
        await complete.locator("button[type=submit]").click()
        await person.check("completed")
        assert await person.page.locator("html").get_attribute("lang") == "es"
        width = await person.page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"the page scrolls sideways at phone width ({width} px)"
    seen = await stack.http.get(f"/v1/tasks/{task['task_id']}", headers=j.cw)
    assert seen.json()["status"] == "completed"


async def test_a_supervisor_finds_a_stalled_case_opens_it_and_approves_a_closure(stack, browser):
    stalled = await stalled_since_identification(stack)
    closing = await closure_requested(stack)
    async with visit(browser, stack.base_url, "supervisor") as person:
        await person.sign_in("supervisor", "sup-browser-1", countries="*")
        assert "/workspace/dashboard" in person.page.url
        filters = person.page.locator("form.filters")
        await filters.locator("[name='country']").select_option("PT")
        await filters.locator("button[type=submit]").click()
        await person.check("stalled-in-PT")
        await person.page.locator(f"#stalled a[href='/workspace/cases/{stalled.case_id}']").first.click()
        await person.page.wait_for_url(f"**/workspace/cases/{stalled.case_id}")
        await person.check("stalled-case")
        await person.goto("/workspace/dashboard")
        approve = person.page.locator(f"form[action^='/workspace/dashboard/closures/{closing.case_id}/approve']")
        await approve.locator("[name='notes']").fill("Plan completed.")
        await approve.locator("button[type=submit]").click()
        await person.check("closure-approved")
    assert (await closing.get())["status"] == "closed"


async def test_the_other_pages_pass_axe_too_in_french(stack, browser):
    """The pages the journeys above do not reach: refusals, a form with its errors, the agencies."""
    j = Journey(stack)
    await j.open()
    async with visit(browser, stack.base_url, "other-pages-fr", language="fr") as person:
        await person.goto("/workspace/sign-in")
        await person.page.locator("#sub").fill("")
        await person.page.locator("#countries").fill("Espagne")
        await person.page.locator("form[action='/workspace/sign-in'] button[type=submit]").click()
        await person.check("sign-in-refused")
        await person.sign_in("caseworker", "cw-es-1", countries="ES")
        await person.goto(f"/workspace/cases/{j.case_id}/steps/risk-assessment")
        await person.page.locator("form[action$='/steps/risk-assessment'] button[type=submit]").click()
        await person.check("step-with-errors")
        assert await person.page.locator("[aria-invalid='true']").count() > 0
        await person.goto("/workspace/cases/00000000-0000-4000-8000-000000000000")  # no such case: refused
        await person.goto("/workspace/dashboard")  # a caseworker: refused
        await person.goto("/workspace/agencies")
    async with visit(browser, stack.base_url, "admin-fr", language="fr") as person:
        await person.sign_in("admin", "admin-browser")
        assert person.page.url.endswith("/workspace/agencies")
        await person.goto("/workspace/inbox")  # an admin: refused


async def test_notes_are_written_on_the_case_page_and_the_task_page_at_phone_width(stack, browser):
    """Issue 14: a caseworker adds a note from the case page, a partner one from its task page (in
    French, at phone width); each sees it, axe passes on every page, nothing scrolls sideways."""
    j = Journey(stack)
    await j.open()
    task = await j.assign("shelter", "shelter-es")
    async with visit(browser, stack.base_url, "notes-caseworker-phone", viewport=PHONE) as person:
        await person.sign_in("caseworker", "cw-es-1", countries="ES")
        await person.goto(f"/workspace/cases/{j.case_id}")
        await person.page.locator("#notes summary").click()
        form = person.page.locator(f"form[action='/workspace/cases/{j.case_id}/notes']")
        await form.locator("[name='text']").fill("Called her: settled at the shelter.")
        await form.locator("button[type=submit]").click()
        await person.check("note added")
        assert (
            await person.page.locator("#notes .note-text").first.inner_text() == "Called her: settled at the shelter."
        )
        width = await person.page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"the case page scrolls sideways at phone width ({width} px)"
    async with visit(browser, stack.base_url, "notes-partner-fr-phone", viewport=PHONE, language="fr") as person:
        await person.sign_in("partner", "shelter-notes", agency="shelter-es")
        await person.goto(f"/workspace/inbox/{task['task_id']}")
        form = person.page.locator("form[action*='/notes']")
        await form.locator("[name='text']").fill("Lit prêt ce soir.")
        await form.locator("button[type=submit]").click()
        await person.check("task note added")
        assert "La note a été ajoutée." in await person.page.content()
        width = await person.page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"the task page scrolls sideways at phone width ({width} px)"
    r = await stack.http.get(f"/v1/cases/{j.case_id}/notes", headers=j.cw)
    assert [n["text"] for n in r.json()["items"]] == ["Lit prêt ce soir.", "Called her: settled at the shelter."]


async def test_the_case_file_pages_pass_axe_at_phone_width(stack, browser, tmp_path):
    """Issue 14's pages in a browser: a document chosen and uploaded through the file input, the notes
    page, Find a case with its results, the intake's possible duplicates, and a supervisor reopening a
    closed case; axe on each, nothing wider than a phone."""
    j = Journey(stack)
    await j.open()
    scan = tmp_path / "scan.png"
    scan.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    async with visit(browser, stack.base_url, "case-file-phone", viewport=PHONE) as person:
        await person.sign_in("caseworker", "cw-es-1", countries="ES")
        await person.goto(f"/workspace/cases/{j.case_id}")
        await person.page.locator("#documents summary").click()
        form = person.page.locator(f"form[action='/workspace/cases/{j.case_id}/documents']")
        await form.locator("[name='kind']").select_option("medical-report")
        await form.locator("[name='document']").set_input_files(str(scan))
        await form.locator("button[type=submit]").click()
        await person.check("document added")
        assert await person.page.locator("#documents a[download]").count() == 1
        await person.goto(f"/workspace/cases/{j.case_id}/notes")
        await person.goto("/workspace/search")
        await person.page.locator("#search-reference").fill(j.case["reference"])
        await person.page.locator("form[action='/workspace/search'] button[type=submit]").click()
        await person.check("search results")
        assert await person.page.locator(f"a[href='/workspace/cases/{j.case_id}']").count() == 1
        width = await person.page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"the search page scrolls sideways at phone width ({width} px)"
    r = await stack.http.get(f"/v1/cases/{j.case_id}/documents", headers=j.cw)
    assert [d["media_type"] for d in r.json()["items"]] == ["image/png"]

    closed = Journey(stack)
    await closed.open()
    await closed.to_reintegration_by_residence()
    await closed.through_reintegration_to_closure()
    async with visit(browser, stack.base_url, "reopen-phone", viewport=PHONE, language="es") as person:
        await person.sign_in("supervisor", "sup-browser-2", countries="ES")
        await person.goto(f"/workspace/cases/{closed.case_id}")
        section = person.page.locator("section[aria-labelledby='reopen-title']")
        await section.locator("summary").click()
        await section.locator("[name='stage']").select_option("reintegration")
        await section.locator("[name='reason']").fill("Una nueva necesidad.")
        await section.locator("button[type=submit]").click()
        await person.check("reopened")
    assert (await closed.get())["status"] == "active"


async def test_my_work_and_the_notifications_pass_axe_at_phone_width(stack, browser):
    """My work with an overdue item, the notifications with an unread one, the settings form refused
    and the notifications marked read (in French, at phone width); axe on each, nothing scrolls sideways."""
    j = Journey(stack, caseworker="cw-es-browser-work")
    await j.open()
    agency = await new_agency(stack, "shelter")
    await assign(stack, j, "shelter", agency, due_date=day(-2))
    declined = await assign(stack, j, "shelter", agency)
    await j.task_action(declined, agency, "decline", {"reason": "complet"})
    for _ in range(200):  # the worker writes the notification after the command returns
        if (await stack.http.get("/v1/me/notifications", headers=j.cw)).json()["items"]:
            break
        await asyncio.sleep(0.1)
    async with visit(browser, stack.base_url, "my-work-fr-phone", viewport=PHONE, language="fr") as person:
        await person.sign_in("caseworker", "cw-es-browser-work", countries="ES")
        for path in ("/workspace/worklist", "/workspace/notifications"):
            await person.goto(path)
            width = await person.page.evaluate("document.documentElement.scrollWidth")
            assert width <= PHONE["width"], f"{path} scrolls sideways at phone width ({width} px)"
        assert await person.page.locator(".badge.unread").count() == 1
        form = person.page.locator("form[action^='/workspace/notifications/settings']")
        await form.locator("[value='digest']").evaluate("e => { e.value = 'weekly'; e.checked = true; }")
        await form.locator("button[type=submit]").click()
        await person.check("settings refused")
        assert await person.page.locator("fieldset[aria-invalid='true']").count() == 1
        await person.page.locator("form[action='/workspace/notifications/read'] button[type=submit]").click()
        await person.check("all read")
        assert await person.page.locator(".badge.unread").count() == 0


async def test_transfers_the_receiving_office_and_caseloads_pass_axe_at_phone_width(stack, browser):
    """A case offered to PT: its office reads it (drafting nothing before it takes it), then accepts the
    offer on the Transfers page; a supervisor's caseloads and a move of cases refused beside its field (in Spanish,
    at phone width); axe on each page, nothing scrolls sideways."""
    j, stays = Journey(stack, caseworker="cw-es-browser-transfer"), Journey(stack, caseworker="cw-es-browser-transfer")
    await j.open()
    await stays.open()
    stack.token("caseworker", "cw-pt-browser-1", countries=["PT"])
    r = await stack.http.post(
        f"/v1/cases/{j.case_id}/transfers", json={"to_country": "PT", "reason": "Vive en Oporto"}, headers=j.cw
    )
    assert r.status_code == 201, r.text
    transfer_id = r.json()["transfer_id"]
    async with visit(browser, stack.base_url, "transfers-es-phone", viewport=PHONE, language="es") as person:
        await person.sign_in("caseworker", "cw-pt-browser-1", countries="PT")
        await person.goto(f"/workspace/cases/{j.case_id}")
        assert await person.page.locator(f"form[action='/workspace/cases/{j.case_id}/plan-draft']").count() == 0
        await person.check("offered case")
        await person.page.get_by_role("navigation").get_by_role("link", name="Transferencias").click()
        await person.check("transfers")
        width = await person.page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"the Transfers page scrolls sideways at phone width ({width} px)"
        await person.page.locator(f"form[action='/workspace/transfers/{transfer_id}/accept'] button").click()
        await person.check("accepted")
    taken = await j.get(headers=stack.auth("caseworker", "cw-pt-browser-1", countries=["PT"]))
    assert taken["owner"] == {"country": "PT", "caseworker": "cw-pt-browser-1"}
    async with visit(browser, stack.base_url, "caseloads-es-phone", viewport=PHONE, language="es") as person:
        await person.sign_in("supervisor", "sup-browser-3", countries="ES")
        await person.goto("/workspace/dashboard#caseloads")
        form = person.page.locator("form[action^='/workspace/dashboard/reassignments']")
        await form.locator("[name='from_caseworker']").fill("cw-es-browser-transfer")
        await form.locator("[name='to_caseworker']").fill("nadie-browser")
        await form.locator("button[type=submit]").click()
        await person.check("move refused")
        assert await person.page.locator("#move-to_caseworker[aria-invalid='true']").count() == 1
        width = await person.page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"the dashboard scrolls sideways at phone width ({width} px)"


async def test_the_sustainability_survey_is_answered_on_a_phone_in_spanish(stack, browser):
    """Issue 17: the monitoring step's 15 questions at 360 px, each answered by tapping its box (the
    radio button's label covers it), one left "not applicable"; axe passes on the form and on the case
    page's scores over time, and neither scrolls sideways."""
    j = await planned(stack)
    async with visit(browser, stack.base_url, "survey-es-phone", viewport=PHONE, language="es") as person:
        await person.sign_in("caseworker", "cw-ro-1", countries="RO")
        await person.goto(f"/workspace/cases/{j.case_id}/steps/monitoring")
        width = await person.page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"the survey scrolls sideways at phone width ({width} px)"
        form = person.page.locator("form[action$='/steps/monitoring']")
        await form.locator("[name='visited_on']").fill(day(110))
        radios = form.locator("fieldset.radios")
        assert await radios.count() == 15
        for i in range(14):  # the last question stays "not applicable"
            answer = radios.nth(i).locator(".radio-row .radio").nth(3)  # the box of answer 4
            await answer.click(position={"x": 4, "y": 4})  # its corner, away from the button itself
            assert await answer.locator("input").is_checked()
        assert await radios.nth(14).locator("input[value='']").is_checked()
        await person.check("survey filled in")
        await form.locator("button[type=submit]").click()
        await person.page.wait_for_url(re.compile(r"/workspace/cases/[0-9a-f-]{36}\?done=monitoring"))
        await person.check("scores over time")
        scores = person.page.locator("#scores")
        assert "Puntuaciones a lo largo del tiempo" in await scores.inner_text()
        assert await scores.locator("svg polyline").count() == 4
        width = await person.page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"the case page scrolls sideways at phone width ({width} px)"
    (visit_,) = (await j.get())["facts"]["monitoring_visits"]
    assert visit_["survey"]["physical_safety"] is None and visit_["survey"]["food_security"] == 4
    assert visit_["scores"] == {"economic": 0.75, "social": 0.75, "psychosocial": 0.75}
