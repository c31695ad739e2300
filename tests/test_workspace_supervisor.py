"""A supervisor's dashboard over HTTP, against the real stack: the stalled cases and their filters,
overdue tasks by agency, closures approved and rejected, a case reassigned; as ``/v1`` shows them."""

from __future__ import annotations

import re
import uuid

from tests.conftest import Stack
from tests.journey import Journey, case_body, day
from tests.test_workspace_partner import assign, form_of, new_agency
from tests.workspace import Person

DASHBOARD = "/workspace/dashboard"


async def supervisor(stack: Stack, countries: str = "*") -> Person:
    return await Person(stack).sign_in("supervisor", "sup-web-1", countries=countries)


def stalled_rows(html: str) -> list[str]:
    """The case ids of the stalled list, in its order."""
    section = html.split('id="stalled-title"')[1].split('id="overdue-title"')[0]
    return re.findall(r'<td data-label="Case"><a href="/workspace/cases/([^"]+)"', section)


async def stalled_by_a_task(stack: Stack, agency: str) -> Journey:
    """An ES case stalled by a task at the agency already past its due day: the agency's turn."""
    j = Journey(stack)
    await j.open()
    await assign(stack, j, "shelter", agency, due_date=day(-2))
    case = await j.get()
    assert case["status"] == "stalled" and case["stall_reasons"][0]["turn"] == "agency", case["stall_reasons"]
    return j


async def stalled_since_identification(stack: Stack) -> Journey:
    """A PT case identified two months ago and never assessed: the risk assessment overdue."""
    j = Journey(stack, caseworker=f"cw-pt-{uuid.uuid4().hex[:6]}", countries=["PT"])
    body = case_body(country="PT")
    body["identification"]["identified_on"] = day(-60)
    body["consent"]["given_on"] = day(-60)
    r = await stack.http.post("/v1/cases", json=body, headers=j.cw)
    assert r.status_code == 201, r.text
    j.case_id = r.json()["case_id"]
    case = await j.get()
    assert case["status"] == "stalled", case
    return j


async def closure_requested(stack: Stack) -> Journey:
    """An ES case in reintegration whose caseworker asked to close it (lost contact)."""
    j = Journey(stack)
    await j.open()
    await j.through_protection()
    await j.to_reintegration_by_residence_from_pathway()
    await j.step("reintegration-plan", {"agreed_on": day(41), "services": [{"service": "medical"}]})
    for task in list(j.case["open_tasks"]):
        await j.task_action(task["task_id"], task["agency_id"], "accept")
        await j.task_action(task["task_id"], task["agency_id"], "complete", {"outcome": "done"})
    await j.step("closure", {"reason": "lost-contact"})
    assert "approve-closure" in j.case["allowed_steps"]
    return j


async def test_a_supervisor_finds_stalled_cases_with_reasons_and_filters_them(stack):
    agency = await new_agency(stack, "shelter")
    by_task = await stalled_by_a_task(stack, agency)
    by_deadline = await stalled_since_identification(stack)
    person = await supervisor(stack)
    try:
        html = await person.page(DASHBOARD)
        rows = stalled_rows(html)
        assert by_task.case_id in rows and by_deadline.case_id in rows
        assert rows.index(by_deadline.case_id) < rows.index(by_task.case_id)  # the most overdue first
        row = html.split(f'<a href="/workspace/cases/{by_task.case_id}">')[1].split("</tr>")[0]
        assert "Shelter task at Casa Abierta: due" in row and '<span class="turn">Whose turn: Agency.</span>' in row
        row = html.split(f'<a href="/workspace/cases/{by_deadline.case_id}">')[1].split("</tr>")[0]
        assert "Risk assessment: due" in row and "Whose turn: Caseworker." in row

        es = stalled_rows(await person.page(f"{DASHBOARD}?country=ES"))
        assert by_task.case_id in es and by_deadline.case_id not in es
        pt = stalled_rows(await person.page(f"{DASHBOARD}?country=pt"))
        assert by_deadline.case_id in pt and by_task.case_id not in pt
        html = await person.page(f"{DASHBOARD}?agency={agency}")
        assert stalled_rows(html) == [by_task.case_id]
        assert f'<option value="{agency}" selected>' in html
        owner = (await by_deadline.get())["owner"]["caseworker"]
        assert stalled_rows(await person.page(f"{DASHBOARD}?caseworker={owner}")) == [by_deadline.case_id]
        html = await person.page(f"{DASHBOARD}?country=Spain")
        assert 'id="filter-country-error">Not applied' in html and 'aria-invalid="true"' in html
    finally:
        await person.aclose()
    regional = await supervisor(stack, countries="PT")
    try:
        rows = stalled_rows(await regional.page(DASHBOARD))
        assert by_deadline.case_id in rows and by_task.case_id not in rows  # the supervisor's region only
    finally:
        await regional.aclose()


