"""Notifications to the supervisors of a case's region when the case stalls, and again at twice
the deadline; each sent once from the ``notifications`` outbox, through a pluggable channel.

The channel is a webhook now (signed like task deliveries, ``Idempotency-Key`` = the notification
id, so a repeat after a crash between sending and recording is dropped by the receiver), or the
log when no webhook is configured; e-mail can be another ``NotificationChannel`` later.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from typing import Any, Protocol

import httpx
import structlog
from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col
from temporalio import activity
from temporalio.exceptions import ApplicationError

from reintegration.db import NotificationRecord
from reintegration.webhooks import sign
from workflows.model import ActivityName, DeliveryRequest

log = structlog.get_logger("notifications")


class NotificationChannel(Protocol):
    async def send(self, notification_id: str, payload: dict[str, Any]) -> None:
        """Deliver one notification; raise to have it retried."""


class WebhookChannel:
    def __init__(self, *, url: str, secret: str, http: httpx.AsyncClient, timeout: float = 10.0) -> None:
        self._url, self._secret, self._http, self._timeout = url, secret, http, timeout

    async def send(self, notification_id: str, payload: dict[str, Any]) -> None:
        body = json.dumps({"notification_id": notification_id, **payload}, sort_keys=True).encode()
        timestamp = str(int(time.time()))
        try:
            response = await self._http.post(
                self._url,
                content=body,
                timeout=self._timeout,
                headers={
                    "Content-Type": "application/json",
                    "Idempotency-Key": notification_id,
                    "X-Reintegration-Event": "supervision." + str(payload.get("kind")),
                    "X-Reintegration-Timestamp": timestamp,
                    "X-Reintegration-Signature": sign(self._secret, timestamp, body),
                },
            )
        except httpx.HTTPError as exc:
            raise ApplicationError(f"the supervisors' channel did not answer: {type(exc).__name__}") from None
        if response.status_code >= 300:
            raise ApplicationError(f"the supervisors' channel answered HTTP {response.status_code}")


class LogChannel:
    """Without a webhook, notifications go to the log (ids and facts only, never personal data)."""

    async def send(self, notification_id: str, payload: dict[str, Any]) -> None:
        log.warning(
            "case stalled",
            notification_id=notification_id,
            case_reference=payload.get("case_reference"),
            kind=payload.get("kind"),
            item=payload.get("item"),
            turn=payload.get("turn"),
            country=payload.get("country"),
        )


class NotificationActivities:
    def __init__(self, *, engine: Engine, channel: NotificationChannel) -> None:
        self._engine, self._channel = engine, channel

    @activity.defn(name=ActivityName.NOTIFY_SUPERVISORS)
    async def notify(self, request: DeliveryRequest) -> None:
        """Send one outbox notification unless it was sent already."""
        payload = await asyncio.to_thread(self._unsent, request.delivery_id)
        if payload is None:
            return
        await self._channel.send(request.delivery_id, payload)
        await asyncio.to_thread(self._sent, request.delivery_id, activity.info().attempt)

    def _unsent(self, notification_id: str) -> dict[str, Any] | None:
        """The notification's payload, unless it was sent already."""
        with Session(self._engine) as session:
            record = session.get(NotificationRecord, notification_id)
            if record is None or record.status == "sent":
                return None
            return dict(record.payload)

    def _sent(self, notification_id: str, attempt: int) -> None:
        with Session(self._engine) as session:
            session.execute(
                update(NotificationRecord)
                .where(col(NotificationRecord.notification_id) == notification_id)
                .values(status="sent", sent_at=datetime.now(UTC), attempts=attempt)
            )
            session.commit()
