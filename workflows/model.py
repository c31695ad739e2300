"""The journey's vocabulary and message types, shared by the workflows, activities and API.

Everything here may enter a workflow history, so nothing here identifies the person: names,
birth dates, addresses and contact details live only in the person vault of the database.
Every model has defaults for new fields so that old histories still decode.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Stage(StrEnum):
    identification = "identification"
    protection = "protection"
    pathway = "pathway"
    return_ = "return"
    residence = "residence"
    reintegration = "reintegration"
    closed = "closed"


class CaseStatus(StrEnum):
    active = "active"
    closed = "closed"


class Pathway(StrEnum):
    voluntary_return = "voluntary_return"
    residence = "residence"


class RiskLevel(StrEnum):
    low = "low"
    medium = "medium"
    high = "high"


class Step(StrEnum):
    """Caseworker steps of journey.md, as they appear in the URL."""

    consent = "consent"
    risk_assessment = "risk-assessment"
    safety_plan = "safety-plan"
    guardian = "guardian"
    security_guarantee = "security-guarantee"
    pathway = "pathway"
    travel_plan = "travel-plan"
    departure = "departure"
    residence_application = "residence-application"
    residence_decision = "residence-decision"
    appeal = "appeal"
    reintegration_plan = "reintegration-plan"
    monitoring = "monitoring"
    closure = "closure"
    approve_closure = "approve-closure"
    reject_closure = "reject-closure"
    withdraw_consent = "withdraw-consent"


class Service(StrEnum):
    """What a partner agency is asked to do: one task is one service."""

    # Immediate needs and protection measures, from consent on.
    shelter = "shelter"
    medical = "medical"
    police_protection = "police-protection"
    # Voluntary return.
    origin_assessment = "origin-assessment"
    travel_documents = "travel-documents"
    family_assessment = "family-assessment"
    reception = "reception"
    # Residence.
    legal_assistance = "legal-assistance"
    # Reintegration services (medical above is one too).
    psychosocial = "psychosocial"
    legal = "legal"
    job_orientation = "job-orientation"
    education = "education"
    housing = "housing"
    financial = "financial"
    family = "family"
    security_follow_up = "security-follow-up"


class TaskStatus(StrEnum):
    assigned = "assigned"
    accepted = "accepted"
    completed = "completed"
    declined = "declined"
    delivery_failed = "delivery_failed"  # the agency's system refused it: back in the caseworker's hands
    cancelled = "cancelled"


OPEN_TASK_STATUSES = frozenset(
    {TaskStatus.assigned, TaskStatus.accepted, TaskStatus.declined, TaskStatus.delivery_failed}
)


class TaskAction(StrEnum):
    assign = "assign"
    accept = "accept"
    complete = "complete"
    decline = "decline"
    reassign = "reassign"
    cancel = "cancel"
    delivery_failed = "delivery_failed"


class TaskOutcome(StrEnum):
    done = "done"
    unable = "unable"


class OriginAssessment(StrEnum):
    safe = "safe"
    unsafe = "unsafe"


class ClosureReason(StrEnum):
    completed = "completed"
    withdrew = "withdrew"
    lost_contact = "lost-contact"
    transferred = "transferred"
    other = "other"


class Role(StrEnum):
    caseworker = "caseworker"
    partner = "partner"
    supervisor = "supervisor"
    admin = "admin"
    system = "system"  # the orchestrator itself (e.g. a delivery that failed); never in a token


HUMAN_ROLES = (Role.caseworker, Role.partner, Role.supervisor, Role.admin)


class ExploitationType(StrEnum):
    """HTCDS vic_TypeOfExploitation."""

    ForcedLabour = "ForcedLabour"
    SexualExploitation = "SexualExploitation"
    ChildLabour = "ChildLabour"
    ForcedMarriage = "ForcedMarriage"
    Servitude = "Servitude"
    ForcedMilitaryByNonStateActors = "ForcedMilitaryByNonStateActors"
    OrganRemoval = "OrganRemoval"
    ForcedBegging = "ForcedBegging"
    ForcedAdoption = "ForcedAdoption"
    Surrogacy = "Surrogacy"
    Other = "Other"


class TraffickingStatus(StrEnum):
    """HTCDS vic_TraffickingStatus."""

    PossibleVictimOfTrafficking = "PossibleVictimOfTrafficking"
    ActualVictimOfTrafficking = "ActualVictimOfTrafficking"
    NotAVictimOfTrafficking = "NotAVictimOfTrafficking"


class ReferringOrgType(StrEnum):
    """HTCDS org_Type, for who referred the person."""

    NGO = "NGO"
    LawEnforcement = "LawEnforcement"
    HealthServiceOrganisation = "HealthServiceOrganisation"
    CentralGovernmentOrganisation = "CentralGovernmentOrganisation"
    LocalGovernmentOrganisation = "LocalGovernmentOrganisation"
    ImmigrationService = "ImmigrationService"
    LegalService = "LegalService"
    CorporateBusiness = "CorporateBusiness"
    SchoolOrCollege = "SchoolOrCollege"


def _refuse_control_characters(value: Any) -> Any:
    """NUL and other control characters have no place in any field, and PostgreSQL refuses NUL."""
    if isinstance(value, str):
        if any(ord(c) < 32 and c not in "\t\n\r" for c in value):
            raise ValueError("control characters are not allowed")
    elif isinstance(value, dict):
        for item in value.values():
            _refuse_control_characters(item)
    elif isinstance(value, list):
        for item in value:
            _refuse_control_characters(item)
    return value


class Strict(BaseModel):
    """Unknown fields refused; no control characters anywhere."""

    model_config = ConfigDict(extra="forbid", use_enum_values=False)

    @model_validator(mode="before")
    @classmethod
    def _no_control_characters(cls, data: Any) -> Any:
        return _refuse_control_characters(data)


CountryCode = Annotated[str, Field(pattern=r"^[A-Z]{2}$", examples=["ES"])]
# A date a person could mean: bounded so that no deadline arithmetic can overflow.
Day = Annotated[date, Field(ge=date(1900, 1, 1), le=date(2199, 12, 31))]
# User and agency ids: short, printable, no spaces.
Identifier = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._@:-]*$")]
ShortText = Annotated[str, Field(min_length=1, max_length=200)]
Notes = Annotated[str, Field(max_length=2000)]
Score = Annotated[float, Field(ge=0.0, le=1.0)]
# A Temporal update id: `<sub>:<Idempotency-Key>`, `once:<uuid>`, `delivery-failed:<delivery id>`.
UpdateId = Annotated[str, Field(min_length=1, max_length=500, pattern=r"^[A-Za-z0-9._@:|-]+$")]


class Actor(Strict):
    """Who asked for a change: a user id and role, never a name."""

    sub: Identifier
    role: Role
    agency: Identifier | None = None


# --- Activities: the names the workflows call them by (activities/ registers them) ----------------


class ActivityName:
    """Every activity's registered name. Workflows call activities by name, so they import nothing
    of activities/ (the layers: workflows, pure, at the bottom)."""

    PROJECT_CASE = "project_case"
    CHECK_AGENCIES = "check_agencies"
    DELIVER = "deliver_to_agency"
    REPORT_REJECTED = "report_delivery_rejected"
    NOTIFY_SUPERVISORS = "notify_supervisors"
    NOTIFY_PREVIOUS_WEBHOOK = "notify_previous_webhook"
    SEND_WEBHOOK_VERIFICATION = "send_webhook_verification"


# The type of the error an agency's final refusal raises: not retried, the task goes back.
DELIVERY_REJECTED = "DeliveryRejected"


# --- Journey configuration: a snapshot per case, taken when the case opens ---------------------


class JourneyConfig(Strict):
    """Durations, monitoring schedule, weights and thresholds: configuration, not code."""

    reflection_days: int = 30
    risk_assessment_days: int = 3
    security_guarantee_days: int = 14
    task_due_days: int = 14
    task_accept_days: int = 3
    declined_reassign_days: int = 3
    reintegration_plan_days: int = 30
    monitoring_offsets_months: list[int] = Field(default_factory=lambda: [3, 6, 12])
    monitoring_grace_days: int = 14
    closure_approval_days: int = 7
    inactivity_days: int = 30
    minor_age: int = 18
    sustainability_weights: dict[str, float] = Field(
        default_factory=lambda: {"economic": 0.4, "social": 0.3, "psychosocial": 0.3}
    )
    sustainability_thresholds: dict[str, float] = Field(
        default_factory=lambda: {"economic": 0.5, "social": 0.5, "psychosocial": 0.5}
    )


# --- Step bodies --------------------------------------------------------------------------------


class ConsentBody(Strict):
    assistance: bool = Field(description="Consent to assistance: required to go on.")
    data_sharing: bool = Field(default=False, description="Consent to share the data a service needs with partners.")
    given_on: Day


class RiskAssessmentBody(Strict):
    level: RiskLevel
    threats: list[ShortText] = Field(default_factory=list, max_length=20)
    assessed_on: Day


class SafetyMeasure(Strict):
    measure: ShortText
    service: Service | None = Field(
        default=None, description="Set when a partner carries the measure out: it becomes a task."
    )
    agency_id: Identifier | None = Field(default=None, description="Default: the service's default agency")
    due_date: Day | None = None
    notes: Notes = ""


class SafetyPlanBody(Strict):
    measures: list[SafetyMeasure] = Field(min_length=1, max_length=20)
    agreed_on: Day


class GuardianBody(Strict):
    guardian_type: ShortText = Field(examples=["legal_guardian"])
    authority_reference: ShortText
    appointed_on: Day


class SecurityGuaranteeBody(Strict):
    confirmed_on: Day
    notes: Notes = ""


class PathwayBody(Strict):
    pathway: Pathway
    decided_on: Day
    reason: Notes = ""


class TravelPlanBody(Strict):
    travel_date: Day
    route: ShortText
    escort: bool = False
    receiving_caseworker: Identifier = Field(
        description="User id of the caseworker in the country of origin who takes the case on arrival."
    )


class DepartureBody(Strict):
    departed_on: Day


class ResidenceApplicationBody(Strict):
    filed_on: Day
    permit_type: ShortText
    authority_reference: ShortText


class ResidenceDecisionBody(Strict):
    decision: str = Field(pattern="^(granted|rejected)$")
    decided_on: Day
    valid_until: Day | None = None


class AppealBody(Strict):
    filed_on: Day
    authority_reference: ShortText


class PlannedService(Strict):
    service: Service
    agency_id: Identifier | None = Field(default=None, description="Default: the service's default agency")
    due_date: Day | None = None
    notes: Notes = ""


class ReintegrationPlanBody(Strict):
    services: list[PlannedService] = Field(min_length=1, max_length=20)
    agreed_on: Day


class MonitoringBody(Strict):
    visited_on: Day
    economic: Score
    social: Score
    psychosocial: Score
    notes: Notes = ""


class ClosureBody(Strict):
    reason: ClosureReason
    notes: Notes = ""


class ApproveClosureBody(Strict):
    notes: Notes = ""


class RejectClosureBody(Strict):
    reason: ShortText


class WithdrawConsentBody(Strict):
    withdrawn_on: Day
    notes: Notes = ""


STEP_BODIES: dict[Step, type[Strict]] = {
    Step.consent: ConsentBody,
    Step.risk_assessment: RiskAssessmentBody,
    Step.safety_plan: SafetyPlanBody,
    Step.guardian: GuardianBody,
    Step.security_guarantee: SecurityGuaranteeBody,
    Step.pathway: PathwayBody,
    Step.travel_plan: TravelPlanBody,
    Step.departure: DepartureBody,
    Step.residence_application: ResidenceApplicationBody,
    Step.residence_decision: ResidenceDecisionBody,
    Step.appeal: AppealBody,
    Step.reintegration_plan: ReintegrationPlanBody,
    Step.monitoring: MonitoringBody,
    Step.closure: ClosureBody,
    Step.approve_closure: ApproveClosureBody,
    Step.reject_closure: RejectClosureBody,
    Step.withdraw_consent: WithdrawConsentBody,
}


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
    """A supervisor's decision: the case goes to another caseworker."""

    caseworker: Identifier
    actor: Actor
    reason: Notes = ""
    # Bound to the update that carries it (checked by the workflow's validator): a sealed command
    # copied out of a history and sent again under another update id, or long after, is refused.
    update_id: UpdateId | None = None
    issued_at: datetime | None = None


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
    referred_by: ReferringOrgType | None = None
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
    visited_on: date
    scores: dict[str, float]
    weighted_score: float
    below_threshold: list[str]


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
    referred_by: ReferringOrgType | None = None

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

    tasks: dict[str, TaskState] = Field(default_factory=dict)
    # The last commands applied, by Temporal update id, with what they returned: Temporal drops a
    # repeated update id within one run only, and a client's retry of a command whose answer it lost
    # may reach the next stage's workflow (or a new run). It gets the first answer, not a refusal.
    applied_updates: dict[str, CommandResult] = Field(default_factory=dict)
    # When the newest command applied was issued: a command issued long before it is a copy (the
    # update id of a command the API sends is its own; see JourneyWorkflowBase._bound).
    latest_issued_at: datetime | None = None


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


class Projection(Strict):
    """What the read model needs after a change: the state and what to show of it."""

    state: JourneyState
    events: list[TimelineEvent] = Field(default_factory=list)
    allowed_steps: list[Step] = Field(default_factory=list)
    open_items: list[OpenItem] = Field(default_factory=list)
    active_workflow_id: str