async def test_the_chart_shows_an_agencys_overdue_tasks_with_its_numbers(stack):
    agency = await new_agency(stack, "shelter", "medical")
    j = await stalled_by_a_task(stack, agency)
    await assign(stack, j, "medical", agency, due_date=day(-1))
    await assign(stack, j, "medical", agency)  # not overdue
    person = await supervisor(stack)
    try:
        html = await person.page(DASHBOARD)
        svg = re.search(r"<svg .*?</svg>", html, re.S).group(0)
        assert 'role="img"' in svg and 'aria-labelledby="overdue-chart-title overdue-chart-desc"' in svg
        assert '<title id="overdue-chart-title">Overdue tasks by agency</title>' in svg
        assert f"{agency}: 2 overdue" in svg.split("</desc>")[0]
        bar = svg.split(f'data-agency="{agency}"')[1].split("</g>")[0]
        assert f'class="bar-label">{agency}</text>' in bar and 'class="bar-value">2</text>' in bar
        assert " style=" not in html and "<script" not in html
        table = html.split("The same figures as a table")[1].split("</table>")[0]
        assert f"Casa Abierta ({agency})</th><td>2</td>" in table
    finally:
        await person.aclose()


async def test_a_supervisor_approves_one_closure_and_rejects_another_from_the_dashboard(stack):
    approve, reject = await closure_requested(stack), await closure_requested(stack)
    person = await supervisor(stack)
    try:
        html = await person.page(DASHBOARD)
        closures = html.split('id="closures-title"')[1].split('id="reassign-title"')[0]
        assert approve.case_id in closures and reject.case_id in closures and "Lost contact" in closures

        action = f"{DASHBOARD}/closures/{approve.case_id}/approve"
        r = await person.http.post(action, data={**form_of(html, action), "notes": "Tried for three months."})
        assert (r.status_code, r.headers["location"]) == (303, f"{DASHBOARD}?done=approve#closures")
        case = await approve.get()
        assert (case["status"], case["closure_reason"]) == ("closed", "lost-contact")

        html = await person.page(r.headers["location"])
        assert "The closure was approved" in html
        assert approve.case_id not in html.split('id="closures-title"')[1].split('id="reassign-title"')[0]

        action = f"{DASHBOARD}/closures/{reject.case_id}/reject"
        r = await person.http.post(action, data={**form_of(html, action), "reason": ""})
        assert r.status_code == 422
        error_id = f"reject-{reject.case_id}-reason-error"
        assert f'<p class="field-error" id="{error_id}">Give a reason' in r.text
        assert f'aria-describedby="reject-{reject.case_id}-reason-hint {error_id}"' in r.text
        assert "approve-closure" in (await reject.get())["allowed_steps"]  # nothing changed

        r = await person.http.post(action, data={**form_of(r.text, action), "reason": "Try the family's address."})
        assert (r.status_code, r.headers["location"]) == (303, f"{DASHBOARD}?done=reject#closures")
        case = await reject.get()
        assert case["status"] != "closed" and "approve-closure" not in case["allowed_steps"]
        assert "closure" in case["allowed_steps"]

        # A decision on the approved case from a page that is out of date: refused in words, nothing changes.
        stale = {**form_of(html, f"{DASHBOARD}/closures/{reject.case_id}/reject"), "reason": "No."}
        for _ in range(2):  # sent twice with its key: the same refusal, never "rejected"
            r = await person.http.post(f"{DASHBOARD}/closures/{approve.case_id}/reject", data=stale)
            assert r.status_code == 409 and "no closure waiting for a decision any more" in r.text
        assert (await approve.get())["status"] == "closed"
    finally:
        await person.aclose()


