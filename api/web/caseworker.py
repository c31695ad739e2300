"""The case pages, for caseworkers and for supervisors (a partner or an admin is refused, as by the
API): *My cases*, *Open a case* and the case page (stages, steps, tasks, timeline, consent, and the
person's details only on request); each step's form is ``step_pages``.

Every page goes through the API's own functions: the list through ``cases_query`` (the query of
``GET /v1/cases``), the case through ``read_case_now`` (the work of ``GET /v1/cases/{id}``, audited
alike with ``include=person``), and every change through the ``Pipeline`` and the function its
``/v1`` route uses (``open_case``, ``_record``, ``_task_command``, ``reassign_case``), so the rules,
scope, idempotency and audit are the API's. A refusal is shown in words with what to do next
(``refusals``); the form keeps what was typed. Forms are built from the bodies' own models
(``forms``); what a case page shows is gathered in ``case_view``.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Annotated, Any, TypeVar
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Response
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ValidationError
from sqlmodel import Session, col
from sqlmodel.sql.expression import SelectOfScalar

from api.audit import replayed_body
from api.cases import (
    CASES_ORDER,
    CASEWORK,
    CaseId,
    TaskId,
    _check_opening_scope,
    case_summary,
    cases_query,
    shares_person,
)
from api.cases import open_case as open_case_command
from api.deps import IDENTIFIER
from api.errors import ApiProblem, Forbidden, NotFound, Unprocessable
from api.journeys import Access, utcnow
from api.links import LinkByReference, LinkId, link_case, unlink_case
from api.notes import NoteCreate, NotePublic, add_case_note, list_case_notes
from api.pagination import Keyset, page
from api.person import PersonCorrection, correct_person
from api.pipeline import Pipeline
from api.reopening import ReopenCase, reopen_case
from api.schemas import CaseCreate, CaseOpenRequest, CaseSummary, Page, PersonView
from api.steps import _task_command
from api.supervision import ReassignCase, reassign_case
from api.web import forms
from api.web.case_facts import facts_section, label_victim_fields, victim_filled
from api.web.case_view import (
    CaseView,
    case_facts,
    case_path,
    case_view,
    consent_facts,
    draft_form,
    label_of,
    may,
    scores_over_time,
    stage_bar,
    task_options,
    timeline,
    transfer_form,
)
from api.web.context import PostedForm, Web, WebDep
from api.web.forms import Choice, Options, PostForm, Raw, new_key
from api.web.labels import LABELS, N_
from api.web.refusals import Notice, Refusal, explain, form_key, refusal_in, refused_page, see
from api.web.upload_words import UPLOAD_REFUSED
from reintegration.db import CaseRecord
from reintegration.documents import DocumentKind
from workflows import rules
from workflows.model import (
    TASK_BODIES,
    Pathway,
    Role,
    Stage,
    Step,
    TaskAction,
)

router = APIRouter(include_in_schema=False)
B = TypeVar("B", bound=BaseModel)  # a form's body, as its /v1 route takes it

PAGE_SIZE = 25
NOTES_PAGE = 50  # notes on the case's notes page (the case page shows the newest: ``case_view.NOTES_SHOWN``)
# What is due next first (so the overdue, due in the past, come first); the cases with nothing due
# follow, newest first (``CASES_ORDER``, the API's).
DUE_ORDER = Keyset(col(CaseRecord.next_due_at), col(CaseRecord.case_id))
STATUSES = ("active", "stalled", "closed")
# The steps a form is never shown for from a step's button: withdrawing consent has a button of its own.
OWN_BUTTON = {Step.withdraw_consent.value}
# What a page says after a change (``?done=``), by the change.
DONE: dict[str, str] = {
    "opened": N_("The case is open."),
    "assign": N_("The task was assigned."),
    "reassign": N_("The task was given to the other agency."),
    "cancel": N_("The task was cancelled."),
    "case-reassigned": N_("The case was given to the other caseworker."),
    "note": N_("The note was added."),
    "person-corrected": N_("The person's details were corrected."),
    "linked": N_("The cases are linked."),
    "document": N_("The document was added."),
    "reopened": N_("The case is reopened."),
    "unlinked": N_("The link was removed."),
    "plan-drafted": N_("The draft of the reintegration plan was saved."),
    "transfer-offered": N_("The case was offered to the other office: it stays yours until they accept it."),
    "transfer-accepted": N_("You accepted the transfer: the case is now managed by your office."),
    "facts": N_("The case facts were saved."),
}
PERSON_KEPT = N_(
    "The person's details stay with the office managing the case: the person did not consent to sharing them."
)


# --- My cases --------------------------------------------------------------------------------------


def due_first(
    session: Session, query: SelectOfScalar[CaseRecord], *, limit: int, cursor: str | None
) -> tuple[list[CaseRecord], str | None]:
    """A page of the cases in what-is-due-next order, then those with nothing due; the cursor is
    the API's (``api.pagination``) with the part of the list it is in (``d.`` or ``u.``)."""
    part, _, inner = (cursor or "d.").partition(".")
    if part not in ("d", "u"):
        raise Unprocessable("the cursor is not one this page gave")
    rows: list[CaseRecord] = []
    if part == "d":
        dated = query.where(col(CaseRecord.next_due_at).is_not(None))
        rows, following = page(session, dated, DUE_ORDER, limit=limit, cursor=inner or None)
        if following:
            return rows, f"d.{following}"
        inner, limit = "", limit - len(rows)
    undated = query.where(col(CaseRecord.next_due_at).is_(None))
    if limit == 0:
        return rows, ("u." if session.exec(undated.limit(1)).first() is not None else None)
    more, following = page(session, undated, CASES_ORDER, limit=limit, cursor=inner or None)
    return rows + more, (f"u.{following}" if following else None)


