"""Changes of pathway and withdrawal of consent mid-way."""

from __future__ import annotations

from sqlmodel import Session, select

from reintegration.db import TaskRecord
from tests.journey import Journey, day


async def test_pathway_change_after_residence_refusal(stack):
    j = Journey(stack)
    await j.open()
    await j.through_protection()
    await j.step("pathway", {"pathway": "residence", "decided_on": day(3)})
    legal = await j.assign("legal-assistance", "legal-aid-es")
    await j.step(
        "residence-application",
        {"filed_on": day(5), "permit_type": "victim-of-trafficking", "authority_reference": "EXT-2"},
    )
    await j.step("residence-decision", {"decision": "rejected", "decided_on": day(60)})
    assert "appeal" in j.case["allowed_steps"] and "pathway" in j.case["allowed_steps"]
    await j.step("appeal", {"filed_on": day(65), "authority_reference": "REC-1"})
    assert "pathway" not in j.case["allowed_steps"]  # an appeal is pending
    await j.step("residence-decision", {"decision": "rejected", "decided_on": day(120)})
    await j.step("pathway", {"pathway": "voluntary_return", "decided_on": day(121), "reason": "appeal rejected"})
    assert j.case["stage"] == "return" and j.case["pathway"] == "voluntary_return"
    decisions = [d["pathway"] for d in j.case["facts"]["pathway_decisions"]]
    assert decisions == ["residence", "voluntary_return"]  # the change is a new decision
    r = await j.http.get(f"/v1/tasks/{legal['task_id']}", headers=j.cw)
    assert r.json()["status"] == "cancelled"  # the residence stage's open task is moot now
    await j.deliver("origin-assessment", "origin-office-ro", assessment="safe")
    await j.deliver("travel-documents", "consulate-ro")
    await j.step("travel-plan", {"travel_date": day(130), "route": "MAD-OTP", "receiving_caseworker": "cw-ro-1"})
    await j.step("departure", {"departed_on": day(130)})
    await j.deliver("reception", "origin-office-ro", arrived_on=day(130))
    j.cw = j.cw_origin
    await j.get()
    assert j.case["stage"] == "reintegration" and j.case["owner"]["country"] == "RO"
    await j.through_reintegration_to_closure()
    assert j.case["status"] == "closed"


async def test_unsafe_origin_blocks_return_until_the_pathway_changes(stack):
    j = Journey(stack)
    await j.to_return(assessment="unsafe")
    refused = await j.step(
        "travel-plan", {"travel_date": day(10), "route": "MAD-OTP", "receiving_caseworker": "cw-ro-1"}, expect=409
    )
    assert "unsafe" in refused["detail"] and "travel-plan" not in refused["allowed_steps"]
    await j.step("pathway", {"pathway": "residence", "decided_on": day(5), "reason": "return unsafe"})
    assert j.case["stage"] == "residence"


async def test_a_new_safe_assessment_lifts_the_block(stack):
    j = Journey(stack)
    await j.to_return(assessment="unsafe")
    await j.deliver("origin-assessment", "origin-office-ro", assessment="safe")
    await j.step("travel-plan", {"travel_date": day(10), "route": "MAD-OTP", "receiving_caseworker": "cw-ro-1"})
    assert "departure" not in j.case["allowed_steps"]  # documents still missing


async def test_withdrawal_of_consent_mid_way_cancels_tasks_and_closes(stack):
    j = Journey(stack)
    await j.open()
    shelter = await j.assign("shelter", "shelter-es")
    await j.task_action(shelter["task_id"], "shelter-es", "accept")
    await j.through_protection()
    await j.step("pathway", {"pathway": "voluntary_return", "decided_on": day(3)})
    docs = await j.assign("travel-documents", "consulate-ro")
    r = await j.http.post(f"/v1/cases/{j.case_id}/withdraw-consent", json={"withdrawn_on": day(4)}, headers=j.cw)
    assert r.status_code == 200, r.text
    case = r.json()
    assert case["status"] == "closed" and case["closure_reason"] == "withdrew" and case["stage"] == "closed"
    assert case["open_tasks"] == [] and case["allowed_steps"] == []
    with Session(stack.engine) as session:
        statuses = {
            t.task_id: t.status for t in session.exec(select(TaskRecord).where(TaskRecord.case_id == j.case_id))
        }
    assert statuses == {shelter["task_id"]: "cancelled", docs["task_id"]: "cancelled"}
    # The partner sees the cancellation; the closed case refuses everything.
    r = await j.http.get(f"/v1/tasks/{shelter['task_id']}", headers=j.partner("shelter-es"))
    assert r.json()["status"] == "cancelled"
    refused = await j.step("consent", {"assistance": True, "given_on": day(5)}, expect=409)
    assert refused["allowed_steps"] == []


async def test_withdrawal_during_reintegration(stack):
    j = Journey(stack)
    await j.open()
    await j.to_reintegration_by_residence()
    await j.step(
        "reintegration-plan", {"agreed_on": day(45), "services": [{"service": "housing", "agency_id": "shelter-es"}]}
    )
    await j.step("withdraw-consent", {"withdrawn_on": day(50)})
    assert j.case["status"] == "closed" and j.case["closure_reason"] == "withdrew"
    assert j.case["open_tasks"] == []


async def test_a_second_return_needs_fresh_assessment_and_documents(stack):
    j = Journey(stack)
    await j.to_return(assessment="safe", documents=True)
    await j.step("pathway", {"pathway": "residence", "decided_on": day(4), "reason": "changed her mind"})
    await j.step(
        "residence-application",
        {"filed_on": day(5), "permit_type": "victim-of-trafficking", "authority_reference": "EXT-3"},
    )
    await j.step("residence-decision", {"decision": "rejected", "decided_on": day(200)})
    await j.step("pathway", {"pathway": "voluntary_return", "decided_on": day(201)})
    plan = {"travel_date": day(210), "route": "MAD-OTP", "receiving_caseworker": "cw-ro-1"}
    refused = await j.step("travel-plan", plan, expect=409)
    assert "origin assessment" in refused["detail"]  # the one from eight months ago is stale
    await j.deliver("origin-assessment", "origin-office-ro", assessment="safe")
    await j.step("travel-plan", plan)
    refused = await j.step("departure", {"departed_on": day(210)}, expect=409)
    assert "travel documents" in refused["detail"]


async def test_arrival_before_departure_is_refused(stack):
    j = Journey(stack)
    await j.to_return(assessment="safe", documents=True)
    await j.step("travel-plan", {"travel_date": day(10), "route": "MAD-OTP", "receiving_caseworker": "cw-ro-1"})
    await j.step("departure", {"departed_on": day(10)})
    task = await j.assign("reception", "origin-office-ro")
    await j.task_action(task["task_id"], "origin-office-ro", "accept")
    await j.task_action(
        task["task_id"], "origin-office-ro", "complete", {"outcome": "done", "arrived_on": day(9)}, expect=422
    )
    assert (await j.get())["stage"] == "return"
