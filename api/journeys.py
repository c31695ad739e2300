"""Commands to the case workflows and reads of the read model, for the routers."""

from __future__ import annotations

from datetime import UTC, datetime

import structlog
from sqlmodel import Session

from api.access_log import bind_ids
from api.errors import (
    Forbidden,
    NotFound,
)
from api.languages import N_
from reintegration.db import CaseRecord, TaskRecord
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
