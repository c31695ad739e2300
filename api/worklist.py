"""My work: what is waiting on the caller, most urgent first, each item saying why it is there.

- a caseworker: the steps due on her cases, and the tasks that came back to her (declined,
  undeliverable) or whose agency is late (overdue);
- a partner: the tasks of her agency to accept and to complete;
- a supervisor: the closures to approve and the stalled cases of her region.

Sorted overdue first (most overdue first), then by due time; items with no due time last. Read
from the read model's cases and tasks (``open_items`` is the workflow's own list of what is open,
whose turn and when due), so the worklist says what the case's page says.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from datetime import UTC, date, datetime, time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import Field
from sqlmodel import Session, col, select

from api.deps import CurrentUser, SessionDep, read_in_thread
from api.errors import Forbidden, Unprocessable, responses
from api.languages import N_
from api.pagination import Cursor, Limit
from reintegration.db import CaseRecord, TaskRecord, TransferRecord, UserNotificationRecord, aware
from reintegration.tokens import Claims
from workflows.model import Role, Strict

router = APIRouter(tags=["users"])

Why = Literal[
    "step-due",
    "task-declined",
    "task-undeliverable",
    "task-overdue",
    "task-to-accept",
    "task-to-complete",
    "closure-to-approve",
    "case-stalled",
    "transfer-to-accept",
    "plan-to-draft",
]
WHY = {
    "step-due": N_("a step of yours is due"),
    "task-declined": N_("the agency declined the task: give it to another"),
    "task-undeliverable": N_("the task could not be delivered to its agency: give it to another"),
    "task-overdue": N_("the agency is late with the task"),
    "task-to-accept": N_("accept or decline the task"),
    "task-to-complete": N_("complete the task"),
    "closure-to-approve": N_("a closure waits for approval"),
    "case-stalled": N_("the case is stalled"),
    "transfer-to-accept": N_("another office offers your office the case: accept or refuse it"),
    "plan-to-draft": N_("the person is to arrive: draft the reintegration plan"),
}
OPEN_TASK = ("assigned", "accepted")
MAX_CASES = 5000  # a worklist reads at most this many of the caller's cases (a caseload, a region's stalled)


class WorkItem(Strict):
    """One thing waiting on the caller."""

    why: Why
    name: str = Field(description="The step's name, or the task's service")
    case_reference: str
    case_id: str | None = Field(description="Absent for partners, who never see a case's id")
    task_id: str | None
    due_at: datetime | None
    overdue: bool
    link: str = Field(description="The workspace's page to act on it")


class Worklist(Strict):
    items: list[WorkItem]
    next_cursor: str | None
    overdue: int = Field(description="How many of all the items (every page) are overdue")
    total: int


def _end_of(day: Any) -> datetime:
    return datetime.combine(day, time.max, tzinfo=UTC)


def _case_link(case_id: str) -> str:
    return f"/workspace/cases/{case_id}"


def caseworker_items(cases: Sequence[CaseRecord], came_back: dict[str, str], now: datetime) -> list[WorkItem]:
    """Her cases' steps due and tasks back with her (``came_back``: task id to its status) or late."""
    items = []
    for case in cases:
        for item in case.open_items:
            due = datetime.fromisoformat(item["due_at"]) if item.get("due_at") else None
            overdue = due is not None and due < now
            why: str | None = None
            if item["turn"] == "caseworker" and item["kind"] == "step":
                why = "step-due"
            elif item["turn"] == "caseworker" and item["kind"] == "task":
                why = "task-undeliverable" if came_back.get(item["task_id"]) == "delivery_failed" else "task-declined"
            elif item["turn"] == "agency" and item["kind"] == "task" and overdue:
                why = "task-overdue"
            if why is None:
                continue
            items.append(
                WorkItem(
                    why=why,  # type: ignore[arg-type]  # one of Why, chosen above
                    name=item["name"],
                    case_reference=case.reference,
                    case_id=case.case_id,
                    task_id=item.get("task_id"),
                    due_at=due,
                    overdue=overdue,
                    link=_case_link(case.case_id),
                )
            )
    return items


