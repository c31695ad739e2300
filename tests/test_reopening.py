"""Reopening a closed case (issue 14, item 6): a supervisor, with a reason, in protection or
reintegration; a new run of the case's journey, the old history kept and readable; not after the
erasure, nor after the person withdrew consent."""

from __future__ import annotations

import asyncio
import uuid

from temporalio.worker import Replayer
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from reintegration.codec import data_converter
from tests.conftest import Stack
from tests.journey import Journey, day
from tests.test_audit import trail
from tests.test_workspace_cases import caseworker, form_of, send_form
from tests.workspace import Person
from workflows import ids
from workflows.case import CaseWorkflow
from workflows.stages import ALL_WORKFLOWS


async def closed_case(stack: Stack) -> Journey:
    j = Journey(stack)
    await j.open()
    await j.to_reintegration_by_residence()
    await j.through_reintegration_to_closure()
    assert j.case["status"] == "closed"
    return j


async def reopen(stack: Stack, j: Journey, body: dict, headers: dict | None = None, *, expect: int = 200) -> dict:
    r = await stack.http.post(f"/v1/cases/{j.case_id}/reopen", json=body, headers=headers or j.supervisor)
    assert r.status_code == expect, r.text
    if expect >= 400:
        assert r.headers["content-type"].startswith("application/problem+json")
    return dict(r.json())


async def test_a_supervisor_reopens_a_closed_case_for_a_new_need_and_the_journey_goes_on(stack):
    j = await closed_case(stack)
    before = await j.get()
    case = await reopen(stack, j, {"stage": "reintegration", "reason": "Lost her job: a new plan is needed."})
    assert (case["status"], case["stage"], case["closure_reason"]) == ("active", "reintegration", None)
    assert case["version"] > before["version"] and "reintegration-plan" in case["allowed_steps"]
    # The old history kept and readable: every earlier entry, then the reopening with its reason.
    names = [(e["kind"], e["name"]) for e in case["timeline"]]
    assert names[: len(before["timeline"])] == [(e["kind"], e["name"]) for e in before["timeline"]]
    reopened = next(e for e in case["timeline"] if e["name"] == "reopened")
    assert reopened["facts"]["reason"] == "Lost her job: a new plan is needed." and reopened["actor_sub"] == "sup-1"
    # The journey goes on: a new plan, a note (a closed case took none).
    await j.step(
        "reintegration-plan",
        {"agreed_on": day(500), "services": [{"service": "job-orientation", "agency_id": "clinic-es"}]},
    )
    assert j.case["stage"] == "reintegration" and len(j.case["open_tasks"]) == 1
    r = await stack.http.post(f"/v1/cases/{j.case_id}/notes", json={"text": "New plan agreed."}, headers=j.cw)
    assert r.status_code == 201
    # The trail says who reopened it, and in which stage; never the reason.
    rows = [r for r in await trail(stack, j.case_id) if r["action"] == "case.reopen"]
    assert [(r["actor"]["sub"], r["detail"]) for r in rows] == [("sup-1", {"stage": "reintegration"})]
    # A new run of the same workflow; the closed run is still there, and both replay.
    runs = [w async for w in stack.client.list_workflows(f'WorkflowId = "{ids.workflow_id(j.case_id)}"')]
    assert len(runs) >= 2
    replayer = Replayer(
        workflows=[CaseWorkflow, *ALL_WORKFLOWS],
        data_converter=data_converter(stack.keyring),
        workflow_runner=SandboxedWorkflowRunner(),
    )
    for run in runs:
        history = await stack.client.get_workflow_handle(run.id, run_id=run.run_id).fetch_history()
        await replayer.replay_workflow(history)


async def test_reopened_in_protection_the_risk_and_the_pathway_are_decided_again(stack):
    j = await closed_case(stack)
    case = await reopen(stack, j, {"stage": "protection", "reason": "Identified again: re-trafficked."})
    assert (case["status"], case["stage"], case["pathway"]) == ("active", "protection", None)
    assert "risk-assessment" in case["allowed_steps"]
    await j.step("risk-assessment", {"level": "high", "threats": [], "assessed_on": day(600)})
    assert j.case["stage"] == "protection"


