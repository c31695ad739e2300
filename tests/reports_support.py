"""For the indicators' tests (tests/test_reports.py, tests/test_reports_api.py,
tests/test_workspace_reports.py): read-model rows written straight into a database (a case with its
case facts, a partner task completed, a stage stay, an agency; no personal data, only what the
reports read), and the server's answers while a slow request runs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlmodel import Session

from reintegration.db import AgencyRecord, CaseFactsRecord, CaseRecord, StageVisitRecord, TaskRecord


def at(day: str, hour: int = 12, minute: int = 0) -> datetime:
    """A moment of a day (ISO), UTC."""
    return datetime.fromisoformat(day).replace(hour=hour, minute=minute, tzinfo=UTC)


def add_case(
    session: Session,
    case_id: str,
    *,
    country: str = "ES",
    identified_in: str | None = None,
    origin: str = "RO",
    sex: str | None = "Feminine",
    band: str = "25-34",
    opened: datetime | None = None,
    closed_at: datetime | None = None,
    reason: str | None = None,
    pathway: str | None = None,
    **facts: Any,
) -> str:
    """A case managed in ``country`` now, identified in ``identified_in`` (the same by default), its
    facts (``exploitation_types`` ForcedLabour unless given) and its case facts (none if ``sex`` is None)."""
    opened = opened or at("2024-01-01")
    session.add(
        CaseRecord(
            case_id=case_id,
            reference=f"REF-{case_id[-12:]}",
            owner_country=country,
            origin_country=origin,
            destination_country=identified_in or country,
            stage="closed" if closed_at else "protection",
            status="closed" if closed_at else "active",
            pathway=pathway,
            opened_at=opened,
            updated_at=opened,
            closed_at=closed_at,
            closure_reason=reason,
            active_workflow_id=f"case-{case_id}",
            facts={"exploitation_types": ["ForcedLabour"], **facts},
        )
    )
    if sex is not None:
        session.add(CaseFactsRecord(case_id=case_id, sex=sex, age_band=band, updated_at=opened))
    return case_id


def add_agency(session: Session, agency_id: str, country: str, name: str | None = None) -> None:
    now = at("2024-01-01")
    session.add(
        AgencyRecord(
            agency_id=agency_id,
            name=name or agency_id,
            org_type="NGO",
            country=country,
            created_at=now,
            updated_at=now,
        )
    )


def add_task(
    session: Session,
    case_id: str,
    service: str,
    agency: str,
    completed: datetime,
    *,
    outcome: str = "done",
    country: str = "ES",
    n: int = 0,
) -> None:
    """A task completed with ``outcome`` (``n``: a case's second task of the same service, and on)."""
    session.add(
        TaskRecord(
            task_id=f"{case_id}-{service}" + (f"-{n}" if n else ""),
            case_id=case_id,
            case_reference=f"REF-{case_id[-12:]}",
            owner_country=country,
            service=service,
            agency_id=agency,
            status="completed",
            stage="protection",
            assigned_at=completed - timedelta(days=3),
            accept_by=completed,
            due_on=completed.date(),
            completed_at=completed,
            outcome=outcome,
        )
    )


def add_stay(
    session: Session, case_id: str, stage: str, days: float | None, left: datetime | None, *, country: str = "ES"
) -> None:
    """A stay in a stage that ended at ``left`` after ``days`` (None, None: not over), in ``country``."""
    session.add(
        StageVisitRecord(
            visit_id=f"{case_id}-{stage}",
            case_id=case_id,
            stage=stage,
            country=country,
            entered_at=(left or at("2026-06-01")) - timedelta(days=days or 0),
            left_at=left,
            days=days,
        )
    )


async def answers_meanwhile(
    http: httpx.AsyncClient, request: Awaitable[httpx.Response]
) -> tuple[httpx.Response, int, float]:
    """``request``'s answer, and how often and how slowly at worst (seconds) the server answered
    ``/health`` while it ran: a request whose work blocked the event loop lets none through."""
    asking = asyncio.ensure_future(request)
    answered, longest = 0, 0.0
    while not asking.done():
        asked = time.monotonic()
        assert (await http.get("/health")).status_code == 200
        longest = max(longest, time.monotonic() - asked)
        answered += 1
        await asyncio.sleep(0.02)
    return await asking, answered, longest
