"""Metrics scraped over HTTP: the API's /metrics by route template (never a path as sent), the
worker's /metrics with the Temporal SDK's runtime metrics and the project's figures from the
database, the token rule both obey, and no case or task id in any label."""

from __future__ import annotations

import re
import secrets
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel

from api.main import create_app
from reintegration.db import AgencyRecord, CaseRecord, DeliveryRecord, TaskRecord, UserNotificationRecord
from reintegration.metrics import (
    DatabaseGauges,
    MetricsAccess,
    free_port,
    sdk_runtime,
    start_worker_metrics,
)
from reintegration.settings import Settings
from reintegration.temporal import connect
from tests.conftest import _drop_postgres_database, _postgres_database, running_stack, served
from tests.delivery_helpers import simulator, until
from tests.journey import Journey, case_body, day

TOKEN = "metrics-token-for-the-tests-" + "0123456789abcdef"


def samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Every sample of a scrape by its name (``..._total``, ``..._bucket``...), with its labels."""
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return found


def value(found: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float | None:
    matching = [v for got, v in found.get(name, []) if all(got.get(k) == w for k, w in labels.items())]
    return sum(matching) if matching else None


def label_values(text: str) -> set[str]:
    return {v for family in text_string_to_metric_families(text) for s in family.samples for v in s.labels.values()}


def token_file(tmp_path: Path, token: str = TOKEN) -> Path:
    path = tmp_path / f"metrics-token-{uuid.uuid4().hex[:6]}"
    path.write_text(token + "\n")
    return path


def production_settings(tmp_path: Path, **overrides: Any) -> Settings:
    kek = tmp_path / "kek"
    kek.write_text(secrets.token_hex(32) + "\n")
    return Settings(
        environment="production",
        data_dir=tmp_path,
        database_url="postgresql://reintegration@127.0.0.1/unused",
        oidc_issuer="https://idp.example",
        oidc_audience="reintegration-api",
        oidc_jwks_url="https://idp.example/jwks",
        workspace=False,
        temporal_allow_unauthenticated=True,
        kek_file=kek,
        **overrides,
    )


async def test_the_apis_metrics_count_requests_by_route_template_never_by_path(stack):
    j = Journey(stack)
    await j.open()
    await j.get()
    task = await j.assign("shelter", "shelter-es")
    unknown = uuid.uuid4().hex
    assert (await stack.http.get(f"/v1/cases/{unknown}", headers=j.cw)).status_code == 404
    assert (await stack.http.get(f"/no-such-page/{unknown}")).status_code == 404

    r = await stack.http.get("/metrics")  # development: open
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
    found = samples(r.text)
    requests = "reintegration_http_requests_total"
    assert value(found, requests, method="POST", route="/v1/cases", status="201")
    assert value(found, requests, method="GET", route="/v1/cases/{case_id}", status="200")
    assert value(found, requests, method="GET", route="/v1/cases/{case_id}", status="404")
    assert value(found, requests, method="POST", route="/v1/cases/{case_id}/tasks", status="201")
    assert value(found, requests, method="GET", route="unmatched", status="404")
    latency = "reintegration_http_request_duration_seconds_count"
    assert (value(found, latency, method="GET", route="/v1/cases/{case_id}") or 0) >= 2
    assert value(found, "reintegration_http_request_duration_seconds_bucket", route="/v1/cases", le="+Inf")
    assert "reintegration_http_errors_total" in r.text  # its HELP and TYPE, even before any 5xx
    assert value(found, "process_resident_memory_bytes")
    # Templates and fixed words only: no id of a case, a task or an unknown path, anywhere.
    for secret in (j.case_id, j.case["reference"], task["task_id"], unknown):
        assert secret not in r.text
    routes = {labels["route"] for labels, _ in found[requests]}
    assert all(route == "unmatched" or route.startswith("/") for route in routes)
    assert not any(re.search(r"[0-9a-f]{8}-[0-9a-f]{4}|[0-9a-f]{12}", route) for route in routes)  # no id
    # Not part of the API's contract.
    assert "/metrics" not in (await stack.http.get("/openapi.json")).json()["paths"]


async def test_the_apis_metrics_need_the_token_when_one_is_set(tmp_path):
    app = create_app(Settings(data_dir=tmp_path, metrics_token_file=token_file(tmp_path)))
    async with served(app, lifespan="off") as url, httpx.AsyncClient(base_url=url) as http:
        refused = await http.get("/metrics")
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
        assert (await http.get("/metrics", headers={"Authorization": "Bearer not-the-token"})).status_code == 401
        assert (await http.get("/metrics", headers={"Authorization": f"Basic {TOKEN}"})).status_code == 401
        ok = await http.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200 and "reintegration_http_requests_total" in ok.text
        # The refusals were counted like any request, under the route's template.
        assert value(samples(ok.text), "reintegration_http_requests_total", route="/metrics", status="401") == 3


async def test_production_serves_no_metrics_without_a_token_and_refuses_a_weak_one(tmp_path):
    app = create_app(production_settings(tmp_path))
    async with served(app, lifespan="off") as url, httpx.AsyncClient(base_url=url) as http:
        assert (await http.get("/metrics")).status_code == 404
        assert (await http.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})).status_code == 404
    app = create_app(production_settings(tmp_path, metrics_token_file=token_file(tmp_path)))
    async with served(app, lifespan="off") as url, httpx.AsyncClient(base_url=url) as http:
        assert (await http.get("/metrics")).status_code == 401
        assert (await http.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})).status_code == 200
    with pytest.raises(ValueError, match="METRICS_TOKEN_FILE"):
        create_app(production_settings(tmp_path, metrics_token_file=token_file(tmp_path, "change-me")))
    access = MetricsAccess(None, open_without_token=False)
    assert not access.served and access.check(f"Bearer {TOKEN}") == 404


async def test_the_workers_metrics_serve_the_sdks_and_the_cases_figures(temporal_env, tmp_path):
    """A stack of its own, whose worker's client runs on a runtime with Prometheus metrics: the
    worker's /metrics holds the SDK's metrics and the database's figures for the cases made here."""
    async with running_stack("sqlite", temporal_env, tmp_path / "data") as stack:
        await stack.stop_worker()
        sdk_address = f"127.0.0.1:{free_port()}"
        stack.client = await connect(stack.settings, keyring=stack.keyring, runtime=sdk_runtime(sdk_address))
        await stack.start_worker()

        spain = Journey(stack)
        await spain.open()
        await spain.through_protection()  # in the pathway stage
        late = Journey(stack)
        body = case_body()
        body["identification"]["identified_on"] = day(-60)  # opened long after: stalled from the start
        r = await stack.http.post("/v1/cases", json=body, headers=late.cw)
        assert r.status_code == 201, r.text
        late.case, late.case_id = r.json(), r.json()["case_id"]
        portugal = Journey(stack, caseworker="cw-pt-1", countries=["PT"])
        await portugal.open(country="PT")
        async with (
            simulator(stack, services=["shelter"], reject_status=410) as (refusing, _),
            simulator(stack, services=["shelter"], fail_first=1, act_after=None) as (flaky, stats),
        ):
            refused_task = await late.assign("shelter", refusing)
            flaky_task = await late.assign("shelter", flaky)

            def delivery_status(task_id: str) -> str | None:
                with Session(stack.engine) as session:
                    row = session.get(DeliveryRecord, task_id)
                    return row.status if row else None

            def task_status(task_id: str) -> str | None:
                with Session(stack.engine) as session:
                    row = session.get(TaskRecord, task_id)
                    return row.status if row else None

            await until(lambda: task_status(refused_task["task_id"]) == "delivery_failed", what="the refusal")
            await until(lambda: delivery_status(refused_task["task_id"]) == "failed", what="the refused delivery")
            await until(lambda: delivery_status(flaky_task["task_id"]) == "delivered", what="the retried delivery")
            assert stats.failed_on_purpose == 1

            settings = stack.settings.model_copy(
                update={"worker_metrics_port": free_port(), "metrics_token_file": token_file(tmp_path)}
            )
            server = await start_worker_metrics(settings, stack.engine, sdk_address=sdk_address)
            try:
                url = f"http://127.0.0.1:{server.port}/metrics"
                async with httpx.AsyncClient() as http:
                    refused = await http.get(url)
                    assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
                    assert (await http.get(url.replace("/metrics", "/other"))).status_code == 404
                    r = await http.get(url, headers={"Authorization": f"Bearer {TOKEN}"})
            finally:
                await server.close()

        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
        found = samples(r.text)
        # The SDK's runtime metrics: its worker polls, and its client called the frontend.
        sdk = {name for name in found if name.startswith("temporal_")}
        assert any(name.startswith("temporal_request") for name in sdk), sorted(found)[:50]
        assert any(name.startswith("temporal_worker_task_slots_available") for name in sdk), sorted(sdk)
        # The project's, from the database: exactly the cases made here.
        stage = spain.case["stage"]
        assert value(found, "reintegration_open_cases", stage=stage, country="ES") == 1
        assert value(found, "reintegration_open_cases", country="ES") == 2
        assert value(found, "reintegration_open_cases", country="PT") == 1
        assert value(found, "reintegration_stalled_cases", country="ES") == 1
        assert value(found, "reintegration_stalled_cases", country="PT") == 0
        assert value(found, "reintegration_deliveries", status="failed", agency_id=refusing) == 1
        assert value(found, "reintegration_deliveries", agency_id=flaky) is None  # delivered: not waiting
        assert value(found, "reintegration_overdue_tasks", agency_id=flaky) == 0  # not late yet
        assert value(found, "reintegration_emails", status="sent") == 0  # no mail server here
        assert value(found, "reintegration_database_gauges_up") == 1
        # This worker's own counts: the retry and the refusal it met.
        assert (value(found, "reintegration_delivery_retries_total", agency_id=flaky) or 0) >= 1  # 2 if one timed out
        assert value(found, "reintegration_deliveries_delivered_total", agency_id=flaky) == 1
        assert value(found, "reintegration_deliveries_failed_total", agency_id=refusing) == 1
        # No case, task or person in any label: stage names, countries, agencies, states.
        labels = label_values(r.text)
        for case in (spain, late, portugal):
            assert case.case_id not in r.text and case.case["reference"] not in r.text
        for task in (refused_task, flaky_task):
            assert task["task_id"] not in r.text
        assert not any(word in r.text for word in ("Maria", "Ionescu", "1998-03-14"))
        assert not {label for label in labels if label.startswith("case-")}

        # Overdue is the journey's rule at scrape time: ten days on, the task never accepted is late.
        def overdue(days: int) -> dict[str, float]:
            gauges = DatabaseGauges(stack.engine, cache_seconds=0, clock=lambda: datetime.now(UTC) + timedelta(days))
            [family] = [f for f in gauges.collect() if f.name == "reintegration_overdue_tasks"]
            return {s.labels["agency_id"]: s.value for s in family.samples}

        assert overdue(10)[flaky] == 1 and overdue(10)[refusing] == 0  # the refused one is the caseworker's
        assert overdue(20)[refusing] == 1  # until its due day passes too


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """An empty schema on each database: the gauges' SQL is the dialect's business (GROUP BY)."""
    name = None
    if request.param == "postgres":
        name, url = _postgres_database()
        request.node.add_marker(pytest.mark.postgres)
    else:
        url = f"sqlite:///{tmp_path / 'gauges.db'}"
    made = create_engine(url)
    SQLModel.metadata.create_all(made)
    try:
        yield made
    finally:
        made.dispose()
        if name:
            _drop_postgres_database(name)


