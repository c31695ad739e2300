"""The child workflows of the stages that can last months: return, residence and reintegration.

Each holds the journey while its stage is current, continues as new when its history grows long,
and returns the state to the case workflow when the stage ends (arrival, a permit, a change of
pathway, closure or withdrawal of consent).
"""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from workflows.journey import JourneyWorkflowBase, check_own_case
    from workflows.model import JourneyState, Stage


class _StageWorkflow(JourneyWorkflowBase):
    @workflow.init
    def __init__(self, state: JourneyState) -> None:
        super().__init__()
        self.state = state
        self.follow_patches()

    async def _hold(self) -> JourneyState:
        check_own_case(self.state.case_id)
        if await self.hold_stage():
            workflow.continue_as_new(self.state)
        return self.state


@workflow.defn(name="ReturnStage")
class ReturnWorkflow(_StageWorkflow):
    """Voluntary return: origin assessment, documents, travel, departure and reception.

    Its steps and their rules: ``workflows/rules/voluntary_return.py``.
    """

    OWNED_STAGES = (Stage.return_,)

    @workflow.run
    async def run(self, state: JourneyState) -> JourneyState:
        return await self._hold()


@workflow.defn(name="ResidenceStage")
class ResidenceWorkflow(_StageWorkflow):
    """Residence: legal assistance, application, decision and appeal; the wait can take months.

    Its steps and their rules: ``workflows/rules/residence.py``.
    """

    OWNED_STAGES = (Stage.residence,)

    @workflow.run
    async def run(self, state: JourneyState) -> JourneyState:
        return await self._hold()


@workflow.defn(name="ReintegrationStage")
class ReintegrationWorkflow(_StageWorkflow):
    """Reintegration: the plan, its services, monitoring visits and closure.

    Its steps and their rules: ``workflows/rules/reintegration.py`` and ``workflows/rules/closure.py``.
    """

    OWNED_STAGES = (Stage.reintegration,)

    @workflow.run
    async def run(self, state: JourneyState) -> JourneyState:
        return await self._hold()


# The classes themselves (not their base, which has no ``run``), so a child is started with the right one.
STAGE_WORKFLOWS: dict[Stage, type[ReturnWorkflow] | type[ResidenceWorkflow] | type[ReintegrationWorkflow]] = {
    Stage.return_: ReturnWorkflow,
    Stage.residence: ResidenceWorkflow,
    Stage.reintegration: ReintegrationWorkflow,
}
ALL_WORKFLOWS = [ReturnWorkflow, ResidenceWorkflow, ReintegrationWorkflow]
