"""The users' directory (``reintegration/directory.py``) and each user's own: their settings, their
notifications (the in-app inbox) and, in ``api/worklist.py``, their work.

Admins manage the directory: add a user before their first sign-in, set an e-mail address, a
language, deactivate. Everyone reads and changes their own language and how they are notified, and
reads their notifications and marks them read. Nobody reads another user's notifications.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Path, Query
from pydantic import Field, model_validator
from sqlalchemy import func, update
from sqlmodel import Session, col, select

from api.audit import AuditorDep
from api.deps import IDENTIFIER, CurrentUser, SessionDep, require
from api.errors import NotFound, Unprocessable, responses
from api.languages import N_
from api.pagination import Cursor, Keyset, Limit, page
from api.schemas import Page
from reintegration import directory
from reintegration.db import AgencyRecord, UserNotificationRecord, UserRecord, aware
from reintegration.tokens import Claims
from workflows.model import Role, Strict

router = APIRouter(tags=["users"])

UserId = Annotated[str, Path(max_length=200, pattern=IDENTIFIER)]
# ASCII only: a mail server without SMTPUTF8 could not take another address.
Email = Annotated[
    str, Field(max_length=320, pattern=r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9.-]{1,253}\.[A-Za-z]{2,63}$")
]
Language = Literal["en", "es", "fr"]
NotificationId = Annotated[str, Field(pattern=r"^[0-9a-f]{40}$")]
Country = Annotated[str, Field(pattern=r"^([A-Z]{2}|\*)$")]

NOTIFICATIONS_ORDER = Keyset(
    sort=col(UserNotificationRecord.created_at), key=col(UserNotificationRecord.notification_id), descending=True
)


class UserPublic(Strict):
    """A user as the directory knows them."""

    user_id: str
    role: Role
    countries: list[str]
    agency: str | None
    email: str | None = Field(description="Shown to admins and to the user themself only")
    language: Language
    notify: directory.Notify
    active: bool
    created_by: Literal["sign-in", "admin"]
    signed_in_at: datetime | None


class UserWrite(Strict):
    """A user added (or replaced) by an admin; their next sign-in brings role, countries and agency
    up to date from the identity provider."""

    role: Role
    countries: list[Country] = Field(default_factory=list, max_length=300)
    agency: str | None = Field(default=None, max_length=100, pattern=IDENTIFIER)
    email: Email | None = None
    language: Language = "en"
    notify: directory.Notify = directory.Notify.email
    active: bool = True

    @model_validator(mode="after")
    def _agency_for_partners_only(self) -> UserWrite:
        if self.role == Role.partner and not self.agency:
            raise ValueError("a partner needs their agency")
        if self.role != Role.partner and self.agency:
            raise ValueError("only a partner has an agency")
        if self.role == Role.partner and self.countries:
            raise ValueError("a partner has no countries: their agency's tasks are their scope")
        return self


class UserPatch(Strict):
    """What an admin changes of a user: their address, language, notifications, or whether active."""

    email: Email | None = None
    language: Language | None = None
    notify: directory.Notify | None = None
    active: bool | None = None


class MePatch(Strict):
    """What a user changes of their own: language and how they are notified."""

    language: Language | None = None
    notify: directory.Notify | None = Field(
        default=None, description="`email`: an e-mail at once; `digest`: one a day; `none`: the inbox only"
    )


class NotificationPublic(Strict):
    """One notification: what happened on which case, and where to act. Facts only."""

    notification_id: str
    kind: str = Field(description="task.assigned, task.declined, case.handed-over, supervision.stalled...")
    case_reference: str
    case_id: str | None = Field(description="Absent for partners, who never see a case's id")
    task_id: str | None
    facts: dict[str, Any]
    link: str = Field(description="The workspace's page to act on it")
    created_at: datetime
    read_at: datetime | None
    email: Literal["pending", "sent", "digest", "none", "failed"]


class MarkRead(Strict):
    """Mark these notifications read, or all of them."""

    notification_ids: list[Annotated[str, Field(pattern=r"^[0-9a-f]{40}$")]] = Field(
        default_factory=list, max_length=500
    )
    all: bool = False

    @model_validator(mode="after")
    def _something(self) -> MarkRead:
        if not self.notification_ids and not self.all:
            raise ValueError("name the notifications to mark read, or all")
        return self


class Marked(Strict):
    marked: int
    unread: int


def user_public(user: UserRecord, *, with_email: bool = True) -> UserPublic:
    return UserPublic(
        user_id=user.user_id,
        role=Role(user.role),
        countries=list(user.countries),
        agency=user.agency,
        email=user.email if with_email else None,
        language=user.language,  # type: ignore[arg-type]  # one of LANGUAGES, as written
        notify=directory.Notify(user.notify),
        active=user.active,
        created_by=user.created_by,  # type: ignore[arg-type]
        signed_in_at=aware(user.signed_in_at) if user.signed_in_at else None,
    )


def notification_link(role: str, row: UserNotificationRecord) -> str:
    if role == Role.partner.value:
        return f"/workspace/inbox/{row.task_id}" if row.task_id else "/workspace/inbox"
    return f"/workspace/cases/{row.case_id}"


def notification_public(row: UserNotificationRecord, role: str) -> NotificationPublic:
    partner = role == Role.partner.value
    return NotificationPublic(
        notification_id=row.notification_id,
        kind=row.kind,
        case_reference=row.case_reference,
        case_id=None if partner else row.case_id,
        task_id=row.task_id,
        facts=dict(row.facts),
        link=notification_link(role, row),
        created_at=aware(row.created_at),
        read_at=aware(row.read_at) if row.read_at else None,
        email=row.email_status,  # type: ignore[arg-type]
    )


def _me(session: Session, user: Claims) -> UserRecord:
    found = directory.find(session, user.sub)
    if found is None:  # signed in a moment ago on another process, not yet recorded here
        directory.record_sign_in(session, user)
        found = directory.find(session, user.sub)
    assert found is not None
    return found


def _check_agency(session: Session, agency: str | None) -> None:
    if agency is not None and session.get(AgencyRecord, agency) is None:
        raise Unprocessable(N_("unknown agency: {agency}"), params={"agency": agency})


def known_owner(session: Session, user_id: str, country: str) -> None:
    """422 unless ``user_id`` is a known, active caseworker of ``country`` (``reintegration.directory``)."""
    try:
        directory.check_owner(session, user_id, country)
    except directory.UnknownUser as refused:
        raise Unprocessable(refused.template, params=refused.params) from None


# --- the directory (admins) --------------------------------------------------------------------


@router.get(
    "/v1/users",
    response_model=Page[UserPublic],
    summary="The users' directory",
    tags=["users"],
    responses=responses(401, 403, 422, 503),
)
def list_users(
    user: Annotated[Claims, require(Role.admin)],
    session: SessionDep,
    role: Annotated[Role | None, Query()] = None,
    agency: Annotated[str | None, Query(max_length=100, pattern=IDENTIFIER)] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[UserPublic]:
    query = select(UserRecord)
    if role is not None:
        query = query.where(col(UserRecord.role) == role.value)
    if agency is not None:
        query = query.where(col(UserRecord.agency) == agency)
    rows, following = page(
        session, query, Keyset(sort=col(UserRecord.created_at), key=col(UserRecord.user_id)), limit=limit, cursor=cursor
    )
    return Page(items=[user_public(r) for r in rows], next_cursor=following)


@router.get(
    "/v1/users/{user_id}",
    response_model=UserPublic,
    summary="One user of the directory",
    responses=responses(401, 403, 404, 422, 503),
)
def get_user(user_id: UserId, user: Annotated[Claims, require(Role.admin)], session: SessionDep) -> UserPublic:
    found = directory.find(session, user_id)
    if found is None:
        raise NotFound(N_("no such user"))
    return user_public(found)


@router.put(
    "/v1/users/{user_id}",
    response_model=UserPublic,
    summary="Add a user to the directory, or replace what it says of them",
    responses=responses(401, 403, 422, 503),
)
def put_user(
    user_id: UserId,
    body: Annotated[
        UserWrite,
        Body(
            openapi_examples={
                "caseworker": {
                    "value": {
                        "role": "caseworker",
                        "countries": ["RO"],
                        "email": "cw-ro-1@example.org",
                        "language": "en",
                        "notify": "email",
                    }
                }
            }
        ),
    ],
    user: Annotated[Claims, require(Role.admin)],
    session: SessionDep,
    auditor: AuditorDep,
) -> UserPublic:
    _check_agency(session, body.agency)
    now = datetime.now(UTC)
    found = directory.find(session, user_id)
    values = body.model_dump(mode="json")
    values["countries"] = sorted(set(values["countries"]))
    if found is None:
        found = UserRecord(user_id=user_id, created_by="admin", created_at=now, updated_at=now, **values)
        session.add(found)
    else:
        for key, value in values.items():
            setattr(found, key, value)
        found.updated_at = now
    session.commit()
    auditor.record("user.write", detail={"user_id": user_id, "role": body.role.value, "active": body.active})
    session.refresh(found)
    return user_public(found)


@router.patch(
    "/v1/users/{user_id}",
    response_model=UserPublic,
    summary="Change a user's address, language, notifications, or deactivate them",
    responses=responses(401, 403, 404, 422, 503),
)
def patch_user(
    user_id: UserId,
    body: Annotated[UserPatch, Body(openapi_examples={"deactivate": {"value": {"active": False}}})],
    user: Annotated[Claims, require(Role.admin)],
    session: SessionDep,
    auditor: AuditorDep,
) -> UserPublic:
    found = directory.find(session, user_id)
    if found is None:
        raise NotFound(N_("no such user"))
    sent = body.model_dump(mode="json", exclude_unset=True)
    # A null e-mail address removes it; any other null changes nothing.
    changes = {k: v for k, v in sent.items() if v is not None or k == "email"}
    if not changes:
        raise Unprocessable(N_("nothing to change"))
    for key, value in changes.items():
        setattr(found, key, value)
    found.updated_at = datetime.now(UTC)
    session.commit()
    auditor.record("user.update", detail={"user_id": user_id, "changed": sorted(changes)})
    session.refresh(found)
    return user_public(found)


# --- the user's own ----------------------------------------------------------------------------


@router.get("/v1/me", response_model=UserPublic, summary="Who I am, and my settings", responses=responses(401, 503))
def get_me(user: CurrentUser, session: SessionDep) -> UserPublic:
    return user_public(_me(session, user))


@router.patch(
    "/v1/me",
    response_model=UserPublic,
    summary="Change my language or how I am notified",
    responses=responses(401, 422, 503),
)
def patch_me(
    body: Annotated[MePatch, Body(openapi_examples={"digest": {"value": {"notify": "digest"}}})],
    user: CurrentUser,
    session: SessionDep,
) -> UserPublic:
    changes = {k: v for k, v in body.model_dump(mode="json", exclude_unset=True).items() if v is not None}
    if not changes:
        raise Unprocessable(N_("nothing to change"))
    me = _me(session, user)
    for key, value in changes.items():
        setattr(me, key, value)
    me.updated_at = datetime.now(UTC)
    session.commit()
    session.refresh(me)
    return user_public(me)


@router.get(
    "/v1/me/notifications",
    response_model=Page[NotificationPublic],
    summary="My notifications, newest first",
    responses=responses(401, 422, 503),
)
def list_my_notifications(
    user: CurrentUser,
    session: SessionDep,
    unread: Annotated[bool, Query(description="Only those not yet marked read")] = False,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[NotificationPublic]:
    query = select(UserNotificationRecord).where(col(UserNotificationRecord.user_id) == user.sub)
    if unread:
        query = query.where(col(UserNotificationRecord.read_at).is_(None))
    rows, following = page(session, query, NOTIFICATIONS_ORDER, limit=limit, cursor=cursor)
    return Page(items=[notification_public(r, user.role.value) for r in rows], next_cursor=following)


def unread_count(session: Session, user_id: str) -> int:
    return int(
        session.scalar(
            select(func.count())
            .select_from(UserNotificationRecord)
            .where(col(UserNotificationRecord.user_id) == user_id, col(UserNotificationRecord.read_at).is_(None))
        )
        or 0
    )


@router.post(
    "/v1/me/notifications/read",
    response_model=Marked,
    summary="Mark my notifications read",
    description="Those named (ids of another user's are ignored: never found), or `all`. Repeating it changes nothing.",
    responses=responses(401, 422, 503),
)
def mark_read(
    body: Annotated[MarkRead, Body(openapi_examples={"all": {"value": {"all": True}}})],
    user: CurrentUser,
    session: SessionDep,
) -> Marked:
    statement = update(UserNotificationRecord).where(
        col(UserNotificationRecord.user_id) == user.sub, col(UserNotificationRecord.read_at).is_(None)
    )
    if not body.all:
        statement = statement.where(col(UserNotificationRecord.notification_id).in_(body.notification_ids))
    marked = session.execute(statement.values(read_at=datetime.now(UTC))).rowcount  # type: ignore[attr-defined]
    session.commit()
    return Marked(marked=int(marked or 0), unread=unread_count(session, user.sub))
