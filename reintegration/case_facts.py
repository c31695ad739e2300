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
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
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


def age_band(birthdate: date | None, identified_on: date | None) -> AgeBand:
    """The band of the person's age on the day they were identified; ``unknown`` without a birth date
    (or an identification date), or with one after the other."""
    if birthdate is None or identified_on is None or birthdate > identified_on:
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


def sex_of(gender: Any) -> str:
    """The person's gender as a ``prs_Gender`` value; ``NonSpecifiedUnknown`` for none, or one off the list."""
    return gender if isinstance(gender, str) and gender in GENDERS else UNKNOWN_SEX


def _day(value: Any) -> date | None:
    """An ISO date kept as text (the read model's facts, the vault's birth date); None if missing or not one."""
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None


def identified_on(case: CaseRecord) -> date | None:
    """The case's identification date, from the read model's facts (None if they lack it)."""
    return _day((case.facts or {}).get("identified_on"))


def person_facts(session: Session, keyring: Keyring, case: CaseRecord) -> tuple[str, AgeBand]:
    """Sex and age band from the person's data in the vault: unknown both once it was erased."""
    person = load_person(session, keyring, case_id=case.case_id) or {}
    return sex_of(person.get("gender")), age_band(_day(person.get("birthdate")), identified_on(case))


def _row(case_id: str, sex: str, band: AgeBand, victim: VictimFacts | None = None) -> dict[str, Any]:
    return {
        "case_id": case_id,
        "sex": sex_of(sex),
        "age_band": band.value,
        **_victim_values(victim or VictimFacts()),
        "updated_at": datetime.now(UTC),
    }


def _insert_absent(session: Session, rows: list[dict[str, Any]]) -> None:
    """Insert these rows, but not over a case's row that is there already, nor into a duplicate key:
    whoever wrote it meanwhile (the opening, a correction of the person, a ``PUT``, another process's
    backfill) knew as much or better. PostgreSQL waits for a concurrent insert of the same case to
    commit, then does nothing."""
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    session.execute(insert(CaseFactsRecord).values(rows).on_conflict_do_nothing(index_elements=["case_id"]))


def _record(session: Session, case_id: str, sex: str, band: AgeBand) -> CaseFactsRecord:
    """The case's row to change, made first (with this sex and age band) if it has none yet."""
    record = session.get(CaseFactsRecord, case_id)
    if record is None:
        _insert_absent(session, [_row(case_id, sex, band)])
        record = session.get(CaseFactsRecord, case_id)
    assert record is not None  # made just now, or by someone else whose insert this one waited for
    return record


def keep_facts(
    session: Session, case_id: str, *, sex: str, band: AgeBand, victim: VictimFacts | None = None
) -> CaseFactsRecord:
    """A new case's anonymous facts, made or replaced (not committed: the caller's transaction, the
    opening's, which wrote the person's data it copies)."""
    values = _row(case_id, sex, band, victim)
    record = session.get(CaseFactsRecord, case_id)
    if record is None:
        record = CaseFactsRecord(**values)
    else:
        for name, value in values.items():
            setattr(record, name, value)
    session.add(record)
    return record


def update_person_facts(session: Session, case_id: str, *, sex: str, band: AgeBand | None) -> None:
    """A correction of the person's gender or birth date, carried into the facts (not committed);
    ``band`` None: the age band cannot be told again (no identification date), it stays as it is."""
    record = _record(session, case_id, sex, band or AgeBand.unknown)
    record.sex, record.updated_at = sex_of(sex), datetime.now(UTC)
    if band is not None:
        record.age_band = band.value
    session.add(record)


def update_victim_facts(session: Session, keyring: Keyring, case: CaseRecord, victim: VictimFacts) -> CaseFactsRecord:
    """The exploitation's facts as the caseworker now records them (not committed). A case without
    facts yet (opened before they were kept, not yet backfilled) gets its sex and age band from the
    vault here, as the backfill would have given them, which then leaves the case alone."""
    record = session.get(CaseFactsRecord, case.case_id)
    if record is None:
        record = _record(session, case.case_id, *person_facts(session, keyring, case))
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


# How many times in a row the backfill tries a batch again after the database refused its commit (a
# lock, a stale snapshot) before it gives up, so that a database that refuses every write (read-only)
# does not keep it busy for ever.
ATTEMPTS = 5


def keep_missing(engine: Engine, keyring: Keyring, *, batch: int = 200) -> int:
    """Give the anonymous facts to the cases opened before they were kept (``reintegration db upgrade``
    and each API start run it): sex and age band from the person's data, or unknown once it was
    erased; how many cases got them. A case that got its facts meanwhile from elsewhere (a correction
    of the person, a ``PUT``) keeps them: the backfill only inserts, never overwrites."""
    done, failed = 0, 0
    while True:
        with Session(engine) as session:
            kept = select(col(CaseFactsRecord.case_id))
            missing = session.exec(select(CaseRecord).where(col(CaseRecord.case_id).not_in(kept)).limit(batch)).all()
            if not missing:
                return done
            rows = [_row(case.case_id, *person_facts(session, keyring, case)) for case in missing]
            try:
                _insert_absent(session, rows)
                session.commit()
            except OperationalError:  # locked, or a snapshot older than another process's write
                session.rollback()
                failed += 1
                if failed >= ATTEMPTS:
                    raise
                continue
            failed = 0
            done += len(missing)
