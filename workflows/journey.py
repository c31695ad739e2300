"""What every workflow of a case journey shares: the step and task updates and the projection.

The case workflow and each stage's child workflow own the journey's state while their stage is
current; the API sends commands to whichever workflow the read model names as active. A workflow
whose stage has passed refuses commands with ``StageMoved`` so the API can look again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TypeVar

from pydantic import ValidationError
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from workflows import ids, rules
    from workflows.model import (
        ActivityName,
        AgencyNeeds,
        CommandResult,
        JourneyState,
        ReassignOwner,
        Stage,
        StepCommand,
        TaskCommand,
        TimelineEvent,
    )

# Longer than the database's lock wait (SQLite busy_timeout 30 s), so an attempt that times out has
# given up on its transaction before a retry starts.
PROJECTION_TIMEOUT = timedelta(seconds=60)
# The projection heartbeats while it writes: an attempt whose worker died (SIGKILL, a lost machine)
# is retried after this, not after PROJECTION_TIMEOUT. Its transaction died with the process.
PROJECTION_HEARTBEAT = timedelta(seconds=5)
PROJECTION_RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=200), maximum_interval=timedelta(seconds=30))
# The registry's check of the agencies a command names: a local activity (a read of a few rows),
# given up before the API stops waiting for the update (30 s), so the caller is told to retry.
AGENCY_CHECK_TIMEOUT = timedelta(seconds=25)
AGENCY_CHECK_RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=100), maximum_interval=timedelta(seconds=2))
# Histories from before the workflow checked agencies itself replay without the check.
AGENCY_CHECK_PATCH = "workflow-checks-agencies"
# A flagged plan's revision is due from the visit that flagged it, not from the latest visit: a later
# visit no longer moves the deadline (and clears the stall) of a revision nobody made. The rules
# read the decision from the state (``JourneyState.revision_due_from_flagging_visit``).
REVISION_DEADLINE_PATCH = "revision-due-from-flagging-visit"
# One durable timer kept across commands while the next deadline does not come sooner (histories
# from before restarted the timer at every command: a cancelled and a started timer each time).
KEPT_TIMER_PATCH = "deadline-timer-kept-across-commands"


class ErrorType:
    """``ApplicationError.type`` values the API maps to HTTP statuses."""

    STEP_NOT_ALLOWED = "StepNotAllowed"
    INVALID_COMMAND = "InvalidCommand"
    TASK_NOT_FOUND = "TaskNotFound"
    FORBIDDEN = "Forbidden"
    VERSION_MISMATCH = "VersionMismatch"
    STAGE_MOVED = "StageMoved"
    ALREADY_APPLIED = "AlreadyApplied"  # details[0]: the command's first result
    WRONG_CASE = "WrongCase"  # a workflow whose id names another case than its input
    UNBOUND_COMMAND = "UnboundCommand"  # a command sent under another update id than its own, or stale


APPLIED_UPDATES_KEPT = 32  # update ids a case remembers (JourneyState.applied_updates)
# How much earlier than the newest command a case applied another may have been issued (API hosts'
# clocks differ a little, and a command's own routing gives up after 45 s). Measured between the
# commands' own stamps, never against the workflow's clock (which tests skip ahead).
COMMAND_FRESH_FOR = timedelta(minutes=10)


_ERROR_TYPES: dict[type[rules.JourneyRuleError], str] = {
    rules.StepNotAllowed: ErrorType.STEP_NOT_ALLOWED,
    rules.InvalidCommand: ErrorType.INVALID_COMMAND,
    rules.TaskNotFound: ErrorType.TASK_NOT_FOUND,
    rules.Forbidden: ErrorType.FORBIDDEN,
    rules.VersionMismatch: ErrorType.VERSION_MISMATCH,
}


def _refusal(exc: rules.JourneyRuleError) -> ApplicationError:
    allowed = [s.value for s in getattr(exc, "allowed_steps", [])]
    return ApplicationError(exc.detail, allowed, type=_ERROR_TYPES[type(exc)], non_retryable=True)


def _dry_id() -> str:
    return "dry-run"


_Checked = TypeVar("_Checked")  # what a rule's check returns (a parsed body, or nothing)


def state_copy(state: JourneyState) -> JourneyState:
    """A copy of the state that shares nothing with it (a command's dry run changes it): made again
    from its plain values by pydantic's own code, with less CPU than ``deepcopy``'s walk (a monitored
    case, in process, over several runs: 163–232 against 286–566 µs; ``make bench``: the worker's
    samples). A state its model would refuse (none should be) is copied by ``deepcopy`` as before."""
    try:  # strict: a value the model would coerce (an int where a float goes) is copied as it is
        return JourneyState.model_validate(state.model_dump(), strict=True)
    except ValidationError:
        return state.model_copy(deep=True)


def check_own_case(case_id: str) -> None:
    """Fail a workflow whose id names another case than its input: payloads are sealed with the key
    of the case the id names, so a workflow may act only for that case."""
    if ids.case_of_workflow(workflow.info().workflow_id) != case_id:
        raise ApplicationError(
            "the workflow's id does not name the case of its input", type=ErrorType.WRONG_CASE, non_retryable=True
        )


class JourneyWorkflowBase:
    """Step and task updates over a ``JourneyState``; subclasses say which stages they own."""

    OWNED_STAGES: tuple[Stage, ...] = ()

    state: JourneyState

    def __init__(self) -> None:
        self._lock = asyncio.Lock()

    def follow_patches(self) -> None:
        """Decide, as the run starts (its first workflow task, before any command), which patched
        rules the journey follows, and note it in the state, which carries it to the stages' children
        and across continue-as-new.

        ``workflow.patched`` gives one answer per run (the first, memoized): True in a new run and in
        the replay of a run that recorded the patch's marker, False in the replay of a run from
        before the patch. A run in flight when the patch deploys keeps the old rule to its end; its
        next run (a stage's child, or its continuation) decides again, and follows the new one.
        """
        if workflow.patched(REVISION_DEADLINE_PATCH):
            self.state.revision_due_from_flagging_visit = True

    # --- updates ---------------------------------------------------------------------------

    @workflow.update(name="step")
    async def step(self, cmd: StepCommand) -> CommandResult:
        """Record a caseworker's or supervisor's step."""
        async with self._lock:
            body = self._checked(lambda: rules.check_step(self.state, cmd))
            await self._check_agencies(body)
            self._issued(cmd)
            return await self._record(rules.apply_step(self.state, cmd, body, workflow.now(), self._new_id))

    @step.validator
    def validate_step(self, cmd: StepCommand) -> None:
        self._not_applied_before()
        self._bound(cmd)
        body = self._checked(lambda: rules.check_step(self.state, cmd))
        self._dry_run(lambda state: rules.apply_step(state, cmd, body, workflow.now(), _dry_id))

    @workflow.update(name="task")
    async def task(self, cmd: TaskCommand) -> CommandResult:
        """Assign a task or act on one."""
        async with self._lock:
            body = self._checked(lambda: rules.check_task(self.state, cmd, workflow.now()))
            await self._check_agencies(body, cmd.task_id)
            self._issued(cmd)
            events, task_id = rules.apply_task(self.state, cmd, body, workflow.now(), self._new_id)
            return await self._record(events, task_id=task_id)

    @task.validator
    def validate_task(self, cmd: TaskCommand) -> None:
        self._not_applied_before()
        self._bound(cmd)
        body = self._checked(lambda: rules.check_task(self.state, cmd, workflow.now()))
        self._dry_run(lambda state: rules.apply_task(state, cmd, body, workflow.now(), _dry_id)[0])

    @workflow.update(name="reassign_owner")
    async def reassign_owner(self, cmd: ReassignOwner) -> CommandResult:
        """A supervisor gives the case to another caseworker."""
        async with self._lock:
            self._checked(lambda: rules.check_reassign_owner(self.state, cmd))
            self._issued(cmd)
            return await self._record(rules.apply_reassign_owner(self.state, cmd, workflow.now(), self._new_id))

    @reassign_owner.validator
    def validate_reassign_owner(self, cmd: ReassignOwner) -> None:
        self._not_applied_before()
        self._bound(cmd)
        self._checked(lambda: rules.check_reassign_owner(self.state, cmd))

    @workflow.query(name="journey")
    def journey(self) -> JourneyState:
        """The journey's state as this workflow holds it (for reconciliation)."""
        return self.state

    # --- shared mechanics ----------------------------------------------------------------

    def _not_applied_before(self) -> None:
        """Refuse, before it reaches the history, a command the case already applied under this update
        id in another of its workflows or runs; the refusal carries the first result."""
        update = workflow.current_update_info()
        if update is not None and update.id in self.state.applied_updates:
            raise ApplicationError(
                "the command was applied already",
                self.state.applied_updates[update.id].model_dump(mode="json"),
                type=ErrorType.ALREADY_APPLIED,
                non_retryable=True,
            )

    def _bound(self, cmd: StepCommand | TaskCommand | ReassignOwner) -> None:
        """Refuse, before it reaches the history, a command not sent under its own update id, or issued
        long before the newest command the case applied: sealing proves who made a command, this that
        it is not a copy of an old one. (A validator runs only when an update arrives, never on
        replay: histories from before it replay as they were.)"""
        update = workflow.current_update_info()
        if update is None or cmd.update_id != update.id:
            raise ApplicationError(
                "the command was not sent under its own update id", type=ErrorType.UNBOUND_COMMAND, non_retryable=True
            )
        latest = self.state.latest_issued_at
        if cmd.issued_at is None or (latest is not None and cmd.issued_at < latest - COMMAND_FRESH_FOR):
            raise ApplicationError("the command is stale", type=ErrorType.UNBOUND_COMMAND, non_retryable=True)
        check_own_case(self.state.case_id)

    def _issued(self, cmd: StepCommand | TaskCommand | ReassignOwner) -> None:
        if cmd.issued_at is not None and (
            self.state.latest_issued_at is None or cmd.issued_at > self.state.latest_issued_at
        ):
            self.state.latest_issued_at = cmd.issued_at

    async def _record(self, events: list[TimelineEvent], *, task_id: str | None = None) -> CommandResult:
        """After a command changed the state: bring the stall up to date, remember the result, then
        project (see ``_applied``); the command's answer."""
        events = events + rules.evaluate_stall(self.state, workflow.now(), self._new_id)
        result = self._applied(CommandResult(version=self.state.version, stage=self.state.stage, task_id=task_id))
        await self.project(events)
        return result

    def _applied(self, result: CommandResult) -> CommandResult:
        """Remember the command's result by its update id (the last ``APPLIED_UPDATES_KEPT``), before
        it is projected: once the read model shows the change (a closed case, say), a retry asking
        this workflow for the answer must find it."""
        update = workflow.current_update_info()
        if update is not None:
            applied = self.state.applied_updates
            applied[update.id] = result
            while len(applied) > APPLIED_UPDATES_KEPT:
                del applied[next(iter(applied))]
        return result

    async def _check_agencies(self, body: object, task_id: str | None = None) -> None:
        """Have the registry confirm that each agency the command gives a task to offers the service in
        the country where it is needed (the API checked it too; the workflow trusts no sender)."""
        needs = rules.agency_needs(self.state, body, task_id)
        if not needs or not workflow.patched(AGENCY_CHECK_PATCH):
            return
        refused = await workflow.execute_local_activity(
            ActivityName.CHECK_AGENCIES,
            AgencyNeeds(needs=needs),
            result_type=str,
            schedule_to_close_timeout=AGENCY_CHECK_TIMEOUT,
            retry_policy=AGENCY_CHECK_RETRY,
        )
        if refused:
            raise _refusal(rules.InvalidCommand(refused))

    def _checked(self, check: Callable[[], _Checked]) -> _Checked:
        if self.state.stage not in self.OWNED_STAGES:
            raise ApplicationError(
                f"the case has moved on to the {self.state.stage.value} stage",
                type=ErrorType.STAGE_MOVED,
                non_retryable=True,
            )
        try:
            return check()
        except rules.JourneyRuleError as exc:
            raise _refusal(exc) from None

    def _dry_run(self, apply: Callable[[JourneyState], list[TimelineEvent]]) -> None:
        """Apply the command to a copy and project it: whatever would fail is refused before history."""
        try:
            copy = state_copy(self.state)
            rules.project(copy, apply(copy))
        except rules.JourneyRuleError as exc:
            raise _refusal(exc) from None
        except Exception:
            raise ApplicationError(
                "the command cannot be applied to this case", type=ErrorType.INVALID_COMMAND, non_retryable=True
            ) from None

    @staticmethod
    def _new_id() -> str:
        return str(workflow.uuid4())

    async def project(self, events: list[TimelineEvent]) -> None:
        check_own_case(self.state.case_id)  # whatever ran first (an update before the run), never another case
        await workflow.execute_activity(
            ActivityName.PROJECT_CASE,
            rules.project_changes(self.state, events),
            start_to_close_timeout=PROJECTION_TIMEOUT,
            heartbeat_timeout=PROJECTION_HEARTBEAT,
            retry_policy=PROJECTION_RETRY,
        )

    async def hold_stage(self) -> bool:
        """Keep the stage's deadlines while it is current; True if it should continue as new.

        One durable timer at a time, for the next moment the stall can change by the clock alone.
        Every change to the case recomputes that moment: a timer set for a later one is replaced; one
        set for a sooner moment is kept (most commands move the next deadline later: the case's
        inactivity is counted from its last activity) and, when it fires, finds nothing due and is set
        again for the moment then computed. Runs from before ``KEPT_TIMER_PATCH`` replaced the timer
        at every change (``_hold_stage_restarting``).
        """
        if not workflow.patched(KEPT_TIMER_PATCH):
            return await self._hold_stage_restarting()
        timer: asyncio.Task[None] | None = None
        timer_at: datetime | None = None
        try:
            while True:
                version = self.state.version
                deadline = rules.next_deadline(self.state, workflow.now())
                if timer is not None and (deadline is None or timer_at is None or deadline < timer_at):
                    timer.cancel()
                    timer = None
                if timer is None and deadline is not None:
                    timer, timer_at = self._timer(deadline), deadline

                def woken(version: int = version, timer: asyncio.Task[None] | None = timer) -> bool:
                    return (
                        self.state.stage not in self.OWNED_STAGES
                        or workflow.info().is_continue_as_new_suggested()
                        or self.state.version != version
                        or (timer is not None and timer.done())
                    )

                await workflow.wait_condition(woken)
                if timer is not None and timer.done():
                    timer = None
                    await self._stall_by_clock()
                    continue
                if self.state.stage not in self.OWNED_STAGES or workflow.info().is_continue_as_new_suggested():
                    break
        finally:
            if timer is not None:
                timer.cancel()
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self.state.stage in self.OWNED_STAGES

    @staticmethod
    def _timer(deadline: datetime) -> asyncio.Task[None]:
        """A durable timer until the deadline (a second at least), as a task the hold can cancel."""
        return asyncio.create_task(workflow.sleep(max(deadline - workflow.now(), timedelta(seconds=1))))

    async def _stall_by_clock(self, version: int | None = None) -> None:
        """The timer fired: project the stall if the clock changed it. Given the ``version`` the hold
        saw (as runs from before ``KEPT_TIMER_PATCH`` replay it), a command applied meanwhile, which
        projected itself, is projected again; without it (a kept timer that fired early while a
        command held the lock), nothing is."""
        async with self._lock:
            if self.state.stage in self.OWNED_STAGES:
                before = self.state.version if version is None else version
                events = rules.evaluate_stall(self.state, workflow.now(), self._new_id, by_clock=True)
                if events or self.state.version != before:
                    await self.project(events)

    async def _hold_stage_restarting(self) -> bool:
        """``hold_stage`` as runs from before ``KEPT_TIMER_PATCH`` replay it: a new timer at every change."""
        while True:
            version = self.state.version
            deadline = rules.next_deadline(self.state, workflow.now())
            timeout = max(deadline - workflow.now(), timedelta(seconds=1)) if deadline else None

            def stage_or_case_moved(version: int = version) -> bool:
                return (
                    self.state.stage not in self.OWNED_STAGES
                    or workflow.info().is_continue_as_new_suggested()
                    or self.state.version != version
                )

            try:
                await workflow.wait_condition(stage_or_case_moved, timeout=timeout)
            except TimeoutError:
                await self._stall_by_clock(version)
                continue
            if self.state.stage not in self.OWNED_STAGES or workflow.info().is_continue_as_new_suggested():
                break
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self.state.stage in self.OWNED_STAGES
