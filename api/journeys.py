"""Commands to the case workflows and reads of the read model, for the routers."""

from __future__ import annotations

import base64
import binascii
import re
from datetime import UTC, datetime

import structlog
from sqlalchemy.engine import Engine
from sqlmodel import Session
from temporalio.client import Client

from api.access_log import bind_ids
from api.deps import IDENTIFIER, release_connection
from api.errors import (
    Conflict,
    Forbidden,
    NotFound,
    PreconditionFailed,
    Unavailable,
    Unprocessable,
)
from reintegration import commands
from reintegration.db import CaseRecord, TaskRecord, aware  # noqa: F401 - aware is the routers' too
from reintegration.tokens import Claims
from workflows.journey import ErrorType
from workflows.model import OPEN_TASK_STATUSES, CommandResult, Role

log = structlog.get_logger("api")

OPEN_STATUSES = sorted(s.value for s in OPEN_TASK_STATUSES)


def case_in_scope(session: Session, case_id: str, user: Claims) -> CaseRecord:
    """The case if this caseworker or supervisor may see it; 404 otherwise (no leak of existence)."""
    if user.role not in (Role.caseworker, Role.supervisor):
        raise Forbidden(f"a {user.role.value} has no access to cases")
    case = session.get(CaseRecord, case_id)
    if case is None or not user.sees_country(case.owner_country):
        raise NotFound("no such case")
    return case


def task_in_scope(session: Session, task_id: str, user: Claims) -> TaskRecord:
    """The task if the caller may see it: a partner its agency's, others their countries'."""
    task = session.get(TaskRecord, task_id)
    if task is None:
        raise NotFound("no such task")
    if user.role == Role.partner:
        visible = task.agency_id == user.agency
    elif user.role in (Role.caseworker, Role.supervisor):
        visible = user.sees_country(task.owner_country)
    else:
        raise Forbidden("an admin has no access to tasks")
    if not visible:
        raise NotFound("no such task")
    bind_ids(case_id=task.case_id)  # the path names the task only
    return task


async def send_command(
    client: Client,
    engine: Engine,
    case_id: str,
    update: str,
    command: object,
    *,
    update_id: str | None = None,
    session: Session | None = None,
) -> CommandResult:
    """Send a command to the case's workflow; map what did not take effect to a problem. The request's
    ``session`` holds no connection while the command is on its way (``release_connection``)."""
    release_connection(session)
    try:
        return await commands.send_command(client, engine, case_id, update, command, update_id=update_id)
    except commands.NoSuchCase:
        raise NotFound("no such case") from None
    except commands.CaseClosed:
        raise Conflict("the case is closed", allowed_steps=[]) from None
    except commands.TemporalUnavailable as exc:
        raise Unavailable(exc.message, retry_after=exc.retry_after) from None
    except commands.CommandRefused as exc:
        raise _refusal(exc) from None


def _refusal(exc: commands.CommandRefused) -> Exception:
    match exc.type:
        case ErrorType.STEP_NOT_ALLOWED:
            return Conflict(exc.message, allowed_steps=exc.allowed_steps)
        case ErrorType.INVALID_COMMAND:
            return Unprocessable(exc.message)
        case ErrorType.TASK_NOT_FOUND:
            return NotFound(exc.message)
        case ErrorType.FORBIDDEN:
            return Forbidden(exc.message)
        case ErrorType.VERSION_MISMATCH:
            return PreconditionFailed(exc.message)
    return Conflict(exc.message, allowed_steps=[])


# --- Listing -----------------------------------------------------------------------------------


def encode_cursor(at: datetime, key: str) -> str:
    return base64.urlsafe_b64encode(f"{at.isoformat()}|{key}".encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        at, key = base64.urlsafe_b64decode(cursor.encode()).decode().split("|", 1)
        parsed = datetime.fromisoformat(at)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise Unprocessable("the cursor is not one this API gave") from None
    # The key is a case or task id; anything else (a NUL byte, which PostgreSQL refuses) is forged.
    if not re.fullmatch(IDENTIFIER, key):
        raise Unprocessable("the cursor is not one this API gave")
    return parsed, key


def utcnow() -> datetime:
    return datetime.now(UTC)
