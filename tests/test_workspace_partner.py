"""A partner agency's inbox and task page over HTTP, against the real stack: the same tasks, the
same person's fields and audit, and the same actions as ``/v1/tasks``."""

from __future__ import annotations

import re
import uuid

from sqlmodel import Session, col, select

from reintegration.db import AuditRecord
from tests.conftest import Stack
from tests.journey import Journey, case_body, day
from tests.workspace import Person


async def new_agency(stack: Stack, *services: str, country: str = "ES") -> str:
    """An agency of this test's own, so its inbox holds only this test's tasks."""
    agency_id = f"web-{uuid.uuid4().hex[:8]}"
    r = await stack.http.post(
        "/v1/agencies",
        headers=stack.auth("admin", "admin-web"),
        json={
            "agency_id": agency_id,
            "name": "Casa Abierta",
            "org_type": "NGO",
            "country": country,
            "services": list(services),
        },
    )
    assert r.status_code == 201, r.text
    return agency_id


async def assign(stack: Stack, j: Journey, service: str, agency: str, **body: str) -> str:
    r = await stack.http.post(
        f"/v1/cases/{j.case_id}/tasks", json={"service": service, "agency_id": agency, **body}, headers=j.cw
    )
    assert r.status_code == 201, r.text
    return r.json()["task_id"]


def form_of(html: str, action: str) -> dict[str, str]:
    """The hidden fields (CSRF token, idempotency key) of the page's form that posts to ``action``."""
    found = re.search(rf'<form method="post" action="{re.escape(action)}(?:#[^"]*)?"[^>]*>(.*?)</form>', html, re.S)
    assert found, f"no form posting to {action}"
    return dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', found.group(1)))


async def send(person: Person, page: str, action: str, data: dict[str, str]):
    html = await person.page(page)
    return await person.http.post(action, data={**form_of(html, action), **data})


def person_reads(stack: Stack, task_id: str, sub: str) -> list[AuditRecord]:
    with Session(stack.engine) as session:
        return list(
            session.exec(
                select(AuditRecord).where(
                    col(AuditRecord.task_id) == task_id,
                    col(AuditRecord.action) == "task.read-person",
                    col(AuditRecord.actor_sub) == sub,
                )
            ).all()
        )


async def test_a_partner_accepts_and_completes_a_task_from_its_inbox(stack):
    agency = await new_agency(stack, "shelter", "medical")
    j = Journey(stack)
    await j.open()
    task_id = await assign(stack, j, "shelter", agency)
    person = await Person(stack).sign_in("partner", "partner-web-1", agency=agency)
    try:
        inbox = await person.page("/workspace/inbox")
        new, accepted = inbox.split('id="accepted-title"')[0], inbox.split('id="accepted-title"')[1]
        assert f'href="/workspace/inbox/{task_id}"' in new and task_id not in accepted.split('id="finished-title"')[0]
        page = f"/workspace/inbox/{task_id}"
        html = await person.page(page)
        assert f'"{page}/accept#' in html and f'"{page}/decline#' in html and f'"{page}/complete#' not in html
        assert j.case["reference"] in html

        fields = form_of(html, f"{page}/accept")
        r = await person.http.post(f"{page}/accept", data={**fields, "notes": "We have a bed tonight."})
        assert (r.status_code, r.headers["location"]) == (303, f"{page}?done=accept")
        again = await person.http.post(f"{page}/accept", data={**fields, "notes": "We have a bed tonight."})
        assert again.status_code == 303  # the same form sent twice: acted once, the first answer again
        html = await person.page(r.headers["location"])
        assert "You accepted the task" in html and f"{page}/complete" in html and f"{page}/accept" not in html
        inbox = await person.page("/workspace/inbox")
        assert f'href="{page}"' in inbox.split('id="accepted-title"')[1].split('id="finished-title"')[0]

        r = await send(person, page, f"{page}/complete", {"outcome": "done", "notes": "Stayed two weeks."})
        assert (r.status_code, r.headers["location"]) == (303, f"{page}?done=complete")
        api = (await stack.http.get(f"/v1/tasks/{task_id}", headers=j.partner(agency))).json()
        assert (api["status"], api["outcome"]) == ("completed", "done")
        case = await j.get()
        assert [e["name"] for e in case["timeline"] if e["task_id"] == task_id] == ["assigned", "accepted", "completed"]
        inbox = await person.page("/workspace/inbox")
        assert f'href="{page}"' in inbox.split('id="finished-title"')[1]  # now with the finished ones
        html = await person.page(page)
        assert "Nothing more" in html  # no action left: only the forms of the notes and documents
        forms = re.findall(r'<form method="post" action="(/workspace/inbox[^"#]*)', html)
        assert sorted(forms) == [f"{page}/documents", f"{page}/notes"]
    finally:
        await person.aclose()


