"""The workspace in the application: its pages, its static files, and what a page answers when the
person is not signed in (to the sign-in page) or a form lacks its CSRF token (403)."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.types import Scope

from api.errors import TooManyRequests
from api.web import (
    agencies,
    case_facts,
    caseworker,
    notifications,
    partner,
    render,
    reports,
    search,
    sessions,
    signin,
    step_pages,
    supervisor,
    transfers,
    worklist,
)
from api.web import documents as web_documents
from api.web import oidc as oidc_sign_in
from api.web.context import sign_in_redirect


def install(app: FastAPI) -> None:
    app.include_router(signin.router)
    app.include_router(web_documents.router)  # before the task pages' actions, which would take "documents"
    app.include_router(caseworker.router)
    app.include_router(case_facts.router)
    app.include_router(transfers.router)
    app.include_router(search.router)
    app.include_router(step_pages.router)
    app.include_router(oidc_sign_in.router)
    app.include_router(partner.router)
    app.include_router(supervisor.router)
    app.include_router(reports.router)
    app.include_router(agencies.router)
    app.include_router(worklist.router)
    app.include_router(notifications.router)
    app.mount("/static", StaticFiles(directory=render.STATIC), name="static")

    async def _sign_in(request: Request, _: Exception) -> Response:
        return sign_in_redirect(request)

    async def _csrf(request: Request, _: Exception) -> HTMLResponse:
        return render.page(request, "refused.html", {"reason": "csrf"}, status=403)

    async def _busy(request: Request, exc: Exception) -> HTMLResponse:
        assert isinstance(exc, sessions.TooManyPages)
        return too_many_page(request, exc.retry_after)

    app.add_exception_handler(sessions.SignInRequired, _sign_in)
    app.add_exception_handler(sessions.CsrfRefused, _csrf)
    app.add_exception_handler(sessions.TooManyPages, _busy)


def too_many_page(request: Request, retry_after: int) -> HTMLResponse:
    """Over the rate limit, a person gets a page that says so (in their language), not a JSON problem."""
    response = render.page(request, "refused.html", {"reason": "rate", "retry_after": retry_after}, status=429)
    response.headers["Retry-After"] = str(retry_after)
    return response


def too_many(scope: Scope, exc: TooManyRequests) -> HTMLResponse:
    """``too_many_page`` for a request refused by the rate limit before it reached a page."""
    return too_many_page(Request(scope), int(exc.headers.get("Retry-After", "1")))
