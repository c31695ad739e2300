"""A supervisor's dashboard: the region's open cases by stage and pathway, the stalled cases (most
overdue first, why, and whose turn), overdue tasks by agency as a server-drawn chart, the median
days per stage, the closures waiting for a decision, reassigning a case, each caseworker's caseload,
and moving all of one caseworker's cases to another (a bulk reassignment, followed as it runs).

The same service layer as ``/v1``: the stalled list is ``api.supervision.stalled_cases_now`` (called as
a function, with the page's filters), the counts and medians are the summary's own functions
(``case_groups``, ``median_days_per_stage``) over the supervisor's ``region``, overdue tasks are
``api.tasks.tasks_query(overdue=True)``; approving or rejecting a closure is ``api.steps._record``
(the path of ``POST /v1/cases/{id}/steps/approve-closure|reject-closure``) and reassigning is
``api.supervision.reassign`` (``POST /v1/cases/{id}/reassign``), each with the form's own
idempotency key. The caseloads are the summary's (``caseloads``); a bulk reassignment is started by
``api.reassignments.start_reassignment`` and read back by ``get_reassignment``
(``POST /v1/supervision/reassignments``, ``GET .../{id}``).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import urlencode

import anyio
import sqlalchemy
from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy import func
from sqlmodel import Session, col, select

from api.audit import replayed_body
from api.deps import IDENTIFIER
from api.errors import ApiProblem, NotFound, Unavailable, Unprocessable
from api.reassignments import ReassignmentPublic, ReassignmentRequest, get_reassignment, start_reassignment
from api.schemas import Page
from api.steps import _record
from api.supervision import (
    ReassignCase,
    StalledCase,
    _scoped,
    case_groups,
    caseloads,
    median_days_per_stage,
    reassign,
    region,
    stalled_cases_now,
)
from api.tasks import tasks_query
from api.web import words
from api.web.context import PostedForm, Web, WebDep
from api.web.forms import new_key
from api.web.refusals import form_key
from reintegration.db import AgencyRecord, CaseRecord
from reintegration.tokens import Claims
from workflows.model import Role, Stage, Step
from workflows.rules import STEPS

router = APIRouter(include_in_schema=False)

STALLED_SHOWN = 50
CLOSURES_SHOWN = 100
DECISIONS = {"approve": Step.approve_closure, "reject": Step.reject_closure}
CASELOADS_SHOWN = 100
DONE = ("approve", "reject", "reassign")
_COUNTRY = re.compile(r"^[A-Z]{2}$")
_IDENTIFIER = re.compile(IDENTIFIER)
_REASSIGNMENT_ID = re.compile(r"^[0-9a-f-]{36}$")

# The chart's drawing, in the SVG's own units (it scales to the width it is given).
CHART_WIDTH, ROW, BAR, VALUE_SPACE = 320, 44, 16, 44


@dataclass
class Filters:
    """The stalled list's filters, as the API's ``GET /v1/supervision/stalled`` takes them."""

    country: str | None = None
    agency: str | None = None
    caseworker: str | None = None
    errors: dict[str, str] = field(default_factory=dict)
    given: dict[str, str] = field(default_factory=dict)

    def query(self, **more: str) -> str:
        """The page's address with these filters (the valid ones) and ``more``."""
        params = {"country": self.country, "agency": self.agency, "caseworker": self.caseworker}
        return "/workspace/dashboard?" + urlencode({**{k: v for k, v in params.items() if v}, **more})


@dataclass
class Closure:
    """A case whose closure waits for a supervisor's decision."""

    case_id: str
    reference: str
    reason: str
    requested_at: datetime | None
    requested_by: str | None
    caseworker: str | None
    country: str


@dataclass
class Form:
    """A form sent back with what was wrong: its values, its errors by field, and a notice."""

    sent: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    notice: str | None = None


@dataclass
class Progress:
    """A bulk reassignment as ``GET /v1/supervision/reassignments/{id}`` gives it (``found``), or
    the words for why it cannot be shown."""

    found: ReassignmentPublic | None = None
    missing: str | None = None


