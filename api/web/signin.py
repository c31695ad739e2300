"""Signing in and out of the workspace, and the language switch.

On the embedded default (``environment=development``) a development sign-in picks the role, user,
agency and countries, as ``reintegration token`` does for the API; production has no such page
(404): people sign in with the organisation's OpenID Connect provider.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from sqlmodel import Session, col, select

from api.audit import Auditor, request_ids
from api.deps import SessionDep, SettingsDep
from api.errors import NotFound
from api.languages import N_
from api.web import i18n, render, sessions
from api.web.context import HOME, PostedForm, SameOrigin, WebDep, safe_next
from reintegration.db import AgencyRecord
from reintegration.settings import Settings
from reintegration.tokens import Claims
from workflows.model import HUMAN_ROLES, Role

router = APIRouter(include_in_schema=False)


@router.get("/")
def root() -> RedirectResponse:
    return RedirectResponse("/workspace", status_code=303)


@router.get("/workspace")
def home(web: WebDep) -> RedirectResponse:
    return RedirectResponse(HOME[web.user.role], status_code=303)


@router.get("/workspace/sign-in")
def sign_in_page(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    next: Annotated[str | None, Query(max_length=300)] = None,  # noqa: A002 - the conventional name
) -> HTMLResponse:
    return _sign_in_form(request, session, settings, next)


@router.post("/workspace/sign-in", dependencies=[SameOrigin])
def sign_in(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    role: Annotated[str, Form(max_length=20)],
    sub: Annotated[str, Form(max_length=200)],
    countries: Annotated[str, Form(max_length=400)] = "",
    agency: Annotated[str, Form(max_length=100)] = "",
    name: Annotated[str, Form(max_length=200)] = "",
    next: Annotated[str, Form(max_length=300)] = "/workspace",  # noqa: A002
) -> Response:
    """Development only: sign in as whoever the form says (production refuses: 404)."""
    if settings.environment != "development":
        raise NotFound(N_("no such page"))
    try:
        if role not in HUMAN_ROLES:
            raise ValueError(role)
        claims = Claims(
            sub=sub.strip(),
            role=Role(role),
            agency=agency.strip() or None,
            countries=[c.strip().upper() for c in countries.replace(" ", ",").split(",") if c.strip()],
            name=name.strip() or None,
        )
    except (ValidationError, ValueError):
        error = render.gettext(request, "Check the role, the user id and the countries (e.g. ES, PT or *).")
        values = {"role": role, "sub": sub, "countries": countries, "agency": agency, "name": name}
        return _sign_in_form(request, session, settings, next, error=error, values=values, status=422)
    response = RedirectResponse(safe_next(next), status_code=303)
    sessions.start(session, response, claims, settings)
    _audit(request, session, claims, "web.sign-in")
    return response


def _sign_in_form(
    request: Request,
    session: Session,
    settings: Settings,
    next_page: str | None,
    *,
    error: str | None = None,
    values: dict[str, str] | None = None,
    status: int = 200,
) -> HTMLResponse:
    development = settings.environment == "development"
    agencies = session.exec(select(AgencyRecord).order_by(col(AgencyRecord.agency_id))).all() if development else []
    return render.page(
        request,
        "sign_in.html",
        {
            "development": development,
            "oidc": bool(getattr(settings, "oidc_client_id", None)),
            "next": safe_next(next_page),
            "roles": HUMAN_ROLES,
            "agencies": [(a.agency_id, a.name) for a in agencies],
            "error": error,
            "values": values or {},
        },
        status=status,
    )


@router.post("/workspace/sign-out")
def sign_out(request: Request, web: WebDep, form: PostedForm) -> Response:
    response = RedirectResponse("/workspace/sign-in", status_code=303)
    _audit(request, web.session, web.user, "web.sign-out")
    sessions.end(web.session, request, response, web.settings)
    return response


@router.post("/workspace/language", dependencies=[SameOrigin])
def choose_language(
    language: Annotated[str, Form(max_length=8)],
    next: Annotated[str, Form(max_length=300)] = "/workspace",  # noqa: A002
) -> Response:
    """The person's language, kept in a cookie (it says nothing about them but the language)."""
    response = RedirectResponse(safe_next(next), status_code=303)
    if language in i18n.LANGUAGES:
        response.set_cookie(i18n.COOKIE, language, max_age=365 * 86400, path="/", samesite="lax", httponly=True)
    return response


def _audit(request: Request, session: Session, claims: Claims, action: str) -> None:
    request_id, client_request_id = request_ids(request)
    Auditor(session=session, user=claims, request_id=request_id, client_request_id=client_request_id).record(action)