def partner_items(tasks: Sequence[TaskRecord], now: datetime) -> list[WorkItem]:
    """Her agency's tasks to accept (by the earlier of the acceptance deadline and the due day) and to complete."""
    items = []
    for task in tasks:
        if task.status == "assigned":
            why, due = "task-to-accept", min(aware(task.accept_by), _end_of(task.due_on))
        else:
            why, due = "task-to-complete", _end_of(task.due_on)
        items.append(
            WorkItem(
                why=why,  # type: ignore[arg-type]
                name=task.service,
                case_reference=task.case_reference,
                case_id=None,
                task_id=task.task_id,
                due_at=due,
                overdue=due < now,
                link=f"/workspace/inbox/{task.task_id}",
            )
        )
    return items


def supervisor_items(closures: Sequence[CaseRecord], stalled: Sequence[CaseRecord], now: datetime) -> list[WorkItem]:
    """The region's closures to approve (due when the approval is), and its stalled cases (since the
    most overdue item was due)."""
    items = []
    for case in closures:
        for item in case.open_items:
            if item["turn"] != "supervisor":
                continue
            due = datetime.fromisoformat(item["due_at"]) if item.get("due_at") else None
            items.append(
                WorkItem(
                    why="closure-to-approve",
                    name=item["name"],
                    case_reference=case.reference,
                    case_id=case.case_id,
                    task_id=None,
                    due_at=due,
                    overdue=due is not None and due < now,
                    link=_case_link(case.case_id),
                )
            )
    for case in stalled:
        due = aware(case.most_overdue_at) if case.most_overdue_at else None
        items.append(
            WorkItem(
                why="case-stalled",
                name=str(case.stall_reasons[0]["name"]) if case.stall_reasons else case.stage,
                case_reference=case.reference,
                case_id=case.case_id,
                task_id=None,
                due_at=due,
                overdue=True,
                link=_case_link(case.case_id),
            )
        )
    return items


def transfer_items(transfers: Sequence[TransferRecord]) -> list[WorkItem]:
    """Transfers offered to the caller's office, waiting for its answer (no deadline of ours)."""
    return [
        WorkItem(
            why="transfer-to-accept",
            name=f"{t.from_country}>{t.to_country}",
            case_reference=t.case_reference,
            case_id=t.case_id,
            task_id=None,
            due_at=None,
            overdue=False,
            link=_case_link(t.case_id),
        )
        for t in transfers
    ]


def incoming_items(cases: Sequence[CaseRecord]) -> list[WorkItem]:
    """The cases on their way to the caller (the receiving caseworker their travel plan names):
    the plan to draft before the travel date."""
    items = []
    for case in cases:
        travel = (case.facts or {}).get("travel_date")
        due = _end_of(date.fromisoformat(travel)) if travel else None
        items.append(
            WorkItem(
                why="plan-to-draft",
                name="reintegration-plan",
                case_reference=case.reference,
                case_id=case.case_id,
                task_id=None,
                due_at=due,
                overdue=False,  # a draft is never late: the plan's own deadline runs from arrival
                link=_case_link(case.case_id),
            )
        )
    return items


def _offered(session: Session, user: Claims) -> list[TransferRecord]:
    """Pending transfers to the caller's countries (for a caseworker, those naming her or no one)."""
    query = select(TransferRecord).where(col(TransferRecord.status) == "pending")
    region = user.country_scope
    if region is not None:
        query = query.where(col(TransferRecord.to_country).in_(region))
    if user.role == Role.caseworker:
        query = query.where(
            (col(TransferRecord.to_caseworker) == user.sub) | col(TransferRecord.to_caseworker).is_(None)
        )
    return list(session.exec(query.limit(MAX_CASES)).all())


def _incoming(session: Session, user: Claims) -> list[CaseRecord]:
    """The cases whose travel plan names the caller as the receiving caseworker, not yet arrived
    (found through her ``case.incoming`` notifications: the directory's record of it)."""
    named = session.exec(
        select(UserNotificationRecord.case_id).where(
            col(UserNotificationRecord.user_id) == user.sub, col(UserNotificationRecord.kind) == "case.incoming"
        )
    ).all()
    if not named:
        return []
    cases = session.exec(
        select(CaseRecord).where(
            col(CaseRecord.case_id).in_(sorted(set(named))),
            col(CaseRecord.stage) == "return",
            col(CaseRecord.status) != "closed",
        )
    ).all()
    return [
        c
        for c in cases
        if (c.facts or {}).get("receiving_caseworker") == user.sub and not (c.facts or {}).get("arrived_on")
    ]


def ordered(items: list[WorkItem]) -> list[WorkItem]:
    """Overdue first, then by due time (the most overdue, the soonest due first); no due time last."""
    return sorted(items, key=_position)


