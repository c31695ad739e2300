"""Delivery of one message (a new task, or its cancellation) to a partner agency's webhook.

One small workflow per message, id ``case-<case id>-delivery-<delivery_id>``, so a message is delivered at most
once however often its start is asked for, and the case's journey never waits for an agency's
system: Temporal retries the delivery with backoff until the agency answers. When the agency
refuses the message for good (a 4xx other than 408/429), the task goes back to the caseworker.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from workflows.journey import check_own_case
    from workflows.model import (
        DELIVERY_REJECTED,
        ActivityName,
        DeliveryOutcome,
        DeliveryRequest,
        DigestRun,
        WebhookVerificationRequest,
    )


# Unsandboxed: one workflow starts per message, and this one only calls activities with its input;
# a sandbox per start would cost more than the delivery.
@workflow.defn(name="TaskDelivery", sandboxed=False)
class TaskDeliveryWorkflow:
    @workflow.run
    async def run(self, request: DeliveryRequest) -> DeliveryOutcome:
        check_own_case(request.case_id)
        try:
            # An activity called by name returns Any; ``result_type`` is what the payload decodes to.
            delivered: DeliveryOutcome = await workflow.execute_activity(
                ActivityName.DELIVER,
                request,
                result_type=DeliveryOutcome,
                start_to_close_timeout=timedelta(seconds=request.timeout_seconds * 3),
                retry_policy=RetryPolicy(
                    initial_interval=timedelta(seconds=request.retry_initial_seconds),
                    backoff_coefficient=2.0,
                    maximum_interval=timedelta(seconds=request.retry_max_seconds),
                    non_retryable_error_types=[DELIVERY_REJECTED],
                ),
            )
            return delivered
        except ActivityError as exc:
            cause = exc.cause
            if not (isinstance(cause, ApplicationError) and cause.type == DELIVERY_REJECTED):
                raise
            await workflow.execute_activity(
                ActivityName.REPORT_REJECTED,
                request.model_copy(update={"reason": cause.message}),
                start_to_close_timeout=timedelta(seconds=120),
                retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=60)),
            )
            return DeliveryOutcome(delivery_id=request.delivery_id, status="failed", detail=cause.message)


@workflow.defn(name="SupervisorNotification", sandboxed=False)
class SupervisorNotificationWorkflow:
    """One notification to the supervisors of a case's region, retried until sent."""

    @workflow.run
    async def run(self, request: DeliveryRequest) -> None:
        check_own_case(request.case_id)
        await workflow.execute_activity(
            ActivityName.NOTIFY_SUPERVISORS,
            request,
            start_to_close_timeout=timedelta(seconds=request.timeout_seconds * 3),
            retry_policy=RetryPolicy(
                initial_interval=timedelta(seconds=request.retry_initial_seconds),
                maximum_interval=timedelta(seconds=request.retry_max_seconds),
            ),
        )


@workflow.defn(name="WebhookVerification", sandboxed=False)
class WebhookVerificationWorkflow:
    """An agency's new webhook address: tell the confirmed address (if any) that it is being replaced,
    then send the signed challenge to the new one, retried until it answers or the request expires.
    The address is used once a partner of the agency gives the challenge back through the API."""

    @workflow.run
    async def run(self, request: WebhookVerificationRequest) -> str:
        try:
            await workflow.execute_activity(
                ActivityName.NOTIFY_PREVIOUS_WEBHOOK,
                request,
                start_to_close_timeout=timedelta(seconds=request.timeout_seconds * 3),
                retry_policy=RetryPolicy(
                    initial_interval=timedelta(seconds=request.retry_initial_seconds),
                    maximum_attempts=3,
                    non_retryable_error_types=[DELIVERY_REJECTED],
                ),
            )
        except ActivityError:
            pass  # the old address is gone or refuses: the change goes on, and the audit trail has it
        try:
            verified: str = await workflow.execute_activity(
                ActivityName.SEND_WEBHOOK_VERIFICATION,
                request,
                result_type=str,
                start_to_close_timeout=timedelta(seconds=request.timeout_seconds * 3),
                schedule_to_close_timeout=timedelta(seconds=request.expires_in_seconds),
                retry_policy=RetryPolicy(
                    initial_interval=timedelta(seconds=request.retry_initial_seconds),
                    backoff_coefficient=2.0,
                    # An address nobody answers at is tried for a day: no more often than twice a minute.
                    maximum_interval=timedelta(seconds=max(request.retry_max_seconds, 30.0)),
                    non_retryable_error_types=[DELIVERY_REJECTED],
                ),
            )
            return verified
        except ActivityError:
            return "failed"


@workflow.defn(name="MailNotification", sandboxed=False)
class MailNotificationWorkflow:
    """One notification's e-mail to one person, retried until the mail server takes it (or refuses it
    for good); id ``case-<case id>-mail-<notification id>``, so it is sent once however often asked."""

    @workflow.run
    async def run(self, request: DeliveryRequest) -> str:
        check_own_case(request.case_id)
        sent: str = await workflow.execute_activity(
            ActivityName.SEND_MAIL,
            request,
            result_type=str,
            # ``timeout_seconds`` is the mail server's per operation (connect, EHLO, STARTTLS, login,
            # MAIL, RCPT, DATA...): a send ends in its thread within ten of them. The attempt heartbeats
            # while it sends and while it records (retried until the database takes it): a worker that
            # dies is noticed by the heartbeat; a database down only makes the attempt longer.
            start_to_close_timeout=timedelta(hours=1),
            heartbeat_timeout=timedelta(seconds=max(10.0, request.timeout_seconds * 2)),
            retry_policy=RetryPolicy(
                initial_interval=timedelta(seconds=request.retry_initial_seconds),
                backoff_coefficient=2.0,
                maximum_interval=timedelta(seconds=request.retry_max_seconds),
            ),
        )
        return sent


DIGEST_WORKFLOW_ID = "notification-digest"


@workflow.defn(name="NotificationDigest", sandboxed=False)
class NotificationDigestWorkflow:
    """The daily digests: one workflow (``DIGEST_WORKFLOW_ID``, started by the worker), which sleeps
    until the next digest hour, sends each digest of the notifications made before it (retried until
    the mail server takes them), and continues as new for the next day."""

    @workflow.run
    async def run(self, run: DigestRun) -> None:
        now = workflow.now()
        at = now.replace(hour=run.hour, minute=0, second=0, microsecond=0)
        if at <= now:
            at += timedelta(days=1)
        await workflow.sleep(at - now)
        await workflow.execute_activity(
            ActivityName.SEND_DIGESTS,
            at.isoformat(),
            result_type=int,
            start_to_close_timeout=timedelta(hours=1),
            # A heartbeat before each digest; one digest's send takes at most ten server operations.
            heartbeat_timeout=timedelta(seconds=max(120.0, run.smtp_timeout_seconds * 10)),
            retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=run.retry_max_seconds)),
        )
        workflow.continue_as_new(run)