@router.get("/workspace/dashboard")
async def dashboard(
    web: WebDep,
    country: Annotated[str | None, Query(max_length=20)] = None,
    agency: Annotated[str | None, Query(max_length=200)] = None,
    caseworker: Annotated[str | None, Query(max_length=200)] = None,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
    reassign: Annotated[str | None, Query(max_length=64)] = None,  # the case the reassign form is for
    move: Annotated[str | None, Query(max_length=200)] = None,  # the caseworker whose cases the bulk form moves
    reassignment: Annotated[str | None, Query(max_length=64)] = None,  # the bulk reassignment to follow
    done: Annotated[str | None, Query(max_length=20)] = None,
) -> HTMLResponse:
    if (refusal := words.only_for(web, Role.supervisor)) is not None:
        return refusal
    filters = _filters(web, country, agency, caseworker)
    reassigning = Form(sent={"case_id": reassign} if reassign and _IDENTIFIER.match(reassign) else {})
    moving = Form(sent={"from_caseworker": move} if move and _IDENTIFIER.match(move) else {})
    progress = await _progress(web, reassignment) if reassignment else None

    def page() -> HTMLResponse:
        return _dashboard(
            web,
            filters,
            cursor=cursor,
            reassigning=reassigning,
            moving=moving,
            progress=progress,
            done=done if done in DONE else None,
        )

    return await anyio.to_thread.run_sync(page)


async def _progress(web: Web, reassignment_id: str) -> Progress:
    """How far the bulk reassignment went, read as ``GET /v1/supervision/reassignments/{id}`` reads it."""
    gone = Progress(missing=web._("There is no such move of cases in your region."))
    if not _REASSIGNMENT_ID.match(reassignment_id):
        return gone
    try:
        return Progress(found=await get_reassignment(reassignment_id, web.request, web.user, web.session))
    except NotFound:
        return gone
    except Unavailable:
        return Progress(missing=_busy(web))


@router.post("/workspace/dashboard/closures/{case_id}/{decision}")
async def decide_closure(case_id: str, decision: str, web: WebDep, form: PostedForm) -> Response:
    """Approve (optional notes) or reject (a reason) a requested closure, as the API's step routes do."""
    if (refusal := words.only_for(web, Role.supervisor)) is not None:
        return refusal
    if decision not in DECISIONS:
        gone = web._("There is no such decision.")
        return words.refused(web, 404, web._("No such page"), gone, back="/workspace/dashboard")
    step = DECISIONS[decision]
    sent = words.values(form, "notes" if decision == "approve" else "reason")
    deciding = {case_id: (decision, Form(sent=sent))}
    try:
        p = web.pipeline(form_key(form))
    except Unavailable:
        deciding[case_id][1].notice = _busy(web)
        return await _again(web, deciding=deciding, status=503)
    try:
        body = STEPS[step].body.model_validate(sent)
    except ValidationError as exc:
        required = {"reason": web._("Give a reason: the caseworker reads it to know what is still missing.")}
        deciding[case_id][1].errors = words.field_errors(web, exc, required)
        return await _again(web, deciding=deciding, status=422)
    try:
        if (stored := words.stored_refusal(await _record(p, step, case_id, body, Response(), None))) is not None:
            raise stored  # the form was sent before, and refused: the same refusal again
    except ApiProblem as problem:
        deciding[case_id][1].notice = _closure_refused(web, problem)
        return await _again(web, deciding=deciding, status=problem.status)
    return RedirectResponse(f"/workspace/dashboard?done={decision}#closures", status_code=303)


