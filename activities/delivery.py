"""Sends tasks and cancellations to partner agencies' webhooks, signed, and reports refusals.

Each request is JSON signed with HMAC-SHA256 over ``<timestamp>.<body>`` with the agency's shared
secret (headers ``X-Reintegration-Timestamp`` and ``X-Reintegration-Signature: sha256=<hex>``)
and carries ``Idempotency-Key: <delivery_id>`` (the task id for a task's first delivery) so the
agency can drop repeats. Timeouts, connection errors, 5xx, 408 and 429 raise and are retried by
Temporal; any other 4xx is final (``DeliveryRejected``).

A task that carries the person's fields (the person consented to sharing) is a disclosure of
personal data to the agency: each attempt that sends them appends a ``task.deliver-person`` row to
the audit trail first (no row, no send). A retried attempt appends again, with its attempt number:
each one puts the data on the wire, and one the agency timed out on may still have reached it.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import structlog
from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col
from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from reintegration import audit, commands
from reintegration.agencies import webhook_challenge_purpose, webhook_secret_purpose
from reintegration.crypto import Keyring
from reintegration.db import AgencyRecord, DeliveryRecord, TaskRecord
from reintegration.metrics import DELIVERIES_DELIVERED, DELIVERIES_FAILED, DELIVERY_RETRIES
from reintegration.partner_view import partner_task
from reintegration.projection import assignment_delivery_id
from reintegration.webhooks import UnsafeAddress, host_of, sign
from workflows.model import (
    DELIVERY_REJECTED,
    ActivityName,
    Actor,
    DeliveryOutcome,
    DeliveryRequest,
    Role,
    TaskAction,
    TaskCommand,
    WebhookVerificationRequest,
)

log = structlog.get_logger("delivery")

RETRYABLE_4XX = frozenset({408, 425, 429})
SYSTEM = Actor(sub="system:delivery", role=Role.system)


class _Recipient:
    """The audit trail's actor for a delivery: the system, sending to this agency."""

    def __init__(self, agency_id: str) -> None:
        self.sub, self.role, self.agency = SYSTEM.sub, SYSTEM.role, agency_id


__all__ = ["DELIVERY_REJECTED", "DeliveryActivities", "sign"]


