"""Across borders in the workspace, against the real stack: the receiving caseworker's read-only case
page and the reintegration plan she drafts; a case offered to another office from its page (and a
refusal beside its field); the Transfers page, where the offer is accepted or refused; the sending
office's read-only page after; the dashboard's caseloads and moving one caseworker's cases to
another. Each checked against what ``/v1`` shows afterwards."""

from __future__ import annotations

import asyncio
import html as markup
import re
import time
import uuid

from tests.conftest import Stack
from tests.journey import Journey, day
from tests.test_workspace_partner import form_of, send
from tests.workspace import Person

TRANSFERS = "/workspace/transfers"
DASHBOARD = "/workspace/dashboard"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def section(html: str, title_id: str) -> str:
    """The HTML of the page's section headed by ``title_id``."""
    start = html.index(f'id="{title_id}"')
    return html[start : html.index("</section>", start)]


def error_of(html: str, field_id: str) -> str:
    """The words of the error shown beside the field ``field_id`` ("" if none)."""
    found = re.search(
        rf'<p class="field-error" id="{re.escape(field_id)}-error">(?:<span[^>]*>[^<]*</span>)?([^<]*)<', html
    )
    return markup.unescape(found.group(1)) if found else ""


def assert_read_only(html: str, case_id: str) -> None:
    """A page that reads the case: no step, task, note, document, link or transfer form, nor those lists."""
    for action in ("tasks", "notes", "documents", "links", "transfers", "reassign", "person"):
        assert f'action="/workspace/cases/{case_id}/{action}' not in html, action
    assert f'href="/workspace/cases/{case_id}/steps/' not in html
    for title in ("notes-title", "documents-title", "links-title", "transfer-title"):
        assert f'id="{title}"' not in html, title
    assert 'id="timeline-title"' in html


async def incoming(stack: Stack, headers: dict[str, str], case_id: str) -> dict:
    r = await stack.http.get("/v1/transfers", params={"status": "pending"}, headers=headers)
    [offer] = [t for t in r.json()["items"] if t["case_id"] == case_id]
    return offer


async def test_the_receiving_caseworker_reads_the_case_and_drafts_the_plan(stack):
    receiving = unique("cw-ro-wt")
    stack.token("caseworker", receiving, countries=["RO"])  # known to the directory, as the travel plan needs
    j = Journey(stack, caseworker=unique("cw-es-wt"))
    await j.to_return(assessment="safe", documents=True)
    await j.step(
        "travel-plan", {"travel_date": day(10), "route": "MAD-OTP", "escort": True, "receiving_caseworker": receiving}
    )
    page = f"/workspace/cases/{j.case_id}"
    person = await Person(stack).sign_in("caseworker", receiving, countries="RO")
    owner = await Person(stack).sign_in("caseworker", j.case["owner"]["caseworker"], countries="ES")
    try:
        html = await person.page(page)
        assert "You are the receiving office: you can read this case and draft the reintegration plan" in html
        assert j.case["reference"] in html and 'id="timeline-title"' in html
        assert_read_only(html, j.case_id)
        draft = section(html, "drafting-title")
        assert 'name="services" value="job-orientation"' in draft and 'name="services" value="shelter"' not in draft
        await person.page(f"{page}/steps/departure", expect=404)  # the managing office's steps only

        action = f"{page}/plan-draft"
        r = await send(person, page, action, {"services": "nonsense"})
        assert r.status_code == 422 and error_of(r.text, "draft-services") == "Choose one of the options."
        assert (await stack.http.get(f"/v1/cases/{j.case_id}/plan-draft", headers=j.cw)).status_code == 404

        r = await person.http.post(
            action,
            data={
                **form_of(html, action),
                "services": ["medical", "job-orientation"],
                "notes": "Bakery training first",
            },
        )
        assert (r.status_code, r.headers["location"]) == (303, f"{page}?done=plan-drafted")
        saved = (await stack.http.get(f"/v1/cases/{j.case_id}/plan-draft", headers=j.cw)).json()
        assert [s["service"] for s in saved["services"]] == ["medical", "job-orientation"]
        assert (saved["notes"], saved["updated_by"], saved["version"]) == ("Bakery training first", receiving, 1)
        html = await person.page(r.headers["location"])
        assert "The draft of the reintegration plan was saved." in html
        draft = section(html, "drafting-title")
        assert "Job orientation" in draft and "Bakery training first" in draft
        assert 'value="job-orientation" checked' in draft and 'value="housing" checked' not in draft

        # The managing office reads the draft beside its steps, and keeps its own forms.
        html = await owner.page(page)
        steps = section(html, "steps-title")
        assert "The reintegration plan drafted before arrival" in steps and "Bakery training first" in steps
        assert f'action="{action}"' not in html and "You are the receiving office" not in html
        assert f'action="{page}/notes"' in html and f'action="{page}/transfers"' in html
    finally:
        await person.aclose()
        await owner.aclose()