@router.post("/workspace/dashboard/reassign")
async def reassign_case(web: WebDep, form: PostedForm) -> Response:
    """Give a case to another caseworker, as ``POST /v1/cases/{id}/reassign`` does."""
    if (refusal := words.only_for(web, Role.supervisor)) is not None:
        return refusal
    sent = words.values(form, "case_id", "caseworker", "reason")
    reassigning = Form(sent=sent)
    case_id = sent.get("case_id", "")
    if not case_id:
        reassigning.errors["case_id"] = web._("Give the case's id.")
    elif len(case_id) > 64 or not _IDENTIFIER.match(case_id):
        reassigning.errors["case_id"] = web._("This is not a case id: copy it from the case's page or the list.")
    body: ReassignCase | None = None
    try:
        body = ReassignCase.model_validate({k: v for k, v in sent.items() if k != "case_id"})
    except ValidationError as exc:
        required = {"caseworker": web._("Give the user id of the caseworker who takes the case.")}
        reassigning.errors = {**words.field_errors(web, exc, required), **reassigning.errors}
    if reassigning.errors or body is None:
        return await _again(web, reassigning=reassigning, status=422)
    try:
        p = web.pipeline(form_key(form))
    except Unavailable:
        reassigning.notice = _busy(web)
        return await _again(web, reassigning=reassigning, status=503)
    try:
        if (stored := words.stored_refusal(await reassign(p, case_id, body, Response()))) is not None:
            raise stored  # the form was sent before, and refused: the same refusal again
    except ApiProblem as problem:
        if problem.status == 404:
            reassigning.errors["case_id"] = web._("There is no case with this id in your region.")
        elif problem.status == 422:  # the body is valid: the workflow's one refusal of it
            reassigning.errors["caseworker"] = web._("The case is already this caseworker's: choose another one.")
        elif problem.status == 409:
            reassigning.notice = web._("Nothing was changed: the case is closed, and a closed case is not reassigned.")
        elif problem.status == 503:
            reassigning.notice = _busy(web)
        else:
            reassigning.notice = web._("Nothing was changed: the form was refused. Check it and send it again.")
        return await _again(web, reassigning=reassigning, status=problem.status)
    return RedirectResponse("/workspace/dashboard?done=reassign#reassign", status_code=303)


@router.post("/workspace/dashboard/reassignments")
async def move_cases(web: WebDep, form: PostedForm) -> Response:
    """Move one caseworker's open cases in the region to another, as ``POST
    /v1/supervision/reassignments`` does (``start_reassignment``), once per form; then the dashboard
    follows how far it went."""
    if (refusal := words.only_for(web, Role.supervisor)) is not None:
        return refusal
    sent = words.values(form, "from_caseworker", "to_caseworker", "reason")
    moving = Form(sent=sent)
    try:
        body = ReassignmentRequest.model_validate(sent)
    except ValidationError as exc:
        required = {
            "from_caseworker": web._("Give the user id of the caseworker whose cases move."),
            "to_caseworker": web._("Give the user id of the caseworker who takes them."),
        }
        moving.errors = words.field_errors(web, exc, required)
        if "form" in moving.errors:  # the model's own check of the two together: the same person twice
            del moving.errors["form"]
            moving.errors.setdefault(
                "to_caseworker", web._("Choose a caseworker other than the one who has the cases.")
            )
        return await _again(web, moving=moving, status=422)
    try:
        p = web.pipeline(form_key(form))
    except Unavailable:
        moving.notice = _busy(web)
        return await _again(web, moving=moving, status=503)
    try:
        result = await start_reassignment(body, Response(), p)
        if (stored := words.stored_refusal(result)) is not None:
            raise stored  # the form was sent before, and refused: the same refusal again
    except ApiProblem as problem:
        if problem.status == 422:  # said beside the caseworker it names, if it names one of them
            named = problem.params.get("user")
            field = {body.from_caseworker: "from_caseworker", body.to_caseworker: "to_caseworker"}.get(named or "")
            detail = web.detail(problem.detail)
            if field is not None:
                moving.errors[field] = detail
            else:
                moving.notice = web._("Nothing was moved: %(why)s") % {"why": detail}
        elif problem.status == 503:
            moving.notice = _busy(web)
        else:
            moving.notice = web._("Nothing was changed: the form was refused. Check it and send it again.")
        return await _again(web, moving=moving, status=problem.status)
    replayed = replayed_body(result)
    started = replayed.get("reassignment_id") if replayed is not None else getattr(result, "reassignment_id", "")
    return RedirectResponse(f"/workspace/dashboard?reassignment={started}#reassignments", status_code=303)


