"""Benchmark: the time of ``reintegration.reports.indicators`` over 10,000 and 100,000 cases in the
read model, on SQLite and on PostgreSQL, called directly (no HTTP: the report's own cost).

Synthetic read-model rows (no personal data): cases identified in 6 countries over three years, a
third of them returned (and handed over) to RO, two thirds with case facts (sex, age band), one or
two exploitation types, 1-3 tasks (half completed ``done``) of 4 agencies in three countries, 2-4
ended stage stays, a fifth with a plan and monitoring visits, a quarter closed. Each
report covers the last year; it is computed three times and the best and the worst are printed. Usage:
    .venv/bin/python -m benchmarks.reports [SIZES...]      (default: 10000 100000)
"""

from __future__ import annotations

import random
import sys
import tempfile
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import insert
from sqlmodel import Session

from reintegration.db import AgencyRecord, CaseFactsRecord, CaseRecord, StageVisitRecord, TaskRecord, make_engine
from reintegration.migrate import upgrade_schema
from reintegration.reports import Group, indicators
from reintegration.settings import Settings
from tests.conftest import _drop_postgres_database, _postgres_database

COUNTRIES = ["ES", "PT", "RO", "IT", "FI", "MD"]
STAGES = ["identification", "protection", "pathway", "return", "residence", "reintegration"]
SERVICES = ["shelter", "medical", "legal-assistance", "psychosocial", "job-orientation", "housing"]
AGENCIES = {"shelter-es": "ES", "clinic-es": "ES", "legal-aid-pt": "PT", "reintegration-partner-ro": "RO"}
SEXES = ["Feminine", "Masculine", "NonSpecifiedUnknown"]
BANDS = ["0-11", "12-17", "18-24", "25-34", "35-49", "50+", "unknown"]
TYPES = ["ForcedLabour", "SexualExploitation", "ForcedBegging", "Servitude"]
REASONS = ["completed", "withdrew", "lost-contact", "transferred", "other"]
TODAY = datetime.now(UTC).date()
REPORTS: dict[str, dict[str, Any]] = {
    "all countries, no groups": {"countries": None, "group_by": []},
    "all countries, by sex": {"countries": None, "group_by": [Group.sex]},
    "all countries, sex x age band": {"countries": None, "group_by": [Group.sex, Group.age_band]},
    "all, type x service (multi-valued)": {"countries": None, "group_by": [Group.exploitation_type, Group.service]},
    "region of 2 countries, by country": {"countries": ["ES", "PT"], "group_by": [Group.country]},
}