@dataclass
class CaseRow:
    case: CaseSummary
    overdue: bool


@router.get("/workspace/cases")
def my_cases(
    web: WebDep,
    stage: Annotated[str, Query(max_length=32)] = "",
    pathway: Annotated[str, Query(max_length=32)] = "",
    status: Annotated[str, Query(max_length=16)] = "",
    caseworker: Annotated[str, Query(max_length=200)] = "",
    mine: Annotated[str, Query(max_length=8)] = "",
    filtered: Annotated[str, Query(max_length=8)] = "",
    cursor: Annotated[str, Query(max_length=600)] = "",
) -> HTMLResponse:
    """The cases in scope, what is due next first (the overdue first, marked), filtered; for a
    caseworker their own cases unless they ask for everyone's."""
    if web.user.role not in CASEWORK:
        return refused_page(web, 403)
    chosen = {
        "stage": stage if stage in {s.value for s in Stage} else "",
        "pathway": pathway if pathway in {p.value for p in Pathway} else "",
        "status": status if status in STATUSES else "",
        "caseworker": caseworker.strip() if re.fullmatch(IDENTIFIER, caseworker.strip()) else "",
    }
    mine_only = bool(mine) if filtered else web.user.role == Role.caseworker
    query = cases_query(
        web.user,
        stage=Stage(chosen["stage"]) if chosen["stage"] else None,
        status=chosen["status"] or None,
        pathway=chosen["pathway"] or None,
        caseworker=web.user.sub if mine_only else (chosen["caseworker"] or None),
    )
    notice = None
    try:
        rows, following = due_first(web.session, query, limit=PAGE_SIZE, cursor=cursor or None)
    except Unprocessable:
        rows, following = due_first(web.session, query, limit=PAGE_SIZE, cursor=None)
        notice = Notice("warning", web._("That page link is no longer valid: here is the first page."))
    now = utcnow()
    items = [
        CaseRow(
            case=summary,
            overdue=summary.status != "closed" and summary.next_due_at is not None and summary.next_due_at < now,
        )
        for summary in map(case_summary, rows)
    ]
    kept = {k: v for k, v in chosen.items() if v} | {"filtered": "1"} | ({"mine": "1"} if mine_only else {})
    return web.render(
        "cases.html",
        {
            "rows": items,
            "chosen": chosen,
            "mine": mine_only,
            "stages": [s.value for s in Stage],
            "pathways": [p.value for p in Pathway],
            "statuses": STATUSES,
            "next_page": f"/workspace/cases?{urlencode(kept | {'cursor': following})}" if following else "",
            "first_page": f"/workspace/cases?{urlencode(kept)}" if cursor else "",
            "notice": notice,
        },
    )


# --- Open a case -----------------------------------------------------------------------------------