def test_the_database_gauges_count_rows_by_their_labels_once_in_their_cache_time(engine: Engine) -> None:
    now = datetime.now(UTC)
    with Session(engine) as session:

        def case(n: int, country: str, stage: str, *, stalled: bool = False, status: str = "active") -> None:
            session.add(
                CaseRecord(
                    case_id=f"c-{n}",
                    reference=f"REF-{n}",
                    owner_country=country,
                    origin_country="RO",
                    destination_country=country,
                    stage=stage,
                    status=status,
                    stalled=stalled,
                    opened_at=now,
                    updated_at=now,
                    active_workflow_id=f"case-c-{n}",
                )
            )

        case(1, "ES", "protection")
        case(2, "ES", "protection", stalled=True)
        case(3, "ES", "return")
        case(4, "PT", "pathway")
        case(5, "PT", "closed", status="closed")
        for agency, active in (("shelter-es", True), ("clinic-es", True), ("gone-es", False)):
            session.add(
                AgencyRecord(
                    agency_id=agency,
                    name=agency,
                    org_type="NGO",
                    country="ES",
                    active=active,
                    created_at=now,
                    updated_at=now,
                )
            )
        for n, (status, accept_by) in enumerate(
            [
                ("assigned", now - timedelta(hours=1)),
                ("assigned", now + timedelta(days=1)),
                ("completed", now - timedelta(days=9)),
            ]
        ):
            session.add(
                TaskRecord(
                    task_id=f"t-{n}",
                    case_id="c-1",
                    case_reference="REF-1",
                    owner_country="ES",
                    service="shelter",
                    agency_id="shelter-es",
                    status=status,
                    stage="protection",
                    assigned_at=now - timedelta(days=1),
                    accept_by=accept_by,
                    due_on=(now + timedelta(days=10)).date(),
                )
            )
        for n, (status, attempts) in enumerate(
            [("pending", 0), ("pending", 3), ("pending", 1), ("failed", 2), ("delivered", 1)]
        ):
            session.add(
                DeliveryRecord(
                    delivery_id=f"d-{n}",
                    task_id=f"t-{n}",
                    case_id="c-1",
                    agency_id="shelter-es",
                    event="task.assigned",
                    status=status,
                    attempts=attempts,
                    created_at=now,
                )
            )
        for n, email in enumerate(["none", "pending", "sent", "sent", "digest"]):
            session.add(
                UserNotificationRecord(
                    notification_id=f"n-{n}",
                    user_id="cw-es-1",
                    event_id=f"e-{n}",
                    case_id="c-1",
                    case_reference="REF-1",
                    kind="task.assigned",
                    created_at=now,
                    email_status=email,
                )
            )
        session.commit()

    statements: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    gauges = DatabaseGauges(engine, cache_seconds=60)
    text = generate_latest(registry_of(gauges)).decode()
    found = samples(text)
    assert value(found, "reintegration_open_cases", stage="protection", country="ES") == 2
    assert value(found, "reintegration_open_cases", stage="return", country="ES") == 1
    assert value(found, "reintegration_open_cases", country="PT") == 1  # the closed one is not open
    assert value(found, "reintegration_stalled_cases", country="ES") == 1
    assert value(found, "reintegration_stalled_cases", country="PT") == 0
    assert value(found, "reintegration_overdue_tasks", agency_id="shelter-es") == 1  # not accepted in time
    assert value(found, "reintegration_overdue_tasks", agency_id="clinic-es") == 0
    assert value(found, "reintegration_overdue_tasks", agency_id="gone-es") is None  # deactivated, no task
    assert value(found, "reintegration_deliveries", status="pending", agency_id="shelter-es") == 1
    assert value(found, "reintegration_deliveries", status="retrying", agency_id="shelter-es") == 2
    assert value(found, "reintegration_deliveries", status="failed", agency_id="shelter-es") == 1
    assert value(found, "reintegration_emails", status="sent") == 2
    assert value(found, "reintegration_emails", status="pending") == 1
    assert value(found, "reintegration_emails", status="digest") == 1
    assert value(found, "reintegration_emails", status="failed") == 0
    assert value(found, "reintegration_supervision_notifications", status="sent") == 0
    assert value(found, "reintegration_database_gauges_up") == 1
    assert not any(secret in text for secret in ("c-1", "REF-1", "t-0", "d-0", "n-1", "cw-es-1"))
    read = len(statements)
    assert read > 0
    assert generate_latest(registry_of(gauges)).decode() == text and len(statements) == read  # from the cache


def registry_of(collector: DatabaseGauges) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(collector)
    return registry