# --- The page ----------------------------------------------------------------------------------


def _filters(web: Web, country: str | None, agency: str | None, caseworker: str | None) -> Filters:
    """The valid filters, and words beside those that are not (they are not applied)."""
    filters = Filters()
    if country and country.strip():
        filters.given["country"] = country.strip()
        if _COUNTRY.match(country.strip().upper()):
            filters.country = country.strip().upper()
        else:
            filters.errors["country"] = web._("Not applied: a country is two letters, for example ES.")
    for name, value in (("agency", agency), ("caseworker", caseworker)):
        if value and value.strip():
            filters.given[name] = value.strip()
            if _IDENTIFIER.match(value.strip()):
                setattr(filters, name, value.strip())
            else:
                filters.errors[name] = web._("Not applied: an id has letters, digits and . _ @ : - only.")
    return filters


async def _again(
    web: Web,
    *,
    deciding: dict[str, tuple[str, Form]] | None = None,
    reassigning: Form | None = None,
    moving: Form | None = None,
    status: int,
) -> HTMLResponse:
    """The dashboard again, as it is now, with the form that was sent and what was wrong (off the loop)."""

    def again() -> HTMLResponse:
        web.session.expire_all()
        return _dashboard(web, Filters(), deciding=deciding, reassigning=reassigning, moving=moving, status=status)

    return await anyio.to_thread.run_sync(again)


def _dashboard(
    web: Web,
    filters: Filters,
    *,
    cursor: str | None = None,
    deciding: dict[str, tuple[str, Form]] | None = None,
    reassigning: Form | None = None,
    moving: Form | None = None,
    progress: Progress | None = None,
    done: str | None = None,
    status: int = 200,
) -> HTMLResponse:
    session, user = web.session, web.user
    countries = region(user)
    groups = case_groups(session, countries)
    open_by_stage: Counter[str] = Counter()
    open_by_pathway: Counter[str] = Counter()
    in_region: set[str] = set()
    for stage, case_status, _, pathway, country, n in groups:
        in_region.add(country)
        if case_status == "closed":
            continue
        open_by_stage[stage] += n
        if pathway:
            open_by_pathway[pathway] += n
    cursor_refused = False
    try:
        stalled = _stalled(session, user, filters, cursor)
    except Unprocessable:  # a cursor this page did not give: the first page
        stalled, cursor_refused = _stalled(session, user, filters, None), True
    agencies = {a.agency_id: a.name for a in session.exec(select(AgencyRecord).order_by(col(AgencyRecord.agency_id)))}
    overdue = overdue_by_agency(session, user)
    medians = median_days_per_stage(session, countries)
    closures = closures_waiting(session, user)
    loads = caseloads(session, countries)
    return web.render(
        "dashboard.html",
        {
            "open_total": sum(open_by_stage.values()),
            "open_by_stage": [(s.value, open_by_stage[s.value]) for s in Stage if s != Stage.closed],
            "open_by_pathway": sorted(open_by_pathway.items()),
            "stalled": stalled.items,
            "next_cursor": stalled.next_cursor,
            "cursor_refused": cursor_refused,
            "filters": filters,
            "countries": sorted(countries if countries is not None else in_region),
            "agencies": agencies,
            "overdue": overdue,
            "chart": bar_chart(overdue),
            "medians": [(s.value, medians[s.value]) for s in Stage if s.value in medians],
            "closures": closures,
            "closure_ids": {c.case_id for c in closures},
            "deciding": deciding or {},
            "keys": _Keys(),
            "reassigning": reassigning or Form(),
            "caseloads": loads[:CASELOADS_SHOWN],
            "caseloads_more": max(0, len(loads) - CASELOADS_SHOWN),
            "moving": moving or Form(),
            "progress": progress,
            "done": done,
        },
        status=status,
    )