async def test_a_case_is_offered_accepted_and_read_by_the_office_that_had_it(stack):
    sending, taking = unique("cw-es-wt"), unique("cw-pt-wt")
    stack.token("caseworker", taking, countries=["PT"])
    j = Journey(stack, caseworker=sending)
    await j.open(consent=False)
    await j.step("consent", {"assistance": True, "data_sharing": False, "given_on": day(0)})
    page, action = f"/workspace/cases/{j.case_id}", f"/workspace/cases/{j.case_id}/transfers"
    es = await Person(stack).sign_in("caseworker", sending, countries="ES")
    pt = await Person(stack).sign_in("caseworker", taking, countries="PT")
    try:
        # Refused, beside the field it is about; nothing offered.
        for data, field, words in (
            ({"to_country": "es", "reason": "x"}, "transfer-to-country", "the case is already managed in ES"),
            (
                {"to_country": "PT", "to_caseworker": "nobody-wt", "reason": "x"},
                "transfer-to-caseworker",
                "unknown caseworker: nobody-wt",
            ),
            ({"to_country": "PT", "reason": ""}, "transfer-reason", "Fill this in."),
            ({"to_country": "Portugal", "reason": "x"}, "transfer-to-country", "Give a two-letter country code"),
        ):
            r = await send(es, page, action, data)
            assert r.status_code == 422, (data, r.text[:2000])
            assert error_of(r.text, field).startswith(words), (data, error_of(r.text, field))
            assert "<details open>" in section(r.text, "transfer-title")
        assert (await stack.http.get(f"/v1/cases/{j.case_id}", headers=j.cw)).json()["owner"]["country"] == "ES"
        await pt.page(page, expect=404)  # nothing offered: PT reads nothing

        r = await send(es, page, action, {"to_country": "PT", "to_caseworker": taking, "reason": "Moved to Porto"})
        assert (r.status_code, r.headers["location"]) == (303, f"{page}?done=transfer-offered")
        html = await es.page(r.headers["location"])
        offered = section(html, "transfer-title")
        assert "The case is offered to the office of PT" in offered and "Moved to Porto" in offered
        assert f'action="{action}"' not in html  # one pending at a time: its state, not the form
        assert "Moved to Porto" in (await es.page(TRANSFERS)).split('id="outgoing-title"')[1]

        # The receiving office reads the case, and answers on the Transfers page.
        html = await pt.page(page)
        assert "offers your office this case" in html and 'href="/workspace/transfers"' in html
        assert_read_only(html, j.case_id)
        assert "did not consent to sharing them" in section(html, "person-title")
        listed = await pt.page(TRANSFERS)
        assert 'href="/workspace/transfers" aria-current="page"' in listed
        offer = await incoming(stack, stack.auth("caseworker", taking, countries=["PT"]), j.case_id)
        card = listed.split(f'id="transfer-{offer["transfer_id"]}"')[1].split("</li>")[0]
        assert "Moved to Porto" in card and "Accept: I take the case" in card
        accept = f"{TRANSFERS}/{offer['transfer_id']}/accept"
        r = await pt.http.post(accept, data=form_of(listed, accept))
        assert (r.status_code, r.headers["location"]) == (303, f"{page}?done=transfer-accepted")
        case = (await stack.http.get(f"/v1/cases/{j.case_id}", headers=stack.auth("supervisor", "sup-wt"))).json()
        assert case["owner"] == {"country": "PT", "caseworker": taking}
        html = await pt.page(r.headers["location"])
        assert "the case is now managed by your office" in html and f'action="{page}/notes"' in html

        # The same acceptance again from a page out of date: hers went through, she is shown the case.
        r = await pt.http.post(accept, data={**form_of(listed, accept), "idempotency_key": str(uuid.uuid4())})
        assert (r.status_code, r.headers["location"]) == (303, f"{page}?done=transfer-accepted")
        assert (await stack.http.get(f"/v1/cases/{j.case_id}", headers=stack.auth("supervisor", "sup-wt"))).json()[
            "owner"
        ] == {"country": "PT", "caseworker": taking}

        # The office that had it reads it: no forms, and not the person's details (no consent to share).
        html = await es.page(page)
        assert "This case is now managed by the office of PT: you can read it." in html
        assert_read_only(html, j.case_id)
        assert "Transferred" in section(html, "timeline-title")
        html = await es.page(f"{page}?include=person")
        assert "did not consent to sharing them" in html and "Maria" not in html
    finally:
        await es.aclose()
        await pt.aclose()


