"""The caseworker's pages against the real stack: My cases, Open a case, the case page, the step
forms and the task forms, each checked against what the API (``/v1``) shows afterwards."""

from __future__ import annotations

import html
import re
import uuid

import httpx
from sqlmodel import Session, col, func, select

from api import languages
from api.cases import cases_query
from api.web.caseworker import due_first
from reintegration.db import AuditRecord
from reintegration.tokens import Claims
from tests.journey import Journey, day
from tests.workspace import Person, csrf_token
from workflows.model import Role

_HIDDEN = r'name="{}" value="([^"]*)"'


def hidden(html: str, name: str) -> str:
    found = re.search(_HIDDEN.format(re.escape(name)), html)
    assert found, f"no hidden {name} in the page"
    return found.group(1)


def form_of(html: str, action: str) -> str:
    """The HTML of the form posting to ``action``."""
    start = html.index(f'action="{action}"')
    return html[start : html.index("</form>", start)]


async def send_form(person: Person, page: str, action: str, data: dict[str, str]) -> httpx.Response:
    """Fill in the form of ``page`` that posts to ``action`` (its key, version and CSRF token kept)."""
    html = await person.page(page)
    form = form_of(html, action)
    fields = {"csrf_token": csrf_token(html), "idempotency_key": hidden(form, "idempotency_key")}
    if 'name="version"' in form:
        fields["version"] = hidden(form, "version")
    return await person.http.post(action, data={**fields, **data})


async def caseworker(stack, sub: str = "cw-es-1", countries: str = "ES") -> Person:
    return await Person(stack).sign_in("caseworker", sub, countries=countries)


def intake(marker: str, **extra: str) -> dict[str, str]:
    return {
        "person.first_name": marker,
        "person.second_name": f"{marker}-second",
        "person.birthdate": "1998-03-14",
        "person.gender": "Feminine",
        "person.citizenship": "RO",
        "person.mobile_phone": "+34 600 111 222",
        "identification.identified_on": day(0),
        "identification.country": "ES",
        "identification.place": f"{marker}-place",
        "identification.referred_by": "LawEnforcement",
        "identification.exploitation_types": "ForcedLabour",
        "origin_country": "RO",
        "consent.assistance": "1",
        "consent.data_sharing": "1",
        "consent.given_on": day(0),
        **extra,
    }


def case_id_of(response: httpx.Response) -> str:
    assert response.status_code == 303, response.text[:2000]
    found = re.fullmatch(r"/workspace/cases/([^/?]+)\?done=.+", response.headers["location"])
    assert found, response.headers["location"]
    return found.group(1)


async def test_a_caseworker_opens_a_case_through_the_form_and_sees_it_in_my_cases(stack):
    sub = f"cw-open-{uuid.uuid4().hex[:6]}"
    person = await caseworker(stack, sub)
    marker = f"Marker{uuid.uuid4().hex[:8]}"
    try:
        form = await person.page("/workspace/cases/new")
        for name in ("person.first_name", "identification.exploitation_types", "consent.given_on", "origin_country"):
            assert f'name="{name}"' in form
        assert 'type="date"' in form and 'value="SexualExploitation"' in form and "Sexual exploitation" in form
        r = await send_form(person, "/workspace/cases/new", "/workspace/cases/new", intake(marker))
        case_id = case_id_of(r)
        assert marker not in r.headers["location"]

        page = await person.page(r.headers["location"])
        assert "The case is open." in page and marker not in page
        case = (await stack.http.get(f"/v1/cases/{case_id}", headers=stack.auth("caseworker", sub))).json()
        assert case["owner"] == {"country": "ES", "caseworker": sub}
        assert case["consent"]["assistance"] is True and case["stage"] == "protection"
        assert case["reference"] in page and 'aria-current="step"' in page

        listed = await stack.http.get(f"/v1/cases?caseworker={sub}", headers=stack.auth("caseworker", sub))
        assert [c["case_id"] for c in listed.json()["items"]] == [case_id]  # the API's list, same query
        mine = await person.page("/workspace/cases")
        assert f'href="/workspace/cases/{case_id}"' in mine and case["reference"] in mine
        assert 'id="filter-mine" name="mine" value="1" checked' in mine  # "only mine" is on by default
        others = await caseworker(stack, "cw-es-other")
        try:
            theirs = await others.page("/workspace/cases")
            assert case["reference"] not in theirs  # only their own by default
            # Everyone's in their countries when asked (by owner: the shared stack holds many cases).
            everyone = await others.page(f"/workspace/cases?filtered=1&stage=protection&caseworker={sub}")
            assert case["reference"] in everyone  # everyone's in their countries when asked
            assert case["reference"] not in await others.page("/workspace/cases?filtered=1&stage=pathway")
        finally:
            await others.aclose()
    finally:
        await person.aclose()


