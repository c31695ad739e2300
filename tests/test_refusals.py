"""Every step is refused in at least one wrong state: 409 with the allowed steps, and nothing changes."""

from __future__ import annotations

from typing import Any

import pytest

from tests.journey import Journey, day


async def refused(j: Journey, step: str, body: dict[str, Any], *, headers: dict | None = None) -> dict:
    before = await j.get()
    problem = await j.step(step, body, expect=409, headers=headers)
    assert problem["status"] == 409 and problem["title"]
    assert step not in problem["allowed_steps"]
    assert problem["allowed_steps"] == before["allowed_steps"]
    after = await j.get()
    assert after["version"] == before["version"]  # nothing changed
    assert len(after["timeline"]) == len(before["timeline"])
    return problem


async def test_before_consent_only_consent_and_withdrawal(stack):
    j = Journey(stack)
    case = await j.open(consent=False)
    assert case["stage"] == "identification"
    assert case["allowed_steps"] == ["consent", "withdraw-consent"]
    problem = await refused(j, "risk-assessment", {"level": "low", "assessed_on": day(1)})
    assert "consent" in problem["detail"]
    # No task either: there is no consent to assistance yet.
    r = await j.http.post(
        f"/v1/cases/{j.case_id}/tasks", json={"service": "shelter", "agency_id": "shelter-es"}, headers=j.cw
    )
    assert r.status_code == 409
    await j.step("consent", {"assistance": False, "given_on": day(0)})
    assert j.case["stage"] == "identification"
    await j.step("consent", {"assistance": True, "data_sharing": False, "given_on": day(1)})
    assert j.case["stage"] == "protection"


async def test_protection_gates(stack):
    j = Journey(stack)
    await j.open()
    await refused(j, "safety-plan", {"agreed_on": day(1), "measures": [{"measure": "new phone"}]})
    await refused(j, "security-guarantee", {"confirmed_on": day(1)})
    await refused(
        j, "guardian", {"guardian_type": "legal_guardian", "authority_reference": "X", "appointed_on": day(1)}
    )  # an adult
    await refused(j, "pathway", {"pathway": "residence", "decided_on": day(1)})
    await j.step("risk-assessment", {"level": "high", "threats": ["retaliation"], "assessed_on": day(1)})
    problem = await refused(j, "security-guarantee", {"confirmed_on": day(2)})
    assert "safety plan is required" in problem["detail"]
    await j.step(
        "safety-plan",
        {
            "agreed_on": day(2),
            "measures": [
                {"measure": "shelter placement", "service": "shelter", "agency_id": "shelter-es"},
                {"measure": "police protection", "service": "police-protection", "agency_id": "shelter-es"},
            ],
        },
    )
    problem = await refused(j, "security-guarantee", {"confirmed_on": day(3)})
    assert "tasks" in problem["detail"]
    for task in j.case["open_tasks"]:
        assert task["safety_plan"] is True
        await j.task_action(task["task_id"], "shelter-es", "accept")
        await j.task_action(task["task_id"], "shelter-es", "complete", {"outcome": "done"})
    await j.step("security-guarantee", {"confirmed_on": day(4)})
    assert j.case["stage"] == "pathway"


async def test_a_minor_needs_a_guardian_before_the_pathway(stack):
    j = Journey(stack)
    case = await j.open(birthdate=day(-16 * 365))
    assert case["is_minor"] is True
    assert any(s["step"] == "guardian" for s in case["open_steps"])
    await j.step("risk-assessment", {"level": "low", "assessed_on": day(1)})
    await j.step("security-guarantee", {"confirmed_on": day(2)})
    problem = await refused(j, "pathway", {"pathway": "voluntary_return", "decided_on": day(3)})
    assert "guardian" in problem["detail"]
    await j.step(
        "guardian", {"guardian_type": "legal_guardian", "authority_reference": "JUZ-1", "appointed_on": day(3)}
    )
    await j.step("pathway", {"pathway": "voluntary_return", "decided_on": day(4)})
    assert j.case["stage"] == "return"


async def test_return_and_residence_gates(stack):
    j = Journey(stack)
    await j.open()
    await j.through_protection()
    await refused(j, "travel-plan", {"travel_date": day(9), "route": "MAD-OTP", "receiving_caseworker": "cw-ro-1"})
    await refused(
        j, "reintegration-plan", {"agreed_on": day(3), "services": [{"service": "medical", "agency_id": "clinic-es"}]}
    )
    await j.step("pathway", {"pathway": "voluntary_return", "decided_on": day(3)})
    await refused(j, "residence-application", {"filed_on": day(4), "permit_type": "x", "authority_reference": "y"})
    await refused(j, "departure", {"departed_on": day(4)})
    await refused(
        j, "travel-plan", {"travel_date": day(9), "route": "MAD-OTP", "receiving_caseworker": "cw-ro-1"}
    )  # no origin assessment yet
    reception = await j.assign("reception", "origin-office-ro")
    await j.task_action(reception["task_id"], "origin-office-ro", "accept")
    r = await j.http.post(
        f"/v1/tasks/{reception['task_id']}/complete",
        json={"outcome": "done", "arrived_on": day(5)},
        headers=j.partner("origin-office-ro"),
    )
    assert r.status_code == 409 and "departure" in r.json()["detail"]  # no arrival before departure
    await j.step("pathway", {"pathway": "residence", "decided_on": day(4)})
    await refused(j, "residence-decision", {"decision": "granted", "decided_on": day(5), "valid_until": day(300)})
    await refused(j, "appeal", {"filed_on": day(5), "authority_reference": "R"})
    await refused(j, "departure", {"departed_on": day(5)})


