"""What travels between the API, the workflows and the activities: commands and their bodies for
tasks, results, the opening of a case, and the requests of the delivery and notification activities.

The step bodies live with their stage's rules (workflows/rules/<stage>.py); a task's bodies are the
same in every stage, so they are here.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from pydantic import Field

from workflows.model.vocabulary import (
    Actor,
    ConsentBody,
    CountryCode,
    Day,
    ExploitationType,
    Identifier,
    JourneyConfig,
    Notes,
    OrgType,
    OriginAssessment,
    Service,
    ShortText,
    Stage,
    Step,
    Strict,
    TaskAction,
    TaskOutcome,
    TraffickingStatus,
    UpdateId,
)

# --- Task bodies --------------------------------------------------------------------------------


class AssignTaskBody(Strict):
    service: Service
    agency_id: Identifier | None = Field(default=None, description="Default: the service's default agency")
    due_date: Day | None = None
    notes: Notes = ""


class AcceptTaskBody(Strict):
    notes: Notes = ""


class CompleteTaskBody(Strict):
    outcome: TaskOutcome
    notes: Notes = ""
    assessment: OriginAssessment | None = Field(default=None, description="For origin-assessment: is return safe?")
    arrived_on: Day | None = Field(default=None, description="For reception: the arrival date.")


class DeclineTaskBody(Strict):
    reason: ShortText


class ReassignTaskBody(Strict):
    agency_id: Identifier
    due_date: Day | None = None
    notes: Notes = ""


class CancelTaskBody(Strict):
    reason: ShortText


class DeliveryFailedBody(Strict):
    agency_id: Identifier
    assignment: int = Field(ge=1, description="Which assignment of the task the refused message carried")
    delivery_id: ShortText
    reason: ShortText


TASK_BODIES: dict[TaskAction, type[Strict]] = {
    TaskAction.assign: AssignTaskBody,
    TaskAction.accept: AcceptTaskBody,
    TaskAction.complete: CompleteTaskBody,
    TaskAction.decline: DeclineTaskBody,
    TaskAction.reassign: ReassignTaskBody,
    TaskAction.cancel: CancelTaskBody,
    TaskAction.delivery_failed: DeliveryFailedBody,
}


# --- Workflow messages --------------------------------------------------------------------------


class StepCommand(Strict):
    step: Step
    body: dict[str, Any]
    actor: Actor
    expected_version: int | None = Field(default=None, description="From If-Match: refuse if the case moved on")
    # Bound to the update that carries it (checked by the workflow's validator): a sealed command
    # copied out of a history and sent again under another update id, or long after, is refused.
    update_id: UpdateId | None = None
    issued_at: datetime | None = None


class TaskCommand(Strict):
    action: TaskAction
    task_id: str | None = None  # None only for assign: the workflow picks the id
    body: dict[str, Any]
    actor: Actor
    # Bound to the update that carries it (checked by the workflow's validator): a sealed command
    # copied out of a history and sent again under another update id, or long after, is refused.
    update_id: UpdateId | None = None
    issued_at: datetime | None = None


class ReassignOwner(Strict):
    """A supervisor's decision: the case goes to another caseworker; with ``country``, a transfer the
    receiving office accepted: the case goes to that country's office and its caseworker (a command
    without it, as every one before transfers existed, is the reassignment it always was)."""

    caseworker: Identifier
    actor: Actor
    reason: Notes = ""
    country: CountryCode | None = None
    # The country the sender saw the case in: refused if it moved meanwhile (a transfer accepted, a
    # hand-over), so a command meant for one office never takes the case from another.
    from_country: CountryCode | None = None
    # Bound to the update that carries it (checked by the workflow's validator): a sealed command
    # copied out of a history and sent again under another update id, or long after, is refused.
    update_id: UpdateId | None = None
    issued_at: datetime | None = None


class Reopening(Strict):
    """A supervisor's reopening of a closed case (re-trafficking, a new need): the stage the journey
    starts again in (protection or reintegration) and why. A new run of the case workflow starts
    from the closed run's state with it (``rules.reopening``)."""

    stage: Stage
    reason: ShortText
    actor: Actor


class CommandResult(Strict):
    """What an update returns: the case's new version and the task it created or changed."""

    version: int
    stage: Stage
    task_id: str | None = None


class CaseOpening(Strict):
    """The non-identifying facts a case journey starts from."""

    case_id: str
    reference: str
    owner_country: CountryCode
    owner_caseworker: str
    origin_country: CountryCode
    identified_on: date
    is_minor: bool
    exploitation_types: list[ExploitationType] = Field(default_factory=list)
    trafficking_status: TraffickingStatus = TraffickingStatus.PossibleVictimOfTrafficking
    referred_by: OrgType | None = None
    initial_consent: ConsentBody | None = None
    opened_by: Actor
    config: JourneyConfig = Field(default_factory=JourneyConfig)


class AgencyNeed(Strict):
    """An agency a command gives a task to, the service and the country where it is needed: the
    workflow has the registry confirm it (``check_agencies``), whoever sent the command."""

    service: Service
    agency_id: str
    country: str


class AgencyNeeds(Strict):
    needs: list[AgencyNeed] = Field(default_factory=list)


class DeliveryRequest(Strict):
    """One message to an agency: which, to whom, and how patiently to retry."""

    delivery_id: str
    event: str  # "task.assigned" or "task.cancelled"
    case_id: str
    task_id: str
    agency_id: str
    assignment: int = 1  # which assignment of the task: a message about an earlier one is stale
    timeout_seconds: float = 10.0
    retry_initial_seconds: float = 1.0
    retry_max_seconds: float = 300.0
    reason: str = ""


class ReassignmentProgress(Strict):
    """Where a bulk reassignment is: the cases moved, and those left as they were, with why."""

    total: int
    done: list[str] = Field(default_factory=list)
    skipped: dict[str, str] = Field(default_factory=dict)
    finished: bool = False


class BulkReassignment(Strict):
    """A supervisor moves some or all of one caseworker's cases to another (``BulkReassignment``);
    ``progress`` carried over when the workflow continues as new."""

    reassignment_id: str
    case_ids: list[str] = Field(max_length=5000)
    from_caseworker: Identifier
    to_caseworker: Identifier
    actor: Actor
    progress: ReassignmentProgress | None = None


class ReassignOne(Strict):
    """One case of a bulk reassignment, given to the activity that sends the case its command (the
    reason, free text, stays in the reassignment's row, sealed: never in a workflow's input)."""

    reassignment_id: str
    case_id: str
    from_caseworker: Identifier
    to_caseworker: Identifier
    actor: Actor


class DigestRun(Strict):
    """The daily digests' workflow: the hour (UTC) they go at, and how patiently to retry."""

    hour: int = Field(default=7, ge=0, le=23)
    retry_max_seconds: float = 300.0
    smtp_timeout_seconds: float = 20.0


class WebhookVerificationRequest(Strict):
    """Send the challenge to an agency's new webhook address (and tell its confirmed one)."""

    agency_id: str
    verification_id: str
    timeout_seconds: float = 10.0
    retry_initial_seconds: float = 1.0
    retry_max_seconds: float = 300.0
    expires_in_seconds: float = 86400.0


class DeliveryOutcome(Strict):
    delivery_id: str
    status: str  # delivered, skipped, failed
    detail: str = ""