async def test_step_forms_take_a_case_to_the_return_stage(stack):
    journey = Journey(stack)
    await journey.open(consent=False)
    case_id = journey.case_id
    person = await caseworker(stack)
    try:
        page = await person.page(f"/workspace/cases/{case_id}")
        assert f'href="/workspace/cases/{case_id}/steps/consent"' in page
        steps = [
            ("consent", {"assistance": "1", "data_sharing": "1", "given_on": day(0)}),
            ("risk-assessment", {"level": "low", "threats": "none found\n\n", "assessed_on": day(1)}),
            ("security-guarantee", {"confirmed_on": day(2), "notes": ""}),
            ("pathway", {"pathway": "voluntary_return", "decided_on": day(3)}),
        ]
        for step, data in steps:
            path = f"/workspace/cases/{case_id}/steps/{step}"
            r = await send_form(person, path, path, data)
            assert r.status_code == 303, (step, r.text[:3000])
            assert r.headers["location"] == f"/workspace/cases/{case_id}?done={step}"
        case = await journey.get()
        assert case["stage"] == "return" and case["pathway"] == "voluntary_return"
        assert case["facts"]["risk_level"] == "low"
        assert case["consent"] == {"assistance": True, "data_sharing": True, "given_on": day(0)}
        page = await person.page(f"/workspace/cases/{case_id}?done=pathway")
        assert 'aria-current="step">Voluntary return' in page and "Recorded: Pathway." in page
    finally:
        await person.aclose()


async def test_a_step_sent_in_the_wrong_state_is_explained_and_changes_nothing(stack):
    journey = Journey(stack)
    await journey.open()
    before = await journey.get()
    person = await caseworker(stack)
    try:
        path = f"/workspace/cases/{journey.case_id}/steps/departure"
        page = await person.page(path)
        assert "This step is not possible now." in page and 'action="' + path not in page  # no form to send
        r = await person.submit(
            path,
            {"departed_on": day(1), "version": str(before["version"]), "idempotency_key": str(uuid.uuid4())},
            page=f"/workspace/cases/{journey.case_id}",
        )
        assert r.status_code == 409
        assert "This step is not possible now." in r.text and "Nothing was changed" in r.text
        assert f'href="/workspace/cases/{journey.case_id}/steps/risk-assessment"' in r.text
        assert (await journey.get())["version"] == before["version"]
    finally:
        await person.aclose()


async def test_a_stale_form_is_explained_and_can_be_sent_again(stack):
    journey = Journey(stack)
    await journey.open()
    person = await caseworker(stack)
    try:
        path = f"/workspace/cases/{journey.case_id}/steps/risk-assessment"
        html = await person.page(path)
        form = form_of(html, path)
        await journey.assign("shelter", "shelter-es")  # someone else changes the case meanwhile
        data = {"level": "medium", "threats": "", "assessed_on": day(1)}
        r = await person.http.post(
            path,
            data={
                **data,
                "csrf_token": csrf_token(html),
                "idempotency_key": hidden(form, "idempotency_key"),
                "version": hidden(form, "version"),
            },
        )
        assert r.status_code == 412
        assert "Someone changed this case since you opened the form" in r.text and "The case now" in r.text
        case = await journey.get()
        assert case["facts"]["risk_level"] is None
        again = form_of(r.text, path)
        assert hidden(again, "version") == str(case["version"])  # the form now carries the case as it is
        assert 'value="medium" selected' in again  # and what was typed
        r = await person.http.post(
            path,
            data={
                **data,
                "csrf_token": csrf_token(r.text),
                "idempotency_key": hidden(again, "idempotency_key"),
                "version": hidden(again, "version"),
            },
        )
        assert r.status_code == 303, r.text[:2000]
        assert (await journey.get())["facts"]["risk_level"] == "medium"
    finally:
        await person.aclose()