async def test_reopening_is_refused_where_it_must_be_and_changes_nothing(stack):
    open_case = Journey(stack)
    await open_case.open()
    await reopen(stack, open_case, {"stage": "protection", "reason": "x"}, expect=409)  # not closed
    j = await closed_case(stack)
    for body in ({"stage": "pathway", "reason": "x"}, {"stage": "protection"}, {"stage": "protection", "reason": ""}):
        await reopen(stack, j, body, expect=422)
    await reopen(stack, j, {"stage": "protection", "reason": "x"}, headers=j.cw, expect=403)
    elsewhere = stack.auth("supervisor", "sup-pt", countries=["PT"])
    await reopen(stack, j, {"stage": "protection", "reason": "x"}, headers=elsewhere, expect=404)
    r = await stack.http.post(
        f"/v1/cases/{uuid.uuid4()}/reopen", json={"stage": "protection", "reason": "x"}, headers=j.supervisor
    )
    assert r.status_code == 404
    assert (await j.get())["status"] == "closed"
    # Consent withdrawn: a new case with new consent, not a reopening.
    withdrawn = Journey(stack)
    await withdrawn.open()
    await withdrawn.step("withdraw-consent", {"withdrawn_on": day(1)})
    problem = await reopen(stack, withdrawn, {"stage": "protection", "reason": "x"}, expect=409)
    assert "withdrew consent" in problem["detail"]
    # Erased: nothing to reopen.
    r = await stack.http.delete(f"/v1/cases/{j.case_id}/personal-data", headers=stack.auth("admin", "admin-1"))
    assert r.status_code == 200
    problem = await reopen(stack, j, {"stage": "reintegration", "reason": "x"}, expect=409)
    assert "erased" in problem["detail"]


async def test_a_supervisor_reopens_a_case_from_its_page(stack):
    j = await closed_case(stack)
    page = f"/workspace/cases/{j.case_id}"
    supervisor = await Person(stack).sign_in("supervisor", "sup-1", countries="ES")
    caseworker_ = await caseworker(stack)
    try:
        assert f'action="{page}/reopen"' not in await caseworker_.page(page)  # a supervisor's decision
        html = await supervisor.page(page)
        form = form_of(html, f"{page}/reopen")
        assert 'value="protection"' in form and 'value="reintegration"' in form and 'value="pathway"' not in form
        r = await send_form(supervisor, page, f"{page}/reopen", {"stage": "reintegration", "reason": ""})
        assert r.status_code == 422  # the reason is required: said beside it, nothing reopened
        r = await send_form(supervisor, page, f"{page}/reopen", {"stage": "reintegration", "reason": "A new need."})
        assert (r.status_code, r.headers["location"]) == (303, f"{page}?done=reopened")
        html = await supervisor.page(r.headers["location"])
        assert "The case is reopened." in html and f'action="{page}/reopen"' not in html
        assert (await j.get())["status"] == "active"
    finally:
        await supervisor.aclose()
        await caseworker_.aclose()


async def test_two_reopenings_at_once_reopen_once(stack):
    j = await closed_case(stack)
    others = stack.auth("supervisor", "sup-2")
    answers = await asyncio.gather(
        stack.http.post(
            f"/v1/cases/{j.case_id}/reopen", json={"stage": "reintegration", "reason": "a"}, headers=j.supervisor
        ),
        stack.http.post(f"/v1/cases/{j.case_id}/reopen", json={"stage": "protection", "reason": "b"}, headers=others),
    )
    assert sorted(r.status_code for r in answers) == [200, 409], [r.text for r in answers]
    case = await j.get()
    assert case["status"] == "active" and [e["name"] for e in case["timeline"]].count("reopened") == 1
