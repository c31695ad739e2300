"""The journey's state, carried from workflow to child and across continue-as-new, and what the read
model is sent of it (the projection)."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

from pydantic import Field

from workflows.model.messages import CommandResult
from workflows.model.vocabulary import (
    OPEN_TASK_STATUSES,
    CaseStatus,
    ClosureReason,
    ConsentBody,
    ExploitationType,
    JourneyConfig,
    OrgType,
    OriginAssessment,
    Pathway,
    RiskLevel,
    Role,
    Service,
    Stage,
    Step,
    Strict,
    TaskOutcome,
    TaskStatus,
    TraffickingStatus,
)

# --- The journey's state ------------------------------------------------------------------------


class TaskState(Strict):
    task_id: str
    service: Service
    agency_id: str
    status: TaskStatus = TaskStatus.assigned
    stage: Stage
    stage_run: int = 0
    safety_plan: bool = False
    plan_item: bool = False
    assigned_at: datetime
    due_on: date
    accept_by: datetime
    accepted_at: datetime | None = None
    completed_at: datetime | None = None
    declined_at: datetime | None = None
    delivery_failed_at: datetime | None = None
    outcome: TaskOutcome | None = None
    assessment: OriginAssessment | None = None
    notes: str = ""
    outcome_notes: str = ""
    decline_reason: str = ""
    previous_agencies: list[str] = Field(default_factory=list)
    version: int = 0

    @property
    def assignment(self) -> int:
        """1 for the first agency, 2 after one reassignment, and so on."""
        return len(self.previous_agencies) + 1

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_TASK_STATUSES


class PathwayDecision(Strict):
    pathway: Pathway
    decided_on: date
    reason: str = ""


class ResidenceDecision(Strict):
    decision: str
    decided_on: date
    valid_until: date | None = None


class MonitoringVisit(Strict):
    """A monitoring visit scored for sustainability: each dimension's score (0..1), their weighted
    mean and the dimensions below their thresholds; with the sustainability survey, its answers by
    indicator (every ``SurveyIndicator``, in order; None: not applicable or not answered). A visit
    scored by typing the three scores in (the API before the survey, and old histories) has none."""

    visited_on: date
    scores: dict[str, float]
    weighted_score: float
    below_threshold: list[str]
    survey: dict[str, int | None] = Field(default_factory=dict)


class TimelineEvent(Strict):
    """One entry of the case's timeline: non-identifying facts only."""

    event_id: str
    seq: int
    at: datetime
    kind: str  # "step", "task", "stage", "case"
    name: str
    actor_sub: str | None = None
    actor_role: Role | None = None
    task_id: str | None = None
    facts: dict[str, Any] = Field(default_factory=dict)


class OpenItem(Strict):
    """An open step or task, when it is due and whose turn it is."""

    kind: str  # "step" or "task"
    name: str
    task_id: str | None = None
    due_at: datetime | None = None
    since: datetime | None = None  # when the item became open: its deadline runs from here
    turn: str  # "caseworker", "agency", "supervisor", "authority"
    agency_id: str | None = None

    @property
    def key(self) -> str:
        return f"task:{self.task_id}" if self.task_id else f"step:{self.name}"

    @property
    def escalate_at(self) -> datetime | None:
        """Twice the deadline: still stalled then, the supervisors are told again."""
        if self.due_at is None:
            return None
        since = self.since or self.due_at
        return self.due_at + max(self.due_at - since, timedelta(0))


class StallReason(Strict):
    """Why a case is stalled: an overdue item (or no activity at all), since when, whose turn."""

    key: str
    kind: str  # "step", "task" or "inactivity"
    name: str
    task_id: str | None = None
    agency_id: str | None = None
    turn: str
    due_at: datetime
    escalate_at: datetime