async def test_a_form_error_shows_beside_its_field_and_changes_nothing(stack):
    journey = Journey(stack)
    await journey.open()
    before = await journey.get()
    person = await caseworker(stack)
    try:
        path = f"/workspace/cases/{journey.case_id}/steps/risk-assessment"
        r = await send_form(person, path, path, {"level": "", "assessed_on": "not a date"})
        assert r.status_code == 422
        assert re.search(r'<select id="level" name="level" aria-describedby="level-error" aria-invalid="true"', r.text)
        assert re.search(r'id="level-error">.*?Fill this in\.</p>', r.text)
        assert re.search(r'id="assessed-on-error">.*?Give a date\.</p>', r.text)
        assert (await journey.get())["version"] == before["version"]

        r = await send_form(
            person, "/workspace/cases/new", "/workspace/cases/new", intake("", **{"origin_country": "Romania"})
        )
        assert r.status_code == 422
        assert re.search(r'id="person-first-name-error">.*?Fill this in\.</p>', r.text)
        assert re.search(r'id="origin-country-error">.*?Give a two-letter country code', r.text)
        assert 'value="Romania"' in r.text  # what was typed stays
    finally:
        await person.aclose()


async def test_assign_a_task_then_cancel_it_and_a_form_sent_twice_acts_once(stack):
    journey = Journey(stack)
    await journey.open()
    person = await caseworker(stack)
    case_page = f"/workspace/cases/{journey.case_id}"
    try:
        html = await person.page(case_page)
        form = form_of(html, f"{case_page}/tasks")
        assert '<optgroup label="Shelter">' in form and 'value="shelter-es"' in form
        data = {
            "service": "shelter",
            "agency_id": "shelter-es",
            "due_date": day(7),
            "notes": "Needs a bed tonight.",
            "csrf_token": csrf_token(html),
            "idempotency_key": hidden(form, "idempotency_key"),
        }
        first = await person.http.post(f"{case_page}/tasks", data=data)
        second = await person.http.post(f"{case_page}/tasks", data=data)  # a double click
        assert (first.status_code, second.status_code) == (303, 303), first.text[:2000]
        case = await journey.get()
        assert [(t["service"], t["agency_id"]) for t in case["open_tasks"]] == [("shelter", "shelter-es")]
        task_id = case["open_tasks"][0]["task_id"]

        page = await person.page(case_page)
        assert f'id="task-{task_id}"' in page and "Needs a bed tonight." in page
        cancel = f"{case_page}/tasks/{task_id}/cancel"
        r = await send_form(person, case_page, cancel, {"reason": ""})
        assert r.status_code == 422 and re.search(rf'id="cancel-{task_id}-reason-error">.*?Fill this in', r.text)
        r = await send_form(person, case_page, cancel, {"reason": "No longer needed."})
        assert r.status_code == 303 and r.headers["location"] == f"{case_page}?done=cancel"
        case = await journey.get()
        assert case["open_tasks"] == []
        assert "The task was cancelled." in await person.page(r.headers["location"])
    finally:
        await person.aclose()


async def test_an_agency_that_cannot_take_the_task_is_explained_beside_the_agency(stack):
    journey = Journey(stack)
    await journey.open()
    person = await caseworker(stack)
    case_page = f"/workspace/cases/{journey.case_id}"
    try:
        r = await send_form(person, case_page, f"{case_page}/tasks", {"service": "medical", "agency_id": "shelter-es"})
        assert r.status_code == 422
        assert re.search(r'id="assign-agency-id-error">.*?shelter-es does not offer medical', r.text)
        assert (await journey.get())["open_tasks"] == []
    finally:
        await person.aclose()