def _position(item: WorkItem) -> str:
    """An item's place in the order, as text that sorts as the items do; unique (a case's two steps
    due at the same time differ by name), so a page boundary between them skips neither."""
    due = (item.due_at or datetime.max.replace(tzinfo=UTC)).isoformat(timespec="microseconds")
    return f"{int(not item.overdue)}|{due}|{item.why}|{item.case_reference}|{item.name}|{item.task_id or ''}"


def paged(items: list[WorkItem], limit: int, cursor: str | None) -> tuple[list[WorkItem], str | None]:
    """The items after the cursor's, in order (the list is computed afresh: a cursor is a position
    in its order, not an offset, so an item done meanwhile shifts nothing)."""
    if cursor:
        try:
            after = base64.urlsafe_b64decode(cursor.encode()).decode()
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise Unprocessable(N_("the cursor is not one this API gave")) from None
        if after.count("|") < 5:
            raise Unprocessable(N_("the cursor is not one this API gave"))
        items = [i for i in items if _position(i) > after]
    chosen = items[:limit]
    following = (
        base64.urlsafe_b64encode(_position(chosen[-1]).encode()).decode() if len(items) > limit and chosen else None
    )
    return chosen, following


def worklist_of(session: Session, user: Claims, now: datetime) -> list[WorkItem]:
    """Everything waiting on the caller, in order."""
    if user.role == Role.partner:
        tasks = session.exec(
            select(TaskRecord)
            .where(col(TaskRecord.agency_id) == str(user.agency), col(TaskRecord.status).in_(OPEN_TASK))
            .limit(MAX_CASES)
        ).all()
        return ordered(partner_items(tasks, now))
    if user.role == Role.caseworker:
        cases = session.exec(
            select(CaseRecord)
            .where(col(CaseRecord.owner_caseworker) == user.sub, col(CaseRecord.status) != "closed")
            .limit(MAX_CASES)
        ).all()
        back = [i["task_id"] for c in cases for i in c.open_items if i["turn"] == "caseworker" and i.get("task_id")]
        came_back = dict(
            session.exec(
                select(col(TaskRecord.task_id), col(TaskRecord.status)).where(col(TaskRecord.task_id).in_(back))
            ).all()
            if back
            else []
        )
        return ordered(
            caseworker_items(cases, came_back, now)
            + transfer_items(_offered(session, user))
            + incoming_items(_incoming(session, user))
        )
    if user.role == Role.supervisor:
        region = user.country_scope
        if region == []:
            return []

        def in_region(query: Any) -> Any:
            return query if region is None else query.where(col(CaseRecord.owner_country).in_(region))

        closures = session.exec(
            in_region(
                select(CaseRecord).where(
                    col(CaseRecord.awaiting_approval).is_(True), col(CaseRecord.status) != "closed"
                )
            ).limit(MAX_CASES)
        ).all()
        stalled = session.exec(
            in_region(select(CaseRecord).where(col(CaseRecord.stalled).is_(True), col(CaseRecord.status) != "closed"))
            .order_by(col(CaseRecord.most_overdue_at))
            .limit(MAX_CASES)
        ).all()
        return ordered(supervisor_items(closures, stalled, now) + transfer_items(_offered(session, user)))
    raise Forbidden(N_("a {role} has no worklist"), params={"role": user.role.value})


@router.get(
    "/v1/me/worklist",
    response_model=Worklist,
    summary="What is waiting on me, overdue first",
    description=(
        "A caseworker: her steps due and the tasks that came back to her (declined, undeliverable, overdue). "
        "A partner: her agency's tasks to accept and to complete. A supervisor: the closures to approve and "
        "the stalled cases of her region. Each item says why it is there (`why`)."
    ),
    responses=responses(401, 403, 422, 503),
)
async def my_worklist(
    user: CurrentUser,
    session: SessionDep,
    why: Annotated[list[Why] | None, Query(description="Only items there for these reasons")] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Worklist:
    now = datetime.now(UTC)

    def build() -> Worklist:
        items = worklist_of(session, user, now)
        if why:
            items = [i for i in items if i.why in why]
        chosen, following = paged(items, limit, cursor)
        return Worklist(
            items=chosen, next_cursor=following, overdue=sum(1 for i in items if i.overdue), total=len(items)
        )

    return await read_in_thread(session, build)
