"""Anonymous case facts for statistics, kept outside the person vault so that they survive erasure.

What is kept, one row per case (``case_facts``), and why none of it identifies a person alone:

- ``sex``: the HTCDS ``prs_Gender`` picklist value (six values), copied from the person's data when
  the case opens and when it is corrected; never the name or the birth date.
- ``age_band``: the age at identification in one of six bands (0-11, 12-17, 18-24, 25-34, 35-49,
  50+) or ``unknown``; computed from the birth date, which stays in the vault only.
- the victim's HTCDS picklists where the caseworker recorded them: methods of recruitment,
  recruitment websites and apps, methods of control, type of sex exploitation, forced labour industry
  and the relationship to the trafficker, and the incoming referral date.

These are personal data while the case exists (they describe one person's case, under a case id),
so the API shows them to the case's staff only, and the reports publish them only as counts with
small cells suppressed (``reintegration/reports.py``). Alone or together they do not identify
anyone: picklist values and a coarse age band, no free text, no date of birth, no place. They are not
sealed with the case's key, so an erasure (which destroys that key) leaves them for the statistics.
The other facts the reports read (exploitation types, countries, pathway, stages, services) are in
the read model already (``cases``, ``tasks``, ``stage_visits``).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any

from pydantic import ConfigDict, Field
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlmodel import Session, col, select

from reintegration.crypto import Keyring
from reintegration.db import CaseFactsRecord, CaseRecord
from reintegration.persons import load_person
from workflows.model import Day, Strict
from workflows.rules import age_on

# prs_Gender's picklist (HTCDS 2.0); the person's data keeps the same value.
GENDERS = (
    "Feminine",
    "Masculine",
    "TransgenderFeminine",
    "TransgenderMasculine",
    "NonConforming",
    "NonSpecifiedUnknown",
)
UNKNOWN_SEX = "NonSpecifiedUnknown"


class AgeBand(StrEnum):
    """The age at identification, in the bands programmes report by."""

    child = "0-11"
    adolescent = "12-17"
    young_adult = "18-24"
    adult = "25-34"
    middle_aged = "35-49"
    older = "50+"
    unknown = "unknown"


# (lowest age in the band, band), youngest first.
_BANDS = (
    (0, AgeBand.child),
    (12, AgeBand.adolescent),
    (18, AgeBand.young_adult),
    (25, AgeBand.adult),
    (35, AgeBand.middle_aged),
    (50, AgeBand.older),
)


def age_band(birthdate: date | None, identified_on: date) -> AgeBand:
    """The band of the person's age on the day they were identified; ``unknown`` without a birth date."""
    if birthdate is None or birthdate > identified_on:
        return AgeBand.unknown
    age = age_on(birthdate, identified_on)
    band = AgeBand.unknown
    for lowest, name in _BANDS:
        if age >= lowest:
            band = name
    return band


class RecruitmentMethod(StrEnum):
    """HTCDS vic_MethodOfRecruitment."""

    AtAPlaceOfBusiness = "AtAPlaceOfBusiness"
    AtAnEducationalInstitution = "AtAnEducationalInstitution"
    AtWork = "AtWork"
    ThroughOnlineSocialNetworks = "ThroughOnlineSocialNetworks"
    ThroughAnOnlineAdvertisement = "ThroughAnOnlineAdvertisement"
    ThroughATelevisionAdvert = "ThroughATelevisionAdvert"
    ThroughANewspaperAdvert = "ThroughANewspaperAdvert"
    ThroughFamilyOrFamilyEvents = "ThroughFamilyOrFamilyEvents"
    ThroughFriendsOrSocialEvents = "ThroughFriendsOrSocialEvents"
    Other = "Other"


class WebsiteOrApp(StrEnum):
    """HTCDS vic_RecruitmentWebsitesAndApps (and vic_ExploitationWebsitesAndApps)."""

    Facebook = "Facebook"
    Instagram = "Instagram"
    WhatsApp = "WhatsApp"
    Telegram = "Telegram"
    FacebookMessenger = "FacebookMessenger"
    Viber = "Viber"
    SnapChat = "SnapChat"
    Line = "Line"
    ForSale = "4Sale"
    WeChat = "WeChat"
    QQ = "QQ"
    QZone = "QZone"
    TikTok = "TikTok"
    Twitter = "Twitter"
    Other = "Other"


