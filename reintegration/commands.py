"""Sending a command to the workflow that owns a case now; used by the API and by activities.

A command goes to the workflow the read model names as active for the case. When a stage has just
ended, that workflow may have finished, or refuse with ``StageMoved``: the command is sent again to
the workflow that now owns the case, until ``ROUTING_DEADLINE``.

A command sent again under its update id after its answer was lost (a retry with the same
``Idempotency-Key``) gets its first answer, even when it moved the case on: the next stage's
workflow knows the ids its case applied (``AlreadyApplied``), and a closed case's last workflow
still has the answer of the command that closed it.

Errors (each the API maps to one status):
    CommandError
      NoSuchCase        the case is not in the read model
      CaseClosed        the case is closed; nothing changes any more
      CommandRefused    the workflow refused: ``type`` is an ``ErrorType``, ``allowed_steps`` may help
      TemporalUnavailable   Temporal did not answer, or the stage change did not settle in time
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import structlog
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select
from temporalio.client import (
    Client,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from reintegration.crypto import KeyUnavailable, Unreadable
from reintegration.db import CaseRecord
from workflows import ids
from workflows.journey import ErrorType
from workflows.model import (
    CommandResult,
    JourneyState,
    ReassignOwner,
    StepCommand,
    TaskCommand,
)
from workflows.rules.errors import N_

BoundCommand = StepCommand | TaskCommand | ReassignOwner

log = structlog.get_logger("commands")

# How long a command may wait for the case's next stage workflow to start (a worker restart can
# hold a stage change for the sticky-queue timeout), and the pauses between looks.
ROUTING_DEADLINE = 45.0
ROUTING_PAUSES = (0.05, 0.1, 0.2, 0.5, 1.0)
UPDATE_TIMEOUT = timedelta(seconds=30)


class Route(NamedTuple):
    """Where a command for a case goes: the case's status and the workflow the read model names as
    active for it (``read_route``). A caller that has just read the case passes it to
    ``send_command``, which then reads nothing before its first attempt."""

    status: str
    workflow_id: str

    @classmethod
    def of(cls, case: CaseRecord) -> Route:
        return cls(case.status, case.active_workflow_id)


def read_route(session: Session, case_id: str) -> Route | None:
    """The case's route, its two columns only; None if there is no such case."""
    row = session.exec(
        select(CaseRecord.status, CaseRecord.active_workflow_id).where(col(CaseRecord.case_id) == case_id)
    ).first()
    return Route(*row) if row is not None else None


class CommandError(Exception):
    """A command that did not take effect."""


class NoSuchCase(CommandError):
    pass


class CaseClosed(CommandError):
    pass


class CommandRefused(CommandError):
    def __init__(self, message: str, *, type: str | None, allowed_steps: list[str] | None = None) -> None:
        super().__init__(message)
        self.message, self.type, self.allowed_steps = message, type, allowed_steps or []


class TemporalUnavailable(CommandError):
    def __init__(self, message: str, *, retry_after: int = 5) -> None:
        super().__init__(message)
        self.message, self.retry_after = message, retry_after


async def send_command(
    client: Client,
    engine: Engine,
    case_id: str,
    update: str,
    command: BoundCommand,
    *,
    update_id: str | None = None,
    route: Route | None = None,
) -> CommandResult:
    """Send a step or task command to the workflow that owns the case now, and wait for its effect.

    The command is bound to its update id and stamped with the time it was issued: the workflow
    refuses a copy of it under another update id, or one issued long ago. ``route``, the case's as
    the caller has just read it, spares the first attempt its read (each attempt after it reads the
    route again: the stage may have moved since)."""
    update_id = update_id or f"once:{uuid.uuid4()}"
    command = command.model_copy(update={"update_id": update_id, "issued_at": datetime.now(UTC)})
    deadline = time.monotonic() + ROUTING_DEADLINE
    for attempt in itertools.count():
        if attempt and time.monotonic() > deadline:
            break
        if attempt:
            await asyncio.sleep(ROUTING_PAUSES[min(attempt - 1, len(ROUTING_PAUSES) - 1)])
        if attempt or route is None:
            route = await asyncio.to_thread(_read_route, engine, case_id)
        if route is None:
            raise NoSuchCase("no such case")
        if route.status == "closed":
            # The retry of the command that closed the case, its answer lost: that answer again.
            first = await _first_outcome(client, case_id, update_id) if update_id else None
            if first is None:
                raise CaseClosed("the case is closed")
            return first
        handle = client.get_workflow_handle(route.workflow_id)
        try:
            result: CommandResult = await handle.execute_update(
                update, command, id=update_id, result_type=CommandResult, rpc_timeout=UPDATE_TIMEOUT
            )
            return result
        except WorkflowUpdateFailedError as exc:
            cause = exc.cause
            if isinstance(cause, ApplicationError) and cause.type == ErrorType.STAGE_MOVED:
                continue
            if isinstance(cause, ApplicationError) and cause.type == ErrorType.ALREADY_APPLIED:
                return CommandResult.model_validate(cause.details[0])  # a retry: the first answer
            if not isinstance(cause, ApplicationError):
                raise TemporalUnavailable(N_("the case's workflow could not take the command")) from None
            allowed = list(cause.details[0]) if cause.details else []
            raise CommandRefused(str(cause.message), type=cause.type, allowed_steps=allowed) from None
        except WorkflowUpdateRPCTimeoutOrCancelledError:
            raise TemporalUnavailable(
                N_("the case's workflow did not answer in time; retry with the same Idempotency-Key")
            ) from None
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                continue  # the stage's workflow has not started yet, or has just finished
            log.warning("temporal unavailable", status=exc.status.name)
            raise TemporalUnavailable(N_("Temporal is unavailable")) from None
    raise TemporalUnavailable(N_("the case is changing stage; retry in a moment"), retry_after=2)


def _read_route(engine: Engine, case_id: str) -> Route | None:
    with Session(engine) as session:
        return read_route(session, case_id)


async def _first_outcome(client: Client, case_id: str, update_id: str) -> CommandResult | None:
    """The first result of the update with this id if the closed case applied it (the command that
    closed it, retried): the case workflow's last state remembers it, or, while the last stage's
    workflow is still handing its state back, that workflow's. None if the case never applied it."""
    workflow_id = ids.workflow_id(case_id)
    while True:
        try:
            state: JourneyState = await client.get_workflow_handle(workflow_id).query(
                "journey", result_type=JourneyState, rpc_timeout=UPDATE_TIMEOUT
            )
        except WorkflowQueryFailedError:
            return None
        except (ApplicationError, KeyUnavailable, Unreadable):
            return None  # the case's key was destroyed (its personal data erased): nothing to read back
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return None
            raise TemporalUnavailable(N_("Temporal is unavailable")) from None
        if update_id in state.applied_updates:
            return state.applied_updates[update_id]
        child = ids.stage_workflow_id(state)
        if workflow_id != ids.workflow_id(case_id) or child == workflow_id:
            return None
        workflow_id = child
