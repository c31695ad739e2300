"""What the partner's and the supervisor's pages share: a form's values and idempotency key, the
errors of a body's pydantic model in words beside their fields, and a refusal page.

The words explain; the rules stay where they are (the body models, the workflow's checks, the
API's scope): a page only reads the refusal it got.
"""

from __future__ import annotations

from fastapi.responses import HTMLResponse
from pydantic import ValidationError
from starlette.datastructures import FormData

from api.errors import ApiProblem, Conflict, Forbidden, NotFound, PreconditionFailed, Unprocessable
from api.web.context import Web
from api.web.labels import LABELS
from api.web.refusals import refusal_in
from workflows.model import Role


def values(form: FormData, *names: str) -> dict[str, str]:
    """The form's non-empty text fields among ``names``, trimmed (an empty field is a missing one)."""
    found: dict[str, str] = {}
    for name in names:
        value = form.get(name)
        if isinstance(value, str) and value.strip():
            found[name] = value.strip()
    return found


STORED = {403: Forbidden, 404: NotFound, 409: Conflict, 412: PreconditionFailed, 422: Unprocessable}


def stored_refusal(result: object) -> ApiProblem | None:
    """The refusal the first sending of a form got, which a repeat with its key is given again (a
    stored answer of 400 or more, not raised); ``None`` for a success."""
    refusal = refusal_in(result)
    return None if refusal is None else STORED.get(refusal.status, Conflict)(refusal.detail)


def label(web: Web, value: str) -> str:
    """The words for one of the journey's values in the person's language (as ``label()`` in templates)."""
    return web._(LABELS.get(value, value))


def field_errors(web: Web, exc: ValidationError, required: dict[str, str] | None = None) -> dict[str, str]:
    """Each field's first error, in words; ``required`` gives the words for a missing field by name."""
    errors: dict[str, str] = {}
    for error in exc.errors():
        loc = error.get("loc", ())
        field = str(loc[0]) if loc else "form"
        if field in errors:
            continue
        kind = error.get("type", "")
        if kind in ("missing", "string_too_short") and required and field in required:
            errors[field] = required[field]
        elif kind in ("missing", "string_too_short"):
            errors[field] = web._("Fill in this field.")
        elif kind == "string_too_long":
            limit = (error.get("ctx") or {}).get("max_length", "")
            errors[field] = web._("This is too long: at most %(limit)s characters.") % {"limit": limit}
        elif kind in ("enum", "literal_error"):
            errors[field] = web._("Choose one of the options.")
        elif kind.startswith("date") or kind.startswith("datetime"):
            errors[field] = web._("Enter a date as year-month-day, for example 2026-12-31.")
        elif kind == "string_pattern_mismatch":
            errors[field] = web._("Use letters, digits and . _ @ : - only, without spaces.")
        else:
            errors[field] = web._("Check this field.")
    return errors


def refused(web: Web, status: int, heading: str, message: str, back: str | None = None) -> HTMLResponse:
    """A page that says, in words, why the person cannot have what they asked for."""
    return web.render(
        "page_refused.html",
        {"heading": heading, "message": message, "back": back or web.request.url.path},
        status=status,
    )


def only_for(web: Web, *roles: Role) -> HTMLResponse | None:
    """``None`` for a person of one of these roles; otherwise the 403 page (as the API's ``Forbidden``)."""
    try:
        web.require(*roles)
    except Forbidden:
        return refused(
            web,
            403,
            web._("Not for your role"),
            web._("This page is for another role. Nothing was shown or changed."),
            back="/workspace",
        )
    return None