def fill(engine: Any, n: int) -> None:
    rng = random.Random(7)
    cases, facts, tasks, stays = [], [], [], []
    for i in range(n):
        case_id = str(uuid.UUID(int=rng.getrandbits(128)))
        identified = TODAY - timedelta(days=rng.randint(0, 3 * 365))
        opened = datetime.combine(identified, datetime.min.time(), tzinfo=UTC) + timedelta(hours=9)
        closed = rng.random() < 0.25
        planned = rng.random() < 0.2
        plan = identified + timedelta(days=60)
        returned = rng.random() < 0.3
        identified_in = rng.choice(COUNTRIES)
        case_facts: dict[str, Any] = {
            "identified_on": identified.isoformat(),
            "exploitation_types": rng.sample(TYPES, rng.randint(1, 2)),
            "arrived_on": (identified + timedelta(days=40)).isoformat() if returned else None,
            "residence_decisions": [
                {
                    "decision": "granted",
                    "decided_on": (identified + timedelta(days=90)).isoformat(),
                    "valid_until": None,
                }
            ]
            if rng.random() < 0.2
            else [],
            "plan_agreed_on": plan.isoformat() if planned else None,
            "monitoring_visits": [
                {
                    "visited_on": (plan + timedelta(days=d)).isoformat(),
                    "scores": {"economic": 0.6, "social": 0.7, "psychosocial": 0.4},
                    "weighted_score": 0.58,
                    "below_threshold": ["psychosocial"] if rng.random() < 0.3 else [],
                }
                for d in (90, 180, 360)
            ]
            if planned
            else [],
            "consent": {"assistance": True, "data_sharing": True, "given_on": identified.isoformat()},
            "risk_level": "medium",
        }
        cases.append(
            dict(
                case_id=case_id,
                reference=f"BR-{i:07d}",
                version=5,
                owner_country="RO" if returned else identified_in,  # handed over on arrival
                origin_country="RO",
                destination_country=identified_in,
                stage="closed" if closed else rng.choice(STAGES),
                status="closed" if closed else "active",
                pathway=rng.choice([None, "voluntary_return", "residence"]),
                is_minor=False,
                opened_at=opened,
                updated_at=opened,
                closed_at=opened + timedelta(days=rng.randint(30, 400)) if closed else None,
                closure_reason=rng.choice(REASONS) if closed else None,
                active_workflow_id=f"case-{case_id}",
                allowed_steps=[],
                open_items=[],
                agencies=[],
                stall_reasons=[],
                facts=case_facts,
            )
        )
        if rng.random() < 2 / 3:
            facts.append(
                dict(
                    case_id=case_id,
                    sex=rng.choice(SEXES),
                    age_band=rng.choice(BANDS),
                    recruitment_methods=[],
                    recruitment_websites=[],
                    control_methods=[],
                    sex_exploitation_types=[],
                    updated_at=opened,
                )
            )
        for t in range(rng.randint(1, 3)):
            done = rng.random() < 0.5
            tasks.append(
                dict(
                    task_id=f"{case_id}-{t}",
                    case_id=case_id,
                    case_reference=f"BR-{i:07d}",
                    owner_country=cases[-1]["owner_country"],
                    version=1,
                    service=rng.choice(SERVICES),
                    agency_id=rng.choice(list(AGENCIES)),
                    status="completed" if done else "accepted",
                    outcome="done" if done else None,
                    stage="protection",
                    safety_plan=False,
                    assigned_at=opened,
                    accept_by=opened,
                    due_on=identified,
                    completed_at=opened + timedelta(days=rng.randint(1, 120)) if done else None,
                    notes="",
                    outcome_notes="",
                    decline_reason="",
                    previous_agencies=[],
                )
            )
        entered = opened
        for v, stage in enumerate(rng.sample(STAGES, rng.randint(2, 4))):
            days = rng.uniform(1, 200)
            stays.append(
                dict(
                    visit_id=f"{case_id}-{v}",
                    case_id=case_id,
                    stage=stage,
                    entered_at=entered,
                    left_at=entered + timedelta(days=days),
                    days=days,
                    country=cases[-1]["owner_country"],
                )
            )
            entered += timedelta(days=days)
    now = datetime.now(UTC)
    agencies = [
        dict(agency_id=a, name=a, org_type="NGO", country=c, services=[], created_at=now, updated_at=now)
        for a, c in AGENCIES.items()
    ]
    with engine.begin() as conn:
        conn.execute(insert(AgencyRecord), agencies)
        for table, rows in (
            (CaseRecord, cases),
            (CaseFactsRecord, facts),
            (TaskRecord, tasks),
            (StageVisitRecord, stays),
        ):
            for start in range(0, len(rows), 5000):
                conn.execute(insert(table), rows[start : start + 5000])


def measure(engine: Any) -> dict[str, tuple[float, float, int]]:
    """Each report's best and worst of three (ms), and how many rows its people table has."""
    results = {}
    for name, asked in REPORTS.items():
        times, groups = [], 0
        for _ in range(3):
            with Session(engine) as session:
                started = time.perf_counter()
                report = indicators(
                    session,
                    period_from=TODAY - timedelta(days=364),
                    period_to=TODAY,
                    threshold=5,
                    thresholds={"economic": 0.5, "social": 0.5, "psychosocial": 0.5},
                    **asked,
                )
                times.append(time.perf_counter() - started)
                groups = len(report.people.rows)
        results[name] = (min(times) * 1000, max(times) * 1000, groups)
    return results


def main(sizes: list[int]) -> None:
    for size in sizes:
        for backend in ("sqlite", "postgres"):
            with tempfile.TemporaryDirectory() as data:
                name, url = _postgres_database() if backend == "postgres" else (None, None)
                engine = make_engine(Settings(data_dir=Path(data), database_url=url))
                upgrade_schema(engine)
                started = time.perf_counter()
                fill(engine, size)
                if url is not None:  # what autovacuum does in service: statistics and the visibility map
                    with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as conn:
                        conn.execute("VACUUM ANALYZE")
                print(
                    f"{size:>7} cases, {backend:<8} (filled in {time.perf_counter() - started:.0f} s), a year's report:"
                )
                for report, (best, worst, groups) in measure(engine).items():
                    print(f"    {report:<36} best {best:8.0f} ms   worst {worst:8.0f} ms   {groups:>4} groups")
                engine.dispose()
                if name:
                    _drop_postgres_database(name)


if __name__ == "__main__":
    print(f"(period: {date.fromordinal(TODAY.toordinal() - 364)} to {TODAY})")
    main([int(a) for a in sys.argv[1:]] or [10_000, 100_000])
