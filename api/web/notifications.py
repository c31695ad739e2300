"""The person's notifications (the in-app inbox): newest first, the unread marked, each saying what
happened on which case and linking to where to act; marking them all read; and how the person wants
to be told beyond this page (an e-mail at once, one a day, or here only).

The same service layer as ``/v1/me``: the list is ``list_my_notifications`` (``GET
/v1/me/notifications``), marking read is ``mark_read`` (``POST /v1/me/notifications/read``) and the
setting is ``patch_me`` (``PATCH /v1/me``), its form checked by the API's own ``MePatch``. Every
role has notifications; nobody reads another's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from api.errors import Unprocessable
from api.users import (
    MarkRead,
    MePatch,
    NotificationPublic,
    get_me,
    list_my_notifications,
    mark_read,
    patch_me,
    unread_count,
)
from api.web import words
from api.web.context import PostedForm, Web, WebDep
from reintegration.directory import Notify
from reintegration.mail import FACT_LABELS, HEADLINES

router = APIRouter(include_in_schema=False)

SHOWN = 50  # notifications on one page, newest first; older ones a page at a time
DONE = ("read", "settings")
# The facts whose value is one of the journey's words (shown with ``label``), and those that are a time.
WORDS = frozenset({"service", "stage", "item", "turn"})
TIMES = frozenset({"due_at"})


@dataclass
class Shown:
    """A notification as the page shows it: its headline and facts in the person's language."""

    notification: NotificationPublic
    headline: str
    facts: list[tuple[str, str, Any]]  # (label, kind: text | date | datetime, value)


@dataclass
class SettingsForm:
    """The settings form sent back with what was wrong."""

    sent: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


@router.get("/workspace/notifications")
def notifications(
    web: WebDep,
    older: Annotated[str | None, Query(max_length=500)] = None,
    done: Annotated[str | None, Query(max_length=20)] = None,
) -> HTMLResponse:
    return _page(web, older=older, done=done if done in DONE else None)


@router.post("/workspace/notifications/read")
def read_all(web: WebDep, form: PostedForm) -> Response:
    """Mark every notification of the person read, as ``POST /v1/me/notifications/read`` with ``all``."""
    mark_read(MarkRead(all=True), web.user, web.session)
    return RedirectResponse("/workspace/notifications?done=read", status_code=303)


@router.post("/workspace/notifications/settings")
def choose_settings(web: WebDep, form: PostedForm) -> Response:
    """How the person is told, as ``PATCH /v1/me`` with ``notify``; nothing changes on a wrong choice."""
    sent = words.values(form, "notify")
    settings = SettingsForm(sent=sent)
    body: MePatch | None = None
    if "notify" not in sent:
        settings.errors["notify"] = web._("Choose how you want to be told.")
    else:
        try:
            body = MePatch.model_validate(sent)
        except ValidationError as exc:
            settings.errors = words.field_errors(web, exc)
    if body is None:
        web.unread = unread_count(web.session, web.user.sub)  # the page again, its navigation's count too
        return _page(web, settings=settings, status=422)
    patch_me(body, web.user, web.session)
    return RedirectResponse("/workspace/notifications?done=settings#settings", status_code=303)


def _page(
    web: Web,
    *,
    older: str | None = None,
    done: str | None = None,
    settings: SettingsForm | None = None,
    status: int = 200,
) -> HTMLResponse:
    try:
        found = list_my_notifications(web.user, web.session, unread=False, limit=SHOWN, cursor=older)
    except Unprocessable:  # a cursor this page did not give: the newest ones
        found = list_my_notifications(web.user, web.session, unread=False, limit=SHOWN, cursor=None)
        older = None
    me = get_me(web.user, web.session)
    return web.render(
        "notifications.html",
        {
            "notifications": [_shown(web, n) for n in found.items],
            "next_older": found.next_cursor,
            "older": older,
            "done": done,
            "me": me,
            "choices": [n.value for n in Notify],
            "settings": settings or SettingsForm(sent={"notify": me.notify.value}),
        },
        status=status,
    )


def _shown(web: Web, n: NotificationPublic) -> Shown:
    return Shown(notification=n, headline=web._(HEADLINES.get(n.kind, n.kind)), facts=_facts(web, n.facts))


def _facts(web: Web, facts: dict[str, Any]) -> list[tuple[str, str, Any]]:
    """The facts an e-mail of it would list, in the same order, each shown as what it is."""
    rows: list[tuple[str, str, Any]] = []
    for key, name in FACT_LABELS.items():
        value = facts.get(key)
        if value is None or value == "":
            continue
        label = web._(name)
        if key in WORDS:
            rows.append((label, "text", words.label(web, str(value))))
        elif key in TIMES and isinstance(value, str):
            rows.append((label, *_time(value)))
        else:
            rows.append((label, "text", str(value)))
    return rows


def _time(value: str) -> tuple[str, Any]:
    """A day or a moment written in ISO form, to be shown in the person's language (as is if not one)."""
    try:
        if len(value) == 10:
            return "date", date.fromisoformat(value)
        return "datetime", datetime.fromisoformat(value)
    except ValueError:
        return "text", value
