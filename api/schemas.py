"""Request and response bodies of the API, each with a realistic example."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from reintegration.case_facts import GENDERS, VictimFacts
from reintegration.partner_view import PartnerTask  # noqa: F401 - part of the API's vocabulary
from workflows.model import (
    ConsentBody,
    CountryCode,
    Day,
    ExploitationType,
    OrgType,
    ShortText,
    Strict,
    TraffickingStatus,
)

T = TypeVar("T")


class Person(Strict):
    """The person's identifying data (HTCDS ``prs_`` fields); kept only in the person vault."""

    first_name: ShortText = Field(description="prs_FirstName")
    second_name: str | None = Field(default=None, max_length=200, description="prs_SecondName")
    birthdate: Day | None = Field(default=None, description="prs_Birthdate; unknown is allowed")
    presumed_minor: bool = Field(
        default=False, description="When the birth date is unknown: treat as a minor until shown otherwise"
    )
    gender: str = Field(
        default="NonSpecifiedUnknown", pattern="^(" + "|".join(GENDERS) + ")$", description="prs_Gender"
    )
    citizenship: list[CountryCode] = Field(default_factory=list, max_length=5, description="prs_Citizenship")
    primary_language: str | None = Field(default=None, max_length=35, description="prs_PrimaryLanguage")
    identity_number: str | None = Field(default=None, max_length=100, description="prs_IdentityNumber")
    mobile_phone: str | None = Field(default=None, max_length=50, description="prs_MobilePhone")


class PersonView(Person):
    """The person's data as stored, with where they were identified."""

    model_config = ConfigDict(extra="ignore")

    identification_place: str | None = Field(default=None, max_length=200)


class Identification(Strict):
    identified_on: Day
    country: CountryCode = Field(description="Where the person was identified; the case's owning country")
    place: str | None = Field(default=None, max_length=200, description="Kept with the person's data")
    referred_by: OrgType | None = Field(default=None, description="HTCDS org_Type of the referrer")
    exploitation_types: list[ExploitationType] = Field(
        min_length=1, max_length=11, description="HTCDS vic_TypeOfExploitation"
    )
    trafficking_status: TraffickingStatus = TraffickingStatus.PossibleVictimOfTrafficking


class CaseCreate(Strict):
    person: Person
    identification: Identification
    origin_country: CountryCode
    consent: ConsentBody | None = Field(default=None, description="Initial informed consent, if already given")
    victim: VictimFacts | None = Field(
        default=None,
        description=(
            "What was learnt of the recruitment and control (HTCDS vic_ picklists) and the referral date; "
            "kept outside the person vault for the statistics, and changed later with PUT /v1/cases/{case_id}/facts"
        ),
    )

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "person": {
                        "first_name": "Ana",
                        "second_name": "Popescu",
                        "birthdate": "1999-04-02",
                        "gender": "Feminine",
                        "citizenship": ["RO"],
                        "primary_language": "ro",
                    },
                    "identification": {
                        "identified_on": "2026-11-20",
                        "country": "ES",
                        "place": "Madrid",
                        "referred_by": "LawEnforcement",
                        "exploitation_types": ["ForcedLabour"],
                    },
                    "origin_country": "RO",
                    "consent": {"assistance": True, "data_sharing": True, "given_on": "2026-11-20"},
                    "victim": {
                        "recruitment_methods": ["ThroughFriendsOrSocialEvents"],
                        "control_methods": ["DebtBondage", "WithholdsDocuments"],
                        "forced_labour_industry": "A_AgricultureForestryAndFishing",
                        "referred_on": "2026-11-19",
                    },
                }
            ]
        },
    )


class CaseOpenRequest(CaseCreate):
    """Opening a case: the case, and whether to open it although the same person may have a case."""

    confirm_new: bool = Field(
        default=False,
        description=(
            "Open the case even though possible duplicates were found (a `409` listed them): the caseworker "
            "checked that this is another person, or a new case of the same person is needed"
        ),
    )


