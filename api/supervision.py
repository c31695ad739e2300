"""Supervision: stalled cases most overdue first, the region's summary, and reassignment.

Indexed queries on the read model only; never a query to each workflow.
"""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from datetime import datetime
from typing import Annotated, Any

import sqlalchemy
from fastapi import APIRouter, Body, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import func
from sqlmodel import Session, col, select
from sqlmodel.sql.expression import SelectOfScalar

from api.audit import Entry
from api.cases import CaseId, _respond, stall_reason
from api.deps import (
    IDENTIFIER,
    SessionDep,
    read_in_thread,
    require,
)
from api.errors import responses
from api.journeys import case_in_scope, utcnow
from api.pagination import Cursor, Keyset, Limit, page
from api.pipeline import Pipeline, commands_for
from api.schemas import CasePublic, Owner, Page, StallReasonView
from api.users import known_owner
from reintegration.db import CaseRecord, ReadModelChanges, StageVisitRecord, TaskRecord, aware
from reintegration.tokens import Claims
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
    by_country: dict[str, int] = Field(description="Cases by the country that owns (manages) them now")
    by_identifying_country: dict[str, int] = Field(
        default_factory=dict,
        description=(
            "Cases by the country that identified them: a case handed over or transferred counts here for the "
            "country that identified it, and in `by_country` for the one that owns it now"
        ),
    )
    by_agency: dict[str, int] = Field(description="Cases with a task at the agency")
    median_days_per_stage: dict[str, float] = Field(description="Completed stays in each stage")
    caseloads: list[Caseload] = Field(
        default_factory=list, description="Each caseworker's open cases and how many of them are stalled (overdue)"
    )


class Caseload(BaseModel):
    caseworker: str
    open: int
    overdue: int = Field(description="Open cases that are stalled: a step or task overdue, or nothing for 30 days")


class ReassignCase(Strict):
    caseworker: str = Field(max_length=100, pattern=IDENTIFIER, description="The new owning caseworker's user id")
    reason: str = Field(default="", max_length=2000)

    model_config = {
        "extra": "forbid",
        "json_schema_extra": {"examples": [{"caseworker": "cw-es-2", "reason": "cw-es-1 is on leave"}]},
    }


# Most overdue first.
STALLED_ORDER = Keyset(col(CaseRecord.most_overdue_at), col(CaseRecord.case_id))


def _scoped(query: SelectOfScalar[CaseRecord], user: Claims) -> SelectOfScalar[CaseRecord]:
    scope = user.country_scope
    return query.where(col(CaseRecord.owner_country).in_(scope)) if scope is not None else query


