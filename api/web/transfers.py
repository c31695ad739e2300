"""Across borders in the workspace: a case offered to another country's office from its page, the
*Transfers* page where the receiving office accepts or refuses what it is offered (and the offering
office follows its offers), and the reintegration plan the receiving caseworker drafts before the
person arrives.

Every change goes through ``api.transfers``' own functions (``request_transfer``, ``accept_transfer``,
``refuse_transfer`` with the form's idempotency key through the ``Pipeline``; ``put_plan_draft``), so
the rules, scope and audit are the API's; a refusal is told in words beside the form that was sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Query, Response
from fastapi.responses import HTMLResponse

from api.audit import replayed_body
from api.cases import CASEWORK, CaseId
from api.errors import ApiProblem, Forbidden, NotFound
from api.pipeline import Pipeline
from api.transfers import (
    TransferDecision,
    TransferId,
    TransferPublic,
    TransferRefusal,
    TransferRequest,
    accept_transfer,
    list_transfers,
    put_plan_draft,
    refuse_transfer,
    request_transfer,
)
from api.web import forms
from api.web.case_view import PlanDraftForm, case_path, case_view, draft_form, plan_draft, transfer_form
from api.web.caseworker import render_case
from api.web.context import PostedForm, Web, WebDep
from api.web.forms import PostForm, new_key
from api.web.labels import N_
from api.web.refusals import Notice, Refusal, explain, form_key, refusal_in, refused_page, see
from workflows.model import Role

router = APIRouter(include_in_schema=False)

TRANSFERS = "/workspace/transfers"
SHOWN = 50  # the newest transfers of each list
DONE: dict[str, str] = {
    "refused": N_("You refused the offer: the office that offered the case is told, with your reason."),
}
CASEWORKER_HINT = N_("The user id of the caseworker of your office who takes the case.")


# --- The plan drafted before arrival ------------------------------------------------------------


@router.post("/workspace/cases/{case_id}/plan-draft")
def save_plan_draft(case_id: CaseId, web: WebDep, posted: PostedForm) -> Response:
    """The draft saved as ``PUT /v1/cases/{id}/plan-draft`` saves it (``put_plan_draft``): the
    services ticked (each keeping the agency the draft named) and the notes."""
    if web.user.role not in CASEWORK:
        return refused_page(web, 403)
    body, errors = forms.check(PlanDraftForm, web._, posted)
    refusal = None
    if body is not None:
        try:
            draft = body.as_draft(plan_draft(web, case_id))
            put_plan_draft(case_id, draft, web.user, web.session, web.auditor)
            return see(case_path(case_id), done="plan-drafted")
        except ApiProblem as problem:
            refusal = Refusal.of(problem)
    try:
        view = case_view(web, case_id)
    except (NotFound, Forbidden) as problem:
        return refused_page(web, problem.status)
    notice, key = explain(web, refusal, form_key(posted)) if refusal is not None else (None, form_key(posted))
    form = draft_form(view, web._, raw=posted, errors=errors)
    failed = PostForm(f"{case_path(case_id)}/plan-draft", form, key, open=True)
    return render_case(web, view, failed=failed, notice=notice, status=refusal.status if refusal else 422)


# --- Offering the case to another office ---------------------------------------------------------


@router.post("/workspace/cases/{case_id}/transfers")
async def offer_case(case_id: CaseId, web: WebDep, posted: PostedForm) -> Response:
    """The case offered to another country's office, as ``POST /v1/cases/{id}/transfers`` offers it
    (``request_transfer``), once per form. A refusal of what was asked (the case's own country, a
    caseworker unknown there) is said beside the field it is about."""
    if web.user.role not in CASEWORK:
        return refused_page(web, 403)
    key = form_key(posted)
    try:
        p = web.pipeline(key)
    except ApiProblem as problem:
        return refused_page(web, problem.status)
    body, errors = forms.check(TransferRequest, web._, posted)
    refusal, about = None, None
    if body is not None:
        try:
            refusal = refusal_in(await request_transfer(case_id, body, p))
        except ApiProblem as problem:
            refusal, about = Refusal.of(problem), _field_of(problem, user="to_caseworker", country="to_country")
        if refusal is None:
            return see(case_path(case_id), done="transfer-offered")
    try:
        view = await p.db(case_view, web, case_id)
    except (NotFound, Forbidden) as problem:
        return refused_page(web, problem.status)
    failed = transfer_form(case_id, web._, raw=posted, errors=errors)
    notice = None
    if refusal is None:
        failed.key = key
    elif refusal.status == 422:  # what was asked, refused: beside its field (the form's top if not known)
        failed.form.add_error(about, web.detail(refusal.detail))
    else:
        notice, failed.key = explain(web, refusal, key)
    return render_case(web, view, failed=failed, notice=notice, status=refusal.status if refusal else 422)


def _field_of(problem: ApiProblem, **fields: str) -> str | None:
    """The form's field a refusal is about, by the value it names (``params``: a user, a country)."""
    return next((field for param, field in fields.items() if param in problem.params), None)


# --- The Transfers page --------------------------------------------------------------------------


@dataclass
class Offer:
    """A transfer offered to the person's office, with its two forms."""

    transfer: TransferPublic
    accept: PostForm
    refuse: PostForm


@router.get(TRANSFERS)
def transfers_page(web: WebDep, done: Annotated[str, Query(max_length=20)] = "") -> HTMLResponse:
    """The offers waiting for the office's answer, and the office's own offers with their status."""
    if web.user.role not in CASEWORK:
        return refused_page(web, 403)
    notice = Notice("ok", web._(DONE[done])) if done in DONE else None
    return render_transfers(web, notice=notice)