def _stalled(session: Session, user: Claims, filters: Filters, cursor: str | None) -> Page[StalledCase]:
    return stalled_cases_now(
        user,
        session,
        country=filters.country,
        agency=filters.agency,
        caseworker=filters.caseworker,
        stage=None,
        limit=STALLED_SHOWN,
        cursor=cursor,
    )


class _Keys:
    """A fresh idempotency key for each form the page renders (``keys.new()``)."""

    def new(self) -> str:
        return new_key()


def overdue_by_agency(session: Session, user: Claims) -> list[tuple[str, int]]:
    """Overdue tasks in the supervisor's scope counted by agency, the most first: ``GET /v1/tasks?overdue=true``
    (the same scope, the same rule of overdue), counted."""
    late = tasks_query(user, overdue=True).subquery()
    rows = session.execute(sqlalchemy.select(late.c.agency_id, func.count()).group_by(late.c.agency_id)).all()
    return sorted(((str(a), int(n)) for a, n in rows), key=lambda r: (-r[1], r[0]))


def bar_chart(counts: list[tuple[str, int]]) -> dict[str, Any]:
    """A horizontal bar per agency: its id above the bar, the count at the bar's end."""
    top = max((n for _, n in counts), default=0)
    bars = []
    for i, (agency_id, n) in enumerate(counts):
        y = i * ROW
        width = max(2, round((CHART_WIDTH - VALUE_SPACE) * n / top)) if top else 2
        bars.append(
            {
                "agency_id": agency_id,
                "count": n,
                "label_y": y + 13,
                "bar_y": y + 18,
                "bar_width": width,
                "bar_height": BAR,
                "value_x": width + 6,
                "value_y": y + 18 + BAR - 3,
            }
        )
    return {"width": CHART_WIDTH, "height": max(len(counts) * ROW, ROW), "bars": bars}


def closures_waiting(session: Session, user: Claims) -> list[Closure]:
    """The cases in the region whose closure was requested and waits for a supervisor's decision."""
    requested = col(CaseRecord.facts)["closure_requested"].as_string()
    # The oldest requests first (ISO times in one zone sort as they happened): cut after sorting.
    requested_at = col(CaseRecord.facts)["closure_requested_at"].as_string()
    query = (
        _scoped(
            select(CaseRecord).where(
                col(CaseRecord.stage) == Stage.reintegration.value,
                col(CaseRecord.status) != "closed",
                requested.is_not(None),
            ),
            user,
        )
        .order_by(requested_at, col(CaseRecord.case_id))
        .limit(CLOSURES_SHOWN)
    )
    closures = []
    for case in session.exec(query).all():
        at = case.facts.get("closure_requested_at")
        closures.append(
            Closure(
                case_id=case.case_id,
                reference=case.reference,
                reason=str(case.facts.get("closure_requested")),
                requested_at=datetime.fromisoformat(at) if isinstance(at, str) else None,
                requested_by=case.facts.get("closure_requested_by"),
                caseworker=case.owner_caseworker,
                country=case.owner_country,
            )
        )
    return sorted(closures, key=lambda c: (c.requested_at.isoformat() if c.requested_at else "~", c.case_id))


def _closure_refused(web: Web, problem: ApiProblem) -> str:
    if problem.status == 404:
        return web._("Nothing was changed: there is no such case in your region.")
    if problem.status == 403:
        return web._(
            "Nothing was changed: a closure is decided by someone other than who requested it. Ask another supervisor."
        )
    if problem.status == 409:
        return web._(
            "Nothing was changed: this case has no closure waiting for a decision any more. "
            "Another supervisor may have decided it, or the case was closed."
        )
    if problem.status == 503:
        return _busy(web)
    return web._("Nothing was changed: the form was refused. Check it and send it again.")


def _busy(web: Web) -> str:
    return web._(
        "The service is busy or cannot be reached right now, and your decision may not have been sent. "
        "The page shows the cases as they are: try again in a moment."
    )