async def test_an_offer_is_refused_with_a_reason_on_the_transfers_page(stack):
    j = Journey(stack, caseworker=unique("cw-es-wt"))
    await j.open()
    r = await stack.http.post(
        f"/v1/cases/{j.case_id}/transfers", json={"to_country": "FR", "reason": "Family in Lyon"}, headers=j.cw
    )
    assert r.status_code == 201, r.text
    transfer_id = r.json()["transfer_id"]
    sup = await Person(stack).sign_in("supervisor", unique("sup-fr-wt"), countries="FR")
    partner = await Person(stack).sign_in("partner", unique("partner-wt"), agency="clinic-es")
    try:
        await partner.page(TRANSFERS, expect=403)
        html = await sup.page(TRANSFERS)
        card = html.split(f'id="transfer-{transfer_id}"')[1].split("</li>")[0]
        assert "Family in Lyon" in card and f'id="accept-{transfer_id}-caseworker"' in card

        # A supervisor names who takes the case: without one, refused beside the field.
        accept = f"{TRANSFERS}/{transfer_id}/accept"
        r = await sup.http.post(accept, data={**form_of(html, accept), "caseworker": ""})
        assert r.status_code == 422 and "name the caseworker who takes the case" in error_of(
            r.text, f"accept-{transfer_id}-caseworker"
        )
        refuse = f"{TRANSFERS}/{transfer_id}/refuse"
        r = await sup.http.post(refuse, data={**form_of(html, refuse), "reason": ""})
        assert r.status_code == 422 and error_of(r.text, f"refuse-{transfer_id}-reason") == "Fill this in."
        assert (await stack.http.get(f"/v1/transfers/{transfer_id}", headers=j.cw)).json()["status"] == "pending"

        r = await sup.http.post(refuse, data={**form_of(r.text, refuse), "reason": "No partner in Lyon yet"})
        assert (r.status_code, r.headers["location"]) == (303, f"{TRANSFERS}?done=refused")
        assert "You refused the offer" in await sup.page(r.headers["location"])
        answer = (await stack.http.get(f"/v1/transfers/{transfer_id}", headers=j.cw)).json()
        assert (answer["status"], answer["refusal"]) == ("refused", "No partner in Lyon yet")
        assert (await j.get())["owner"]["country"] == "ES"
    finally:
        await sup.aclose()
        await partner.aclose()
    es = await Person(stack).sign_in("caseworker", j.case["owner"]["caseworker"], countries="ES")
    try:
        row = (await es.page(TRANSFERS)).split(f'id="outgoing-{transfer_id}"')[1].split("</tr>")[0]
        assert "Refused" in row and "No partner in Lyon yet" in row
        assert f'action="/workspace/cases/{j.case_id}/transfers"' in await es.page(f"/workspace/cases/{j.case_id}")
    finally:
        await es.aclose()


async def test_a_supervisor_sees_caseloads_and_moves_a_caseworkers_cases(stack):
    leaving, taking = unique("cw-es-leave"), unique("cw-es-take")
    journeys = [Journey(stack, caseworker=leaving) for _ in range(2)]
    for j in journeys:
        await j.open()
    stack.token("caseworker", taking, countries=["ES"])
    sup = await Person(stack).sign_in("supervisor", unique("sup-es-wt"), countries="ES")
    try:
        html = await sup.page(DASHBOARD)
        loads = section(html, "caseloads-title")
        row = loads.split(f'<th scope="row" data-label="Caseworker">{leaving}</th>')[1].split("</tr>")[0]
        assert '<td data-label="Open cases">2</td>' in row and '<td data-label="Overdue">0</td>' in row
        html = await sup.page(f"{DASHBOARD}?move={leaving}")
        assert f'name="from_caseworker" maxlength="100" autocomplete="off" value="{leaving}"' in html

        # Bad input: refused beside its field, nothing moved.
        action = f"{DASHBOARD}/reassignments"
        for data, field, words in (
            ({"from_caseworker": leaving, "to_caseworker": "nobody-wt"}, "to_caseworker", "unknown caseworker"),
            ({"from_caseworker": leaving, "to_caseworker": leaving}, "to_caseworker", "Choose a caseworker other"),
            ({"from_caseworker": "cw-es-nobody-wt", "to_caseworker": taking}, "from_caseworker", "cw-es-nobody-wt has"),
            ({"to_caseworker": taking}, "from_caseworker", "Give the user id"),
        ):
            r = await sup.http.post(action, data={**form_of(html, action), **data})
            assert r.status_code == 422, (data, r.text[:1000])
            assert error_of(r.text, f"move-{field}").startswith(words), (data, error_of(r.text, f"move-{field}"))
            html = r.text  # sent again from the page that says what was wrong (a key of its own)
        assert [(await j.get())["owner"]["caseworker"] for j in journeys] == [leaving] * 2

        r = await sup.http.post(
            action, data={**form_of(html, action), "from_caseworker": leaving, "to_caseworker": taking}
        )
        assert r.status_code == 303, r.text[:2000]
        found = re.fullmatch(r"/workspace/dashboard\?reassignment=([0-9a-f-]{36})#reassignments", r.headers["location"])
        assert found, r.headers["location"]
        deadline = time.monotonic() + 30
        while True:  # the page follows it as the workflow moves the cases
            progress = section(await sup.page(r.headers["location"].split("#")[0]), "reassignments-title")
            if "Finished" in progress:
                break
            assert "Moving the cases of" in progress and "See how far it went" in progress
            assert time.monotonic() < deadline, progress
            await asyncio.sleep(0.2)
        assert f"Finished: 2 of 2 cases moved from {leaving} to {taking}." in progress
        assert [(await j.get())["owner"]["caseworker"] for j in journeys] == [taking] * 2
        assert "no such move" in section(await sup.page(f"{DASHBOARD}?reassignment={'0' * 36}"), "reassignments-title")
    finally:
        await sup.aclose()
