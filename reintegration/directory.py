"""The users' directory: who works in the system, in which role, countries and agency, with their
e-mail address, language and how they want to be told of things.

Fed from sign-in (each verified token, each sign-in to the workspace, each development token minted
by ``reintegration token``): the identity provider is the source of a user's role, countries and
agency, so a sign-in brings them up to date. An admin may add a user before their first sign-in
(so a case can be handed to them), set their e-mail address and deactivate them; a user chooses
their own language and notifications. A case is only ever given to a known, active caseworker of
its country (``check_owner``).

Staff only: the directory never holds a case's data, and its e-mail addresses go nowhere but to the
mail server (never into a log, a workflow history or an error).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col

from reintegration.db import UserRecord
from reintegration.tokens import ALL_COUNTRIES, Claims
from workflows.model import Role
from workflows.rules.errors import N_

LANGUAGES = ("en", "es", "fr")


class Notify(StrEnum):
    """How a user is told of what concerns them, beyond the in-app inbox (which is always kept)."""

    email = "email"  # an e-mail at once
    digest = "digest"  # one e-mail a day with everything since the last
    none = "none"  # the inbox only


# The roles a case can be owned by: its caseworkers, and the supervisors who may do all they do.
OWNER_ROLES = frozenset({Role.caseworker.value, Role.supervisor.value})


class UnknownUser(Exception):
    """The user is not in the directory, is deactivated, or may not take what is asked: ``template``
    (marked for the catalogues) with its ``params``, so the API says it in the caller's language."""

    def __init__(self, template: str, **params: str) -> None:
        super().__init__(template.format(**params))
        self.template, self.params = template, params


def _countries(claims: Claims) -> list[str]:
    return sorted(set(claims.countries or []))


def record_sign_in(session: Session, claims: Claims, *, email: str | None = None) -> None:
    """Record a sign-in: add the user, or bring their role, countries and agency up to date (an
    address the provider sends replaces the one on file). Committed; safe to run twice at once."""
    now = datetime.now(UTC)
    values: dict[str, Any] = {
        "role": claims.role.value,
        "countries": _countries(claims),
        "agency": claims.agency,
        "signed_in_at": now,
        "updated_at": now,
    }
    if email:
        values["email"] = email
    for _ in range(2):
        changed = session.execute(
            update(UserRecord).where(col(UserRecord.user_id) == claims.sub).values(**values)
        ).rowcount  # type: ignore[attr-defined]  # an UPDATE's result has a row count
        if changed:
            session.commit()
            return
        session.add(UserRecord(user_id=claims.sub, created_by="sign-in", created_at=now, **values))
        try:
            session.commit()
            return
        except IntegrityError:  # signed in twice at once: the other one added the row, update it
            session.rollback()


def seen_key(claims: Claims) -> tuple[Any, ...]:
    """What a sign-in records of a token: a process records each once."""
    return (claims.sub, claims.role.value, claims.agency, tuple(_countries(claims)))


def find(session: Session, user_id: str) -> UserRecord | None:
    return session.get(UserRecord, user_id)


def sees_country(user: Any, country: str) -> bool:
    return ALL_COUNTRIES in user.countries or country in user.countries


def check_owner(session: Session, user_id: str, country: str) -> None:
    """Refuse (``UnknownUser``, saying why) to give a case of ``country`` to anyone but a known,
    active caseworker (or supervisor) of that country."""
    user = find(session, user_id)
    if user is None:
        raise UnknownUser(N_("unknown caseworker: {user}; they must sign in once, or an admin add them"), user=user_id)
    if not user.active:
        raise UnknownUser(N_("{user} is deactivated"), user=user_id)
    if user.role not in OWNER_ROLES:
        raise UnknownUser(N_("{user} is not a caseworker"), user=user_id)
    if not sees_country(user, country):
        raise UnknownUser(N_("{user} is not a caseworker of {country}"), user=user_id, country=country)


# What the notifications need of a user: read as plain rows, from a session or a connection.
_WHO = (
    col(UserRecord.user_id),
    col(UserRecord.role),
    col(UserRecord.countries),
    col(UserRecord.agency),
    col(UserRecord.email),
    col(UserRecord.language),
    col(UserRecord.notify),
)


# Built once (the read model's writer asks them at every event that tells someone): a statement's
# construction and cache key cost more than running it on SQLite (``make bench``).
_PARTNERS_OF = select(*_WHO).where(
    col(UserRecord.agency) == bindparam("agency_id"),
    col(UserRecord.role) == Role.partner.value,
    col(UserRecord.active).is_(True),
)
_SUPERVISORS = select(*_WHO).where(col(UserRecord.role) == Role.supervisor.value, col(UserRecord.active).is_(True))
_ACTIVE_USERS = select(*_WHO).where(
    col(UserRecord.user_id).in_(bindparam("user_ids", expanding=True)), col(UserRecord.active).is_(True)
)


def partners_of(conn: Connection | Session, agency_id: str) -> list[Any]:
    """The active users of a partner agency (rows of ``_WHO``)."""
    return list(conn.execute(_PARTNERS_OF, {"agency_id": agency_id}))


def supervisors_of(conn: Connection | Session, country: str) -> list[Any]:
    """The active supervisors whose region holds ``country``, those of every country included."""
    return [u for u in conn.execute(_SUPERVISORS) if sees_country(u, country)]


def active_users(conn: Connection | Session, user_ids: Iterable[str]) -> dict[str, Any]:
    """These users if active, by id (those the directory does not know left out)."""
    wanted = sorted({u for u in user_ids if u})
    if not wanted:
        return {}
    rows = conn.execute(_ACTIVE_USERS, {"user_ids": wanted})
    return {u.user_id: u for u in rows}