def render_transfers(
    web: Web, *, failed: PostForm | None = None, notice: Notice | None = None, status: int = 200
) -> HTMLResponse:
    """The page: ``GET /v1/transfers`` incoming (pending) and outgoing, the newest first; ``failed``
    (a form sent and refused) in place of its fresh form."""
    incoming = list_transfers(web.user, web.session, direction="incoming", status="pending", limit=SHOWN)
    outgoing = list_transfers(web.user, web.session, direction="outgoing", limit=SHOWN)

    def use(fresh: PostForm) -> PostForm:
        return failed if failed is not None and failed.action == fresh.action else fresh

    offers = [
        Offer(
            transfer=t,
            accept=use(accept_form(web, t.transfer_id, named=t.to_caseworker)),
            refuse=use(refuse_form(web, t.transfer_id)),
        )
        for t in incoming.items
    ]
    return web.render(
        "transfers.html",
        {
            "offers": offers,
            "outgoing": outgoing.items,
            "more_incoming": incoming.next_cursor is not None,
            "more_outgoing": outgoing.next_cursor is not None,
            "notice": notice,
            "supervisor": web.user.role == Role.supervisor,
        },
        status=status,
    )


def accept_form(
    web: Web,
    transfer_id: str,
    *,
    named: str | None = None,
    raw: forms.Raw | None = None,
    errors: forms.Errors | None = None,
) -> PostForm:
    """The acceptance (``TransferDecision``): a supervisor names the caseworker who takes the case
    (the one the offer ``named``, to begin with); a caseworker sends none: she takes the case herself,
    unless the offer named someone."""
    action = f"{TRANSFERS}/{transfer_id}/accept"
    if web.user.role != Role.supervisor:
        return PostForm(action, forms.Form(items=[]), open=raw is not None)
    initial = {"caseworker": named} if named else {}
    prefix = f"accept-{transfer_id}-"
    form = forms.build(TransferDecision, web._, prefix=prefix, raw=raw, initial=initial, errors=errors)
    field = form.find("caseworker")
    if isinstance(field, forms.Field):
        field.hint = web._(CASEWORKER_HINT)
    return PostForm(action, form, open=raw is not None)


def refuse_form(
    web: Web, transfer_id: str, *, raw: forms.Raw | None = None, errors: forms.Errors | None = None
) -> PostForm:
    """The refusal (``TransferRefusal``): the reason, which the offering office reads."""
    form = forms.build(TransferRefusal, web._, prefix=f"refuse-{transfer_id}-", raw=raw, errors=errors)
    return PostForm(f"{TRANSFERS}/{transfer_id}/refuse", form, open=raw is not None)


@router.post(f"{TRANSFERS}/{{transfer_id}}/accept")
async def accept(transfer_id: TransferId, web: WebDep, posted: PostedForm) -> Response:
    """The receiving office takes the case, as ``POST /v1/transfers/{id}/accept`` does
    (``accept_transfer``), once per form: to the case's page, the office's now."""
    if web.user.role not in CASEWORK:
        return refused_page(web, 403)
    key = form_key(posted)
    try:
        p = web.pipeline(key)
    except ApiProblem as problem:
        return refused_page(web, problem.status)
    body, errors = forms.check(TransferDecision, web._, posted)
    refusal = None
    if body is not None:
        try:
            result = await accept_transfer(transfer_id, body, Response(), p)
            if (refusal := refusal_in(result)) is None:
                replayed = replayed_body(result)
                case_id = replayed.get("case_id") if replayed is not None else getattr(result, "case_id", None)
                return see(case_path(str(case_id)), done="transfer-accepted")
        except ApiProblem as problem:
            refusal = Refusal.of(problem)
    failed = accept_form(web, transfer_id, raw=posted, errors=errors)
    return await _again(web, p, failed, refusal, key, about="caseworker")


@router.post(f"{TRANSFERS}/{{transfer_id}}/refuse")
async def refuse(transfer_id: TransferId, web: WebDep, posted: PostedForm) -> Response:
    """The receiving office says no, with a reason, as ``POST /v1/transfers/{id}/refuse`` does
    (``refuse_transfer``), once per form."""
    if web.user.role not in CASEWORK:
        return refused_page(web, 403)
    key = form_key(posted)
    try:
        p = web.pipeline(key)
    except ApiProblem as problem:
        return refused_page(web, problem.status)
    body, errors = forms.check(TransferRefusal, web._, posted)
    refusal = None
    if body is not None:
        try:
            refusal = refusal_in(await refuse_transfer(transfer_id, body, p))
        except ApiProblem as problem:
            refusal = Refusal.of(problem)
        if refusal is None:
            return see(TRANSFERS, done="refused")
    failed = refuse_form(web, transfer_id, raw=posted, errors=errors)
    return await _again(web, p, failed, refusal, key, about="reason")


async def _again(
    web: Web, p: Pipeline, failed: PostForm, refusal: Refusal | None, key: str, *, about: str
) -> HTMLResponse:
    """The Transfers page as it is now, with the form sent and why it was refused: what was asked
    (422) beside the field ``about`` (or atop the form), anything else above the page."""
    notice = None
    failed.key = key
    if refusal is not None and refusal.status == 422:
        failed.form.add_error(about if failed.form.find(about) else None, web.detail(refusal.detail))
        failed.key = new_key()
    elif refusal is not None:
        notice, failed.key = explain(web, refusal, key)

    def again() -> HTMLResponse:
        web.session.expire_all()
        return render_transfers(web, failed=failed, notice=notice, status=refusal.status if refusal else 422)

    return await p.db(again)
