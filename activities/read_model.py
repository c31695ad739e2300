"""Writes the journey's projection into the read model: cases, tasks and the timeline.

Idempotent by construction: a row moves only to a higher (or equal) version, checked inside the
UPDATE itself so that a slow, abandoned attempt cannot write over a newer one, and a timeline event
is written once. A replayed or retried activity never duplicates a row or moves a case back.
"""

from __future__ import annotations

import asyncio

import structlog
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session
from temporalio import activity
from temporalio.client import Client
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError

from reintegration import agencies, inbox
from reintegration.crypto import Keyring
from reintegration.projection import write_projection
from workflows import ids
from workflows.model import ActivityName, AgencyNeeds, DeliveryRequest, Projection

log = structlog.get_logger("activities")

HEARTBEAT_EVERY_SECONDS = 1.0  # well within the projection's heartbeat timeout


class ReadModelActivities:
    """Projection of case workflows into the database, and the start of the deliveries it calls for.

    The engine, the Temporal client and the delivery settings are injected by ``worker.py``.
    """

    def __init__(
        self,
        *,
        engine: Engine,
        keyring: Keyring,
        client: Client | None = None,
        task_queue: str = "",
        delivery: dict[str, float] | None = None,
        mail: bool = False,
        mail_timeout_seconds: float = 20.0,
    ) -> None:
        self._engine, self._keyring, self._client, self._task_queue = engine, keyring, client, task_queue
        self._delivery = delivery or {}
        self._mail = mail  # a mail server is configured: people who chose e-mail are sent one
        self._mail_timeout = mail_timeout_seconds

    @activity.defn(name=ActivityName.CHECK_AGENCIES)
    async def check_agencies(self, request: AgencyNeeds) -> str:
        """Why the first of these agencies cannot take its task ("" if each can): the registry's word,
        asked by the workflow itself, so no command can give a task to an agency the API would refuse."""

        def check() -> str:
            with Session(self._engine) as session:
                for need in request.needs:
                    refused = agencies.refusal(
                        session, service=need.service.value, agency_id=need.agency_id, country=need.country
                    )
                    if refused:
                        return refused
            return ""

        return await asyncio.to_thread(check)

    @activity.defn(name=ActivityName.PROJECT_CASE)
    async def project_case(self, projection: Projection) -> None:
        """Write the case, its changed tasks and its new timeline events; start their deliveries.

        It heartbeats while the write runs (``PROJECTION_HEARTBEAT`` in ``workflows/journey.py``): if
        this worker dies, the write is retried elsewhere at once, not after the attempt's timeout.
        Only the case the calling workflow's id names is written (the sole writer of cases checks).
        """
        if ids.case_of_workflow(activity.info().workflow_id) != projection.state.case_id:
            raise ApplicationError(
                "a workflow may project only the case its id names", type="WrongCase", non_retryable=True
            )
        write = asyncio.ensure_future(
            asyncio.to_thread(write_projection, self._engine, projection, self._keyring, mail=self._mail)
        )
        # Cancelled (the worker stops, the workflow was terminated), the write still finishes in its
        # thread: its outcome is retrieved here, so a failure is never logged with the driver's text.
        write.add_done_callback(lambda done: done.cancelled() or done.exception())
        # Heartbeats only while the write lasts: most take milliseconds and send none.
        while not (await asyncio.wait({write}, timeout=HEARTBEAT_EVERY_SECONDS))[0]:
            activity.heartbeat()
        try:
            messages = write.result()
        except SQLAlchemyError as exc:
            # The driver's message can quote the row's values: log and raise the type only.
            log.warning("read model write failed", case_id=projection.state.case_id, error=type(exc).__name__)
            raise ApplicationError(f"read model write failed: {type(exc).__name__}") from None
        for message in messages:
            await self._start_delivery(message)

    async def _start_delivery(self, message: DeliveryRequest) -> None:
        """Start the message's delivery workflow; its id makes a second start a no-op."""
        if self._client is None:
            return
        request = message.model_copy(update=self._delivery)
        if request.event == inbox.MAIL_EVENT:
            request = request.model_copy(update={"timeout_seconds": self._mail_timeout})
        workflow, kind = {
            "supervision.notify": ("SupervisorNotification", "notify"),
            inbox.MAIL_EVENT: ("MailNotification", "mail"),
        }.get(request.event, ("TaskDelivery", "delivery"))
        try:
            await self._client.start_workflow(
                workflow,
                request,
                # Named after the case, so its payloads are encrypted with the case's key.
                id=ids.message_workflow_id(request.case_id, kind, request.delivery_id),
                task_queue=self._task_queue,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            )
        except WorkflowAlreadyStartedError:
            pass
