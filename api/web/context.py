"""What every workspace page has: the signed-in person (the same ``Claims`` a bearer token gives the
API, so the same scope), the request's database session, the language, and the ways into the API's
service layer: the ``Auditor`` and the command ``Pipeline``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlmodel import Session
from starlette.datastructures import FormData

from api import languages
from api.audit import Auditor, request_ids
from api.deps import SessionDep, SettingsDep
from api.errors import Forbidden, TooManyRequests, Unavailable
from api.languages import N_
from api.limits import RateLimits, client_key, subject_key
from api.pipeline import Pipeline
from api.users import unread_count
from api.web import render, sessions
from reintegration.db import WebSessionRecord
from reintegration.settings import Settings
from reintegration.tokens import Claims
from workflows.model import Role

HOME = {
    Role.caseworker: "/workspace/cases",
    Role.partner: "/workspace/inbox",
    Role.supervisor: "/workspace/dashboard",
    Role.admin: "/workspace/agencies",
}


@dataclass
class Web:
    request: Request
    session: Session
    settings: Settings
    record: WebSessionRecord
    user: Claims
    # The person's unread notifications, counted for the navigation's link when a page is asked for
    # (GET: one COUNT, off the loop); None where it was not counted (a form's answer shown again).
    unread: int | None = None

    @property
    def language(self) -> str:
        return render.language_of(self.request)

    @property
    def auditor(self) -> Auditor:
        request_id, client_request_id = request_ids(self.request)
        return Auditor(session=self.session, user=self.user, request_id=request_id, client_request_id=client_request_id)

    def pipeline(self, key: str | None) -> Pipeline:
        """The API's command pipeline for this person; ``key`` is the form's own idempotency key, so a
        form sent twice (a double click, a retry after a timeout) acts once."""
        client = self.request.app.state.temporal
        if client is None:
            raise Unavailable(N_("Temporal is not reachable yet"))
        return Pipeline(
            user=self.user,
            session=self.session,
            client=client,
            engine=self.request.app.state.engine,
            settings=self.settings,
            auditor=self.auditor,
            key=key,
        )

    def require(self, *roles: Role) -> None:
        if self.user.role not in roles:
            raise Forbidden(N_("a {role} may not do this"), params={"role": self.user.role.value})

    def render(self, template: str, context: dict[str, Any] | None = None, *, status: int = 200) -> HTMLResponse:
        return render.page(
            self.request,
            template,
            {
                "user": self.user,
                "csrf_token": self.record.csrf_token,
                "home": HOME[self.user.role],
                "unread": self.unread,
                **(context or {}),
            },
            status=status,
        )

    def _(self, message: str) -> str:
        return render.gettext(self.request, message)

    def detail(self, text: str) -> str:
        """A refusal's detail from the API (a filled template, or a journey's composed sentence) in
        the person's language, as the API gives it to a request that asks for that language."""
        return languages.detail(self.language, text)


def web_context(request: Request, session: SessionDep, settings: SettingsDep) -> Web:
    """The signed-in person's context (a plain function: FastAPI runs it in a thread, off the loop)."""
    limits: RateLimits = request.app.state.rate_limits
    try:
        try:
            record = sessions.current(session, request, settings)
        except sessions.SignInRequired:
            limits.charge(client_key(request.scope))  # a cookie that opens nothing spends its address's
            raise
        user = sessions.claims_of(record)
        limits.charge(subject_key(user.sub))  # the person's own budget, as with a bearer token
    except TooManyRequests as exc:
        raise sessions.TooManyPages(int(exc.headers.get("Retry-After", "1"))) from None
    request.state.rate_charged = True
    request.state.claims = user  # the access log names who asked, as for a bearer token
    unread = unread_count(session, user.sub) if request.method == "GET" else None
    return Web(request=request, session=session, settings=settings, record=record, user=user, unread=unread)


WebDep = Annotated[Web, Depends(web_context)]


def same_origin(request: Request) -> None:
    """Refuse (``CsrfRefused``) a form another site made the browser send: what the browser says of
    the request's origin (``Sec-Fetch-Site``, ``Origin``) must be this site. It guards the forms that
    come before a session exists (sign-in, the language switch) as well as every other."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        raise sessions.CsrfRefused()
    origin = request.headers.get("origin")
    if origin is not None and origin != f"{request.url.scheme}://{request.url.netloc}":
        raise sessions.CsrfRefused()


SameOrigin = Depends(same_origin)


async def posted(request: Request, web: WebDep) -> FormData:
    """A form sent by this session's page: refused (``CsrfRefused``) from another site or without
    the session's CSRF token."""
    same_origin(request)
    form = await request.form()
    token = form.get("csrf_token")
    sessions.check_csrf(web.record, token if isinstance(token, str) else None)
    return form


PostedForm = Annotated[FormData, Depends(posted)]


def sign_in_redirect(request: Request) -> RedirectResponse:
    """To the sign-in page, coming back here after (the path only: never another site)."""
    target = request.url.path if request.method == "GET" else "/workspace"
    return RedirectResponse(f"/workspace/sign-in?next={quote(target, safe='/')}", status_code=303)


def safe_next(value: str | None) -> str:
    """Where to go after signing in: a path of the workspace, never another site."""
    if value and value.startswith("/workspace") and "//" not in value and "\\" not in value:
        return value
    return "/workspace"
