"""The workspace in the application: its pages, its static files, and what a page answers when the
person is not signed in (to the sign-in page) or a form lacks its CSRF token (403)."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

from api.web import agencies, caseworker, partner, render, sessions, signin, supervisor
from api.web import oidc as oidc_sign_in
from api.web.context import sign_in_redirect


def install(app: FastAPI) -> None:
    app.include_router(signin.router)
    app.include_router(caseworker.router)
    app.include_router(oidc_sign_in.router)
    app.include_router(partner.router)
    app.include_router(supervisor.router)
    app.include_router(agencies.router)
    app.mount("/static", StaticFiles(directory=render.STATIC), name="static")

    async def _sign_in(request: Request, _: Exception) -> Response:
        return sign_in_redirect(request)

    async def _csrf(request: Request, _: Exception) -> HTMLResponse:
        return render.page(request, "refused.html", {"reason": "csrf"}, status=403)

    app.add_exception_handler(sessions.SignInRequired, _sign_in)
    app.add_exception_handler(sessions.CsrfRefused, _csrf)
