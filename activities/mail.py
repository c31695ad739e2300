"""E-mails to people: one notification at once (``MailNotification``), and the daily digests
(``NotificationDigest``), sent through the SMTP server of the settings (``reintegration/mail.py``).

Each sends only what is still to send (a row's ``email_status``), and records it sent right after the
server took it: a retry, a repeated start or a replayed workflow sends nothing twice. The only
window left is a crash between the message's last bytes written to the server (which it still
takes from the socket after the sender is gone) and that record; the message's ``Message-ID`` is
then the same, so a mail client shows one. An address the server refuses for good (5xx) is
recorded ``failed``, not retried for ever; anything else (server down, busy, a 4xx) is retried by
the workflow until it goes, so none is lost.
"""

from __future__ import annotations

import asyncio
import hashlib
import smtplib
from collections import defaultdict
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import Any, TypeVar

import structlog
from sqlalchemy import select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, col
from temporalio import activity
from temporalio.exceptions import ApplicationError

from reintegration import mail
from reintegration.db import UserNotificationRecord, UserRecord
from reintegration.metrics import EMAIL_RETRIES, EMAILS_FAILED, EMAILS_SENT
from reintegration.settings import Settings
from workflows.model import ActivityName, DeliveryRequest

log = structlog.get_logger("mail")
T = TypeVar("T")

MAX_DIGEST_ATTEMPTS = 5  # days a digest the mail server will not take is tried again
HEARTBEAT_EVERY_SECONDS = 1.0
RECORD_RETRY_SECONDS = 1.0


async def heartbeating(work: Awaitable[T]) -> T:
    """Await the work (a send in its thread), heartbeating meanwhile: a worker that dies is noticed
    by its heartbeat's timeout, not by the attempt's."""
    task = asyncio.ensure_future(work)
    while not (await asyncio.wait({task}, timeout=HEARTBEAT_EVERY_SECONDS))[0]:
        activity.heartbeat()
    return task.result()


def _item(settings: Settings, row: UserNotificationRecord, role: str) -> mail.Item:
    return mail.Item(
        kind=row.kind,
        case_reference=row.case_reference,
        link=mail.link(settings, role, row.case_id, row.task_id),
        facts=dict(row.facts),
    )