async def test_new_tasks_come_first_and_overdue_ones_first_and_marked(stack):
    agency = await new_agency(stack, "shelter", "medical")
    j = Journey(stack)
    await j.open()
    later = await assign(stack, j, "shelter", agency)
    late = await assign(stack, j, "medical", agency, due_date=day(-1))
    accepted = await assign(stack, j, "shelter", agency)
    await j.task_action(accepted, agency, "accept")
    person = await Person(stack).sign_in("partner", "partner-web-2", agency=agency)
    try:
        inbox = await person.page("/workspace/inbox")
        order = [m for m in re.findall(r'href="/workspace/inbox/([^"?]+)"', inbox)]
        assert order == [late, later, accepted]
        late_card = inbox.split(f'href="/workspace/inbox/{late}"')[1].split("</li>")[0]
        assert '<span class="badge overdue">Overdue</span>' in late_card
        assert "badge overdue" not in inbox.split(f'href="/workspace/inbox/{later}"')[1].split("</li>")[0]
    finally:
        await person.aclose()


async def test_a_decline_without_a_reason_is_explained_beside_the_field_and_changes_nothing(stack):
    agency = await new_agency(stack, "shelter")
    j = Journey(stack)
    await j.open()
    task_id = await assign(stack, j, "shelter", agency)
    person = await Person(stack).sign_in("partner", "partner-web-3", agency=agency)
    page = f"/workspace/inbox/{task_id}"
    try:
        r = await send(person, page, f"{page}/decline", {"reason": "   "})
        assert r.status_code == 422
        field = re.search(r'<textarea id="decline-reason"[^>]*>', r.text).group(0)
        assert 'aria-invalid="true"' in field and 'aria-describedby="decline-reason-hint decline-reason-error"' in field
        assert '<p class="field-error" id="decline-reason-error">Give a reason for declining' in r.text
        assert (await stack.http.get(f"/v1/tasks/{task_id}", headers=j.partner(agency))).json()["status"] == "assigned"

        stale = await person.page(page)
        await j.task_action(task_id, agency, "accept")  # meanwhile, through the API
        for _ in range(2):  # and the same form sent again (a double click) gets the same refusal
            r = await person.http.post(f"{page}/accept", data=form_of(stale, f"{page}/accept"))
            assert r.status_code == 409  # refused in words, on the task as it is now
            assert "Nothing was changed: this task can no longer be accepted (its status now: Accepted)." in r.text
            assert f"{page}/complete" in r.text

        r = await send(person, page, f"{page}/decline", {"reason": "No beds free this month."})
        assert (r.status_code, r.headers["location"]) == (303, f"{page}?done=decline")
        api = (await stack.http.get(f"/v1/tasks/{task_id}", headers=j.partner(agency))).json()
        assert (api["status"], api["decline_reason"]) == ("declined", "No beds free this month.")
        assert "No beds free this month." in await person.page(page)
    finally:
        await person.aclose()


