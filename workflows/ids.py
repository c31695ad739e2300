"""Every Temporal workflow id, built in one place: ``case-<case id>`` and names under it, and the
agencies' webhook verifications.

The payload codec finds a payload's case from the id (its key seals the payload), so every workflow
of a case is named ``case-<case id>...``; the API, the workflows, the activities, the codec and the
reconciler all build and read ids here. Pure: no I/O.
"""

from __future__ import annotations

import re

from workflows.model import JourneyState, Stage

# The stages held by a child workflow of their own, which can last months.
CHILD_STAGES = (Stage.return_, Stage.residence, Stage.reintegration)

CASE_IN_WORKFLOW_ID = re.compile(r"^case-([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})")


def workflow_id(case_id: str) -> str:
    """The case workflow (CaseJourney), from opening to closure."""
    return f"case-{case_id}"


def stage_child_id(case_id: str, stage: Stage, run: int) -> str:
    """The child workflow of a stage's ``run``-th time (a return after a change of pathway is a new one)."""
    return f"case-{case_id}-{stage.value}-{run}"


def stage_workflow_id(state: JourneyState) -> str:
    """The workflow that owns the case now: the stage's child, or the case workflow itself."""
    if state.stage in CHILD_STAGES:
        return stage_child_id(state.case_id, state.stage, state.stage_runs)
    return workflow_id(state.case_id)


def message_workflow_id(case_id: str, kind: str, message_id: str) -> str:
    """A delivery to an agency (``kind`` "delivery") or a notification to supervisors ("notify")."""
    return f"case-{case_id}-{kind}-{message_id}"


def webhook_verification_id(agency_id: str, verification_id: str) -> str:
    """The verification of an agency's new webhook address: no case's, sealed with the system key."""
    return f"agency-{agency_id}-webhook-{verification_id}"


def case_workflows_query(case_id: str) -> str:
    """The visibility query that lists every workflow of the case."""
    return f'WorkflowId STARTS_WITH "{workflow_id(case_id)}"'


def case_of_workflow(workflow_id: str | None) -> str | None:
    """The case a workflow id names (every workflow of a case is ``case-<case id>...``), if any."""
    match = CASE_IN_WORKFLOW_ID.match(workflow_id or "")
    return match.group(1) if match else None