class DeliveryActivities:
    """Webhook delivery; the HTTP client, database and Temporal client are injected by ``worker.py``."""

    def __init__(
        self,
        *,
        engine: Engine,
        keyring: Keyring,
        http: httpx.AsyncClient,
        client: Client,
        partner_fields: dict[str, list[str]],
    ) -> None:
        self._engine, self._keyring, self._http, self._client = engine, keyring, http, client
        self._fields = partner_fields

    @activity.defn(name=ActivityName.DELIVER)
    async def deliver(self, request: DeliveryRequest) -> DeliveryOutcome:
        """Send one message to the agency's webhook; raise to be retried."""
        prepared = await asyncio.to_thread(self._prepare, request)
        if prepared is None:
            await self._mark(request.delivery_id, "skipped")
            return DeliveryOutcome(delivery_id=request.delivery_id, status="skipped")
        url, secret, body, case_id, person_fields = prepared
        attempt = activity.info().attempt
        if person_fields:  # audited before the person's fields leave; if it cannot be written, retried
            await asyncio.to_thread(  # off the event loop: the append may wait for the trail's write lock
                audit.record,
                self._engine,
                keyring=self._keyring,
                actor=_Recipient(request.agency_id),
                action="task.deliver-person",
                request_id=request.delivery_id,
                case_id=case_id,
                task_id=request.task_id,
                detail={"delivery_id": request.delivery_id, "fields": person_fields, "attempt": attempt},
            )
        try:
            response = await self._post(
                url, secret, body, key=request.delivery_id, event=request.event, timeout=request.timeout_seconds
            )
        except UnsafeAddress as exc:
            await self._mark(request.delivery_id, "pending", attempts=attempt, error="unsafe address")
            log.warning("delivery refused: unsafe webhook address", delivery_id=request.delivery_id)
            raise ApplicationError(str(exc), type=DELIVERY_REJECTED, non_retryable=True) from None
        except httpx.HTTPError as exc:
            await self._mark(request.delivery_id, "pending", attempts=attempt, error=type(exc).__name__)
            DELIVERY_RETRIES.labels(request.agency_id).inc()
            log.info(
                "delivery not answered", delivery_id=request.delivery_id, attempt=attempt, error=type(exc).__name__
            )
            raise ApplicationError(f"agency did not answer: {type(exc).__name__}") from None
        status = response.status_code
        if 200 <= status < 300:
            await self._mark(request.delivery_id, "delivered", attempts=attempt, delivered=True)
            DELIVERIES_DELIVERED.labels(request.agency_id).inc()
            log.info("delivered", delivery_id=request.delivery_id, task_id=request.task_id, attempt=attempt)
            return DeliveryOutcome(delivery_id=request.delivery_id, status="delivered")
        await self._mark(request.delivery_id, "pending", attempts=attempt, error=f"HTTP {status}")
        if 400 <= status < 500 and status not in RETRYABLE_4XX:
            raise ApplicationError(
                f"the agency refused the task (HTTP {status})", type=DELIVERY_REJECTED, non_retryable=True
            )
        DELIVERY_RETRIES.labels(request.agency_id).inc()
        log.info("delivery refused for now", delivery_id=request.delivery_id, attempt=attempt, status=status)
        raise ApplicationError(f"the agency answered HTTP {status}")

    async def _post(
        self, url: str, secret: str, body: bytes, *, key: str, event: str, timeout: float
    ) -> httpx.Response:
        """One signed POST to an agency's address (through the address guard where it applies)."""
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": key,
            "X-Reintegration-Event": event,
            "X-Reintegration-Timestamp": timestamp,
            "X-Reintegration-Signature": sign(secret, timestamp, body),
        }
        return await self._http.post(url, content=body, headers=headers, timeout=timeout)

    async def _webhook_message(
        self, url: str, secret: str, message: dict[str, Any], *, key: str, timeout: float
    ) -> str:
        """Send a message about the webhook itself; "delivered", or raise (retried, or final on a 4xx)."""
        body = json.dumps(
            {**message, "delivery_id": key, "sent_at": datetime.now(UTC).isoformat()},
            separators=(",", ":"),
            sort_keys=True,
        ).encode()
        try:
            response = await self._post(url, secret, body, key=key, event=message["event"], timeout=timeout)
        except UnsafeAddress as exc:
            raise ApplicationError(str(exc), type=DELIVERY_REJECTED, non_retryable=True) from None
        except httpx.HTTPError as exc:
            raise ApplicationError(f"the address did not answer: {type(exc).__name__}") from None
        if 200 <= response.status_code < 300:
            return "delivered"
        if 400 <= response.status_code < 500 and response.status_code not in RETRYABLE_4XX:
            raise ApplicationError(
                f"the address refused it (HTTP {response.status_code})", type=DELIVERY_REJECTED, non_retryable=True
            )
        raise ApplicationError(f"the address answered HTTP {response.status_code}")

    @activity.defn(name=ActivityName.NOTIFY_PREVIOUS_WEBHOOK)
    async def notify_previous_webhook(self, request: WebhookVerificationRequest) -> str:
        """Tell the agency's confirmed address, signed with its secret, that another is being set:
        if an intruder redirects the agency's tasks, the agency hears of it where it listens."""
        found = await asyncio.to_thread(self._previous_webhook, request)
        if found is None:
            return "skipped"
        url, secret, new_host = found
        message = {"event": "webhook.changing", "agency_id": request.agency_id, "new_host": new_host}
        outcome = await self._webhook_message(
            url, secret, message, key=f"{request.verification_id}.notice", timeout=request.timeout_seconds
        )
        log.info("previous webhook told of the change", agency_id=request.agency_id)
        return outcome

    @activity.defn(name=ActivityName.SEND_WEBHOOK_VERIFICATION)
    async def send_webhook_verification(self, request: WebhookVerificationRequest) -> str:
        """The signed challenge to the new address; skipped once confirmed, replaced or removed."""
        found = await asyncio.to_thread(self._pending_webhook, request)
        if found is None:
            return "skipped"
        url, secret, challenge = found
        message = {
            "event": "webhook.verification",
            "agency_id": request.agency_id,
            "challenge": challenge,
            "confirm": f"POST /v1/agencies/{request.agency_id}/webhook/confirm",
        }
        outcome = await self._webhook_message(
            url, secret, message, key=request.verification_id, timeout=request.timeout_seconds
        )
        log.info("webhook verification sent", agency_id=request.agency_id)
        return outcome

    @activity.defn(name=ActivityName.REPORT_REJECTED)
    async def report_rejected(self, request: DeliveryRequest) -> None:
        """Put a task its agency refused back in the caseworker's hands."""
        await self._mark(request.delivery_id, "failed", error=request.reason[:200])
        if request.event != "task.assigned":
            DELIVERIES_FAILED.labels(request.agency_id).inc()
            return  # a refused cancellation changes nothing on the case
        command = TaskCommand(
            action=TaskAction.delivery_failed,
            task_id=request.task_id,
            actor=SYSTEM,
            body={
                "agency_id": request.agency_id,
                "assignment": request.assignment,
                "delivery_id": request.delivery_id,
                "reason": request.reason[:200],
            },
        )
        try:
            await commands.send_command(
                self._client,
                self._engine,
                request.case_id,
                "task",
                command,
                update_id=f"delivery-failed:{request.delivery_id}",
            )
        except (commands.CommandRefused, commands.CaseClosed, commands.NoSuchCase) as exc:
            # The task moved on meanwhile (reassigned, cancelled, case closed): nothing to put back.
            log.info("delivery failure not applied", delivery_id=request.delivery_id, reason=type(exc).__name__)
        DELIVERIES_FAILED.labels(request.agency_id).inc()  # once the activity is done: not again by its retries

    def _changing(self, session: Session, request: WebhookVerificationRequest) -> AgencyRecord | None:
        """The agency whose webhook change this request is about, while that change is still on."""
        agency = session.get(AgencyRecord, request.agency_id)
        if agency is None or agency.webhook_verification_id != request.verification_id:
            return None
        return agency

    def _previous_webhook(self, request: WebhookVerificationRequest) -> tuple[str, str, str] | None:
        """The confirmed address, its secret and the new address's host; None once the change is over."""
        with Session(self._engine) as session:
            agency = self._changing(session, request)
            if agency is None or not agency.webhook_url or not agency.webhook_secret or not agency.pending_webhook_url:
                return None
            secret = self._keyring.open_system(agency.webhook_secret, purpose=webhook_secret_purpose(agency.agency_id))
            return agency.webhook_url, secret, host_of(agency.pending_webhook_url)

    def _pending_webhook(self, request: WebhookVerificationRequest) -> tuple[str, str, str] | None:
        """The address waiting for confirmation, its secret and challenge; None once confirmed, replaced or removed."""
        with Session(self._engine) as session:
            agency = self._changing(session, request)
            if (
                agency is None
                or not agency.pending_webhook_url
                or not agency.pending_webhook_secret
                or not agency.webhook_challenge
            ):
                return None
            purpose = webhook_secret_purpose(agency.agency_id)
            secret = self._keyring.open_system(agency.pending_webhook_secret, purpose=purpose)
            challenge = self._keyring.open_system(
                agency.webhook_challenge, purpose=webhook_challenge_purpose(agency.agency_id)
            )
            return agency.pending_webhook_url, secret, challenge

    def _prepare(self, request: DeliveryRequest) -> tuple[str, str, bytes, str, list[str]] | None:
        """The address, secret and body to send, the case, and the names of the person's fields the body
        carries (with a value); or None when there is nothing (left) to send."""
        with Session(self._engine) as session:
            agency = session.get(AgencyRecord, request.agency_id)
            task = session.get(TaskRecord, request.task_id)
            if (
                agency is None
                or not agency.active
                or not agency.webhook_url
                or not agency.webhook_secret
                or task is None
            ):
                return None  # a deactivated agency is sent nothing more
            message: dict[str, Any] = {
                "event": request.event,
                "delivery_id": request.delivery_id,
                "sent_at": datetime.now(UTC).isoformat(),
            }
            person_fields: list[str] = []
            current = len(task.previous_agencies) + 1
            if request.event == "task.assigned":
                if (task.agency_id, current) != (request.agency_id, request.assignment) or task.status != "assigned":
                    return None  # reassigned, cancelled or already acted on: this message is stale
                message["task"] = partner_task(session, self._keyring, task, self._fields).model_dump(mode="json")
                person = message["task"].get("person") or {}
                person_fields = sorted(name for name, value in person.items() if value is not None)
            else:
                # A cancellation follows its assignment: wait while that is still on its way, and tell
                # nothing to an agency that never got the task.
                assigned = session.get(DeliveryRecord, assignment_delivery_id(task.task_id, request.assignment))
                if assigned is None or assigned.status in ("skipped", "failed"):
                    return None
                if assigned.status == "pending":
                    raise ApplicationError("the task's assignment is still being delivered")
                message["task"] = {
                    "task_id": task.task_id,
                    "case_reference": task.case_reference,
                    "service": task.service,
                    "status": "cancelled",
                }
            body = json.dumps(message, separators=(",", ":"), sort_keys=True).encode()
            secret = self._keyring.open_system(agency.webhook_secret, purpose=webhook_secret_purpose(agency.agency_id))
            return agency.webhook_url, secret, body, task.case_id, person_fields

    async def _mark(
        self,
        delivery_id: str,
        status: str,
        *,
        attempts: int | None = None,
        error: str | None = None,
        delivered: bool = False,
    ) -> None:
        """Record the delivery's progress in its outbox row (off the event loop)."""
        await asyncio.to_thread(
            self._write_mark, delivery_id, status, attempts=attempts, error=error, delivered=delivered
        )

    def _write_mark(
        self,
        delivery_id: str,
        status: str,
        *,
        attempts: int | None = None,
        error: str | None = None,
        delivered: bool = False,
    ) -> None:
        values: dict[str, Any] = {"status": status, "last_error": error}
        if attempts is not None:
            values["attempts"] = attempts
        if delivered:
            values["delivered_at"] = datetime.now(UTC)
        row = update(DeliveryRecord).where(col(DeliveryRecord.delivery_id) == delivery_id)
        if status != "delivered":
            # Delivered is final: an attempt retried after its completion was lost (a worker or the
            # server gone at that moment) finds the task acted on, or fails, but the agency has it.
            row = row.where(col(DeliveryRecord.status) != "delivered")
        with Session(self._engine) as session:
            session.execute(row.values(**values))
            session.commit()