@router.get("/workspace/cases/new")
def new_case(web: WebDep) -> HTMLResponse:
    if web.user.role != Role.caseworker:  # as POST /v1/cases: caseworkers open cases
        return refused_page(web, 403)
    scope = web.user.country_scope
    initial: dict[str, Any] = {"identification": {"identified_on": date.today().isoformat()}}
    if scope is not None and len(scope) == 1:
        initial["identification"]["country"] = scope[0]
    return _new_case_page(web, forms.build(CaseCreate, web._, initial=initial), new_key())


@router.post("/workspace/cases/new")
async def open_case(web: WebDep, posted: PostedForm) -> Response:
    """The intake form, sent as ``POST /v1/cases`` is: the same checks, the same path, once per form."""
    if web.user.role != Role.caseworker:
        return refused_page(web, 403)
    key = form_key(posted)
    body, errors = forms.check(CaseCreate, web._, posted)
    if body is not None:
        try:
            _check_opening_scope(web.user, body)
        except Unprocessable:
            errors.found.append(("identification.country", web._("You do not work in this country.")))
            body = None
    if body is None:
        return _new_case_page(web, forms.build(CaseCreate, web._, raw=posted, errors=errors), key, status=422)
    confirm_new = posted.get("confirm_new") == "1"  # sent from the page that listed possible duplicates
    request = CaseOpenRequest(**dict(body), confirm_new=confirm_new)
    try:
        result = await open_case_command(request, Response(), web.pipeline(key))
        refusal = refusal_in(result)
        if refusal is None:
            replayed = replayed_body(result)
            opened = replayed.get("case_id") if replayed is not None else getattr(result, "case_id", None)
            return see(case_path(str(opened)), done="opened")
    except ApiProblem as problem:
        refusal = Refusal.of(problem)
    form = forms.build(CaseCreate, web._, raw=posted)
    if refusal.status >= 500:
        notice = Notice("warning", web._("The system is busy. Try again in a moment: nothing was lost."), retry=True)
        return _new_case_page(web, form, key, status=refusal.status, notice=notice)
    if refusal.duplicates:
        notice = Notice("warning", web._("This person may have a case already. Nothing was opened."))
        return _new_case_page(web, form, new_key(), status=409, notice=notice, found=refusal.found)
    notice = Notice("danger", web._("The case was not opened."), detail=web.detail(refusal.detail))
    return _new_case_page(web, form, new_key(), status=refusal.status, notice=notice)


def _new_case_page(
    web: Web,
    form: forms.Form,
    key: str,
    *,
    status: int = 200,
    notice: Notice | None = None,
    found: dict[str, list[dict[str, Any]]] | None = None,
) -> HTMLResponse:
    """The intake; after a ``409`` for possible duplicates, those in the caseworker's scope (to open)
    and the offices elsewhere (whom to ask), and the form again to open a new case anyway. The
    recruitment and control (``CaseCreate.victim``) are an optional section, open once filled in."""
    label_victim_fields(form, web._)
    return web.render(
        "case_new.html",
        {
            "form": form,
            "victim_open": victim_filled(form),
            "key": key,
            "notice": notice,
            "duplicates": (found or {}).get("duplicates"),
            "elsewhere": (found or {}).get("elsewhere", []),
        },
        status=status,
    )


# --- The case page ---------------------------------------------------------------------------------


@router.get("/workspace/cases/{case_id}")
def case_page(
    case_id: CaseId,
    web: WebDep,
    include: Annotated[str, Query(max_length=16)] = "",
    done: Annotated[str, Query(max_length=40)] = "",
    refused: Annotated[str, Query(max_length=3)] = "",
) -> HTMLResponse:
    """The case; the person's details only with ``?include=person`` (audited as the API's), and only
    when this workspace's own link asked: a link on another site cannot make the browser read them
    (nor write a ``person.read`` in the person's name)."""
    own_link = web.request.headers.get("sec-fetch-site") in (None, "same-origin", "none")
    asked = include == "person" and own_link
    notice = None
    try:
        try:
            view = case_view(web, case_id, person=asked)
        except Forbidden:
            if not asked:
                raise
            # Another office's page, and the person did not consent to share their details: the case without them.
            view = case_view(web, case_id)
            notice = Notice("warning", web._(PERSON_KEPT))
    except (NotFound, Forbidden) as problem:
        return refused_page(web, problem.status)
    if done in DONE or done in {s.value for s in Step}:
        text = web._(DONE[done]) if done in DONE else web._("Recorded: %(step)s.") % {"step": label_of(web, done)}
        notice = Notice("ok", text)
    elif refused.isdigit() and int(refused) in UPLOAD_REFUSED:  # an upload's refusal (api/web/documents.py)
        notice = Notice("danger", web._(UPLOAD_REFUSED[int(refused)]))
    return render_case(web, view, notice=notice)


