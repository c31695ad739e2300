"""One path for every command: the caller, their scope, the Idempotency-Key, If-Match, the audit
trail, and the routing to the workflow that owns the case now.

A command route states only what is its own: who may send it (``commands_for``), its body, the
command it builds and the answer it gives. ``Pipeline.once`` runs it once per Idempotency-Key and
records it in the audit trail (a repeat gets the first answer and is recorded as a replay);
``Pipeline.send`` routes the command to the case's workflow and turns a refusal into its problem
response (``REFUSALS``, the one mapping). Database work is never done on the event loop: it goes
through ``Pipeline.db`` (a worker thread), and a command's checks before it is sent through
``Pipeline.checked`` (one thread for all of them and the session's release); read-only routes are
plain ``def`` handlers, which FastAPI runs in its thread pool, or, where they are read most (a case,
the case list, the task list, the stalled list, the summary), ``async`` handlers whose database work
is one ``read_in_thread``. That work and ``Pipeline``'s run in threads of their own, at most
``Settings.api_threads`` at once (``api.deps.database_threads``).

(No ``from __future__ import annotations`` here: ``commands_for`` builds its dependency in a
closure, and FastAPI reads the roles from its real annotations.)
"""

import asyncio
import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Annotated, Any, ParamSpec, TypeVar

import anyio
from fastapi import Depends, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.engine import Engine
from sqlmodel import Session
from temporalio.client import Client

from api import idempotency
from api.audit import Auditor, Entry, auditor_for, replayed_body
from api.deps import ClientDep, IdempotencyKey, SessionDep, database_threads, keyring_of, release_connection
from api.deps import require as require_role
from api.errors import ApiProblem, Conflict, Forbidden, NotFound, PreconditionFailed, Unavailable, Unprocessable
from api.idempotency import Answer
from api.journeys import actor_of, case_in_scope, task_in_scope
from api.languages import N_
from reintegration import commands
from reintegration.db import CaseRecord, TaskRecord
from reintegration.settings import Settings
from reintegration.tokens import Claims
from workflows.journey import ErrorType
from workflows.model import Actor, CommandResult, Role

P = ParamSpec("P")
T = TypeVar("T")
A = TypeVar("A", bound=BaseModel)

IfMatch = Annotated[str | None, Header(description="The case's ETag; 412 if the case moved on")]

# What the workflow's refusal of a command answers: the one mapping from a refusal to a problem.
REFUSALS: dict[str, Callable[[commands.CommandRefused], ApiProblem]] = {
    ErrorType.STEP_NOT_ALLOWED: lambda r: Conflict(r.message, allowed_steps=r.allowed_steps),
    ErrorType.INVALID_COMMAND: lambda r: Unprocessable(r.message),
    ErrorType.TASK_NOT_FOUND: lambda r: NotFound(r.message),
    ErrorType.FORBIDDEN: lambda r: Forbidden(r.message),
    ErrorType.VERSION_MISMATCH: lambda r: PreconditionFailed(r.message),
}


def refusal(refused: commands.CommandRefused) -> ApiProblem:
    """The problem response for a command the workflow refused (409 for a refusal of another kind)."""
    answer = REFUSALS.get(refused.type) if refused.type is not None else None
    return answer(refused) if answer else Conflict(refused.message, allowed_steps=[])


