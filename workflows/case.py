"""The case journey: one workflow per case, from identification to closure.

It owns the identification, protection and pathway stages itself and hands the journey to a
child workflow for each of the return, residence and reintegration stages, taking the state back
when the child's stage ends.
"""

from __future__ import annotations

from pydantic import BaseModel
from temporalio import workflow
from temporalio.exceptions import ApplicationError
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from workflows import ids, rules
    from workflows.journey import JourneyWorkflowBase, check_own_case
    from workflows.model import (
        CaseOpening,
        CaseStatus,
        CommandResult,
        JourneyState,
        Reopening,
        Stage,
        Step,
        StepCommand,
    )
    from workflows.stages import STAGE_WORKFLOWS


class CaseRun(BaseModel):
    """The case workflow's input: the opening facts on the first run, the state after that; with
    ``reopening``, the closed run's state and a supervisor's reopening of it (a run with no
    reopening, as every run before it existed, behaves as it always did)."""

    opening: CaseOpening | None = None
    state: JourneyState | None = None
    reopening: Reopening | None = None


class CaseOutcome(BaseModel):
    case_id: str
    closure_reason: str | None
    version: int


@workflow.defn(name="CaseJourney")
class CaseWorkflow(JourneyWorkflowBase):
    """One per case: identification, protection and the pathway decision, then the long stages' children.

    Its steps and their rules: ``workflows/rules/identification.py``, ``protection.py`` and
    ``pathway.py``; closure and withdrawal of consent (any stage) in ``closure.py``.
    """

    OWNED_STAGES = (Stage.identification, Stage.protection, Stage.pathway)

    @workflow.init
    def __init__(self, run: CaseRun) -> None:
        super().__init__()
        self._opened = run.state is not None and run.reopening is None
        if run.state is not None:
            self.state = run.state
        else:
            assert run.opening is not None
            self.state = rules.new_journey(run.opening, workflow.now())
        self.follow_patches()

    @workflow.run
    async def run(self, run: CaseRun) -> CaseOutcome:
        check_own_case(self.state.case_id)
        if run.reopening is not None and not self._opened:
            await self._reopen(run.reopening)
        elif not self._opened:
            await self._open(run.opening)  # type: ignore[arg-type]  # not opened: __init__ asserted an opening
        while self.state.status != CaseStatus.closed:
            if self.state.stage in self.OWNED_STAGES:
                if await self.hold_stage():
                    workflow.continue_as_new(CaseRun(state=self.state))
                continue
            child = STAGE_WORKFLOWS[self.state.stage]
            self.state = await workflow.execute_child_workflow(
                child.run,
                self.state,
                id=ids.stage_workflow_id(self.state),
                parent_close_policy=ParentClosePolicy.TERMINATE,
            )
        await workflow.wait_condition(workflow.all_handlers_finished)
        reason = self.state.closure_reason
        return CaseOutcome(
            case_id=self.state.case_id, closure_reason=reason.value if reason else None, version=self.state.version
        )

    async def _open(self, opening: CaseOpening) -> None:
        async with self._lock:
            events = [rules.opened_event(self.state, opening.opened_by, workflow.now(), self._new_id)]
            if opening.initial_consent is not None:
                cmd = StepCommand(
                    step=Step.consent, body=opening.initial_consent.model_dump(mode="json"), actor=opening.opened_by
                )
                body = rules.check_step(self.state, cmd)
                events += rules.apply_step(self.state, cmd, body, workflow.now(), self._new_id)
            await self.project(events + rules.evaluate_stall(self.state, workflow.now(), self._new_id))
            self._opened = True

    async def _reopen(self, reopening: Reopening) -> None:
        """The supervisor's reopening, applied and projected before anything else (the API checked it;
        the workflow trusts no sender: a reopening its rules refuse fails the run, changing nothing)."""
        async with self._lock:
            try:
                rules.check_reopen(self.state, reopening)
            except rules.JourneyRuleError as exc:
                raise ApplicationError(exc.detail, type="ReopeningRefused", non_retryable=True) from None
            events = rules.apply_reopen(self.state, reopening, workflow.now(), self._new_id)
            await self.project(events + rules.evaluate_stall(self.state, workflow.now(), self._new_id))
            self._opened = True

    @workflow.update(name="opened")
    async def opened(self) -> CommandResult:
        """Returns once the case is in the read model: the API opens a case with this update."""
        await workflow.wait_condition(lambda: self._opened)
        return CommandResult(version=self.state.version, stage=self.state.stage)