async def test_another_agencys_partner_gets_404_and_a_caseworker_403(stack):
    agency = await new_agency(stack, "shelter")
    j = Journey(stack)
    await j.open()
    task_id = await assign(stack, j, "shelter", agency)
    other = await Person(stack).sign_in("partner", "partner-web-4", agency="clinic-es")
    caseworker = await Person(stack).sign_in("caseworker", "cw-es-1", countries="ES")
    try:
        html = await other.page(f"/workspace/inbox/{task_id}", expect=404)
        assert "There is no such task in your agency" in html
        assert task_id not in await other.page("/workspace/inbox")
        own = await Person(stack).sign_in("partner", "partner-web-5", agency=agency)
        try:
            fields = form_of(await own.page(f"/workspace/inbox/{task_id}"), f"/workspace/inbox/{task_id}/accept")
        finally:
            await own.aclose()
        inbox = await other.page("/workspace/inbox")
        token = re.search(r'name="csrf_token" value="([^"]+)"', inbox).group(1)
        key = fields["idempotency_key"]
        r = await other.http.post(
            f"/workspace/inbox/{task_id}/accept", data={"csrf_token": token, "idempotency_key": key}
        )
        assert r.status_code == 404
        assert (await stack.http.get(f"/v1/tasks/{task_id}", headers=j.partner(agency))).json()["status"] == "assigned"
        assert "This page is for another role" in await caseworker.page("/workspace/inbox", expect=403)
        await caseworker.page(f"/workspace/inbox/{task_id}", expect=403)
    finally:
        await other.aclose()
        await caseworker.aclose()


async def test_the_task_page_shows_exactly_the_persons_fields_the_api_gives_and_audits_them(stack):
    agency = await new_agency(stack, "shelter", "origin-assessment", country="ES")
    j = Journey(stack)
    await j.open()
    task_id = await assign(stack, j, "shelter", agency)
    sub = "partner-web-6"
    person = await Person(stack).sign_in("partner", sub, agency=agency)
    try:
        api = (await stack.http.get(f"/v1/tasks/{task_id}", headers=j.partner(agency))).json()
        assert api["person"] == {"first_name": "Maria", "gender": "Feminine", "primary_language": "ro"}
        before = person_reads(stack, task_id, sub)
        html = await person.page(f"/workspace/inbox/{task_id}")
        shown = re.search(r'<dl class="facts" id="person">(.*?)</dl>', html, re.S).group(1)
        assert re.findall(r"<dt>([^<]+)</dt>", shown) == ["First name", "Gender", "Primary language"]
        assert re.findall(r"<dd>([^<]+)</dd>", shown) == ["Maria", "Female", "ro"]
        assert "Ionescu" not in html and "1998" not in html  # the second name and birth date are not the shelter's
        after = person_reads(stack, task_id, sub)
        assert len(after) == len(before) + 1
        assert (after[-1].detail["via"], after[-1].detail["fields"]) == (
            "read",
            ["first_name", "gender", "primary_language"],
        )

        # Without consent to data sharing: no person's field, and no read of one recorded.
        body = case_body()
        body["consent"]["data_sharing"] = False
        r = await stack.http.post("/v1/cases", json=body, headers=j.cw)
        assert r.status_code == 201, r.text
        j.case_id = r.json()["case_id"]
        unshared = await assign(stack, j, "shelter", agency)
        assert (await stack.http.get(f"/v1/tasks/{unshared}", headers=j.partner(agency))).json()["person"] is None
        html = await person.page(f"/workspace/inbox/{unshared}")
        assert "No personal data is shared with your agency" in html and "Maria" not in html
        assert 'id="person"' not in html
        assert person_reads(stack, unshared, sub) == []
    finally:
        await person.aclose()


async def test_completing_an_origin_assessment_asks_whether_return_is_safe(stack):
    j = Journey(stack)
    await j.to_return()
    task_id = (await j.assign("origin-assessment", "origin-office-ro"))["task_id"]
    await j.task_action(task_id, "origin-office-ro", "accept")
    person = await Person(stack).sign_in("partner", "partner-web-7", agency="origin-office-ro")
    page = f"/workspace/inbox/{task_id}"
    try:
        html = await person.page(page)
        assert 'name="assessment" value="safe"' in html and 'name="arrived_on"' not in html
        r = await send(person, page, f"{page}/complete", {"outcome": "done"})
        assert r.status_code == 422  # the workflow's rule, shown beside the assessment
        assert 'id="complete-assessment-error">An origin assessment that is done says whether' in r.text
        assert (await stack.http.get(f"/v1/tasks/{task_id}", headers=j.partner("origin-office-ro"))).json()[
            "status"
        ] == "accepted"
        r = await send(person, page, f"{page}/complete", {"outcome": "done", "assessment": "safe"})
        assert r.status_code == 303
        api = (await stack.http.get(f"/v1/tasks/{task_id}", headers=j.partner("origin-office-ro"))).json()
        assert (api["status"], api["assessment"]) == ("completed", "safe")
    finally:
        await person.aclose()