class JourneyState(Strict):
    """The whole journey of one case; carried from workflow to child and across continue-as-new."""

    case_id: str
    reference: str
    config: JourneyConfig
    opened_at: datetime
    identified_on: date
    owner_country: str
    owner_caseworker: str | None
    origin_country: str
    destination_country: str
    is_minor: bool
    exploitation_types: list[ExploitationType] = Field(default_factory=list)
    trafficking_status: TraffickingStatus = TraffickingStatus.PossibleVictimOfTrafficking
    referred_by: OrgType | None = None

    stage: Stage = Stage.identification
    stage_entered_at: datetime | None = None
    status: CaseStatus = CaseStatus.active
    version: int = 0
    last_activity_at: datetime | None = None
    stage_runs: int = 0

    consent: ConsentBody | None = None
    consent_withdrawn_on: date | None = None
    risk_level: RiskLevel | None = None
    risk_assessed_on: date | None = None
    safety_plan_on: date | None = None
    guardian_on: date | None = None
    security_guarantee_on: date | None = None

    pathway: Pathway | None = None
    pathway_decisions: list[PathwayDecision] = Field(default_factory=list)

    travel_plan_on: date | None = None
    travel_date: date | None = None
    receiving_caseworker: str | None = None
    departed_on: date | None = None
    arrived_on: date | None = None

    residence_applied_on: date | None = None
    residence_decisions: list[ResidenceDecision] = Field(default_factory=list)
    appeal_filed_on: date | None = None
    permit_valid_until: date | None = None

    reintegration_started_on: date | None = None
    plan_agreed_on: date | None = None
    plan_revisions: int = 0
    plan_revision_needed: bool = False
    # The day of the visit that made the revision needed (the first to flag the plan since it was
    # last agreed or revised): the revision is due from it (``rules.reintegration.open_items``).
    plan_revision_flagged_on: date | None = None
    monitoring_visits: list[MonitoringVisit] = Field(default_factory=list)

    closure_requested: ClosureReason | None = None
    closure_requested_at: datetime | None = None
    closure_requested_by: str | None = None

    stall: list[StallReason] = Field(default_factory=list)
    stalled_since: datetime | None = None
    notified: list[str] = Field(default_factory=list)  # "<reason key>@<due>:<level>" already notified
    closure_rejections: int = 0
    closure_reason: ClosureReason | None = None
    closed_at: datetime | None = None
    reopenings: int = 0  # how often the case was reopened after its closure (rules.reopening)
    # Reopened in protection: the day the protection steps' deadlines count from again (else the
    # identification's).
    protection_from: date | None = None

    tasks: dict[str, TaskState] = Field(default_factory=dict)
    # The last commands applied, by Temporal update id, with what they returned: Temporal drops a
    # repeated update id within one run only, and a client's retry of a command whose answer it lost
    # may reach the next stage's workflow (or a new run). It gets the first answer, not a refusal.
    applied_updates: dict[str, CommandResult] = Field(default_factory=dict)
    # When the newest command applied was issued: a command issued long before it is a copy (the
    # update id of a command the API sends is its own; see JourneyWorkflowBase._bound).
    latest_issued_at: datetime | None = None

    # A rule changed while cases were in flight, followed only where its ``workflow.patched`` said so
    # (decided by each workflow run as it starts: ``JourneyWorkflowBase.follow_patches``). False, the
    # default, is the old rule: what every history and payload from before the patch means.
    revision_due_from_flagging_visit: bool = False  # patch "revision-due-from-flagging-visit"


class Projection(Strict):
    """What the read model needs after a change: the state and what to show of it."""

    state: JourneyState
    events: list[TimelineEvent] = Field(default_factory=list)
    allowed_steps: list[Step] = Field(default_factory=list)
    open_items: list[OpenItem] = Field(default_factory=list)
    active_workflow_id: str
    # Every agency the case has given a task to, when ``state`` holds only the tasks a change
    # touched (``rules.project_changes``); None: ``state`` holds them all.
    agencies: list[str] | None = None