async def test_other_countries_and_roles_get_the_apis_refusals(stack):
    journey = Journey(stack)
    await journey.open()
    case_page = f"/workspace/cases/{journey.case_id}"
    other = await caseworker(stack, "cw-fr-1", countries="FR")
    partner = await Person(stack).sign_in("partner", "partner-shelter", agency="shelter-es")
    admin = await Person(stack).sign_in("admin", "admin-1", countries="*")
    try:
        assert "There is no such case" in await other.page(case_page, expect=404)
        await other.page(f"{case_page}/steps/risk-assessment", expect=404)
        r = await other.submit(
            f"{case_page}/steps/risk-assessment", {"level": "low", "assessed_on": day(1)}, page="/workspace/cases"
        )
        assert r.status_code == 404
        assert journey.case["reference"] not in await other.page("/workspace/cases?filtered=1")
        for person in (partner, admin):
            await person.page(case_page, expect=403)
            await person.page("/workspace/cases", expect=403)
        assert (await journey.get())["version"] == journey.case["version"]
    finally:
        for person in (other, partner, admin):
            await person.aclose()


async def test_the_persons_details_are_shown_only_on_request_and_audited(stack):
    sub = f"cw-person-{uuid.uuid4().hex[:6]}"
    person = await caseworker(stack, sub)
    marker = f"Marker{uuid.uuid4().hex[:8]}"
    try:
        r = await send_form(person, "/workspace/cases/new", "/workspace/cases/new", intake(marker))
        case_id = case_id_of(r)

        def reads() -> int:
            with Session(stack.engine) as session:
                return session.exec(
                    select(func.count())
                    .select_from(AuditRecord)
                    .where(col(AuditRecord.case_id) == case_id, col(AuditRecord.action) == "person.read")
                ).one()

        page = await person.page(f"/workspace/cases/{case_id}")
        assert marker not in page and "+34 600" not in page and "Show the person" in page
        assert reads() == 0
        # A link on another site cannot make the browser read them (nor write a read in this name).
        r = await person.http.get(
            f"/workspace/cases/{case_id}?include=person", headers={"Sec-Fetch-Site": "cross-site"}
        )
        assert r.status_code == 200 and marker not in r.text and reads() == 0
        shown = await person.page(f"/workspace/cases/{case_id}?include=person")
        assert marker in shown and f"{marker}-second" in shown and f"{marker}-place" in shown
        assert "+34 600 111 222" in shown
        assert reads() == 1
        with Session(stack.engine) as session:
            row = session.exec(
                select(AuditRecord).where(col(AuditRecord.case_id) == case_id, col(AuditRecord.action) == "person.read")
            ).one()
        assert (row.actor_sub, row.actor_role) == (sub, "caseworker")
        for path in ("/workspace/cases", f"/workspace/cases/{case_id}/steps/risk-assessment"):
            assert marker not in await person.page(path)
    finally:
        await person.aclose()


async def test_withdrawing_consent_is_a_step_of_its_own_that_closes_the_case(stack):
    journey = Journey(stack)
    await journey.open()
    await journey.assign("shelter", "shelter-es")
    person = await caseworker(stack)
    case_page = f"/workspace/cases/{journey.case_id}"
    path = f"{case_page}/steps/withdraw-consent"
    try:
        page = await person.page(case_page)
        assert f'class="button danger" href="{path}"' in page
        assert f'class="button primary" href="{path}"' not in page  # not among the other steps' buttons
        form = await person.page(path)
        assert "Withdrawing consent closes the case." in form and "Withdraw consent and close the case" in form
        r = await send_form(person, path, path, {"withdrawn_on": day(1)})
        assert r.status_code == 303, r.text[:2000]
        case = await journey.get()
        assert (case["status"], case["closure_reason"], case["open_tasks"]) == ("closed", "withdrew", [])
        page = await person.page(case_page)
        assert '<span class="badge closed">Closed</span>' in page and "Assign a task" not in page
    finally:
        await person.aclose()


