"""Supervision: stalled cases most overdue first, the region's summary, and reassignment.

Indexed queries on the read model only; never a query to each workflow.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Response
from pydantic import BaseModel, Field
from sqlalchemy import func
from sqlmodel import select

from api.audit import Entry
from api.cases import CaseId, _respond, stall_reason
from api.deps import (
    IDENTIFIER,
    SessionDep,
    require,
)
from api.errors import responses
from api.journeys import (
    aware,
    utcnow,
)
from api.pagination import Cursor, Keyset, Limit, page
from api.pipeline import Pipeline, commands_for
from api.schemas import CasePublic, Owner, Page, StallReasonView
from reintegration.db import CaseRecord, StageVisitRecord, TaskRecord
from workflows.model import OPEN_TASK_STATUS_VALUES, ReassignOwner, Role, Stage, Strict

router = APIRouter(tags=["supervision"])

SUPERVISOR = require(Role.supervisor)


class StalledCase(BaseModel):
    case_id: str
    reference: str
    stage: str
    pathway: str | None
    owner: Owner
    stalled_since: datetime | None
    most_overdue_at: datetime | None
    reasons: list[StallReasonView]


class Summary(BaseModel):
    total: int
    by_stage: dict[str, int]
    by_status: dict[str, int]
    by_pathway: dict[str, int]
    by_country: dict[str, int]
    by_agency: dict[str, int] = Field(description="Cases with a task at the agency")
    median_days_per_stage: dict[str, float] = Field(description="Completed stays in each stage")


class ReassignCase(Strict):
    caseworker: str = Field(max_length=100, pattern=IDENTIFIER, description="The new owning caseworker's user id")
    reason: str = Field(default="", max_length=2000)

    model_config = {
        "extra": "forbid",
        "json_schema_extra": {"examples": [{"caseworker": "cw-es-2", "reason": "cw-es-1 is on leave"}]},
    }


# Most overdue first.
STALLED_ORDER = Keyset(CaseRecord.most_overdue_at, CaseRecord.case_id)


def _scoped(query: Any, user: Any) -> Any:
    scope = user.country_scope
    return query.where(CaseRecord.owner_country.in_(scope)) if scope is not None else query


@router.get(
    "/v1/supervision/stalled",
    response_model=Page[StalledCase],
    summary="Stalled cases, most overdue first",
    responses=responses(401, 403, 422),
)
def stalled_cases(
    user: Annotated[Any, SUPERVISOR],
    session: SessionDep,
    country: Annotated[str | None, Query(pattern="^[A-Z]{2}$")] = None,
    agency: Annotated[str | None, Query(max_length=100, pattern=IDENTIFIER)] = None,
    caseworker: Annotated[str | None, Query(max_length=200, pattern=IDENTIFIER)] = None,
    stage: Stage | None = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[StalledCase]:
    query = _scoped(select(CaseRecord).where(CaseRecord.stalled), user)
    if country:
        query = query.where(CaseRecord.owner_country == country)
    if caseworker:
        query = query.where(CaseRecord.owner_caseworker == caseworker)
    if stage:
        query = query.where(CaseRecord.stage == stage.value)
    if agency:  # a set computed once from the agency's index, not a probe per case
        query = query.where(
            CaseRecord.case_id.in_(
                select(TaskRecord.case_id).where(
                    TaskRecord.agency_id == agency, TaskRecord.status.in_(sorted(OPEN_TASK_STATUS_VALUES))
                )
            )
        )
    rows, next_cursor = page(session, query, STALLED_ORDER, limit=limit, cursor=cursor)
    now = utcnow()
    items = [
        StalledCase(
            case_id=c.case_id,
            reference=c.reference,
            stage=c.stage,
            pathway=c.pathway,
            owner=Owner(country=c.owner_country, caseworker=c.owner_caseworker),
            stalled_since=aware(c.stalled_since) if c.stalled_since else None,
            most_overdue_at=aware(c.most_overdue_at) if c.most_overdue_at else None,
            reasons=[stall_reason(r, now) for r in c.stall_reasons],
        )
        for c in rows
    ]
    return Page[StalledCase](items=items, next_cursor=next_cursor)


@router.get(
    "/v1/supervision/summary",
    response_model=Summary,
    summary="Counts and days per stage in the region",
    responses=responses(401, 403, 422),
)
def summary(
    user: Annotated[Any, SUPERVISOR],
    session: SessionDep,
    country: Annotated[str | None, Query(pattern="^[A-Z]{2}$")] = None,
) -> Summary:
    countries = [country] if country else user.country_scope  # None: every country
    if country and not user.sees_country(country):
        countries = []

    # One scan of the cases for every count: a few hundred groups at most, added up here.
    grouped = select(
        CaseRecord.stage,
        CaseRecord.status,
        CaseRecord.stalled,
        CaseRecord.pathway,
        CaseRecord.owner_country,
        func.count(),
    ).group_by(CaseRecord.stage, CaseRecord.status, CaseRecord.stalled, CaseRecord.pathway, CaseRecord.owner_country)
    if countries is not None:
        grouped = grouped.where(CaseRecord.owner_country.in_(countries))
    by: dict[str, Counter] = {k: Counter() for k in ("stage", "status", "pathway", "country")}
    for stage, status, stalled, pathway, owner_country, n in session.exec(grouped).all():
        by["stage"][stage] += n
        by["status"]["stalled" if stalled and status == "active" else status] += n
        if pathway:
            by["pathway"][pathway] += n
        by["country"][owner_country] += n

    agencies = select(TaskRecord.agency_id, func.count(func.distinct(TaskRecord.case_id))).group_by(
        TaskRecord.agency_id
    )
    if countries is not None:
        agencies = agencies.where(TaskRecord.owner_country.in_(countries))

    medians = {}
    for stage in Stage:
        stays = select(StageVisitRecord.days).where(
            StageVisitRecord.stage == stage.value, StageVisitRecord.days.is_not(None)
        )
        if countries is not None:
            stays = stays.where(StageVisitRecord.country.in_(countries))
        n = session.exec(select(func.count()).select_from(stays.subquery())).one()
        if n:  # the middle one or two of the index-ordered stays
            middle = session.exec(stays.order_by(StageVisitRecord.days).offset((n - 1) // 2).limit(2 - n % 2)).all()
            medians[stage.value] = round(sum(middle) / len(middle), 1)
    return Summary(
        total=sum(by["stage"].values()),
        by_stage=dict(by["stage"]),
        by_status=dict(by["status"]),
        by_pathway=dict(by["pathway"]),
        by_country=dict(by["country"]),
        by_agency={a: n for a, n in session.exec(agencies).all()},
        median_days_per_stage=medians,
    )


@router.post(
    "/v1/cases/{case_id}/reassign",
    response_model=CasePublic,
    summary="Give the case to another caseworker",
    tags=["cases"],
    responses=responses(401, 403, 404, 409, 422, 503),
)
async def reassign_case(
    case_id: CaseId,
    body: Annotated[ReassignCase, Body()],
    response: Response,
    p: Annotated[Pipeline, commands_for(Role.supervisor)],
) -> CasePublic:
    await p.case(case_id)

    async def run(_: str) -> CasePublic:
        command = ReassignOwner(caseworker=body.caseworker, reason=body.reason, actor=p.actor)
        await p.send(case_id, "reassign_owner", command)
        return await p.db(_respond, response, p.session, case_id, p.settings)

    return await p.once(
        path=f"/v1/cases/{case_id}/reassign",
        request=body.model_dump(mode="json"),
        run=run,
        audit=lambda _: [Entry("case.reassign", case_id=case_id, detail={"to_caseworker": body.caseworker})],
    )