async def test_reintegration_and_closure_gates(stack):
    j = Journey(stack)
    await j.open()
    await j.to_reintegration_by_residence()
    await refused(j, "monitoring", {"visited_on": day(50), "economic": 0.5, "social": 0.5, "psychosocial": 0.5})
    await refused(j, "closure", {"reason": "lost-contact"})
    await refused(j, "approve-closure", {}, headers=j.supervisor)
    await refused(j, "reject-closure", {"reason": "no"}, headers=j.supervisor)
    await j.step(
        "reintegration-plan",
        {"agreed_on": day(45), "services": [{"service": "job-orientation", "agency_id": "clinic-es"}]},
    )
    problem = await refused(j, "closure", {"reason": "lost-contact"})
    assert "open tasks" in problem["detail"]
    await refused(
        j, "reintegration-plan", {"agreed_on": day(46), "services": [{"service": "housing", "agency_id": "shelter-es"}]}
    )
    # A weak dimension flags the plan for revision, and the revision adds a service.
    await j.step("monitoring", {"visited_on": day(130), "economic": 0.2, "social": 0.8, "psychosocial": 0.9})
    visit = j.case["facts"]["monitoring_visits"][-1]
    assert visit["below_threshold"] == ["economic"] and j.case["facts"]["plan_revision_needed"] is True
    assert visit["weighted_score"] == pytest.approx(0.4 * 0.2 + 0.3 * 0.8 + 0.3 * 0.9)
    await j.step(
        "reintegration-plan", {"agreed_on": day(131), "services": [{"service": "financial", "agency_id": "clinic-es"}]}
    )
    assert j.case["facts"]["plan_revision_needed"] is False and j.case["facts"]["plan_revisions"] == 1
    for task in list(j.case["open_tasks"]):
        await j.task_action(task["task_id"], task["agency_id"], "accept")
        await j.task_action(task["task_id"], task["agency_id"], "complete", {"outcome": "done"})
    r = await j.http.post(f"/v1/cases/{j.case_id}/steps/closure", json={"reason": "completed"}, headers=j.cw)
    assert r.status_code == 409 and "monitoring" in r.json()["detail"]  # 6- and 12-month visits missing
    await j.step("closure", {"reason": "lost-contact"})
    # Caseworkers may never decide on a closure; a supervisor sends it back, then approves a new one.
    r = await j.http.post(f"/v1/cases/{j.case_id}/steps/approve-closure", json={}, headers=j.cw)
    assert r.status_code == 403
    await refused(j, "monitoring", {"visited_on": day(200), "economic": 0.5, "social": 0.5, "psychosocial": 0.5})
    await j.step("reject-closure", {"reason": "try the family first"}, headers=j.supervisor)
    assert j.case["stage"] == "reintegration" and "closure" in j.case["allowed_steps"]
    await j.step("closure", {"reason": "lost-contact"})
    await j.step("approve-closure", {}, headers=j.supervisor)
    assert j.case["status"] == "closed" and j.case["closure_reason"] == "lost-contact"
    await refused(j, "withdraw-consent", {"withdrawn_on": day(300)})


async def test_task_actions_refused_in_the_wrong_state(stack):
    j = Journey(stack)
    await j.open()
    task = await j.assign("shelter", "shelter-es")
    r = await j.http.post(
        f"/v1/tasks/{task['task_id']}/complete", json={"outcome": "done"}, headers=j.partner("shelter-es")
    )
    assert r.status_code == 409  # accept first
    r = await j.http.post(
        f"/v1/cases/{j.case_id}/tasks/{task['task_id']}/reassign", json={"agency_id": "clinic-es"}, headers=j.cw
    )
    assert r.status_code == 409  # neither declined nor overdue
    await j.task_action(task["task_id"], "shelter-es", "decline", {"reason": "no beds"})
    moved = await j.http.post(
        f"/v1/cases/{j.case_id}/tasks/{task['task_id']}/reassign", json={"agency_id": "clinic-es"}, headers=j.cw
    )
    assert moved.status_code == 200, moved.text
    assert moved.json()["agency_id"] == "clinic-es" and moved.json()["previous_agencies"] == ["shelter-es"]
    # The first agency no longer sees it; the new one does.
    r = await j.http.get(f"/v1/tasks/{task['task_id']}", headers=j.partner("shelter-es"))
    assert r.status_code == 404
    await j.task_action(task["task_id"], "clinic-es", "accept")
    await j.task_action(task["task_id"], "clinic-es", "accept", expect=409)
    cancelled = await j.http.post(
        f"/v1/cases/{j.case_id}/tasks/{task['task_id']}/cancel",
        json={"reason": "found a family placement"},
        headers=j.cw,
    )
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    await j.task_action(task["task_id"], "clinic-es", "complete", {"outcome": "done"}, expect=409)
    r = await j.http.post(
        f"/v1/cases/{j.case_id}/tasks", json={"service": "reception", "agency_id": "origin-office-ro"}, headers=j.cw
    )
    assert r.status_code == 409  # not in the protection stage


