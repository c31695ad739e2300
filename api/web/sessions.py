"""Who is signed in to the workspace: a server-side session per person.

The cookie holds a random token (``HttpOnly``, ``SameSite=Lax``, ``Secure`` outside development);
the ``web_sessions`` table keeps only its hash, the staff member's claims (the same ``Claims`` a
bearer token carries, so every page has the scope of the API) and the session's CSRF token. A
session ends on sign-out, after ``web_session_idle_minutes`` without a request, and at the latest
``web_session_hours`` after sign-in. Every form carries the CSRF token, checked before anything runs.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import UTC, datetime, timedelta

from fastapi import Request, Response
from sqlalchemy import delete, or_
from sqlalchemy.engine import Engine
from sqlmodel import Session, col

from reintegration import directory
from reintegration.db import WebSessionRecord, aware
from reintegration.settings import Settings
from reintegration.tokens import Claims

COOKIE = "workspace_session"
# Outside development the cookie's name carries the __Host- prefix: the browser then keeps it only
# if it is Secure, for this host alone and for every path (no subdomain can plant or read it).
SECURE_COOKIE = "__Host-workspace_session"


def cookie_name(settings: Settings) -> str:
    return COOKIE if settings.environment == "development" else SECURE_COOKIE


# Seen again within this time, a session's last-seen time is not written again (one write a minute
# at most per person, not one per request).
TOUCH_EVERY = timedelta(minutes=1)


class SignInRequired(Exception):
    """No session, or one that ended: the page sends the person to sign in."""


class TooManyPages(Exception):
    """The signed-in person (or the address of a cookie that opens nothing) is over the rate limit."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(retry_after)
        self.retry_after = retry_after


class CsrfRefused(Exception):
    """A form without this session's CSRF token: refused before anything runs."""


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def start(session: Session, response: Response, claims: Claims, settings: Settings) -> None:
    """Sign this person in: a new session (never one the browser brought: no fixation), its cookie set."""
    token = secrets.token_urlsafe(32)
    now = datetime.now(UTC)
    session.add(
        WebSessionRecord(
            token_hash=_hash(token),
            claims=claims.model_dump(mode="json", exclude={"scope"}),
            csrf_token=secrets.token_urlsafe(32),
            created_at=now,
            last_seen_at=now,
        )
    )
    session.commit()
    directory.record_sign_in(session, claims)  # the users' directory is fed from sign-in
    # No max-age: the cookie ends with the browser (a shared phone or office computer), and the
    # session on the server at its idle or absolute limit, whichever comes first.
    response.set_cookie(
        cookie_name(settings),
        token,
        path="/",
        secure=settings.environment != "development",
        httponly=True,
        samesite="lax",
    )


def current(session: Session, request: Request, settings: Settings) -> WebSessionRecord:
    """The request's live session (its last-seen time moved on); ``SignInRequired`` otherwise."""
    token = request.cookies.get(cookie_name(settings))
    if not token or len(token) > 100:
        raise SignInRequired()
    record = session.get(WebSessionRecord, _hash(token))
    if record is None:
        raise SignInRequired()
    now = datetime.now(UTC)
    idle = timedelta(minutes=settings.web_session_idle_minutes)
    if now - aware(record.last_seen_at) > idle or now - aware(record.created_at) > timedelta(
        hours=settings.web_session_hours
    ):
        session.delete(record)
        session.commit()
        raise SignInRequired()
    if now - aware(record.last_seen_at) > TOUCH_EVERY:
        record.last_seen_at = now
        session.add(record)
        session.commit()
    return record


def claims_of(record: WebSessionRecord) -> Claims:
    return Claims.model_validate(record.claims)


def end(session: Session, request: Request, response: Response, settings: Settings) -> None:
    """Sign out: the session is gone from the table (a copied cookie opens nothing), its cookie cleared."""
    name = cookie_name(settings)
    token = request.cookies.get(name)
    if token:
        session.execute(delete(WebSessionRecord).where(col(WebSessionRecord.token_hash) == _hash(token)))
        session.commit()
    response.delete_cookie(name, path="/", secure=name == SECURE_COOKIE, httponly=True, samesite="lax")


def check_csrf(record: WebSessionRecord, sent: str | None) -> None:
    if not sent or not hmac.compare_digest(sent.encode(), record.csrf_token.encode()):
        raise CsrfRefused()


def purge_ended(engine: Engine, settings: Settings) -> int:
    """Delete the sessions that ended (idle past their limit, or past their absolute one); how many."""
    now = datetime.now(UTC)
    idle = now - timedelta(minutes=settings.web_session_idle_minutes)
    started = now - timedelta(hours=settings.web_session_hours)
    with Session(engine) as session:
        gone = session.exec(
            delete(WebSessionRecord).where(
                or_(col(WebSessionRecord.last_seen_at) < idle, col(WebSessionRecord.created_at) < started)
            )
        )
        session.commit()
        return int(gone.rowcount or 0)