async def test_a_supervisor_reassigns_the_case_and_only_a_supervisor_sees_closure_decisions(stack):
    journey = Journey(stack)
    await journey.open()
    case_page = f"/workspace/cases/{journey.case_id}"
    supervisor = await Person(stack).sign_in("supervisor", "sup-web-1", countries="ES,PT")
    person = await caseworker(stack)
    stack.token("caseworker", "cw-es-2", countries=["ES"])  # known to the directory
    try:
        page = await supervisor.page(case_page)
        assert f'action="{case_page}/reassign"' in page
        assert f'action="{case_page}/reassign"' not in await person.page(case_page)
        r = await send_form(supervisor, case_page, f"{case_page}/reassign", {"caseworker": "not a user id"})
        assert r.status_code == 422 and re.search(r'id="owner-caseworker-error">.*?no spaces', r.text)
        r = await send_form(
            supervisor, case_page, f"{case_page}/reassign", {"caseworker": "cw-es-2", "reason": "leave"}
        )
        assert r.status_code == 303 and r.headers["location"] == f"{case_page}?done=case-reassigned"
        assert (await journey.get())["owner"]["caseworker"] == "cw-es-2"
        r = await person.submit(f"{case_page}/reassign", {"caseworker": "cw-es-1"}, page=case_page)
        assert r.status_code == 403 and (await journey.get())["owner"]["caseworker"] == "cw-es-2"
        await person.page(f"{case_page}/steps/approve-closure", expect=403)  # a supervisor's step
        assert "This step is not possible now." in await supervisor.page(f"{case_page}/steps/approve-closure")
        cases = await supervisor.page("/workspace/cases")
        assert 'name="mine" value="1" checked' not in cases  # a supervisor sees the region's cases
        region = await supervisor.page("/workspace/cases?filtered=1&caseworker=cw-es-2&stage=protection")
        assert journey.case["reference"] in region
    finally:
        await supervisor.aclose()
        await person.aclose()


def check_page(html: str) -> None:
    """What every case page holds to: nothing inline for the CSP to refuse, a label for every
    field, unique ids, and every description an input points to present."""
    assert "<script" not in html and " style=" not in html and not re.search(r"\son[a-z]+=", html)
    ids = re.findall(r'\sid="([^"]+)"', html)
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    for tag in re.finditer(r"<(input|select|textarea)\b([^>]*)>", html):
        attributes = tag.group(2)
        if 'type="hidden"' in attributes:
            continue
        found = re.search(r'\sid="([^"]+)"', attributes)
        assert found and f'for="{found.group(1)}"' in html, tag.group(0)
    for described in re.findall(r'aria-describedby="([^"]+)"', html):
        for target in described.split():
            assert f'id="{target}"' in html, target
    headings = [int(level) for level in re.findall(r"<h([1-6])\b", html)]
    assert headings[0] == 1 and all(b <= a + 1 for a, b in zip(headings, headings[1:], strict=False)), headings


async def test_every_case_page_labels_its_fields_and_holds_nothing_inline(stack):
    journey = Journey(stack)
    await journey.open()
    await journey.step("risk-assessment", {"level": "high", "threats": ["x"], "assessed_on": day(1)})
    task = await journey.assign("shelter", "shelter-es")
    await journey.task_action(task["task_id"], "shelter-es", "decline", {"reason": "full"})
    person = await caseworker(stack)
    case_page = f"/workspace/cases/{journey.case_id}"
    try:
        pages = ["/workspace/cases", "/workspace/cases/new", case_page, f"{case_page}?include=person"]
        pages += [f"{case_page}/steps/{step}" for step in ("safety-plan", "withdraw-consent", "departure")]
        for path in pages:
            check_page(await person.page(path))
        r = await send_form(person, f"{case_page}/steps/safety-plan", f"{case_page}/steps/safety-plan", {})
        assert r.status_code == 422
        check_page(r.text)
        assert re.search(r'<a href="#agreed-on">Agreed on: Fill this in\.</a>', r.text)  # the list of errors
        assert re.search(r'id="measures-error">.*?Give at least one\.', r.text)
        before = (await journey.get())["version"]
        r = await send_form(
            person,
            f"{case_page}/steps/safety-plan",
            f"{case_page}/steps/safety-plan",
            {"measures.0.measure": "x", "more": "1"},
        )
        assert r.status_code == 200 and 'id="measures-5"' in r.text and 'value="x"' in r.text  # longer, kept
        check_page(r.text)
        assert (await journey.get())["version"] == before  # nothing was sent
    finally:
        await person.aclose()


