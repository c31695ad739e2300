"""Commands to the case workflows and reads of the read model, for the routers.

A command goes to the workflow the read model names as active for the case. When a stage has just
ended, that workflow may have finished or refuse with ``StageMoved``: the command is sent again to
the workflow that now owns the case, for a few seconds at most.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import itertools
import time
from datetime import datetime, timedelta, timezone

import structlog
from sqlalchemy import and_, or_
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from temporalio.client import Client, WorkflowUpdateFailedError, WorkflowUpdateRPCTimeoutOrCancelledError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from api.errors import Conflict, Forbidden, NotFound, PreconditionFailed, Unavailable, Unprocessable
from reintegration.db import CaseRecord, TaskRecord
from reintegration.tokens import Claims
from workflows.journey import ErrorType
from workflows.model import CommandResult, Role

log = structlog.get_logger("api")

# How long a command may wait for the case's next stage workflow to start (a worker restart can
# hold a stage change for the sticky-queue timeout), and the pauses between looks.
ROUTING_DEADLINE = 45.0
ROUTING_PAUSES = (0.05, 0.1, 0.2, 0.5, 1.0)
UPDATE_TIMEOUT = timedelta(seconds=30)


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
    return task


async def send_command(
    client: Client, engine: Engine, case_id: str, update: str, command: object, *, update_id: str | None = None
) -> CommandResult:
    """Send a step or task command to the workflow that owns the case now, and wait for its effect."""
    deadline = time.monotonic() + ROUTING_DEADLINE
    for attempt in itertools.count():
        if attempt and time.monotonic() > deadline:
            break
        if attempt:
            await asyncio.sleep(ROUTING_PAUSES[min(attempt - 1, len(ROUTING_PAUSES) - 1)])
        with Session(engine) as session:
            case = session.get(CaseRecord, case_id)
        if case is None:
            raise NotFound("no such case")
        if case.status == "closed":
            raise Conflict("the case is closed", allowed_steps=[])
        handle = client.get_workflow_handle(case.active_workflow_id)
        try:
            return await handle.execute_update(
                update, command, id=update_id, result_type=CommandResult, rpc_timeout=UPDATE_TIMEOUT
            )
        except WorkflowUpdateFailedError as exc:
            cause = exc.cause
            if isinstance(cause, ApplicationError) and cause.type == ErrorType.STAGE_MOVED:
                continue
            raise _refusal(cause) from None
        except WorkflowUpdateRPCTimeoutOrCancelledError:
            raise Unavailable("the case's workflow did not answer in time; retry with the same Idempotency-Key")
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                # The stage's workflow has not started yet, or has just finished.
                continue
            log.warning("temporal unavailable", status=exc.status.name)
            raise Unavailable("Temporal is unavailable") from None
    raise Unavailable("the case is changing stage; retry in a moment", retry_after=2)


def _refusal(cause: BaseException | None) -> Exception:
    if not isinstance(cause, ApplicationError):
        return Unavailable("the case's workflow could not take the command")
    detail = str(cause.message)
    match cause.type:
        case ErrorType.STEP_NOT_ALLOWED:
            allowed = list(cause.details[0]) if cause.details else []
            return Conflict(detail, allowed_steps=allowed)
        case ErrorType.INVALID_COMMAND:
            return Unprocessable(detail)
        case ErrorType.TASK_NOT_FOUND:
            return NotFound(detail)
        case ErrorType.FORBIDDEN:
            return Forbidden(detail)
        case ErrorType.VERSION_MISMATCH:
            return PreconditionFailed(detail)
    return Conflict(detail, allowed_steps=[])


# --- Listing -----------------------------------------------------------------------------------


def encode_cursor(at: datetime, key: str) -> str:
    return base64.urlsafe_b64encode(f"{at.isoformat()}|{key}".encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        at, key = base64.urlsafe_b64decode(cursor.encode()).decode().split("|", 1)
        parsed = datetime.fromisoformat(at)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise Unprocessable("the cursor is not one this API gave") from None
    return parsed, key


def stalled_clause(now: datetime, inactivity_days: int):  # type: ignore[no-untyped-def]
    return and_(
        CaseRecord.status == "active",
        or_(CaseRecord.next_due_at < now, CaseRecord.updated_at < now - timedelta(days=inactivity_days)),
    )


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def aware(value: datetime) -> datetime:
    """SQLite gives back naive datetimes; everything stored is UTC."""
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