class CaseSearch(Strict):
    """Find cases in your scope: by a case's reference, by the person's name (the birth date narrows
    it), or by an identity document number. One of the three."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"name": "Ana Popescu", "birthdate": "1999-04-02"}, {"reference": "ES-2026-1A2B3C"}]
        },
    )

    reference: str | None = Field(default=None, min_length=1, max_length=32, pattern=r"^[A-Za-z0-9-]+$")
    name: str | None = Field(
        default=None,
        min_length=1,
        max_length=400,
        description="The whole name, in any order; accents, case and spacing do not matter, each word does",
    )
    birthdate: Day | None = Field(default=None, description="With a name only")
    identity_number: str | None = Field(default=None, min_length=1, max_length=100)

    def by(self) -> str:
        """What the search is by (said in the audit trail, never the values)."""
        if self.reference is not None:
            return "reference"
        if self.name is not None:
            return "name+birthdate" if self.birthdate is not None else "name"
        return "identity_number"

    @model_validator(mode="after")
    def _one_way(self) -> CaseSearch:
        ways = [v for v in (self.reference, self.name, self.identity_number) if v is not None]
        if len(ways) != 1:
            raise ValueError("search by one of reference, name or identity_number")
        if self.birthdate is not None and self.name is None:
            raise ValueError("a birth date narrows a search by name only")
        return self


class DuplicateCase(BaseModel):
    """A case in the caller's scope that may be of the same person: what to recognise it by, no more."""

    case_id: str
    reference: str
    stage: str
    owner_country: str


class MatchElsewhere(BaseModel):
    """A possible match in another office, outside the caller's scope: only whom to ask."""

    country: str
    contact: str


class Owner(BaseModel):
    country: str
    caseworker: str | None


class OpenStep(BaseModel):
    step: str
    due_at: datetime | None
    overdue: bool
    turn: str


class TaskPublic(BaseModel):
    """A task as a caseworker or supervisor sees it."""

    task_id: str
    case_id: str
    case_reference: str
    service: str
    agency_id: str
    status: str
    stage: str
    safety_plan: bool
    assigned_at: datetime
    accept_by: datetime
    due_on: date
    overdue: bool
    accepted_at: datetime | None
    completed_at: datetime | None
    declined_at: datetime | None
    outcome: str | None
    assessment: str | None
    notes: str
    outcome_notes: str
    decline_reason: str
    previous_agencies: list[str]


class TimelineEntry(BaseModel):
    # Frozen: the entries of a case's kept view (``api.cases.OpenedCase``) go to every reader of it.
    model_config = ConfigDict(frozen=True)

    at: datetime
    kind: str
    name: str
    actor_sub: str | None
    actor_role: str | None
    task_id: str | None
    facts: dict[str, Any]


class StallReasonView(BaseModel):
    """Why a case is stalled: which item, how long overdue, whose turn."""

    item: str
    kind: str = Field(description="step, task or inactivity")
    name: str
    task_id: str | None
    agency_id: str | None
    turn: str = Field(description="caseworker, agency, supervisor or authority")
    due_at: datetime
    overdue_days: float


class CasePublic(BaseModel):
    case_id: str
    reference: str
    version: int
    stage: str
    status: str = Field(description="active, stalled or closed")
    stalled_since: datetime | None = None
    stall_reasons: list[StallReasonView] = Field(default_factory=list)
    htcds_status: str = Field(description="HTCDS cas_Status")
    pathway: str | None
    owner: Owner
    origin_country: str
    destination_country: str
    is_minor: bool
    opened_at: datetime
    updated_at: datetime
    closed_at: datetime | None
    closure_reason: str | None
    allowed_steps: list[str]
    open_steps: list[OpenStep]
    open_tasks: list[TaskPublic]
    consent: dict[str, Any] | None
    facts: dict[str, Any]
    timeline: list[TimelineEntry] | None = None
    person: PersonView | None = Field(default=None, description="Only with ?include=person; each read is audited")
    access: Literal["owner", "receiving", "offered", "sending"] = Field(
        default="owner",
        description=(
            "The caller's access: `owner` (the office managing the case), `receiving` (the caseworker about to "
            "take it on arrival: read and draft the reintegration plan), `offered` (the office a pending transfer "
            "asks to take it: read, then accept or refuse), `sending` (the office that had it: read only)"
        ),
    )


class CaseSummary(BaseModel):
    case_id: str
    reference: str
    stage: str
    status: str
    pathway: str | None
    owner: Owner
    opened_at: datetime
    updated_at: datetime
    next_due_at: datetime | None


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str
    allowed_steps: list[str] | None = None
    errors: list[dict[str, Any]] | None = None
    duplicates: list[DuplicateCase] | None = Field(
        default=None, description="Opening a case: the cases in your scope that may be of the same person"
    )
    elsewhere: list[MatchElsewhere] | None = Field(
        default=None, description="Opening a case: offices where a possible match exists, and whom to ask"
    )
