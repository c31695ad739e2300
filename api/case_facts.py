"""A case's anonymous facts for the statistics (``reintegration/case_facts.py``): read them, and
record what the caseworker learns of the recruitment and control after the case opened.

Staff in the case's scope only. Sex and age band follow the person's data (set at opening and by a
correction of it), so they are shown here but not written here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter
from pydantic import ConfigDict, Field

from api.access_log import bind_ids
from api.audit import AuditorDep, Entry
from api.cases import CASEWORK, CaseId
from api.deps import SessionDep, keyring_of, require
from api.errors import Conflict, responses
from api.journeys import case_in_scope
from api.languages import N_
from reintegration.case_facts import AgeBand, VictimFacts, update_victim_facts, victim_of
from reintegration.db import CaseFactsRecord, aware
from reintegration.tokens import Claims

router = APIRouter(prefix="/v1/cases", tags=["cases"])


class CaseFactsView(VictimFacts):
    """The case's anonymous facts: the person's sex and age band, and the exploitation's picklists."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "sex": "Feminine",
                    "age_band": "25-34",
                    "recruitment_methods": ["ThroughFriendsOrSocialEvents"],
                    "recruitment_websites": [],
                    "control_methods": ["DebtBondage", "WithholdsDocuments"],
                    "sex_exploitation_types": [],
                    "forced_labour_industry": "A_AgricultureForestryAndFishing",
                    "relationship_to_trafficker": None,
                    "referred_on": "2026-11-19",
                    "updated_at": "2026-11-20T10:02:11Z",
                }
            ]
        },
    )

    sex: str = Field(description="HTCDS prs_Gender, as the person's data says; NonSpecifiedUnknown if not recorded")
    age_band: AgeBand = Field(description="The age at identification: 0-11, 12-17, 18-24, 25-34, 35-49, 50+ or unknown")
    updated_at: datetime | None = None


def facts_view(record: CaseFactsRecord | None) -> CaseFactsView:
    victim = victim_of(record).model_dump()
    if record is None:  # a case opened before the facts were kept, not yet backfilled
        return CaseFactsView(sex="NonSpecifiedUnknown", age_band=AgeBand.unknown, **victim)
    return CaseFactsView(
        sex=record.sex, age_band=AgeBand(record.age_band), updated_at=aware(record.updated_at), **victim
    )


@router.get(
    "/{case_id}/facts",
    response_model=CaseFactsView,
    summary="Read the case's anonymous facts",
    description="Sex, age band and the HTCDS picklists of the recruitment and control: what the reports count.",
    responses=responses(401, 403, 404, 503),
)
def read_facts(case_id: CaseId, user: Annotated[Claims, require(*CASEWORK)], session: SessionDep) -> CaseFactsView:
    case_in_scope(session, case_id, user)
    return facts_view(session.get(CaseFactsRecord, case_id))


@router.put(
    "/{case_id}/facts",
    response_model=CaseFactsView,
    summary="Record the recruitment and control",
    description=(
        "Replaces the exploitation's picklists and the referral date with the body (a field left out is "
        "cleared). Sex and age band follow the person's data. Audited as `case.facts` with the names of the "
        "fields that changed. `409` once the case is closed."
    ),
    responses=responses(401, 403, 404, 409, 422, 503),
)
def record_facts(
    case_id: CaseId,
    body: VictimFacts,
    user: Annotated[Claims, require(*CASEWORK)],
    session: SessionDep,
    auditor: AuditorDep,
) -> CaseFactsView:
    bind_ids(case_id=case_id)
    case = case_in_scope(session, case_id, user)
    if case.status == "closed":
        raise Conflict(N_("the case is closed: its facts are read-only"), allowed_steps=[])
    before = victim_of(session.get(CaseFactsRecord, case_id)).model_dump(mode="json")
    record = update_victim_facts(session, keyring_of(session), case, body)
    after = victim_of(record).model_dump(mode="json")
    changed = sorted(name for name in after if before.get(name) != after[name])
    auditor.stage([Entry("case.facts", case_id=case_id, status=200, detail={"fields": changed})])
    session.commit()
    return facts_view(record)
