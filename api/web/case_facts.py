"""The case's anonymous facts in the workspace (issue 17; ``reintegration/case_facts.py``): the
"Facts for the statistics" section of the case page (sex, age band, and the recruitment and control recorded),
the page that edits them (``/workspace/cases/{id}/facts``), and the words of their fields, which the
intake's optional section "Recruitment and control" uses too.

The page reads and writes through ``GET``/``PUT /v1/cases/{id}/facts``' own functions
(``read_facts``, ``record_facts``): the same scope (the office managing the case), the same rule
(a closed case's facts are read-only) and the same ``case.facts`` audit row. The form is
``VictimFacts``, the body the API validates, so a value off the HTCDS picklists is refused beside
its field and nothing is written. Sex and age band follow the person's data and are not edited here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import HTMLResponse

from api.case_facts import CaseFactsView, read_facts, record_facts
from api.cases import CASEWORK, CaseId
from api.errors import ApiProblem, Forbidden, NotFound
from api.journeys import Access, case_in_scope
from api.schemas import CasePublic
from api.web import forms, i18n
from api.web.case_view import case_path, label_of
from api.web.context import PostedForm, Web, WebDep
from api.web.forms import Field, Fieldset, Form, Raw, Translate
from api.web.labels import AGE_BANDS, N_, VICTIM_FIELDS
from api.web.refusals import Notice, Refusal, explain, refused_page, see
from reintegration.case_facts import VictimFacts
from reintegration.db import CaseRecord

router = APIRouter(include_in_schema=False)

VICTIM = "victim"  # the intake's field (``CaseCreate.victim``)
LEGEND = N_("Recruitment and control")
HINT = N_(
    "What was learnt of how the person was recruited and controlled, where it is known: anonymous facts for "
    "the statistics, kept after the person's data is erased. They can be changed later from the case page."
)
TICK = N_("Tick every one that applies.")
REFERRED = N_("When the organisation that referred the person did so, if they were referred.")
DONE = "facts"  # the case page's ``?done=`` after a save (``caseworker.DONE``)


# --- The form's words ------------------------------------------------------------------------------


def label_victim_fields(form: Form, _: Translate, within: str = VICTIM) -> None:
    """Give the facts' fields of ``form`` their words: those of the fieldset ``within`` (the intake's
    ``victim``), or the form's own fields with ``within`` empty (the facts' page)."""
    if within:
        found = form.find(within)
        if not isinstance(found, Fieldset):
            return
        found.legend, found.hint = _(LEGEND), _(HINT)
        items, legend = found.items, found.legend
    else:
        items, legend = form.items, ""
    for item in items:
        if not isinstance(item, Field):
            continue
        key = item.name.rpartition(".")[2]
        if key in VICTIM_FIELDS:
            item.label, item.within = _(VICTIM_FIELDS[key]), legend
        if item.widget == "choices":
            item.hint = _(TICK)
        elif key == "referred_on":
            item.hint = _(REFERRED)


def victim_filled(form: Form, within: str = VICTIM) -> bool:
    """Whether the intake's facts hold a value or an error: their section is then shown open."""
    found = form.find(within)
    if not isinstance(found, Fieldset):
        return False
    return bool(found.error) or any(isinstance(i, Field) and (i.error or i.value or i.selected) for i in found.items)


def victim_form(
    _: Translate, *, raw: Raw | None = None, initial: dict[str, Any] | None = None, errors: forms.Errors | None = None
) -> Form:
    """The facts' own page's form: ``VictimFacts``, as ``PUT /v1/cases/{id}/facts`` takes it."""
    form = forms.build(VictimFacts, _, raw=raw, initial=initial, errors=errors)
    label_victim_fields(form, _, within="")
    return form


# --- The case page's section -----------------------------------------------------------------------


@dataclass
class FactsSection:
    """What the case page's "Facts for the statistics" shows (``templates/case_facts_part.html``)."""

    rows: list[tuple[str, str]]  # (what, its value in words): sex, age band, then each fact recorded
    recorded: bool  # whether any fact of the recruitment and control is recorded
    edit: str  # the facts' page, while they may be changed (an open case); else empty


