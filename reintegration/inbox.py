"""Notifications to people: who is told of what happened on a case, in the in-app inbox and by e-mail.

The case's projection (``reintegration/projection.py``) calls ``record`` in its own transaction with
the new timeline events: each event that concerns someone becomes one row per recipient in
``user_notifications`` (the inbox), its id derived from the event and the user, so a projection
written twice adds nothing. A recipient who wants e-mail at once gets a ``MailNotification``
workflow per row (started after the commit, id from the row's, so never twice); one who wants a
daily digest gets the row in the next digest; ``none`` keeps the inbox only.

What each event tells whom (never the actor of the event themself):

=========================  ==========================================================
event                      recipients
=========================  ==========================================================
task assigned/reassigned   the partner users of the agency it is now assigned to
task declined              the case's owning caseworker
task undeliverable         the case's owning caseworker
task completed             the case's owning caseworker
case reassigned            the new owning caseworker (``case.assigned``) and the
                           previous one (``case.reassigned``)
travel plan                the receiving caseworker in the country of origin (``case.incoming``)
case handed over           the receiving caseworker and the sending one
case transferred           the receiving office's new caseworker and the sending one
transfer requested         the caseworker named in it, else the receiving country's supervisors
transfer refused           the caseworker who asked for it
closure approved/rejected  the case's owning caseworker
case stalled / escalated   the supervisors of the case's country (region)
=========================  ==========================================================

A row holds facts only: the case's reference, the service, the stage, the agency, the turn. Never
the person's data, a note, a reason typed by someone, or an e-mail address.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import bindparam, insert, select
from sqlalchemy.engine import Connection
from sqlmodel import Session, col
from temporalio.client import Client
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError

from reintegration import directory
from reintegration.db import UserNotificationRecord
from reintegration.settings import Settings
from workflows import ids
from workflows.model import DeliveryRequest, JourneyState, Projection, TimelineEvent

log = structlog.get_logger("inbox")

MAIL_EVENT = "mail.notify"

# Every kind of notification, in the order the pages list them.
KINDS = (
    "task.assigned",
    "task.declined",
    "task.undeliverable",
    "task.completed",
    "case.assigned",
    "case.reassigned",
    "case.incoming",
    "case.handed-over",
    "case.transferred",
    "case.transfer-requested",
    "case.transfer-refused",
    "closure.approved",
    "closure.rejected",
    "supervision.stalled",
    "supervision.escalated",
)


@dataclass(frozen=True)
class Notice:
    kind: str
    users: list[Any]  # rows of directory._WHO


def notification_id(event_id: str, user_id: str) -> str:
    """One per event and user; no user id in it (ids travel into workflow ids and logs)."""
    return hashlib.sha256(f"{event_id}\x00{user_id}".encode()).hexdigest()[:40]


def _notices(conn: Connection, state: JourneyState, ev: TimelineEvent, previous_owner: str | None) -> list[Notice]:
    """Who this event concerns, and as what."""
    owner = [state.owner_caseworker] if state.owner_caseworker else []

    def people(*user_ids: str | None) -> list[Any]:
        found = directory.active_users(conn, [u for u in user_ids if u])
        return [found[u] for u in user_ids if u in found]

    match ev.kind, ev.name:
        case "task", "assigned" | "reassigned":
            return [Notice("task.assigned", directory.partners_of(conn, str(ev.facts.get("agency_id"))))]
        case "task", "declined":
            return [Notice("task.declined", people(*owner))]
        case "task", "delivery-failed":
            return [Notice("task.undeliverable", people(*owner))]
        case "task", "completed":
            return [Notice("task.completed", people(*owner))]
        case "case", "reassigned":
            return [
                Notice("case.assigned", people(ev.facts.get("to_caseworker"))),
                Notice("case.reassigned", people(ev.facts.get("from_caseworker"))),
            ]
        case "case", "transferred":
            return [Notice("case.transferred", people(*owner, ev.facts.get("from_caseworker")))]
        case "step", "travel-plan":
            return [Notice("case.incoming", people(state.receiving_caseworker))]
        case "case", "handed-over":
            sending = previous_owner if previous_owner != state.owner_caseworker else None
            told = people(*owner, sending)
            if not any(u.user_id == state.owner_caseworker for u in told):
                # The receiving caseworker left (deactivated since the travel plan): her supervisors
                # are told the case arrived with no one active to take it.
                told += directory.supervisors_of(conn, state.owner_country)
            return [Notice("case.handed-over", told)]
        case "step", "approve-closure":
            return [Notice("closure.approved", people(*owner))]
        case "step", "reject-closure":
            return [Notice("closure.rejected", people(*owner))]
        case "supervision", "stalled" | "escalated":
            return [Notice(f"supervision.{ev.name}", directory.supervisors_of(conn, state.owner_country))]
    return []


def _facts(state: JourneyState, ev: TimelineEvent) -> dict[str, Any]:
    """The event's facts a notification may carry: codes and dates, nothing anyone typed."""
    facts: dict[str, Any] = {"stage": state.stage.value, "country": state.owner_country}
    for key in ("service", "agency_id", "turn", "level", "due_at", "from_country", "to_country"):
        if ev.facts.get(key) is not None:
            facts[key] = ev.facts[key]
    if ev.kind == "supervision" and ev.facts.get("name"):
        facts["item"] = ev.facts["name"]  # the overdue step's or task's name
    return facts