class ControlMethod(StrEnum):
    """HTCDS vic_MethodsOfControl."""

    PhysicalThreats = "PhysicalThreats"
    ThreatsLawEnforcement = "ThreatsLawEnforcement"
    ThreatensChildrenFamily = "ThreatensChildrenFamily"
    DebtBondage = "DebtBondage"
    FalsePromises = "FalsePromises"
    PhysicalAbuse = "PhysicalAbuse"
    SexualAbuse = "SexualAbuse"
    TakesEarnings = "TakesEarnings"
    RestrictsFinancialAccess = "RestrictsFinancialAccess"
    RestrictsMedicalCare = "RestrictsMedicalCare"
    WithholdsNecessities = "WithholdsNecessities"
    PsychologicalAbuse = "PsychologicalAbuse"
    PsychoactiveSubstance = "PsychoactiveSubstance"
    ExcessiveWorkingHours = "ExcessiveWorkingHours"
    WithholdsDocuments = "WithholdsDocuments"
    Other = "Other"


class SexExploitationType(StrEnum):
    """HTCDS vic_TypeOfSexExploitation."""

    Prostitution = "Prostitution"
    Pornography = "Pornography"
    RemoteInteractiveServices = "RemoteInteractiveServices"
    PrivateSexualServices = "PrivateSexualServices"


class ForcedLabourIndustry(StrEnum):
    """HTCDS vic_ForcedLabourIndustry (ISIC sections)."""

    A = "A_AgricultureForestryAndFishing"
    B = "B_MiningAndQuarrying"
    C = "C_Manufacturing"
    D = "D_ElectricityGasSteamAndAirConditioningSupply"
    E = "E_WaterSupplySewerageWasteManagement"
    F = "F_Construction"
    G = "G_WholesaleAndRetailTradeRepairOfMotorVehicles"
    H = "H_TransportationAndStorage"
    I = "I_AccommodationAndFoodServiceActivities"  # noqa: E741 - ISIC's section letter
    J = "J_InformationAndCommunication"
    K = "K_FinancialAndInsuranceActivities"
    L = "L_RealEstateActivities"
    M = "M_ProfessionalScientificAndTechnicalActivities"
    N = "N_AdministrativeAndSupportServiceActivities"
    O = "O_PublicAdministrationAndDefence"  # noqa: E741 - ISIC's section letter
    P = "P_Education"
    Q = "Q_HumanHealthAndSocialWorkActivities"
    R = "R_ArtsEntertainmentAndRecreation"
    S = "S_OtherServiceActivities"
    T = "T_ActivitiesOfHouseholdsAsEmployers"
    U = "U_ActivitiesOfExtraterritorialOrganizations"


class RelationshipToTrafficker(StrEnum):
    """HTCDS vic_RelationshipToTrafficker (the standard's own spelling)."""

    Familial = "Familial"
    Acquainted = "Acquainted"
    Unaquainted = "Unaquainted"