def render_case(
    web: Web,
    view: CaseView,
    *,
    failed: PostForm | None = None,
    notice: Notice | None = None,
    status: int = 200,
) -> HTMLResponse:
    """The case page, with ``failed`` (a form sent and refused) in place of its fresh form. The
    office managing the case gets its forms; the office about to take it or that had it reads the
    case (the one about to take it drafts the reintegration plan)."""
    case, _ = view.case, web._
    path = case_path(case.case_id)

    def use(action: str, model: type[BaseModel], options: Mapping[str, Options], prefix: str) -> PostForm:
        if failed is not None and failed.action == action:
            return failed
        return PostForm(action, forms.build(model, _, prefix=prefix, options=options))

    if not view.owner:
        return _render_read_only(web, view, failed=failed, notice=notice, status=status)
    services = view.allowed_services
    assign = None
    if case.status != "closed" and services:
        assign = use(f"{path}/tasks", TASK_BODIES[TaskAction.assign], task_options(view, _), "assign-")
    tasks = []
    for task in case.open_tasks:
        reassign = None
        if rules.reassignable(task.status, task.overdue):  # the workflow's own rule
            reassign = use(
                f"{path}/tasks/{task.task_id}/reassign",
                TASK_BODIES[TaskAction.reassign],
                task_options(view, _, task),
                f"reassign-{task.task_id}-",
            )
        cancel = use(
            f"{path}/tasks/{task.task_id}/cancel", TASK_BODIES[TaskAction.cancel], {}, f"cancel-{task.task_id}-"
        )
        tasks.append({"task": task, "reassign": reassign, "cancel": cancel})
    reassign_owner = None
    if web.user.role == Role.supervisor and case.status != "closed":
        reassign_owner = use(f"{path}/reassign", ReassignCase, {}, "owner-")
    note = use(f"{path}/notes", NoteCreate, {}, "note-") if case.status != "closed" else None
    reopen = None
    if web.user.role == Role.supervisor and case.status == "closed":
        stages = Options(choices=[Choice(s.value, _(LABELS[s.value])) for s in rules.REOPEN_STAGES])
        reopen = use(f"{path}/reopen", ReopenCase, {"stage": stages}, "reopen-")
    person_form = None
    if case.person is not None and view.person_version is not None:
        person_form = (
            failed
            if failed is not None and failed.action == f"{path}/person"
            else PostForm(
                f"{path}/person",
                forms.build(PersonView, _, prefix="person-", initial=case.person.model_dump(mode="json")),
            )
        )
    offer = None
    if view.transfer is None and case.status != "closed":
        offer = (
            failed if failed is not None and failed.action == f"{path}/transfers" else transfer_form(case.case_id, _)
        )
    steps = [s for s in case.allowed_steps if s not in OWN_BUTTON and may(web, s)]
    return web.render(
        "case.html",
        {
            "case": case,
            "owner": True,
            "stages": stage_bar(case),
            "steps": steps,
            "withdraw": Step.withdraw_consent.value in case.allowed_steps and may(web, Step.withdraw_consent.value),
            "tasks": tasks,
            "assign": assign,
            "reassign_owner": reassign_owner,
            "timeline": timeline(web, case),
            "facts": case_facts(web, case),
            "scores": scores_over_time(web, case),
            "case_facts_part": facts_section(web, case),
            "consent": consent_facts(web, case),
            "notice": notice,
            "person": case.person,
            "show_person": True,
            "note": note,
            "reopen": reopen,
            "links": view.links,
            "documents": view.documents,
            "document_kinds": [k.value for k in DocumentKind],
            "document_key": new_key(),
            "link": use(f"{path}/links", LinkByReference, {}, "link-"),
            "person_form": person_form,
            "person_version": view.person_version,
            "notes": view.notes,
            "older_notes": f"{path}/notes?{urlencode({'cursor': view.older_notes})}" if view.older_notes else "",
            "draft": view.draft,
            "transfer": view.transfer,
            "offer": offer,
        },
        status=status,
    )