def mail_request(nid: str, case_id: str) -> DeliveryRequest:
    """The start of one notification's e-mail: its id and its case's (the codec's key), nothing else."""
    return DeliveryRequest(delivery_id=nid, event=MAIL_EVENT, case_id=case_id, task_id="", agency_id="")


def _written(conn: Connection | Session, nid: str, user: Any, *, mail: bool, **values: Any) -> str:
    """The notification's row, written once: its e-mail's status (that of the row an earlier attempt
    wrote, if there is one: its mail's start may be what that attempt missed)."""
    status: str | None = conn.execute(_EMAIL_STATUS, {"nid": nid}).scalar()
    if status is None:
        wants = user.notify if user.email and mail else directory.Notify.none.value
        status = {"email": "pending", "digest": "digest"}.get(wants, "none")
        conn.execute(
            _INSERT_NOTIFICATION,
            {"notification_id": nid, "user_id": user.user_id, "email_status": status, "email_attempts": 0, **values},
        )
    return status


# Built once: the writer of the read model runs them for every person an event tells.
_EMAIL_STATUS = select(col(UserNotificationRecord.email_status)).where(
    col(UserNotificationRecord.notification_id) == bindparam("nid")
)
_INSERT_NOTIFICATION = insert(UserNotificationRecord)


def record(
    conn: Connection, projection: Projection, previous_owner: str | None, *, mail: bool = False
) -> list[DeliveryRequest]:
    """The inbox rows this projection's events make, each once; the e-mails to send at once (none
    without ``mail``: no mail server is configured, or this is a repair of the read model)."""
    state, mails = projection.state, list[str]()
    for ev in projection.events:
        for notice in _notices(conn, state, ev, previous_owner):
            seen: set[str] = set()
            for user in notice.users:
                if user.user_id == ev.actor_sub or user.user_id in seen:
                    continue
                seen.add(user.user_id)
                nid = notification_id(ev.event_id, user.user_id)
                status = _written(
                    conn,
                    nid,
                    user,
                    mail=mail,
                    event_id=ev.event_id,
                    case_id=state.case_id,
                    case_reference=state.reference,
                    kind=notice.kind,
                    task_id=ev.task_id,
                    facts=_facts(state, ev),
                    created_at=ev.at,
                )
                if status == "pending":
                    mails.append(nid)
    # An earlier attempt's rows still waiting for their e-mail (its start may be what that attempt
    # missed), whoever they were for: the recipients worked out now may differ (a hand-over's sending
    # caseworker is read from the row this projection has already moved on).
    if projection.events and mail:
        mails += conn.scalars(
            select(col(UserNotificationRecord.notification_id)).where(
                col(UserNotificationRecord.event_id).in_([ev.event_id for ev in projection.events]),
                col(UserNotificationRecord.email_status) == "pending",
            )
        ).all()
    return [mail_request(nid, state.case_id) for nid in sorted(set(mails))]


def notify(
    conn: Connection | Session,
    *,
    event_id: str,
    case_id: str,
    case_reference: str,
    kind: str,
    users: list[Any],
    facts: dict[str, Any],
    at: datetime,
    mail: bool,
) -> list[DeliveryRequest]:
    """Notifications the API writes itself (a transfer asked or refused: no journey event), in the
    caller's transaction, each once; the e-mails to start after it commits."""
    mails = []
    for user in users:
        nid = notification_id(event_id, user.user_id)
        values = {"event_id": event_id, "case_id": case_id, "case_reference": case_reference, "kind": kind}
        status = _written(conn, nid, user, mail=mail, task_id=None, facts=facts, created_at=at, **values)
        if status == "pending":
            mails.append(mail_request(nid, case_id))
    return mails


def pending_mails(conn: Connection | Session, older_than: datetime, limit: int = 10_000) -> list[DeliveryRequest]:
    """The e-mails waiting to be sent since before ``older_than``: those whose start a crash missed
    (the worker starts them again when it starts; a start of one already running is a no-op)."""
    rows = conn.execute(
        select(col(UserNotificationRecord.notification_id), col(UserNotificationRecord.case_id))
        .where(
            col(UserNotificationRecord.email_status) == "pending",
            col(UserNotificationRecord.created_at) < older_than,
        )
        .limit(limit)
    ).all()
    return [mail_request(nid, case_id) for nid, case_id in rows]


async def start_mails(client: Client, settings: Settings, mails: list[DeliveryRequest]) -> None:
    """Start each e-mail's ``MailNotification`` workflow (its id from the notification's: one already
    started is not started again); one Temporal does not take now is left pending, for the worker's
    sweep (``pending_mails``)."""
    for request in mails:
        request = request.model_copy(
            update={
                "timeout_seconds": settings.smtp_timeout_seconds,
                "retry_initial_seconds": settings.delivery_retry_initial_seconds,
                "retry_max_seconds": settings.delivery_retry_max_seconds,
            }
        )
        try:
            await client.start_workflow(
                "MailNotification",
                request,
                id=ids.message_workflow_id(request.case_id, "mail", request.delivery_id),
                task_queue=settings.temporal_task_queue,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            )
        except WorkflowAlreadyStartedError:
            pass
        except RPCError as exc:
            log.warning(
                "e-mail not started: the sweep resumes it", notification_id=request.delivery_id, error=exc.status.name
            )
