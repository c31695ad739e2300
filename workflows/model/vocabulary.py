"""The journey's vocabulary: stages, steps, services, roles, statuses, the HTCDS picklists, the field
types every message uses, the activities' names and the journey's configuration.

Everything in workflows/model may enter a workflow history, so nothing here identifies the person:
names, birth dates, addresses and contact details live only in the person vault of the database.
Every model has defaults for new fields so that old histories still decode.
"""

from __future__ import annotations

import math
import re
from datetime import date
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator


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


# A task is open until it is completed or cancelled: it still needs the agency or the caseworker.
OPEN_TASK_STATUSES = frozenset(
    {TaskStatus.assigned, TaskStatus.accepted, TaskStatus.declined, TaskStatus.delivery_failed}
)
# The same, as the read model stores them.
OPEN_TASK_STATUS_VALUES = frozenset(s.value for s in OPEN_TASK_STATUSES)


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


class OrgType(StrEnum):
    """HTCDS org_Type: a partner agency's kind, and who referred the person."""

    NGO = "NGO"
    LawEnforcement = "LawEnforcement"
    HealthServiceOrganisation = "HealthServiceOrganisation"
    CentralGovernmentOrganisation = "CentralGovernmentOrganisation"
    LocalGovernmentOrganisation = "LocalGovernmentOrganisation"
    ImmigrationService = "ImmigrationService"
    LegalService = "LegalService"
    CorporateBusiness = "CorporateBusiness"
    SchoolOrCollege = "SchoolOrCollege"


class SustainabilityDimension(StrEnum):
    """The three dimensions of sustainable reintegration that monitoring scores (IOM)."""

    economic = "economic"
    social = "social"
    psychosocial = "psychosocial"


class SurveyIndicator(StrEnum):
    """The 15 indicators of IOM's Reintegration Sustainability Survey, five per dimension
    (``SURVEY_INDICATORS``). Each is answered 1..5, 5 the best situation, or not at all."""

    # Economic
    economic_satisfaction = "economic_satisfaction"  # satisfaction with the current economic situation
    food_security = "food_security"  # how often the household had to reduce food (never: the best)
    ability_to_borrow = "ability_to_borrow"  # could borrow money if needed
    debt_to_spending = "debt_to_spending"  # debt repayments small relative to spending
    employment = "employment"  # working or in training, or a regular source of income
    # Social
    housing = "housing"  # access to and standard of housing
    education = "education"  # the household's school-age children attend school
    justice = "justice"  # access to justice and law enforcement
    documentation = "documentation"  # holds identity documents
    public_services = "public_services"  # access to health care and drinking water
    # Psychosocial
    social_participation = "social_participation"  # takes part in community activities
    support_network = "support_network"  # has people to rely on
    discrimination = "discrimination"  # does not experience discrimination
    wellbeing = "wellbeing"  # rarely shows signs of distress
    physical_safety = "physical_safety"  # feels physically safe where they live


# Each indicator's dimension, in the survey's order (the form asks them so, reports list them so).
SURVEY_INDICATORS: dict[SurveyIndicator, SustainabilityDimension] = {
    **dict.fromkeys(
        (
            SurveyIndicator.economic_satisfaction,
            SurveyIndicator.food_security,
            SurveyIndicator.ability_to_borrow,
            SurveyIndicator.debt_to_spending,
            SurveyIndicator.employment,
        ),
        SustainabilityDimension.economic,
    ),
    **dict.fromkeys(
        (
            SurveyIndicator.housing,
            SurveyIndicator.education,
            SurveyIndicator.justice,
            SurveyIndicator.documentation,
            SurveyIndicator.public_services,
        ),
        SustainabilityDimension.social,
    ),
    **dict.fromkeys(
        (
            SurveyIndicator.social_participation,
            SurveyIndicator.support_network,
            SurveyIndicator.discrimination,
            SurveyIndicator.wellbeing,
            SurveyIndicator.physical_safety,
        ),
        SustainabilityDimension.psychosocial,
    ),
}
# The answers a dimension needs (of its five) for its score to mean something.
SURVEY_MIN_ANSWERS = 3


def indicators_of(dimension: SustainabilityDimension) -> list[SurveyIndicator]:
    """A dimension's indicators, in the survey's order."""
    return [i for i, d in SURVEY_INDICATORS.items() if d == dimension]


# The C0 control characters but tab, line feed and carriage return. A pattern, not a loop over the
# characters: every model checks every string it is given (a case's whole state, for each payload
# the worker decodes), and the loop was 4% of the worker's CPU.
_CONTROL_CHARACTERS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f]")


def _refuse_control_characters(value: Any) -> Any:
    """NUL and other control characters have no place in any field, and PostgreSQL refuses NUL."""
    if isinstance(value, str):
        if _CONTROL_CHARACTERS.search(value):
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


def _not_yes_or_no(value: Any) -> Any:
    """``true`` is no answer on the scale, though pydantic would take it for 1, the worst situation."""
    if isinstance(value, bool):
        raise ValueError("an answer is a whole number from 1 to 5, not true or false")
    return value


# An answer to one question of the sustainability survey: 1 the worst situation, 5 the best.
SurveyAnswer = Annotated[int, BeforeValidator(_not_yes_or_no), Field(ge=1, le=5)]
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
    SEND_MAIL = "send_mail"
    SEND_DIGESTS = "send_digests"
    REASSIGN_CASE = "reassign_case"
    FINISH_REASSIGNMENT = "finish_reassignment"


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
    # The weight of each indicator of the sustainability survey within its dimension (``SurveyIndicator``
    # ids); an indicator not named weighs 1.0.
    survey_indicator_weights: dict[str, float] = Field(default_factory=dict)

    @field_validator("survey_indicator_weights")
    @classmethod
    def _survey_weights(cls, weights: dict[str, float]) -> dict[str, float]:
        """Known indicators, weights of 0 or more, and at most two weightless indicators in a
        dimension: any three answers of a dimension (the fewest it takes) then carry some weight."""
        unknown = sorted(set(weights) - set(SURVEY_INDICATORS))
        if unknown:
            raise ValueError(f"not indicators of the sustainability survey: {', '.join(unknown)}")
        invalid = sorted(k for k, w in weights.items() if not (math.isfinite(w) and w >= 0))
        if invalid:
            raise ValueError(f"a survey indicator's weight is a number of 0 or more: {', '.join(invalid)}")
        for dimension in SustainabilityDimension:
            indicators = indicators_of(dimension)
            weightless = [i.value for i in indicators if weights.get(i.value, 1.0) == 0]
            if len(weightless) > len(indicators) - SURVEY_MIN_ANSWERS:
                raise ValueError(
                    f"at most {len(indicators) - SURVEY_MIN_ANSWERS} indicators of the {dimension.value} dimension "
                    f"may weigh 0, so that any {SURVEY_MIN_ANSWERS} answers carry weight: {', '.join(weightless)}"
                )
        return weights


# --- Consent: recorded in identification, read by every stage (the state keeps it) ---------------


class ConsentBody(Strict):
    assistance: bool = Field(description="Consent to assistance: required to go on.")
    data_sharing: bool = Field(default=False, description="Consent to share the data a service needs with partners.")
    given_on: Day