def _render_read_only(
    web: Web, view: CaseView, *, failed: PostForm | None, notice: Notice | None, status: int
) -> HTMLResponse:
    """The case page of an office that reads the case only: its facts, open steps and tasks as
    text, the timeline; for the office about to take it, the reintegration plan to draft."""
    case, _ = view.case, web._
    offered = view.transfer is not None and web.user.sees_country(view.transfer.to_country)
    if case.access == Access.sending:
        banner = _("This case is now managed by the office of %(country)s: you can read it.") % {
            "country": case.owner.country
        }
    elif offered:
        banner = _(
            "The office of %(country)s offers your office this case: you can read it until you accept or refuse "
            "the offer, on the Transfers page."
        ) % {"country": case.owner.country}
    else:
        banner = _(
            "You are the receiving office: you can read this case and draft the reintegration plan until the "
            "person arrives."
        )
    drafting = None
    if case.access == Access.receiving:
        action = f"{case_path(case.case_id)}/plan-draft"
        drafting = failed if failed is not None and failed.action == action else PostForm(action, draft_form(view, _))
    consented = shares_person(case.facts)
    return web.render(
        "case.html",
        {
            "case": case,
            "owner": False,
            "banner": banner,
            "offered": offered,
            "stages": stage_bar(case),
            "steps": [],
            "withdraw": False,
            "tasks": [{"task": task, "reassign": None, "cancel": None} for task in case.open_tasks],
            "timeline": timeline(web, case),
            "facts": case_facts(web, case),
            "scores": scores_over_time(web, case),
            "consent": consent_facts(web, case),
            "notice": notice,
            "person": case.person,
            "show_person": consented,
            "person_form": None,
            "person_version": None,
            "draft": view.draft,
            "drafting": drafting,
            "transfer": view.transfer,
        },
        status=status,
    )


# --- Tasks -----------------------------------------------------------------------------------------


@router.post("/workspace/cases/{case_id}/tasks")
async def assign_task(case_id: CaseId, web: WebDep, posted: PostedForm) -> Response:
    return await _task_form(web, posted, case_id, TaskAction.assign, None)


@router.post("/workspace/cases/{case_id}/tasks/{task_id}/reassign")
async def reassign_task(case_id: CaseId, task_id: TaskId, web: WebDep, posted: PostedForm) -> Response:
    return await _task_form(web, posted, case_id, TaskAction.reassign, task_id)


@router.post("/workspace/cases/{case_id}/tasks/{task_id}/cancel")
async def cancel_task(case_id: CaseId, task_id: TaskId, web: WebDep, posted: PostedForm) -> Response:
    return await _task_form(web, posted, case_id, TaskAction.cancel, task_id)


async def _task_form(web: Web, posted: Raw, case_id: str, action: TaskAction, task_id: str | None) -> Response:
    """A task form of the case page, sent as its ``/v1`` route sends it (``_task_command``)."""
    if web.user.role not in CASEWORK:
        return refused_page(web, 403)
    model = TASK_BODIES[action]
    key = form_key(posted)
    try:
        p = web.pipeline(key)
    except ApiProblem as problem:
        return refused_page(web, problem.status)
    body, errors = forms.check(model, web._, posted)
    refusal = None
    if body is not None:
        try:
            result = await _task_command(p, case_id, action, task_id, body)
            refusal = refusal_in(result)
        except ApiProblem as problem:
            refusal = Refusal.of(problem)
        if refusal is None:
            return see(case_path(case_id), done=action.value)
    try:
        view = await p.db(case_view, web, case_id)
    except (NotFound, Forbidden) as problem:
        return refused_page(web, problem.status)
    task = next((t for t in view.case.open_tasks if t.task_id == task_id), None)
    path = case_path(case_id) + (f"/tasks/{task_id}/{action.value}" if task_id else "/tasks")
    prefix = f"{action.value}-{task_id}-" if task_id else "assign-"
    options = task_options(view, web._, task) if action != TaskAction.cancel else {}
    form = forms.build(model, web._, prefix=prefix, raw=posted, options=options, errors=errors)
    if refusal is None:
        return render_case(web, view, failed=PostForm(path, form, key, open=True), status=422)
    explained, key = explain(web, refusal, key)
    notice: Notice | None = explained
    if refusal.status == 422:
        form.add_error("agency_id" if form.find("agency_id") else None, web.detail(refusal.detail))
        notice = None
    elif refusal.status == 404:
        notice = Notice("warning", web._("This task is no longer open on the case."))
    return render_case(web, view, failed=PostForm(path, form, key, open=True), notice=notice, status=refusal.status)