async def test_a_safety_task_the_agency_could_not_do_does_not_block_forever(stack):
    j = Journey(stack)
    await j.open()
    await j.step("risk-assessment", {"level": "medium", "assessed_on": day(1)})
    await j.step("safety-plan", {"agreed_on": day(1), "measures": [{"measure": "shelter", "service": "shelter"}]})
    [task] = j.case["open_tasks"]
    await j.task_action(task["task_id"], "shelter-es", "accept")
    await j.task_action(task["task_id"], "shelter-es", "complete", {"outcome": "unable", "notes": "no beds"})
    # The caseworker revises the plan with another agency, and the guarantee follows its completion.
    await j.step(
        "safety-plan",
        {"agreed_on": day(2), "measures": [{"measure": "shelter", "service": "shelter", "agency_id": "clinic-es"}]},
    )
    await refused(j, "security-guarantee", {"confirmed_on": day(3)})
    [task] = j.case["open_tasks"]
    await j.task_action(task["task_id"], "clinic-es", "accept")
    await j.task_action(task["task_id"], "clinic-es", "complete", {"outcome": "done"})
    await j.step("security-guarantee", {"confirmed_on": day(3)})


async def test_plans_take_only_the_services_of_their_stage(stack):
    j = Journey(stack)
    await j.open()
    await j.step("risk-assessment", {"level": "high", "assessed_on": day(1)})
    r = await j.http.post(
        f"/v1/cases/{j.case_id}/steps/safety-plan",
        headers=j.cw,
        json={"agreed_on": day(1), "measures": [{"measure": "x", "service": "origin-assessment"}]},
    )
    assert r.status_code == 422 and "safety measure" in r.json()["detail"]
    await j.step("safety-plan", {"agreed_on": day(1), "measures": [{"measure": "curfew plan"}]})
    await j.to_reintegration_by_residence_from_protection()
    r = await j.http.post(
        f"/v1/cases/{j.case_id}/steps/reintegration-plan",
        headers=j.cw,
        json={"agreed_on": day(41), "services": [{"service": "reception", "agency_id": "origin-office-ro"}]},
    )
    assert r.status_code == 422 and "reintegration service" in r.json()["detail"]
    await j.step(
        "reintegration-plan", {"agreed_on": day(41), "services": [{"service": "housing", "agency_id": "shelter-es"}]}
    )
    # Monitoring follows the schedule: the 3-month visit cannot be recorded a week after the plan.
    r = await j.http.post(
        f"/v1/cases/{j.case_id}/steps/monitoring",
        headers=j.cw,
        json={"visited_on": day(48), "economic": 0.9, "social": 0.9, "psychosocial": 0.9},
    )
    assert r.status_code == 422 and "monitoring visit" in r.json()["detail"]


async def test_dates_out_of_any_sense_are_422(stack):
    j = Journey(stack)
    body = {
        "person": {"first_name": "A"},
        "identification": {"identified_on": "9999-12-20", "country": "ES", "exploitation_types": ["Other"]},
        "origin_country": "RO",
    }
    r = await j.http.post("/v1/cases", json=body, headers=j.cw)
    assert r.status_code == 422
    await j.open()
    r = await j.http.post(
        f"/v1/cases/{j.case_id}/steps/risk-assessment", headers=j.cw, json={"level": "low", "assessed_on": "9999-01-01"}
    )
    assert r.status_code == 422


async def test_two_writers_with_the_same_etag_cannot_both_succeed(stack):
    import asyncio

    j = Journey(stack)
    await j.open()
    r = await j.http.get(f"/v1/cases/{j.case_id}", headers=j.cw)
    tag = r.headers["etag"]
    body = {"level": "low", "assessed_on": day(1)}
    url = f"/v1/cases/{j.case_id}/steps/risk-assessment"
    answers = await asyncio.gather(*(j.http.post(url, json=body, headers={**j.cw, "If-Match": tag}) for _ in range(2)))
    assert sorted(a.status_code for a in answers) == [200, 412]
    assert [e["name"] for e in (await j.get())["timeline"]].count("risk-assessment") == 1
