"""Benchmark: p50/p95 of the supervision queries (stalled list, summary) over 10,000 and 100,000
cases in the read model, on SQLite and on PostgreSQL, through the real app over HTTP.

Synthetic read-model rows (no personal data): cases spread over 6 countries and every stage, a
fifth of them stalled, 1-3 tasks and 2-4 stage stays each. The summary is measured as after a write
(the read model's count moved before each request), so the API computes it each time; read again
with no write in between, an API process serves the one it kept. Usage:
    .venv/bin/python -m benchmarks.supervision [SIZES...]      (default: 10000 100000)
"""

from __future__ import annotations

import asyncio
import random
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import uvicorn
from sqlalchemy import insert

from api.main import create_app
from benchmarks.lean_http import LeanHTTP
from reintegration.db import CaseRecord, StageVisitRecord, TaskRecord, make_engine
from reintegration.migrate import upgrade_schema
from reintegration.projection import count_write
from reintegration.settings import Settings
from reintegration.tokens import mint
from tests.conftest import POSTGRES_ADMIN, free_port
from workflows.model import Role

COUNTRIES = ["ES", "PT", "RO", "IT", "FI", "MD"]
STAGES = ["identification", "protection", "pathway", "return", "residence", "reintegration", "closed"]
AGENCIES = ["shelter-es", "clinic-es", "legal-aid-es", "consulate-ro", "origin-office-ro", "reintegration-partner-ro"]
REQUESTS = 40


def fill(engine, n: int) -> None:
    rng = random.Random(7)
    now = datetime.now(UTC)
    cases, tasks, visits = [], [], []
    for i in range(n):
        case_id = str(uuid.UUID(int=rng.getrandbits(128)))
        stage = rng.choice(STAGES)
        stalled = stage != "closed" and rng.random() < 0.2
        opened = now - timedelta(days=rng.randint(1, 900))
        due = now - timedelta(days=rng.randint(1, 60))
        cases.append(
            dict(
                case_id=case_id,
                reference=f"BN-{i:07d}",
                version=5,
                owner_country=rng.choice(COUNTRIES),
                owner_caseworker=f"cw-{rng.randint(1, 300)}",
                origin_country="RO",
                destination_country="ES",
                stage=stage,
                status="closed" if stage == "closed" else "active",
                pathway=rng.choice([None, "voluntary_return", "residence"]),
                is_minor=False,
                opened_at=opened,
                updated_at=opened,
                active_workflow_id=f"case-{case_id}",
                allowed_steps=[],
                open_items=[],
                agencies=[],
                facts={},
                stalled=stalled,
                most_overdue_at=due if stalled else None,
                stall_reasons=[
                    {
                        "key": "step:pathway",
                        "kind": "step",
                        "name": "pathway",
                        "task_id": None,
                        "agency_id": None,
                        "turn": "caseworker",
                        "due_at": due.isoformat(),
                        "escalate_at": due.isoformat(),
                    }
                ]
                if stalled
                else [],
            )
        )
        for t in range(rng.randint(1, 3)):
            tasks.append(
                dict(
                    task_id=f"{case_id}-{t}",
                    case_id=case_id,
                    case_reference=f"BN-{i:07d}",
                    owner_country=cases[-1]["owner_country"],
                    version=1,
                    service="shelter",
                    agency_id=rng.choice(AGENCIES),
                    status=rng.choice(["assigned", "accepted", "completed"]),
                    stage="protection",
                    safety_plan=False,
                    assigned_at=opened,
                    accept_by=opened,
                    due_on=opened.date(),
                    notes="",
                    outcome_notes="",
                    decline_reason="",
                    previous_agencies=[],
                )
            )
        for v, visit_stage in enumerate(rng.sample(STAGES[:-1], rng.randint(2, 4))):
            visits.append(
                dict(
                    visit_id=f"{case_id}-{v}",
                    case_id=case_id,
                    stage=visit_stage,
                    entered_at=opened,
                    left_at=opened,
                    days=rng.uniform(1, 200),
                    country=cases[-1]["owner_country"],
                )
            )
    with engine.begin() as conn:
        for table, rows in ((CaseRecord, cases), (TaskRecord, tasks), (StageVisitRecord, visits)):
            for start in range(0, len(rows), 5000):
                conn.execute(insert(table), rows[start : start + 5000])


async def measure(settings: Settings) -> dict[str, tuple[float, float]]:
    app = create_app(settings)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    region = mint(settings, role=Role.supervisor, sub="sup-bench", countries=["ES", "PT"])
    everywhere = mint(settings, role=Role.supervisor, sub="sup-all", countries=["*"])
    calls = {
        "stalled, region of 2 countries": ("/v1/supervision/stalled", region, {}),
        "stalled, all countries": ("/v1/supervision/stalled", everywhere, {}),
        "stalled, filtered by agency": ("/v1/supervision/stalled", everywhere, {"agency": "clinic-es"}),
        "summary, region of 2, after a write": ("/v1/supervision/summary", region, {}),
        "summary, all, after a write": ("/v1/supervision/summary", everywhere, {}),
    }
    results = {}
    engine = make_engine(settings)
    # The lean client (benchmarks/lean_http.py): httpx's own CPU per request ran on this loop too.
    async with LeanHTTP(f"http://127.0.0.1:{port}", timeout=120) as http:
        for name, (path, token, params) in calls.items():
            times = []
            for _ in range(REQUESTS):
                if "summary" in name:  # as after a write: the API's kept summary is computed again
                    with engine.begin() as conn:
                        count_write(conn)
                started = time.perf_counter()
                r = await http.get(path, params=params, headers={"Authorization": f"Bearer {token}"})
                times.append(time.perf_counter() - started)
                assert r.status_code == 200, r.text
            times.sort()
            results[name] = (statistics.median(times) * 1000, times[int(0.95 * (len(times) - 1))] * 1000)
    server.should_exit = True
    await serving
    engine.dispose()
    return results


async def main(sizes: list[int]) -> None:
    for size in sizes:
        for backend in ("sqlite", "postgres"):
            with tempfile.TemporaryDirectory() as data:
                url, name = None, None
                if backend == "postgres":
                    name = f"reintegration_bench_{uuid.uuid4().hex[:8]}"
                    with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as conn:
                        conn.execute(f'CREATE DATABASE "{name}"')
                    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
                settings = Settings(
                    data_dir=Path(data),
                    database_url=url,
                    temporal_address="127.0.0.1:1",
                    temporal_connect_wait_seconds=0,
                    rate_limit_per_minute=10**6,
                    rate_limit_burst=10**5,
                )  # measure the queries, not the rate limit
                engine = make_engine(settings)
                upgrade_schema(engine)
                started = time.perf_counter()
                fill(engine, size)
                if backend == "postgres":  # what autovacuum does in service: statistics and the visibility map
                    with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as conn:
                        conn.execute("VACUUM ANALYZE")
                engine.dispose()
                print(f"{size:>7} cases, {backend:<8} (filled in {time.perf_counter() - started:.0f} s)")
                for query, (p50, p95) in (await measure(settings)).items():
                    print(f"    {query:<34} p50 {p50:7.1f} ms   p95 {p95:7.1f} ms")
                if name:
                    with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as conn:
                        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


if __name__ == "__main__":
    asyncio.run(main([int(a) for a in sys.argv[1:]] or [10_000, 100_000]))