async def test_my_cases_pages_by_what_is_due_next_then_the_cases_with_nothing_due(stack):
    journey = Journey(stack)
    for _ in range(3):
        await journey.open()
    await journey.step("withdraw-consent", {"withdrawn_on": day(0)})  # a closed case: nothing due
    claims = Claims(sub="cw-es-1", role=Role.caseworker, countries=["ES"])
    with Session(stack.engine) as session:
        query = cases_query(claims)
        everything = session.exec(query).all()
        seen, cursor = [], None
        while True:
            rows, cursor = due_first(session, query, limit=2, cursor=cursor)
            seen += rows
            if cursor is None:
                break
    assert sorted(c.case_id for c in seen) == sorted(c.case_id for c in everything)  # each once
    dated = [c for c in seen if c.next_due_at is not None]
    assert seen[: len(dated)] == dated and [c.next_due_at for c in dated] == sorted(c.next_due_at for c in dated)
    assert journey.case_id in {c.case_id for c in seen[len(dated) :]}


async def test_a_supervisor_approves_a_closure_through_its_step_form(stack):
    journey = Journey(stack)
    await journey.open()
    await journey.to_reintegration_by_return()
    await journey.step(
        "reintegration-plan",
        {"agreed_on": day(20), "services": [{"service": "medical", "agency_id": "reintegration-partner-ro"}]},
    )
    for task in list(journey.case["open_tasks"]):
        await journey.task_action(task["task_id"], task["agency_id"], "accept")
        await journey.task_action(task["task_id"], task["agency_id"], "complete", {"outcome": "done"})
    for offset in (110, 200, 380):
        await journey.step(
            "monitoring", {"visited_on": day(offset), "economic": 0.7, "social": 0.8, "psychosocial": 0.9}
        )
    await journey.step("closure", {"reason": "completed"})
    case_page = f"/workspace/cases/{journey.case_id}"
    origin = await caseworker(stack, "cw-ro-1", countries="RO")
    supervisor = await Person(stack).sign_in("supervisor", "sup-ro", countries="RO")
    try:
        assert f"{case_page}/steps/approve-closure" not in await origin.page(case_page)  # not a caseworker's
        page = await supervisor.page(case_page)
        assert (
            f'href="{case_page}/steps/approve-closure"' in page and f'href="{case_page}/steps/reject-closure"' in page
        )
        path = f"{case_page}/steps/approve-closure"
        r = await send_form(supervisor, path, path, {"notes": "Plan completed and sustainable."})
        assert r.status_code == 303, r.text[:2000]
        case = await journey.get()
        assert (case["status"], case["closure_reason"]) == ("closed", "completed")
    finally:
        await origin.aclose()
        await supervisor.aclose()


async def test_a_refusal_is_explained_in_the_persons_language(stack):
    journey = Journey(stack)
    await journey.open()
    person = await Person(stack, language="es").sign_in("caseworker", "cw-es-1", countries="ES")
    try:
        path = f"/workspace/cases/{journey.case_id}/steps/security-guarantee"
        r = await person.submit(
            path,
            {
                "confirmed_on": day(1),
                "version": str((await journey.get())["version"]),
                "idempotency_key": str(uuid.uuid4()),
            },
            page=f"/workspace/cases/{journey.case_id}",
        )
        assert r.status_code == 409
        english = "security-guarantee is not allowed now: the risk assessment comes first"
        spanish = languages.detail("es", english)
        assert spanish != english and html.escape(spanish, quote=False) in r.text and english not in r.text
    finally:
        await person.aclose()