async def test_a_supervisor_reassigns_a_case_from_the_dashboard(stack):
    j = await stalled_since_identification(stack)
    person = await supervisor(stack)
    try:
        html = await person.page(f"{DASHBOARD}?reassign={j.case_id}")
        assert f'name="case_id" maxlength="64" autocomplete="off" value="{j.case_id}"' in html
        action = f"{DASHBOARD}/reassign"
        fields = form_of(html, action)
        stack.token("caseworker", "cw-pt-2", countries=["PT"])  # known to the directory
        r = await person.http.post(
            action, data={**fields, "case_id": j.case_id, "caseworker": "cw-pt-2", "reason": "cw-pt-web is on leave"}
        )
        assert (r.status_code, r.headers["location"]) == (303, f"{DASHBOARD}?done=reassign#reassign")
        assert (await j.get())["owner"] == {"country": "PT", "caseworker": "cw-pt-2"}
        html = await person.page(r.headers["location"])
        assert "The case was given to the new caseworker." in html

        same = {"case_id": j.case_id, "caseworker": "cw-pt-2"}
        r = await person.http.post(action, data={**form_of(html, action), **same})
        assert r.status_code == 422
        assert 'id="reassign-caseworker-error">The case is already this caseworker' in r.text
        r = await person.http.post(action, data={**form_of(html, action), "case_id": "no-such-case", "caseworker": "x"})
        assert r.status_code == 404 and 'id="reassign-case_id-error">There is no case with this id' in r.text
        r = await person.http.post(action, data={**form_of(html, action), "case_id": j.case_id, "caseworker": ""})
        assert r.status_code == 422 and 'id="reassign-caseworker-error">Give the user id' in r.text
        assert (await j.get())["owner"]["caseworker"] == "cw-pt-2"
    finally:
        await person.aclose()


async def test_the_dashboard_is_for_supervisors_only(stack):
    caseworker = await Person(stack).sign_in("caseworker", "cw-es-1", countries="ES")
    partner = await Person(stack).sign_in("partner", "partner-web-9", agency="clinic-es")
    try:
        assert "This page is for another role" in await caseworker.page(DASHBOARD, expect=403)
        await partner.page(DASHBOARD, expect=403)
        html = await caseworker.page("/workspace/inbox", expect=403)
        token = re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)
        r = await caseworker.http.post(f"{DASHBOARD}/reassign", data={"csrf_token": token, "case_id": "x"})
        assert r.status_code == 403
    finally:
        await caseworker.aclose()
        await partner.aclose()


async def test_the_dashboard_counts_open_cases_by_stage_and_pathway(stack):
    person = await supervisor(stack, countries="FR")
    try:
        before = await person.page(DASHBOARD)
        j = Journey(stack, caseworker="cw-fr-web", countries=["FR"])
        await j.open(country="FR")
        await j.through_protection()
        await j.step("pathway", {"pathway": "residence", "decided_on": day(3)})
        html = await person.page(DASHBOARD)

        def count(page: str, table: str, row: str) -> int:
            section = page.split(f"<caption>{table}</caption>")[1].split("</table>")[0]
            found = re.search(rf'<th scope="row">{row}</th><td>(\d+)</td>', section)
            return int(found.group(1)) if found else 0

        assert count(html, "By stage", "Residence") == count(before, "By stage", "Residence") + 1
        assert count(html, "By pathway", "Residence") == count(before, "By pathway", "Residence") + 1
        medians = html.split('id="medians-title"')[1].split("</section>")[0]
        assert "Identification" in medians and "Protection" in medians
    finally:
        await person.aclose()
