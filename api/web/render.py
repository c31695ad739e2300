"""Pages from templates: one Jinja2 environment per language (its catalogue installed), and the
headers every page carries.

Templates are autoescaped, hold no inline script or style (the Content-Security-Policy allows only
this origin's files), and get their text only through ``_()``.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from api.web import i18n
from api.web.labels import LABELS

TEMPLATES = Path(__file__).resolve().parent / "templates"
STATIC = Path(__file__).resolve().parent / "static"

# Only this origin's files; no inline script or style, no framing, forms post here only.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


@functools.cache
def environment(language: str) -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(["html"]),
        extensions=["jinja2.ext.i18n"],
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.policies["ext.i18n.trimmed"] = True
    env.install_gettext_translations(i18n.translations(language), newstyle=True)  # type: ignore[attr-defined]
    env.globals.update(
        lang=language,
        languages=i18n.LANGUAGES,
        language_names=i18n.LANGUAGE_NAMES,
        date=lambda value: i18n.format_date(value, language),
        datetime=lambda value: i18n.format_datetime(value, language),
        number=lambda value, digits=1: i18n.format_number(value, language, digits),
        label=lambda value: i18n.gettext(language, LABELS.get(str(value), str(value))) if value is not None else "",
    )
    return env


def language_of(request: Request) -> str:
    return i18n.choose(request.headers.get("accept-language"), request.cookies.get(i18n.COOKIE))


def page(request: Request, template: str, context: dict[str, Any] | None = None, *, status: int = 200) -> HTMLResponse:
    """The template rendered in the request's language, with the workspace's headers."""
    language = language_of(request)
    html = (
        environment(language)
        .get_template(template)
        .render({"request": request, "path": request.url.path, **(context or {})})
    )
    return HTMLResponse(html, status_code=status, headers={**HEADERS, "Content-Language": language})


def gettext(request: Request, message: str) -> str:
    """A message of the code (not a template's) in the request's language."""
    return i18n.gettext(language_of(request), message)