def facts_words(web: Web, facts: CaseFactsView) -> FactsSection:
    """The facts in the person's language: picklist values by their labels, the referral's date."""
    rows = [
        (web._("Sex"), label_of(web, facts.sex)),
        (web._("Age band at identification"), web._(AGE_BANDS.get(facts.age_band.value, facts.age_band.value))),
    ]
    recorded = False
    for key, words in VICTIM_FIELDS.items():
        value = getattr(facts, key)
        if value is None or value == []:
            continue
        recorded = True
        if key == "referred_on":
            shown = i18n.format_date(value, web.language)
        elif isinstance(value, list):
            shown = ", ".join(label_of(web, v.value) for v in value)
        else:
            shown = label_of(web, value.value)
        rows.append((web._(words), shown))
    return FactsSection(rows=rows, recorded=recorded, edit="")


def facts_section(web: Web, case: CasePublic) -> FactsSection | None:
    """The case page's "Facts for the statistics", for the office managing the case (as ``GET .../facts``); None
    for an office that only reads the case."""
    if case.access != Access.owner:
        return None
    try:
        facts = read_facts(case.case_id, web.user, web.session)
    except (NotFound, Forbidden):
        return None
    section = facts_words(web, facts)
    if case.status != "closed":
        section.edit = facts_path(case.case_id)
    return section


def facts_path(case_id: str) -> str:
    return f"{case_path(case_id)}/facts"


# --- The facts' page -------------------------------------------------------------------------------


@router.get("/workspace/cases/{case_id}/facts")
def facts_page(case_id: CaseId, web: WebDep) -> HTMLResponse:
    """The recruitment and control recorded, in a form to change them (an open case), built from the
    body ``PUT /v1/cases/{id}/facts`` takes."""
    if web.user.role not in CASEWORK:
        return refused_page(web, 403)
    try:
        case = case_in_scope(web.session, case_id, web.user)
        facts = read_facts(case_id, web.user, web.session)
    except (NotFound, Forbidden) as problem:
        return refused_page(web, problem.status)
    initial = facts.model_dump(mode="json", include=set(VictimFacts.model_fields))
    return _page(web, case, facts, victim_form(web._, initial=initial))


@router.post("/workspace/cases/{case_id}/facts")
def record_facts_form(case_id: CaseId, web: WebDep, posted: PostedForm) -> Response:
    """The form sent as ``PUT /v1/cases/{id}/facts`` sends its body (``record_facts``): back to the
    case once saved, or the form again as it was sent, with why it was refused."""
    if web.user.role not in CASEWORK:
        return refused_page(web, 403)
    body, errors = forms.check(VictimFacts, web._, posted)
    notice, status = None, 422
    if body is not None:
        try:
            record_facts(case_id, body, web.user, web.session, web.auditor)
            return see(case_path(case_id), done=DONE)
        except (NotFound, Forbidden) as problem:
            return refused_page(web, problem.status)
        except ApiProblem as problem:  # the case closed meanwhile (409)
            web.session.rollback()
            notice, _ = explain(web, Refusal.of(problem), "")
            status = problem.status
    try:
        case = case_in_scope(web.session, case_id, web.user)
        facts = read_facts(case_id, web.user, web.session)
    except (NotFound, Forbidden) as problem:
        return refused_page(web, problem.status)
    return _page(web, case, facts, victim_form(web._, raw=posted, errors=errors), notice=notice, status=status)


def _page(
    web: Web,
    case: CaseRecord,
    facts: CaseFactsView,
    form: Form,
    *,
    notice: Notice | None = None,
    status: int = 200,
) -> HTMLResponse:
    closed = case.status == "closed"
    if closed and notice is None:
        notice = Notice("warning", web._("The case is closed: its facts can no longer be changed."))
    return web.render(
        "case_facts_edit.html",
        {
            "case": case,
            "section": facts_words(web, facts),
            "form": None if closed else form,
            "action": facts_path(case.case_id),
            "notice": notice,
        },
        status=status,
    )