class VictimFacts(Strict):
    """What the caseworker learnt of the exploitation, each HTCDS picklist where recorded; all optional."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "recruitment_methods": ["ThroughFriendsOrSocialEvents"],
                    "control_methods": ["DebtBondage", "WithholdsDocuments"],
                    "forced_labour_industry": "A_AgricultureForestryAndFishing",
                    "referred_on": "2026-11-19",
                }
            ]
        },
    )

    recruitment_methods: list[RecruitmentMethod] = Field(
        default_factory=list, max_length=10, description="HTCDS vic_MethodOfRecruitment"
    )
    recruitment_websites: list[WebsiteOrApp] = Field(
        default_factory=list, max_length=15, description="HTCDS vic_RecruitmentWebsitesAndApps"
    )
    control_methods: list[ControlMethod] = Field(
        default_factory=list, max_length=16, description="HTCDS vic_MethodsOfControl"
    )
    sex_exploitation_types: list[SexExploitationType] = Field(
        default_factory=list, max_length=4, description="HTCDS vic_TypeOfSexExploitation"
    )
    forced_labour_industry: ForcedLabourIndustry | None = Field(
        default=None, description="HTCDS vic_ForcedLabourIndustry"
    )
    relationship_to_trafficker: RelationshipToTrafficker | None = Field(
        default=None, description="HTCDS vic_RelationshipToTrafficker"
    )
    referred_on: Day | None = Field(
        default=None, description="HTCDS cas_IncomingReferralDate: when the referring organisation referred the person"
    )


def _victim_values(victim: VictimFacts) -> dict[str, Any]:
    # Each list once, in the picklist's order: the same facts always make the same row.
    def ordered(values: list[Any], kind: type[StrEnum]) -> list[str]:
        return [m.value for m in kind if m in set(values)]

    return {
        "recruitment_methods": ordered(victim.recruitment_methods, RecruitmentMethod),
        "recruitment_websites": ordered(victim.recruitment_websites, WebsiteOrApp),
        "control_methods": ordered(victim.control_methods, ControlMethod),
        "sex_exploitation_types": ordered(victim.sex_exploitation_types, SexExploitationType),
        "forced_labour_industry": victim.forced_labour_industry.value if victim.forced_labour_industry else None,
        "relationship_to_trafficker": (
            victim.relationship_to_trafficker.value if victim.relationship_to_trafficker else None
        ),
        "referred_on": victim.referred_on,
    }


def keep_facts(
    session: Session, case_id: str, *, sex: str, band: AgeBand, victim: VictimFacts | None = None
) -> CaseFactsRecord:
    """The case's anonymous facts, made or replaced (not committed: the caller's transaction)."""
    values: dict[str, Any] = {
        "sex": sex if sex in GENDERS else UNKNOWN_SEX,
        "age_band": band.value,
        **_victim_values(victim or VictimFacts()),
        "updated_at": datetime.now(UTC),
    }
    record = session.get(CaseFactsRecord, case_id)
    if record is None:
        record = CaseFactsRecord(case_id=case_id, **values)
    else:
        for name, value in values.items():
            setattr(record, name, value)
    session.add(record)
    return record


def update_person_facts(session: Session, case_id: str, *, sex: str, band: AgeBand) -> None:
    """A correction of the person's gender or birth date, carried into the facts (not committed)."""
    record = session.get(CaseFactsRecord, case_id)
    if record is None:
        keep_facts(session, case_id, sex=sex, band=band)
        return
    record.sex = sex if sex in GENDERS else UNKNOWN_SEX
    record.age_band = band.value
    record.updated_at = datetime.now(UTC)
    session.add(record)


def update_victim_facts(session: Session, case_id: str, victim: VictimFacts) -> CaseFactsRecord:
    """The exploitation's facts as the caseworker now records them (not committed)."""
    record = session.get(CaseFactsRecord, case_id)
    if record is None:  # a case from before the facts were kept: sex and age from ``facts backfill``
        return keep_facts(session, case_id, sex=UNKNOWN_SEX, band=AgeBand.unknown, victim=victim)
    for name, value in _victim_values(victim).items():
        setattr(record, name, value)
    record.updated_at = datetime.now(UTC)
    session.add(record)
    return record


def victim_of(record: CaseFactsRecord | None) -> VictimFacts:
    """The recorded facts as the API shows them (empty for a case without a row)."""
    if record is None:
        return VictimFacts()
    return VictimFacts.model_validate(
        {
            "recruitment_methods": record.recruitment_methods,
            "recruitment_websites": record.recruitment_websites,
            "control_methods": record.control_methods,
            "sex_exploitation_types": record.sex_exploitation_types,
            "forced_labour_industry": record.forced_labour_industry,
            "relationship_to_trafficker": record.relationship_to_trafficker,
            "referred_on": record.referred_on,
        }
    )


def keep_missing(engine: Engine, keyring: Keyring, *, batch: int = 200) -> int:
    """Give the anonymous facts to the cases opened before they were kept (``reintegration db upgrade``
    and each API start run it): sex and age band from the person's data, or unknown once it was
    erased; how many cases got them."""
    done = 0
    while True:
        with Session(engine) as session:
            kept = select(col(CaseFactsRecord.case_id))
            missing = session.exec(select(CaseRecord).where(col(CaseRecord.case_id).not_in(kept)).limit(batch)).all()
            if not missing:
                return done
            for case in missing:
                person = load_person(session, keyring, case_id=case.case_id) or {}
                birthdate = person.get("birthdate")
                identified_on = (case.facts or {}).get("identified_on")
                band = (
                    age_band(date.fromisoformat(birthdate), date.fromisoformat(identified_on))
                    if birthdate and identified_on
                    else AgeBand.unknown
                )
                keep_facts(session, case.case_id, sex=str(person.get("gender") or UNKNOWN_SEX), band=band)
            try:
                session.commit()
            except (IntegrityError, OperationalError):  # another process kept some meanwhile
                session.rollback()
                continue
            done += len(missing)
