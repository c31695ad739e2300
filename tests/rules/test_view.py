"""What the read model is sent after a change (``rules.project_changes``): only what it touched."""

from __future__ import annotations

from tests.rules.builders import CLINIC, SHELTER, consented
from workflows import rules
from workflows.model import CommandResult, Stage


def test_the_projection_after_a_change_holds_the_tasks_it_touched_and_names_every_agency():
    case = consented()
    shelter = case.assign("shelter", SHELTER)
    clinic = case.assign("medical", CLINIC)
    case.state.applied_updates["update-1"] = CommandResult(version=case.state.version, stage=Stage.protection)

    events, _ = case.task("accept", task_id=clinic)
    sent = rules.project_changes(case.state, events)

    assert list(sent.state.tasks) == [clinic]  # the shelter's task did not change
    assert sent.agencies == sorted({SHELTER, CLINIC})
    assert sent.state.applied_updates == {}  # the read model never shows the answers
    # Everything else is the whole projection's.
    whole = rules.project(case.state, events)
    assert sent.model_dump(exclude={"state", "agencies"}) == whole.model_dump(exclude={"state", "agencies"})
    assert sent.state.model_dump(exclude={"tasks", "applied_updates"}) == whole.state.model_dump(
        exclude={"tasks", "applied_updates"}
    )
    # The workflow's own state is left whole.
    assert set(case.state.tasks) == {shelter, clinic} and "update-1" in case.state.applied_updates
    # Smaller on the wire, the point of it.
    assert len(sent.model_dump_json()) < len(whole.model_dump_json())


def test_a_hand_over_sends_every_task_as_their_scope_moves_with_the_case():
    case = consented()
    shelter = case.assign("shelter", SHELTER)
    clinic = case.assign("medical", CLINIC)
    handed_over = [
        e.model_copy(update={"kind": "case", "name": "handed-over"}) for e in case.step("risk-assessment")[:1]
    ]
    assert set(rules.project_changes(case.state, handed_over).state.tasks) == {shelter, clinic}
    assert rules.hands_over(handed_over) and not rules.hands_over([])
