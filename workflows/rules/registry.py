"""The journey's table: every step with its rule, the services each stage may ask for, and every
open item with its deadline. The workflows, the API's routes and examples, and the allowed-steps
logic all read it, so a stage's rules are written once, in the stage's module:

| stage                        | module                          | held by             |
| ---------------------------- | ------------------------------- | ------------------- |
| identification and consent   | ``rules/identification.py``     | CaseJourney         |
| protection                   | ``rules/protection.py``         | CaseJourney         |
| pathway                      | ``rules/pathway.py``            | CaseJourney         |
| voluntary return             | ``rules/voluntary_return.py``   | ReturnStage         |
| residence                    | ``rules/residence.py``          | ResidenceStage      |
| reintegration                | ``rules/reintegration.py``      | ReintegrationStage  |
| closure (and withdrawal)     | ``rules/closure.py``            | whichever holds it  |
"""

from __future__ import annotations

from datetime import timedelta

from workflows.model import CaseStatus, JourneyState, OpenItem, Service, Stage, Step, TaskStatus
from workflows.rules import (
    closure,
    identification,
    pathway,
    protection,
    reintegration,
    residence,
    voluntary_return,
)
from workflows.rules.base import StepRule
from workflows.rules.dates import end_of

# In the journey's order: open items are listed in it.
STAGE_MODULES = (identification, protection, pathway, voluntary_return, residence, reintegration, closure)

STEPS: dict[Step, StepRule] = {rule.step: rule for module in STAGE_MODULES for rule in module.STEPS}
assert set(STEPS) == set(Step), f"steps without a rule: {set(Step) - set(STEPS)}"

SUPERVISOR_STEPS = closure.SUPERVISOR_STEPS
IMMEDIATE_SERVICES = protection.IMMEDIATE_SERVICES
# What each stage may ask partners for besides the immediate services.
STAGE_SERVICES: dict[Stage, frozenset[Service]] = {
    Stage.return_: voluntary_return.SERVICES,
    Stage.residence: residence.SERVICES,
    Stage.reintegration: reintegration.SERVICES,
}


def allowed_services(state: JourneyState) -> frozenset[Service]:
    if state.status == CaseStatus.closed or state.consent is None or not state.consent.assistance:
        return frozenset()
    return IMMEDIATE_SERVICES | STAGE_SERVICES.get(state.stage, frozenset())


def open_items(state: JourneyState) -> list[OpenItem]:
    """Every open step and task with its due time and whose turn it is."""
    if state.status == CaseStatus.closed:
        return []
    items = [item for module in STAGE_MODULES for item in module.open_items(state)]
    return items + _task_items(state)


def _task_items(state: JourneyState) -> list[OpenItem]:
    """An assigned task waits for the agency to accept it, an accepted one to complete it by its due
    day; a declined or undeliverable one waits for the caseworker to reassign it."""
    cfg, items = state.config, []
    for task in state.tasks.values():
        if not task.is_open:
            continue
        since = task.assigned_at
        if task.status in (TaskStatus.declined, TaskStatus.delivery_failed):
            since = task.declined_at or task.delivery_failed_at or task.assigned_at
            due = since + timedelta(days=cfg.declined_reassign_days)
            turn = "caseworker"
        elif task.status == TaskStatus.assigned:
            due, turn = min(task.accept_by, end_of(task.due_on)), "agency"
        else:
            due, turn = end_of(task.due_on), "agency"
        items.append(
            OpenItem(
                kind="task",
                name=task.service.value,
                task_id=task.task_id,
                due_at=due,
                turn=turn,
                agency_id=task.agency_id,
                since=since,
            )
        )
    return items
