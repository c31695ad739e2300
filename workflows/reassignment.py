"""Bulk reassignment: a supervisor moves some or all of one caseworker's cases to another, case by
case, resumable after any restart (each case done is an activity's completion in the history), its
progress visible (the ``progress`` query, and the ``reassignments`` row when it ends).

Each case gets the same command a single reassignment sends (``reassign_owner``), under an update
id made from the reassignment's and the case's, so a case retried after a crash is moved once. A
case the journey refuses (closed meanwhile, already the caseworker's) is left as it is, with why.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from workflows.model import ActivityName, BulkReassignment, ReassignmentProgress, ReassignOne

SKIPPED = "skipped:"


def reason_purpose(reassignment_id: str) -> str:
    """What a reassignment's reason, sealed with the system key in its row, is bound to."""
    return f"reassignment-reason:{reassignment_id}"


def reassignment_workflow_id(reassignment_id: str) -> str:
    """No case's: sealed with the system key."""
    return f"reassignment-{reassignment_id}"


@workflow.defn(name="BulkReassignment", sandboxed=False)
class BulkReassignmentWorkflow:
    @workflow.init
    def __init__(self, request: BulkReassignment) -> None:
        self._progress = request.progress or ReassignmentProgress(total=len(request.case_ids))

    @workflow.query(name="progress")
    def progress(self) -> ReassignmentProgress:
        return self._progress

    @workflow.run
    async def run(self, request: BulkReassignment) -> ReassignmentProgress:
        seen = set(self._progress.done) | set(self._progress.skipped)
        for case_id in request.case_ids:
            if case_id in seen:
                continue
            if workflow.info().is_continue_as_new_suggested():
                workflow.continue_as_new(request.model_copy(update={"progress": self._progress}))
            outcome: str = await workflow.execute_activity(
                ActivityName.REASSIGN_CASE,
                ReassignOne(
                    reassignment_id=request.reassignment_id,
                    case_id=case_id,
                    from_caseworker=request.from_caseworker,
                    to_caseworker=request.to_caseworker,
                    actor=request.actor,
                ),
                result_type=str,
                start_to_close_timeout=timedelta(minutes=2),
                retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=30)),
            )
            if outcome.startswith(SKIPPED):
                self._progress.skipped[case_id] = outcome.removeprefix(SKIPPED)
            else:
                self._progress.done.append(case_id)
        self._progress.finished = True
        await workflow.execute_activity(
            ActivityName.FINISH_REASSIGNMENT,
            args=[request.reassignment_id, self._progress],
            start_to_close_timeout=timedelta(minutes=1),
            retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=30)),
        )
        return self._progress
