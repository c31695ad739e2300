"""The worker's composition root: settings, logging, database, Temporal client, activities, Worker."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from datetime import UTC, datetime, timedelta

import httpx
import structlog
from sqlalchemy.engine import Engine
from sqlmodel import Session
from temporalio.client import Client
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.worker import UnsandboxedWorkflowRunner, Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from activities.delivery import DeliveryActivities
from activities.mail import MailActivities
from activities.notifications import LogChannel, NotificationActivities, WebhookChannel
from activities.read_model import ReadModelActivities
from activities.reassignment import ReassignmentActivities
from reintegration import affinity, anchor, heap, inbox, metrics, tracing
from reintegration.crypto import Keyring
from reintegration.db import keyring_from_settings, make_engine
from reintegration.logs import configure_logging
from reintegration.migrate import upgrade_schema
from reintegration.settings import Settings, get_settings
from reintegration.temporal import connect
from reintegration.webhooks import delivery_client
from workflows.case import CaseWorkflow
from workflows.delivery import (
    DIGEST_WORKFLOW_ID,
    MailNotificationWorkflow,
    NotificationDigestWorkflow,
    SupervisorNotificationWorkflow,
    TaskDeliveryWorkflow,
    WebhookVerificationWorkflow,
)
from workflows.model import DigestRun
from workflows.reassignment import BulkReassignmentWorkflow
from workflows.stages import ALL_WORKFLOWS

log = structlog.get_logger("worker")


def build_worker(
    client: Client,
    settings: Settings,
    engine: Engine,
    http: httpx.AsyncClient,
    keyring: Keyring,
    operator_http: httpx.AsyncClient | None = None,
) -> Worker:
    """The worker with every workflow and activity; the caller owns (and closes) the HTTP clients:
    ``http`` for agencies' webhooks (``reintegration.webhooks.delivery_client``: the address guard),
    ``operator_http`` for the supervisors' webhook the operator configured (default: ``http``).

    The client must encrypt payloads with the same keyring (``reintegration.temporal.connect``).
    """
    read_model = ReadModelActivities(
        engine=engine,
        keyring=keyring,
        client=client,
        task_queue=settings.temporal_task_queue,
        delivery={
            "timeout_seconds": settings.delivery_timeout_seconds,
            "retry_initial_seconds": settings.delivery_retry_initial_seconds,
            "retry_max_seconds": settings.delivery_retry_max_seconds,
        },
        mail=settings.smtp_host is not None,
        mail_timeout_seconds=settings.smtp_timeout_seconds,
    )
    delivery = DeliveryActivities(
        engine=engine, keyring=keyring, http=http, client=client, partner_fields=settings.partner_fields
    )
    channel = (
        WebhookChannel(
            url=settings.supervision_webhook_url, secret=settings.supervision_webhook_secret, http=operator_http or http
        )
        if settings.supervision_webhook_url and settings.supervision_webhook_secret
        else LogChannel()
    )
    notifications = NotificationActivities(engine=engine, channel=channel)
    mail = MailActivities(engine=engine, settings=settings)
    reassignments = ReassignmentActivities(client=client, engine=engine, keyring=keyring)
    return Worker(
        client,
        task_queue=settings.temporal_task_queue,
        # Outside the sandbox unless the settings ask for it (``Settings.workflow_sandbox``): the
        # tests replay the histories inside it, which is where its determinism checks pay.
        workflow_runner=SandboxedWorkflowRunner() if settings.workflow_sandbox else UnsandboxedWorkflowRunner(),
        workflows=[
            CaseWorkflow,
            *ALL_WORKFLOWS,
            TaskDeliveryWorkflow,
            SupervisorNotificationWorkflow,
            WebhookVerificationWorkflow,
            MailNotificationWorkflow,
            NotificationDigestWorkflow,
            BulkReassignmentWorkflow,
        ],
        activities=[
            read_model.project_case,
            read_model.check_agencies,
            delivery.deliver,
            delivery.report_rejected,
            delivery.notify_previous_webhook,
            delivery.send_webhook_verification,
            notifications.notify,
            mail.send_mail,
            mail.send_digests,
            reassignments.reassign_case,
            reassignments.finish_reassignment,
        ],
    )


async def start_digests(client: Client, settings: Settings) -> None:
    """Start the daily digests' workflow unless it runs (one for the whole system, whichever worker
    starts it first); a worker with no mail server starts none."""
    if settings.smtp_host is None:
        return
    try:
        await client.start_workflow(
            NotificationDigestWorkflow.run,
            DigestRun(
                hour=settings.digest_hour,
                retry_max_seconds=settings.delivery_retry_max_seconds,
                smtp_timeout_seconds=settings.smtp_timeout_seconds,
            ),
            id=DIGEST_WORKFLOW_ID,
            task_queue=settings.temporal_task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        )
    except WorkflowAlreadyStartedError:
        pass


async def resume_mails(client: Client, engine: Engine, settings: Settings) -> int:
    """Start again the e-mails left pending (a crash between a notification's commit and its mail's
    start); one already running or sent is not started twice (its workflow id). How many."""
    if settings.smtp_host is None:
        return 0
    with Session(engine) as session:
        mails = inbox.pending_mails(session, datetime.now(UTC) - timedelta(minutes=1))
    await inbox.start_mails(client, settings, mails)
    return len(mails)


RESUME_EVERY_SECONDS = 300.0


async def keep_resuming_mails(client: Client, engine: Engine, settings: Settings) -> None:
    """Every few minutes, the e-mails left pending (a crash between a notification's commit and its
    mail's start, in the worker or the API); never stops the worker."""
    while True:
        await asyncio.sleep(RESUME_EVERY_SECONDS)
        try:
            resumed = await resume_mails(client, engine, settings)
        except Exception as exc:  # noqa: BLE001 - a sweep that fails is tried again at the next
            log.warning("pending e-mails not resumed", error=type(exc).__name__)
            continue
        if resumed:
            log.info("pending e-mails resumed", count=resumed)


async def main() -> None:
    os.umask(0o077)  # what the worker creates (a SQLite database, say) is its owner's only
    settings = get_settings()
    configure_logging()
    # On a CPU of its own, before any thread starts (the SDK runs workflow tasks in threads of its
    # own, the projections in asyncio's): ``reintegration.affinity``.
    try:
        affinity.pin_process(settings.cpu_affinity)
    except affinity.AffinityError as exc:
        print(f"worker: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    # Traces (REINTEGRATION_TRACING): the client's interceptor gives the worker its workflow and
    # activity spans, and the activities' own client calls their place in the same trace.
    tracer_provider = tracing.configure_tracing(settings, service_name=tracing.WORKER_SERVICE)
    engine = make_engine(settings)
    upgrade_schema(engine)
    keyring = keyring_from_settings(settings)
    tracing.instrument_engine(engine, tracer_provider)
    tracing.instrument_engine(keyring.engine, tracer_provider)
    # With REINTEGRATION_WORKER_METRICS_PORT, the SDK's runtime serves its metrics on a loopback
    # port of its own, which the worker's /metrics reads and serves with the project's.
    sdk_metrics = f"127.0.0.1:{metrics.free_port()}" if settings.worker_metrics_port is not None else None
    runtime = metrics.sdk_runtime(sdk_metrics) if sdk_metrics else None
    client = await connect(
        settings, keyring=keyring, runtime=runtime, interceptors=tracing.client_interceptors(tracer_provider)
    )
    http = delivery_client(settings)  # the address guard outside development
    # The supervisors' webhook is the operator's own setting, on whatever network it chose.
    operator_http = httpx.AsyncClient(follow_redirects=False, trust_env=False)
    tracing.instrument_http(http, tracer_provider)
    tracing.instrument_http(operator_http, tracer_provider)
    worker = build_worker(client, settings, engine, http, keyring, operator_http)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await start_digests(client, settings)
    metrics_server = (
        await metrics.start_worker_metrics(settings, engine, sdk_address=sdk_metrics)
        if settings.worker_metrics_port is not None
        else None
    )
    heap.settle()
    log.info("worker started", task_queue=settings.temporal_task_queue, namespace=settings.temporal_namespace)
    async with worker:
        # After polling starts: the resumed e-mails' workflows are this worker's to run.
        sweeper = asyncio.create_task(keep_resuming_mails(client, engine, settings))
        # The audit trail's head, noted outside the database (reintegration/anchor.py); 0: never.
        anchoring = (
            asyncio.create_task(
                anchor.keep_anchoring(
                    anchor.anchorer_from_settings(settings, engine, operator_http), settings.audit_anchor_seconds
                )
            )
            if settings.audit_anchor_seconds
            else None
        )
        try:
            await resume_mails(client, engine, settings)
        except Exception as exc:  # noqa: BLE001 - the sweeper tries again
            log.warning("pending e-mails not resumed", error=type(exc).__name__)
        await stop.wait()
        sweeper.cancel()
        if anchoring is not None:
            anchoring.cancel()
    if metrics_server is not None:
        await metrics_server.close()
    await http.aclose()
    await operator_http.aclose()
    log.info("worker stopped")


if __name__ == "__main__":
    asyncio.run(main())