# --- A supervisor gives the case to another caseworker ----------------------------------------------


@router.post("/workspace/cases/{case_id}/reassign")
async def reassign_owner(case_id: CaseId, web: WebDep, posted: PostedForm) -> Response:
    if web.user.role != Role.supervisor:  # as POST /v1/cases/{id}/reassign
        return refused_page(web, 403)
    return await _case_form(
        web,
        posted,
        case_id,
        ReassignCase,
        "reassign",
        "owner-",
        lambda p, body: reassign_case(case_id, body, Response(), p),
        done="case-reassigned",
    )


# --- Notes -----------------------------------------------------------------------------------------


@router.post("/workspace/cases/{case_id}/notes")
async def add_note(case_id: CaseId, web: WebDep, posted: PostedForm) -> Response:
    """A note, sent as ``POST /v1/cases/{id}/notes`` sends it (``add_case_note``), once per form."""
    if web.user.role not in CASEWORK:
        return refused_page(web, 403)
    return await _case_form(
        web, posted, case_id, NoteCreate, "notes", "note-", lambda p, body: add_case_note(case_id, body, p), done="note"
    )


async def _case_form(
    web: Web,
    posted: Raw,
    case_id: str,
    model: type[B],
    path: str,
    prefix: str,
    send: Callable[[Pipeline, B], Awaitable[object]],
    *,
    done: str,
) -> Response:
    """A form of the case page (at ``<case>/<path>``) sent through its ``/v1`` route's function
    (``send``) with the form's own key: back to the case with ``done``, or the case page again with
    the form as it was sent and why it was refused."""
    key = form_key(posted)
    try:
        p = web.pipeline(key)
    except ApiProblem as problem:
        return refused_page(web, problem.status)
    body, errors = forms.check(model, web._, posted)
    refusal = None
    if body is not None:
        try:
            refusal = refusal_in(await send(p, body))
        except ApiProblem as problem:
            refusal = Refusal.of(problem)
        if refusal is None:
            return see(case_path(case_id), done=done)
    try:
        view = await p.db(case_view, web, case_id)
    except (NotFound, Forbidden) as problem:
        return refused_page(web, problem.status)
    form = forms.build(model, web._, prefix=prefix, raw=posted, errors=errors)
    notice = None
    if refusal is not None:
        notice, key = explain(web, refusal, key)
    return render_case(
        web,
        view,
        failed=PostForm(f"{case_path(case_id)}/{path}", form, key, open=True),
        notice=notice,
        status=refusal.status if refusal else 422,
    )


@router.get("/workspace/cases/{case_id}/notes")
def notes_page(case_id: CaseId, web: WebDep, cursor: Annotated[str, Query(max_length=600)] = "") -> HTMLResponse:
    """Every note of the case, newest first, a page at a time (``GET /v1/cases/{id}/notes``: audited)."""
    if web.user.role not in CASEWORK:
        return refused_page(web, 403)

    def notes(at: str | None) -> Page[NotePublic]:
        return list_case_notes(case_id, web.user, web.session, web.auditor, limit=NOTES_PAGE, cursor=at)

    notice = None
    try:
        try:
            found = notes(cursor or None)
        except Unprocessable:
            found = notes(None)
            notice = Notice("warning", web._("That page link is no longer valid: here is the first page."))
    except (NotFound, Forbidden) as problem:
        return refused_page(web, problem.status)
    case = web.session.get(CaseRecord, case_id)  # in the caller's scope: the notes' read checked it
    path = f"{case_path(case_id)}/notes"
    return web.render(
        "notes.html",
        {
            "case_id": case_id,
            "reference": case.reference if case is not None else "",
            "notes": found.items,
            "next_page": f"{path}?{urlencode({'cursor': found.next_cursor})}" if found.next_cursor else "",
            "first_page": path if cursor else "",
            "notice": notice,
        },
    )


