"""Reopening a closed case: by a supervisor, in protection or reintegration, never after consent was
withdrawn; what the chosen stage decides is asked again, the rest of the history stays."""

from __future__ import annotations

import pytest

from tests.rules.builders import CASEWORKER, SUPERVISOR, closed, planned, withdrawn
from workflows import rules
from workflows.model import CaseStatus, Reopening, Stage, Step


def reopening(stage: Stage, actor=SUPERVISOR) -> Reopening:  # type: ignore[no-untyped-def]
    return Reopening(stage=stage, reason="Re-trafficked: found again in March.", actor=actor)


@pytest.mark.parametrize("stage", [Stage.protection, Stage.reintegration])
def test_a_closed_case_reopens_in_the_chosen_stage(stage: Stage) -> None:
    case = closed()
    before = case.state.model_copy(deep=True)
    cmd = reopening(stage)
    rules.check_reopen(case.state, cmd)
    events = rules.apply_reopen(case.state, cmd, case.on(500).now, case.new_id)
    state = case.state
    assert [(e.kind, e.name) for e in events] == [("case", "reopened"), ("stage", stage.value)]
    assert events[0].facts == {"stage": stage.value, "reason": cmd.reason, "reopening": 1}
    assert events[0].actor_sub == SUPERVISOR.sub and events[1].facts == {"from": "closed"}
    assert (state.status, state.stage, state.reopenings) == (CaseStatus.active, stage, 1)
    assert state.closure_reason is None and state.closed_at is None and state.closure_requested is None
    assert state.version == before.version + 1
    assert state.plan_agreed_on is None and state.monitoring_visits == []  # a new plan either way
    assert state.tasks == before.tasks and state.owner_country == before.owner_country  # history kept
    if stage == Stage.protection:
        assert state.risk_assessed_on is None and state.security_guarantee_on is None and state.pathway is None
        assert state.pathway_decisions == before.pathway_decisions and state.reintegration_started_on is None
        assert Step.risk_assessment.value in rules.allowed_steps(state)
    else:
        assert state.reintegration_started_on == case.now.date() and state.stage_runs == before.stage_runs + 1
        assert state.risk_assessed_on == before.risk_assessed_on
        assert Step.reintegration_plan.value in rules.allowed_steps(state)
    assert rules.open_items(state)  # something is due again
    # ...and nothing is overdue yet: the deadlines count from the reopening, not the identification.
    assert rules.evaluate_stall(state, case.now, case.new_id) == [] and state.stall == []


def test_reopening_is_refused_where_it_must_be() -> None:
    with pytest.raises(rules.Forbidden):
        rules.check_reopen(closed().state, reopening(Stage.protection, CASEWORKER))
    with pytest.raises(rules.StepNotAllowed):
        rules.check_reopen(planned().state, reopening(Stage.reintegration))  # not closed
    with pytest.raises(rules.StepNotAllowed):
        rules.check_reopen(withdrawn().state, reopening(Stage.protection))  # consent withdrawn
    for stage in (Stage.identification, Stage.pathway, Stage.return_, Stage.residence, Stage.closed):
        with pytest.raises(rules.InvalidCommand):
            rules.check_reopen(closed().state, reopening(stage))


def test_a_case_reopened_twice_counts_its_reopenings() -> None:
    case = closed()
    rules.apply_reopen(case.state, reopening(Stage.reintegration), case.on(500).now, case.new_id)
    case.state.status = CaseStatus.closed  # closed again (as an approved closure would)
    events = rules.apply_reopen(case.state, reopening(Stage.reintegration), case.on(900).now, case.new_id)
    assert case.state.reopenings == 2 and events[0].facts["reopening"] == 2
