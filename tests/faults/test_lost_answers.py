"""An answer lost after the command took effect: the client's retry, same key, gets that answer.

What a database outage (or an API process dying) does between the workflow's update and the stored
response, made to happen on purpose: the stored response is dropped, as if it was never written,
and the request is sent again with its Idempotency-Key. When the command moved the case to another
stage (another workflow), or closed it, the retry must still find the first effect, not refuse
(409/422) nor apply it twice.
"""

from __future__ import annotations

import pytest
from sqlalchemy import delete
from sqlmodel import Session

from reintegration.db import IdempotencyRecord
from tests.faults.harness import update_ids_in_history
from tests.journey import Journey, day

pytestmark = pytest.mark.faults


def forget_answer(stack, sub: str, key: str) -> None:
    with Session(stack.engine) as session:
        session.execute(delete(IdempotencyRecord).where(IdempotencyRecord.sub == sub, IdempotencyRecord.key == key))
        session.commit()


async def send_twice_losing_the_first_answer(stack, j: Journey, step: str, body: dict, key: str, sub: str):
    url = f"/v1/cases/{j.case_id}/steps/{step}"
    headers = {**j.cw, "Idempotency-Key": key}
    first = await stack.http.post(url, json=body, headers=headers)
    assert first.status_code == 200, first.text
    forget_answer(stack, sub, key)
    again = await stack.http.post(url, json=body, headers=headers)
    assert again.status_code == 200, again.text
    assert (again.json()["stage"], again.json()["version"]) == (first.json()["stage"], first.json()["version"])
    counts = await update_ids_in_history(stack.client, j.case_id)
    assert counts[f"{sub}:{key}"] == 1
    steps = [e["name"] for e in (await j.get())["timeline"] if e["kind"] == "step"]
    assert steps.count(step) == 1
    return again.json()


async def test_a_lost_answer_to_a_stage_change_is_found_again(stack):
    j = Journey(stack)
    await j.open()
    await j.through_protection()
    case = await send_twice_losing_the_first_answer(
        stack, j, "pathway", {"pathway": "residence", "decided_on": day(3)}, "lost-pathway", "cw-es-1"
    )
    assert case["stage"] == "residence"


async def test_a_lost_answer_to_the_closing_step_is_found_again(stack):
    j = Journey(stack)
    await j.open()
    case = await send_twice_losing_the_first_answer(
        stack, j, "withdraw-consent", {"withdrawn_on": day(1)}, "lost-withdrawal", "cw-es-1"
    )
    assert case["status"] == "closed"


async def test_a_lost_answer_to_the_approval_of_closure_is_found_again(stack):
    """Closed in the reintegration stage's workflow: the case workflow has its state back since."""
    j = Journey(stack)
    await j.open()
    await j.to_reintegration_by_residence()
    await j.step(
        "reintegration-plan", {"agreed_on": day(41), "services": [{"service": "medical", "agency_id": "clinic-es"}]}
    )
    [task] = j.case["open_tasks"]
    await j.task_action(task["task_id"], "clinic-es", "accept")
    await j.task_action(task["task_id"], "clinic-es", "complete", {"outcome": "done"})
    await j.step("closure", {"reason": "lost-contact"})
    j.cw = j.supervisor  # the supervisor approves
    case = await send_twice_losing_the_first_answer(stack, j, "approve-closure", {}, "lost-approval", "sup-1")
    assert case["status"] == "closed"