@dataclass
class Pipeline:
    """What a command needs from its request: the caller, the session, Temporal, and the key it came with."""

    user: Claims
    session: Session
    client: Client
    engine: Engine
    settings: Settings
    auditor: Auditor
    key: str | None
    # What the workflow answered the command sent (``send``): once it is set, the command took effect.
    applied: CommandResult | None = None
    # The audit rows of the answer ``once`` is making (``answer`` writes them in the thread that reads
    # it), and whether they were written or tried: never twice.
    _audit_answer: Callable[[BaseModel], None] | None = field(default=None, repr=False)
    _audited: bool = field(default=False, repr=False)

    @property
    def actor(self) -> Actor:
        return actor_of(self.user)

    async def db(self, work: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run database work in a worker thread, never on the event loop."""
        return await anyio.to_thread.run_sync(
            functools.partial(work, *args, **kwargs), limiter=database_threads(self.session)
        )

    async def checked(self, work: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """A command's checks before it is sent, in one worker thread that then gives the session's
        connection back (``release_connection``), so ``send`` needs no thread of its own for that.
        Each thread hop costs about as much CPU as a case's read (``make bench``): a step waited for
        a thread seven times, and waits twice (``tests/test_query_counts.py``).

        What ``work`` returns must be plain values: the session's objects expire as its transaction
        ends, and reading one on the event loop would load it there."""

        def run() -> T:
            answer = work(*args, **kwargs)
            release_connection(self.session)
            return answer

        return await anyio.to_thread.run_sync(run, limiter=database_threads(self.session))

    async def answer(self, work: Callable[P, A], /, *args: P.args, **kwargs: P.kwargs) -> A:
        """The command's answer, read back in a worker thread that records its audit rows (``once``'s
        ``audit``) right after, before the answer leaves: one thread hop where there were two."""
        record = self._audit_answer

        def run() -> A:
            answer = work(*args, **kwargs)
            if record is not None:
                self._audited = True  # tried: if it fails, ``once`` does not write them again
                record(answer)
            return answer

        return await anyio.to_thread.run_sync(run, limiter=database_threads(self.session))

    async def case(self, case_id: str) -> CaseRecord:
        """The case if the caller may act on it; 404 otherwise (no leak of existence)."""
        return await self.db(case_in_scope, self.session, case_id, self.user)

    async def task(self, task_id: str) -> TaskRecord:
        """The task if the caller may see it; 404 otherwise."""
        return await self.db(task_in_scope, self.session, task_id, self.user)

    async def send(
        self, case_id: str, update: str, command: commands.BoundCommand, *, route: commands.Route | None = None
    ) -> CommandResult:
        """Send the command to the workflow that owns the case now and wait for its effect.

        The command's update id comes from the caller and their Idempotency-Key, so a repeat that
        reaches the workflow is dropped there too. The session gives its connection back first:
        none is held while Temporal answers. ``route``, the case's as the checks just read it,
        spares a read of it (``commands.send_command``)."""
        if self.session.in_transaction():  # else ``checked`` gave the connection back already
            await self.db(release_connection, self.session)
        try:
            self.applied = await commands.send_command(
                self.client,
                self.engine,
                case_id,
                update,
                command,
                update_id=idempotency.update_id(self.user, self.key),
                route=route,
            )
            return self.applied
        except commands.NoSuchCase:
            raise NotFound(N_("no such case")) from None
        except commands.CaseClosed:
            raise Conflict(N_("the case is closed"), allowed_steps=[]) from None
        except commands.TemporalUnavailable as exc:
            raise Unavailable(exc.message, retry_after=exc.retry_after) from None
        except commands.CommandRefused as exc:
            raise refusal(exc) from None

    def took_effect(self) -> CommandResult | None:
        """The workflow's answer to the command this request sent, if it took effect."""
        return self.applied

    async def once(
        self,
        *,
        path: str,
        request: dict[str, Any],
        run: Callable[[str], Awaitable[Answer]],
        audit: Callable[[dict[str, Any]], list[Entry]],
        status_code: int = 200,
        headers: Callable[[dict[str, Any]], dict[str, str]] = lambda _: {},
        case_id: str | None = None,
        replay: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        unstored: frozenset[str] = frozenset(),
        audited_in_run: bool = False,
    ) -> Answer | JSONResponse:
        """Run the command once for its Idempotency-Key and record it in the audit trail.

        ``run`` gets the id to give what the command creates and returns the answer; ``audit``
        names the rows the answer's body makes (recorded before the answer is stored, so a stored
        answer always has its row). A repeat gets the first answer (``replay`` may read it again
        under today's rules), and its rows are recorded again, marked as a replay. ``path`` and
        ``request`` identify the request: the same key with another request is refused (422). With
        ``audited_in_run``, ``run`` writes its rows itself, in its change's own transaction
        (``Auditor.stage``); ``audit`` then names the rows of a replay only.
        """

        def record(answer: BaseModel) -> None:
            self.auditor.record_many([replace(e, status=status_code) for e in audit(answer.model_dump(mode="json"))])

        async def fresh(resource_id: str) -> Answer:
            self.applied, self._audited = None, False
            self._audit_answer = None if audited_in_run else record
            try:
                result = await run(resource_id)
            except BaseException:
                if not self._audited and (applied := self.took_effect()) is not None:  # its answer unread
                    entries = [replace(e, status=status_code) for e in audit({"task_id": applied.task_id})]
                    await asyncio.shield(self.db(self.auditor.record_many, entries))
                raise
            finally:
                self._audit_answer = None
            if not audited_in_run and not self._audited:  # ``run`` did not read its answer with ``answer``
                await self.db(record, result)
            return result

        result = await idempotency.once(
            self.engine,
            keyring_of(self.session),
            user=self.user,
            key=self.key,
            request_hash=idempotency.fingerprint("POST", path, request),
            status_code=status_code,
            run=fresh,
            headers=headers,
            case_id=case_id,
            session=self.session,
            ttl=self.settings.idempotency_ttl,
            replay=replay,
            unstored=unstored,
        )
        if isinstance(result, JSONResponse) and (replayed := replayed_body(result)) is not None:
            await self.db(self.auditor.replayed, result, *audit(replayed))
        return result


def commands_for(*roles: Role) -> Any:
    """The dependency that gives a command route its ``Pipeline``, for these roles only (403 for others).

    It reads the engine and the settings from the application's state and makes the auditor itself,
    rather than through a dependency each: FastAPI solves every dependency of every request anew.
    The role's check and the Temporal client stay dependencies of their own, so that a caller of
    another role gets 403, and any caller 503 while Temporal is not connected, before the
    Idempotency-Key header is checked (422)."""

    async def pipeline(
        request: Request,
        user: Annotated[Claims, require_role(*roles)],
        session: SessionDep,
        client: ClientDep,
        idempotency_key: IdempotencyKey = None,
    ) -> Pipeline:
        state = request.app.state
        return Pipeline(
            user=user,
            session=session,
            client=client,
            engine=state.engine,
            settings=state.settings,
            auditor=auditor_for(request, session, user),
            key=idempotency_key,
        )

    return Depends(pipeline)