@router.get(
    "/v1/supervision/stalled",
    response_model=Page[StalledCase],
    summary="Stalled cases, most overdue first",
    responses=responses(401, 403, 422),
)
async def stalled_cases(
    user: Annotated[Claims, SUPERVISOR],
    session: SessionDep,
    country: Annotated[str | None, Query(pattern="^[A-Z]{2}$")] = None,
    agency: Annotated[str | None, Query(max_length=100, pattern=IDENTIFIER)] = None,
    caseworker: Annotated[str | None, Query(max_length=200, pattern=IDENTIFIER)] = None,
    stage: Stage | None = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[StalledCase]:
    return await read_in_thread(
        session,
        lambda: stalled_cases_now(
            user,
            session,
            country=country,
            agency=agency,
            caseworker=caseworker,
            stage=stage,
            limit=limit,
            cursor=cursor,
        ),
    )


def stalled_cases_now(
    user: Claims,
    session: Session,
    *,
    country: str | None = None,
    agency: str | None = None,
    caseworker: str | None = None,
    stage: Stage | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> Page[StalledCase]:
    """``GET /v1/supervision/stalled`` in the calling thread (the workspace's page calls it too)."""
    query = _scoped(select(CaseRecord).where(col(CaseRecord.stalled)), user)
    if country:
        query = query.where(col(CaseRecord.owner_country) == country)
    if caseworker:
        query = query.where(col(CaseRecord.owner_caseworker) == caseworker)
    if stage:
        query = query.where(col(CaseRecord.stage) == stage.value)
    if agency:  # a set computed once from the agency's index, not a probe per case
        query = query.where(
            col(CaseRecord.case_id).in_(
                select(col(TaskRecord.case_id)).where(
                    col(TaskRecord.agency_id) == agency, col(TaskRecord.status).in_(sorted(OPEN_TASK_STATUS_VALUES))
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
async def summary(
    request: Request,
    user: Annotated[Claims, SUPERVISOR],
    session: SessionDep,
    country: Annotated[str | None, Query(pattern="^[A-Z]{2}$")] = None,
) -> Summary:
    countries = region(user, country)
    kept: KeptSummaries = request.app.state.summaries

    def read() -> Summary:
        # The count first: the figures below are then at least as new as it (a later count only
        # computes them again).
        changes = session.execute(_CHANGES).scalar()
        found = kept.get(countries, changes)
        if found is None:
            found = compute_summary(session, countries)
            kept.keep(countries, changes, found)
        return found

    return await read_in_thread(session, read)


# The read model's count of writes, by a statement built once and run as a plain statement: through
# the ORM's statement compilation it cost a kept summary's read 214 µs of CPU, 87 so (in process).
_CHANGES_TABLE = ReadModelChanges.__table__  # type: ignore[attr-defined]  # set by SQLModel's metaclass
_CHANGES = sqlalchemy.select(_CHANGES_TABLE.c.changes).where(_CHANGES_TABLE.c.id == 1)


class KeptSummaries:
    """The summaries this API process computed, by region, each with the read model's count of
    writes it was computed at (``ReadModelChanges``): good until the count moves, whoever wrote."""

    def __init__(self, regions: int = 256) -> None:
        self._kept: OrderedDict[tuple[str, ...] | None, tuple[int, Summary]] = OrderedDict()
        self._regions = regions
        self._lock = threading.Lock()

    def get(self, countries: list[str] | None, changes: int | None) -> Summary | None:
        key = None if countries is None else tuple(sorted(countries))
        with self._lock:
            kept = self._kept.get(key)
            if changes is None or kept is None or kept[0] != changes:
                return None
            self._kept.move_to_end(key)
            return kept[1]

    def keep(self, countries: list[str] | None, changes: int | None, summary: Summary) -> None:
        if changes is None:  # a database without the count (made without migrations): nothing kept
            return
        key = None if countries is None else tuple(sorted(countries))
        with self._lock:
            self._kept[key] = (changes, summary)
            self._kept.move_to_end(key)
            while len(self._kept) > self._regions:
                self._kept.popitem(last=False)


def compute_summary(session: Session, countries: list[str] | None) -> Summary:
    by: dict[str, Counter[str]] = {k: Counter() for k in ("stage", "status", "pathway", "country")}
    for stage, status, stalled, pathway, owner_country, n in case_groups(session, countries):
        by["stage"][stage] += n
        by["status"]["stalled" if stalled and status == "active" else status] += n
        if pathway:
            by["pathway"][pathway] += n
        by["country"][owner_country] += n

    agencies = select(col(TaskRecord.agency_id), func.count(func.distinct(col(TaskRecord.case_id)))).group_by(
        col(TaskRecord.agency_id)
    )
    if countries is not None:
        agencies = agencies.where(col(TaskRecord.owner_country).in_(countries))
    medians = median_days_per_stage(session, countries)
    return Summary(
        total=sum(by["stage"].values()),
        by_stage=dict(by["stage"]),
        by_status=dict(by["status"]),
        by_pathway=dict(by["pathway"]),
        by_country=dict(by["country"]),
        by_identifying_country=identifying_countries(session, countries),
        by_agency={a: n for a, n in session.exec(agencies).all()},
        median_days_per_stage=medians,
        caseloads=caseloads(session, countries),
    )


def identifying_countries(session: Session, countries: list[str] | None) -> dict[str, int]:
    """The cases identified in these countries (``None``: every one), wherever they are managed now."""
    identified = col(CaseRecord.destination_country)
    query = sqlalchemy.select(identified, func.count()).group_by(identified)
    if countries is not None:
        query = query.where(identified.in_(countries))
    return {c: int(n) for c, n in session.execute(query).all()}


def caseloads(session: Session, countries: list[str] | None) -> list[Caseload]:
    """Each caseworker's open cases in these countries and how many are stalled, the largest first."""
    owner = col(CaseRecord.owner_caseworker)
    stalled = func.sum(sqlalchemy.case((col(CaseRecord.stalled).is_(True), 1), else_=0))
    query = (
        sqlalchemy.select(owner, func.count(), stalled)
        .where(col(CaseRecord.status) != "closed", owner.is_not(None))
        .group_by(owner)
    )
    if countries is not None:
        query = query.where(col(CaseRecord.owner_country).in_(countries))
    rows = [Caseload(caseworker=w, open=int(n), overdue=int(o or 0)) for w, n, o in session.execute(query).all()]
    return sorted(rows, key=lambda c: (-c.open, c.caseworker))


def region(user: Claims, country: str | None = None) -> list[str] | None:
    """The countries a supervisor's figures cover: the one asked for if in the region (none if not),
    else the region (``None``: every country)."""
    if country:
        return [country] if user.sees_country(country) else []
    return user.country_scope


def case_groups(session: Session, countries: list[str] | None) -> list[tuple[str, str, bool, str | None, str, int]]:
    """The cases of these countries (``None``: every one) counted by stage, status, stalled, pathway
    and country: one scan for every count, a few hundred groups at most, added up by the caller.
    (SQLAlchemy's select: SQLModel's is typed for four columns at most.)"""
    columns = (
        col(CaseRecord.stage),
        col(CaseRecord.status),
        col(CaseRecord.stalled),
        col(CaseRecord.pathway),
        col(CaseRecord.owner_country),
    )
    grouped = sqlalchemy.select(*columns, func.count()).group_by(*columns)
    if countries is not None:
        grouped = grouped.where(col(CaseRecord.owner_country).in_(countries))
    return [(a, b, bool(c), d, e, int(n)) for a, b, c, d, e, n in session.execute(grouped).all()]


def _middle_stays(by_country: bool) -> Any:
    """The middle one or two of each stage's completed stays (of the countries in the ``countries``
    parameter when ``by_country``): each stay ranked in its stage by its days, its stage's count
    beside it. Built once: one statement whatever the number of stages."""
    stage, days = col(StageVisitRecord.stage), col(StageVisitRecord.days)
    ranked = sqlalchemy.select(
        stage.label("stage"),
        days.label("days"),
        func.row_number().over(partition_by=stage, order_by=days).label("rank"),
        func.count().over(partition_by=stage).label("stays"),
    ).where(days.is_not(None))
    if by_country:
        ranked = ranked.where(col(StageVisitRecord.country).in_(sqlalchemy.bindparam("countries", expanding=True)))
    r = ranked.subquery()
    # The ranks (n + 1) / 2 and (n + 2) / 2 in integer division: the same one when n is odd.
    return sqlalchemy.select(r.c.stage, r.c.days).where(
        sqlalchemy.or_(r.c.rank == (r.c.stays + 1) // 2, r.c.rank == (r.c.stays + 2) // 2)
    )


MIDDLE_STAYS = _middle_stays(by_country=False)
MIDDLE_STAYS_OF_COUNTRIES = _middle_stays(by_country=True)


def median_days_per_stage(session: Session, countries: list[str] | None) -> dict[str, float]:
    """The median of the completed stays in each stage, in these countries (``None``: every one):
    one query, read from the stays' index in order."""
    if countries is None:
        rows = session.execute(MIDDLE_STAYS).all()
    elif countries:
        rows = session.execute(MIDDLE_STAYS_OF_COUNTRIES, {"countries": countries}).all()
    else:
        return {}
    found: dict[str, list[float]] = {}
    for stage, days in rows:
        found.setdefault(stage, []).append(float(days))
    return {stage.value: round(sum(d) / len(d), 1) for stage in Stage if (d := found.get(stage.value))}


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
) -> CasePublic | JSONResponse:
    return await reassign(p, case_id, body, response)


async def reassign(p: Pipeline, case_id: str, body: ReassignCase, response: Response) -> CasePublic | JSONResponse:
    """Give the case to another caseworker (a supervisor's command; the caller's role is checked by
    the route or the page); the case as it is after it."""
    # The country as a plain value: the case's object expires as the session's transaction ends (with
    # a key, before ``run``), and reading it on the event loop would load it there.
    owner_country = await p.db(lambda: case_in_scope(p.session, case_id, p.user).owner_country)

    async def run(_: str) -> CasePublic:
        await p.checked(known_owner, p.session, body.caseworker, owner_country)
        command = ReassignOwner(
            caseworker=body.caseworker, reason=body.reason, actor=p.actor, from_country=owner_country
        )
        await p.send(case_id, "reassign_owner", command)
        return await p.answer(_respond, response, p.session, case_id, p.settings)

    return await p.once(
        path=f"/v1/cases/{case_id}/reassign",
        request=body.model_dump(mode="json"),
        run=run,
        audit=lambda _: [Entry("case.reassign", case_id=case_id, detail={"to_caseworker": body.caseworker})],
    )
