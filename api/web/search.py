"""Finding a case in the workspace: by its reference, the person's name (and birth date) or an identity
document number, through ``POST /v1/cases/search``'s own function (``search_cases``): the same
scope, blind indexes and ``case.search`` audit row. The form is posted, never put in the URL, so no
name reaches an address bar, a history or a log."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse
from pydantic import ValidationError

from api.cases import CASEWORK, search_cases
from api.errors import Unprocessable
from api.schemas import CaseSearch, CaseSummary
from api.web import words
from api.web.context import PostedForm, Web, WebDep
from api.web.refusals import refused_page

router = APIRouter(include_in_schema=False)

FIELDS = ("reference", "name", "birthdate", "identity_number")
SHOWN = 50


@router.get("/workspace/search")
def search_page(web: WebDep) -> HTMLResponse:
    if web.user.role not in CASEWORK:
        return refused_page(web, 403)
    return _page(web)


@router.post("/workspace/search")
def search(web: WebDep, form: PostedForm) -> HTMLResponse:
    """The cases found, in the caller's scope, newest first (the first 50: a search is narrowed, not paged)."""
    if web.user.role not in CASEWORK:
        return refused_page(web, 403)
    sent = words.values(form, *FIELDS)
    try:
        body = CaseSearch.model_validate(sent)
    except ValidationError:
        problem = web._(
            "Fill in one way to search: a case reference, a name (a birth date narrows it), or an identity number."
        )
        return _page(web, sent=sent, problem=problem, status=422)
    try:
        found = search_cases(body, web.user, web.session, web.auditor, limit=SHOWN, cursor=None)
    except Unprocessable:
        problem = web._("The name or number has no letters or digits to search by.")
        return _page(web, sent=sent, problem=problem, status=422)
    return _page(web, sent=sent, results=found.items, more=found.next_cursor is not None)


def _page(
    web: Web,
    *,
    sent: dict[str, str] | None = None,
    results: list[CaseSummary] | None = None,
    more: bool = False,
    problem: str | None = None,
    status: int = 200,
) -> HTMLResponse:
    context = {"sent": sent or {}, "results": results, "more": more, "problem": problem}
    return web.render("search.html", context, status=status)
