"""Stalled cases: each overdue open item and inactivity past its limit, the next moment the clock
alone can change that, and bringing a case's stall up to date (notifying supervisors once, again at
twice the deadline)."""

from __future__ import annotations

from datetime import datetime, timedelta

from workflows.model import CaseStatus, JourneyState, StallReason, TimelineEvent
from workflows.rules.base import NewId
from workflows.rules.events import event
from workflows.rules.registry import open_items


def stall_reasons(state: JourneyState, now: datetime) -> list[StallReason]:
    """Each overdue open item, and inactivity past its limit; empty when the case is not stalled."""
    if state.status == CaseStatus.closed:
        return []
    reasons = [
        StallReason(
            key=item.key,
            kind=item.kind,
            name=item.name,
            task_id=item.task_id,
            agency_id=item.agency_id,
            turn=item.turn,
            due_at=item.due_at,
            escalate_at=item.escalate_at or item.due_at,
        )
        for item in open_items(state)
        if item.due_at is not None and item.due_at <= now
    ]
    quiet_until = _inactivity_due(state)
    if quiet_until <= now:
        limit = timedelta(days=state.config.inactivity_days)
        reasons.append(
            StallReason(
                key="inactivity",
                kind="inactivity",
                name="no activity",
                turn="caseworker",
                due_at=quiet_until,
                escalate_at=quiet_until + limit,
            )
        )
    return sorted(reasons, key=lambda r: r.due_at)


def _inactivity_due(state: JourneyState) -> datetime:
    return (state.last_activity_at or state.opened_at) + timedelta(days=state.config.inactivity_days)


def next_deadline(state: JourneyState, now: datetime) -> datetime | None:
    """When the stall can next change by the clock alone: a due time or an escalation to come."""
    if state.status == CaseStatus.closed:
        return None
    moments = [i.due_at for i in open_items(state) if i.due_at is not None]
    moments += [r.escalate_at for r in state.stall]
    moments.append(_inactivity_due(state))
    future = [m for m in moments if m > now]
    return min(future) if future else None


def evaluate_stall(state: JourneyState, now: datetime, new_id: NewId, *, by_clock: bool = False) -> list[TimelineEvent]:
    """Bring the stall up to date: new reasons notify the supervisors once, again at twice the
    deadline; the stall clears by itself when nothing is overdue. Returns the events it makes.

    After a command the change rides on the command's version; found by the clock alone
    (``by_clock``), it is a new version of the case."""
    reasons = stall_reasons(state, now)
    due_notices = [
        (reason, level, f"{reason.key}@{reason.due_at.isoformat()}:{level}")
        for reason in reasons
        for level, at in ((1, reason.due_at), (2, reason.escalate_at))
        if at <= now and (level == 1 or reason.escalate_at > reason.due_at)
    ]
    notices = [n for n in due_notices if n[2] not in state.notified]
    cleared = bool(state.stall) and not reasons
    if reasons == state.stall and not notices:
        return []
    if by_clock:  # first, so that the events below carry the new version
        state.version += 1
    state.stall = reasons
    state.stalled_since = (state.stalled_since or now) if reasons else None
    events: list[TimelineEvent] = []
    for reason, level, mark in notices:
        state.notified.append(mark)
        events.append(
            event(
                state,
                now,
                new_id,
                "supervision",
                "stalled" if level == 1 else "escalated",
                None,
                task_id=reason.task_id,
                facts={
                    "item": reason.key,
                    "name": reason.name,
                    "turn": reason.turn,
                    "level": level,
                    "due_at": reason.due_at.isoformat(),
                    "notification": f"{state.case_id}:{mark}",
                },
            )
        )
    if cleared:
        events.append(event(state, now, new_id, "supervision", "stall-cleared", None))
    return events
