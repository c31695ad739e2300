"""Commands to the case workflows and reads of the read model, for the routers."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum

import structlog
from sqlalchemy import bindparam
from sqlalchemy import select as core_select
from sqlmodel import Session, col, select

from api.access_log import bind_ids
from api.errors import (
    Forbidden,
    NotFound,
)
from api.languages import N_
from reintegration.db import CaseRecord, TaskRecord, TransferRecord
from reintegration.tokens import Claims
from workflows.model import Actor, Role

log = structlog.get_logger("api")


def actor_of(user: Claims) -> Actor:
    """The caller as the workflows know them: user id, role and agency, never a name."""
    return Actor(sub=user.sub, role=user.role, agency=user.agency)


def case_in_scope(session: Session, case_id: str, user: Claims) -> CaseRecord:
    """The case if this caseworker or supervisor may see it; 404 otherwise (no leak of existence)."""
    if user.role not in (Role.caseworker, Role.supervisor):
        raise Forbidden(N_("a {role} has no access to cases"), params={"role": user.role.value})
    case = session.get(CaseRecord, case_id)
    if case is None or not user.sees_country(case.owner_country):
        raise NotFound(N_("no such case"))
    return case


class Access(StrEnum):
    """What a caseworker or supervisor may do with a case (``case_access``)."""

    owner = "owner"  # the office that manages it: everything their role allows
    receiving = "receiving"  # the caseworker about to take it on arrival: read, draft the reintegration plan
    offered = "offered"  # the office a pending transfer asks to take it: read, then accept or refuse
    sending = "sending"  # the office that had it: read its case and timeline


def case_access(session: Session, case: CaseRecord, user: Claims) -> Access | None:
    """The caller's access to the case, if any.

    - ``owner``: the case is managed in one of the caller's countries.
    - ``receiving``: the caller is the receiving caseworker the travel plan names, until the arrival
      hands the case over (while the case is on its way: in the return stage, with a travel plan).
    - ``offered``: the caller is of the office a pending transfer asks to take the open case.
    - ``sending``: the case was identified in one of the caller's countries and is managed elsewhere
      now (handed over on arrival), or was transferred from one of them.
    """
    if user.role not in (Role.caseworker, Role.supervisor):
        return None
    if user.sees_country(case.owner_country):
        return Access.owner
    facts = case.facts or {}
    if (
        user.role == Role.caseworker
        and facts.get("receiving_caseworker") == user.sub
        and facts.get("travel_plan_on")
        and not facts.get("arrived_on")
        and case.stage == "return"
        and case.status != "closed"
    ):
        return Access.receiving
    transfers = session.exec(
        select(TransferRecord.from_country, TransferRecord.to_country, TransferRecord.status).where(
            col(TransferRecord.case_id) == case.case_id,
            col(TransferRecord.status).in_(("pending", "accepting", "accepted")),
        )
    ).all()
    if case.status != "closed" and any(
        status in ("pending", "accepting") and user.sees_country(to) for _, to, status in transfers
    ):
        return Access.offered
    if user.sees_country(case.destination_country) or any(
        status == "accepted" and user.sees_country(from_) for from_, _, status in transfers
    ):
        return Access.sending
    return None


def case_readable(
    session: Session, case_id: str, user: Claims, *, read_only: bool = False
) -> tuple[CaseRecord, Access]:
    """The case and the caller's access if they may read it (``case_access``); 404 otherwise. With
    ``read_only``, the case is a copy of its row that the session does not track (``case_row``)."""
    if user.role not in (Role.caseworker, Role.supervisor):
        raise Forbidden(N_("a {role} has no access to cases"), params={"role": user.role.value})
    case = case_row(session, case_id) if read_only else session.get(CaseRecord, case_id)
    access = case_access(session, case, user) if case is not None else None
    if case is None or access is None:
        raise NotFound(N_("no such case"))
    return case, access


_CASES = CaseRecord.__table__  # type: ignore[attr-defined]  # set by SQLModel's metaclass, not declared
_CASE_ROW = core_select(_CASES).where(_CASES.c.case_id == bindparam("case_id"))


def case_row(session: Session, case_id: str) -> CaseRecord | None:
    """The case's row, read by a statement built once into a ``CaseRecord`` that no session can track
    (adding it to one fails): to read, never to change. The ORM's load of the row (its
    identity map, its instrumented object) cost a case read more than the statement itself: 214 to
    132 µs in process (``make bench``: a case read's CPU)."""
    row = session.execute(_CASE_ROW, {"case_id": case_id}).mappings().first()
    return None if row is None else CaseRecord.model_construct(**row)


def task_in_scope(session: Session, task_id: str, user: Claims) -> TaskRecord:
    """The task if the caller may see it: a partner its agency's, others their countries'."""
    task = session.get(TaskRecord, task_id)
    if task is None:
        raise NotFound(N_("no such task"))
    if user.role == Role.partner:
        visible = task.agency_id == user.agency
    elif user.role in (Role.caseworker, Role.supervisor):
        visible = user.sees_country(task.owner_country)
    else:
        raise Forbidden(N_("an admin has no access to tasks"))
    if not visible:
        raise NotFound(N_("no such task"))
    bind_ids(case_id=task.case_id)  # the path names the task only
    return task


# --- Listing -----------------------------------------------------------------------------------


def utcnow() -> datetime:
    return datetime.now(UTC)