# --- Corrections of the person's details -----------------------------------------------------------


@router.post("/workspace/cases/{case_id}/person")
def correct_person_form(case_id: CaseId, web: WebDep, posted: PostedForm) -> Response:
    """The person's details corrected through ``PATCH /v1/cases/{id}/person`` (``correct_person``),
    with the version the form was filled in from as its If-Match: what someone else corrected since
    is never written over (the page says so, with the details as they are now)."""
    if web.user.role not in CASEWORK:
        return refused_page(web, 403)
    body, errors = forms.check(PersonView, web._, posted)
    version = posted.get("version")
    refusal = None
    if body is not None:
        sent = body.model_dump(mode="json", include=set(PersonCorrection.model_fields))
        try:
            correction = PersonCorrection.model_validate(sent)
            correct_person(
                case_id, correction, Response(), web.user, web.session, web.auditor, if_match=f'"person-{version}"'
            )
            return see(case_path(case_id), include="person", done="person-corrected")
        except ValidationError:  # what the person's view takes but a correction does not (a cleared name)
            refusal = Refusal(422, web._("Check the fields: a first name and a gender are needed."))
        except ApiProblem as problem:
            refusal = Refusal.of(problem)
    try:
        view = case_view(web, case_id, person=True)
    except (NotFound, Forbidden) as problem:
        return refused_page(web, problem.status)
    except ApiProblem as problem:  # the person's data was erased meanwhile
        return refused_page(web, problem.status)
    form = forms.build(PersonView, web._, prefix="person-", raw=posted, errors=errors)
    notice = None
    if refusal is not None:
        notice, _ = explain(web, refusal, new_key())
        if refusal.status == 412:
            notice = Notice(
                "warning",
                web._(
                    "Someone corrected the person's details since you opened the form. Nothing was saved: "
                    "the form shows the details as they are now."
                ),
            )
            form = forms.build(PersonView, web._, prefix="person-", initial=_shown(view))
    return render_case(
        web,
        view,
        failed=PostForm(f"{case_path(case_id)}/person", form, new_key(), open=True),
        notice=notice,
        status=refusal.status if refusal else 422,
    )


def _shown(view: CaseView) -> dict[str, Any]:
    return view.case.person.model_dump(mode="json") if view.case.person is not None else {}


# --- Linked cases ----------------------------------------------------------------------------------


@router.post("/workspace/cases/{case_id}/links")
async def link_form(case_id: CaseId, web: WebDep, posted: PostedForm) -> Response:
    """A link to another case by its reference, sent as ``POST /v1/cases/{id}/links`` sends it."""
    if web.user.role not in CASEWORK:
        return refused_page(web, 403)
    return await _case_form(
        web,
        posted,
        case_id,
        LinkByReference,
        "links",
        "link-",
        lambda p, body: link_case(case_id, body.request(), Response(), p),
        done="linked",
    )


@router.post("/workspace/cases/{case_id}/links/{link_id}/remove")
def unlink_form(case_id: CaseId, link_id: LinkId, web: WebDep, posted: PostedForm) -> Response:
    """``DELETE /v1/cases/{id}/links/{link_id}`` from the case page (a form cannot send DELETE)."""
    if web.user.role not in CASEWORK:
        return refused_page(web, 403)
    try:
        unlink_case(case_id, link_id, web.user, web.session, web.auditor)
    except (NotFound, Forbidden) as problem:
        return refused_page(web, problem.status)
    return see(case_path(case_id), done="unlinked")


# --- Reopening -------------------------------------------------------------------------------------


@router.post("/workspace/cases/{case_id}/reopen")
async def reopen_form(case_id: CaseId, web: WebDep, posted: PostedForm) -> Response:
    """A supervisor reopens the closed case, as ``POST /v1/cases/{id}/reopen`` does."""
    if web.user.role != Role.supervisor:
        return refused_page(web, 403)
    return await _case_form(
        web,
        posted,
        case_id,
        ReopenCase,
        "reopen",
        "reopen-",
        lambda p, body: reopen_case(case_id, body, Response(), p),
        done="reopened",
    )