class MailActivities:
    def __init__(self, *, engine: Engine, settings: Settings) -> None:
        self._engine, self._settings = engine, settings

    @activity.defn(name=ActivityName.SEND_MAIL)
    async def send_mail(self, request: DeliveryRequest) -> str:
        """Send one notification's e-mail unless it went already; what became of it."""
        found = await asyncio.to_thread(self._to_send, request.delivery_id)
        if isinstance(found, str):
            return found
        message = found
        attempt = activity.info().attempt
        recorded: list[bool] = []

        def taken() -> None:  # in the sending thread, the moment the server said 250
            try:
                self._mark([request.delivery_id], "sent", attempt)
                recorded.append(True)
            except SQLAlchemyError:
                pass  # recorded below, retried until the database takes it

        try:
            await heartbeating(asyncio.to_thread(mail.send, self._settings, message, taken))
        except mail.MailRefused as refused:
            log.warning("e-mail refused", notification_id=request.delivery_id, error=str(refused))
            await self._recorded(self._mark, [request.delivery_id], "failed", attempt)
            EMAILS_FAILED.labels("notification").inc()
            return "failed"
        except (OSError, smtplib.SMTPException) as exc:
            await asyncio.to_thread(self._attempted, request.delivery_id, attempt)
            EMAIL_RETRIES.labels("notification").inc()
            raise ApplicationError(f"the mail server did not take the e-mail: {type(exc).__name__}") from None
        # Sent: from here on, failing would send it again. Recorded the moment the server took it; if
        # the database was down then, the record is retried (heartbeating) until it takes it.
        if not recorded:
            await self._recorded(self._mark, [request.delivery_id], "sent", attempt)
        EMAILS_SENT.labels("notification").inc()
        return "sent"

    async def _recorded(self, record: Any, *args: Any) -> None:
        """Write what became of an e-mail the mail server answered, until the database takes it."""
        while True:
            try:
                await asyncio.to_thread(record, *args)
                return
            except SQLAlchemyError as exc:
                log.warning("e-mail outcome not recorded yet", error=type(exc).__name__)
                activity.heartbeat()
                await asyncio.sleep(RECORD_RETRY_SECONDS)

    def _to_send(self, notification_id: str) -> Any:
        """The e-mail to send, or why there is none ("sent", "none"...)."""
        with Session(self._engine) as session:
            row = session.get(UserNotificationRecord, notification_id)
            if row is None:
                return "none"
            if row.email_status != "pending":
                return row.email_status
            user = session.get(UserRecord, row.user_id)
            if self._settings.smtp_host is None or user is None or not user.active or not user.email:
                session.execute(
                    update(UserNotificationRecord)
                    .where(col(UserNotificationRecord.notification_id) == notification_id)
                    .values(email_status="none")
                )
                session.commit()
                return "none"
            return mail.compose_one(
                self._settings,
                to=user.email,
                language=user.language,
                message_id=notification_id,
                item=_item(self._settings, row, user.role),
            )

    def _attempted(self, notification_id: str, attempt: int) -> None:
        with Session(self._engine) as session:
            session.execute(
                update(UserNotificationRecord)
                .where(col(UserNotificationRecord.notification_id) == notification_id)
                .values(email_attempts=attempt)
            )
            session.commit()

    def _mark(self, notification_ids: list[str], status: str, attempt: int, digest_id: str | None = None) -> None:
        with Session(self._engine) as session:
            session.execute(
                update(UserNotificationRecord)
                .where(col(UserNotificationRecord.notification_id).in_(notification_ids))
                .values(
                    email_status=status,
                    emailed_at=datetime.now(UTC) if status == "sent" else None,
                    email_attempts=attempt,
                    digest_id=digest_id,
                )
            )
            session.commit()

    @activity.defn(name=ActivityName.SEND_DIGESTS)
    async def send_digests(self, cutoff: str) -> int:
        """Each user's digest of the notifications made before ``cutoff`` (an ISO time); how many
        e-mails went. A digest is claimed (its rows given its id) before it is sent, so a retry
        sends the same digest, never a second one with the same rows."""
        if self._settings.smtp_host is None:
            return 0
        at = datetime.fromisoformat(cutoff)
        digests = await asyncio.to_thread(self._claim_digests, at)
        sent = 0
        for digest_id, (message, ids, attempts) in digests.items():
            activity.heartbeat(digest_id)
            recorded: list[bool] = []

            def taken(
                ids: list[str] = ids, digest_id: str = digest_id, n: int = attempts + 1, recorded: list[bool] = recorded
            ) -> None:
                try:  # the moment the server said 250, in the sending thread (as ``send_mail``)
                    self._mark(ids, "sent", n, digest_id)
                    recorded.append(True)
                except SQLAlchemyError:
                    pass

            try:
                await heartbeating(asyncio.to_thread(mail.send, self._settings, message, taken))
            except mail.MailRefused as refused:
                log.warning("digest refused", digest_id=digest_id, error=str(refused))
                await self._recorded(self._mark, ids, "failed", attempts + 1, digest_id)
                EMAILS_FAILED.labels("digest").inc()
                continue
            except (OSError, smtplib.SMTPException) as exc:
                # One reader's trouble (a full mailbox, say) never holds back the others' digests:
                # hers waits for the next day's, until it has failed MAX_DIGEST_ATTEMPTS times.
                status = "failed" if attempts + 1 >= MAX_DIGEST_ATTEMPTS else "digest"
                log.warning("digest not taken", digest_id=digest_id, error=type(exc).__name__, status=status)
                await self._recorded(self._mark, ids, status, attempts + 1, digest_id)
                (EMAILS_FAILED if status == "failed" else EMAIL_RETRIES).labels("digest").inc()
                continue
            if not recorded:
                await self._recorded(self._mark, ids, "sent", attempts + 1, digest_id)
            EMAILS_SENT.labels("digest").inc()
            sent += 1
        return sent

    def _claim_digests(self, cutoff: datetime) -> dict[str, tuple[Any, list[str], int]]:
        """The digests to send: the rows waiting for one before ``cutoff``, by user, each group given
        its digest's id (a group claimed by an earlier attempt keeps its id and its rows)."""
        with Session(self._engine) as session:
            rows = session.scalars(
                select(UserNotificationRecord)
                .where(
                    col(UserNotificationRecord.email_status) == "digest",
                    col(UserNotificationRecord.created_at) < cutoff,
                )
                .order_by(col(UserNotificationRecord.created_at), col(UserNotificationRecord.notification_id))
            ).all()
            by_user: dict[str, list[UserNotificationRecord]] = defaultdict(list)
            for row in rows:
                by_user[row.user_id].append(row)
            digests: dict[str, tuple[Any, list[str], int]] = {}
            for user_id, items in by_user.items():
                user = session.get(UserRecord, user_id)
                ids = [r.notification_id for r in items]
                claimed = {r.digest_id for r in items if r.digest_id}
                digest_id = (
                    min(claimed)
                    if claimed
                    else hashlib.sha256(f"{user_id}\x00{cutoff.isoformat()}".encode()).hexdigest()[:40]
                )
                if user is None or not user.active or not user.email:
                    session.execute(
                        update(UserNotificationRecord)
                        .where(col(UserNotificationRecord.notification_id).in_(ids))
                        .values(email_status="none")
                    )
                    continue
                session.execute(
                    update(UserNotificationRecord)
                    .where(col(UserNotificationRecord.notification_id).in_(ids))
                    .values(digest_id=digest_id)
                )
                message = mail.compose_digest(
                    self._settings,
                    to=user.email,
                    language=user.language,
                    message_id=digest_id,
                    items=[_item(self._settings, r, user.role) for r in items],
                )
                digests[digest_id] = (message, ids, max(r.email_attempts for r in items))
            session.commit()
            return digests
