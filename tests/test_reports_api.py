"""``GET /v1/reports/indicators`` through the real stack: cases opened and served through the API,
then the indicators of their region as JSON and CSV, their small cells suppressed; who may read
them; what a bad query gets. (The definitions and the suppression have fast tests of their own:
tests/test_reports.py.)"""

from __future__ import annotations

import csv
import io
import time
from datetime import date
from typing import Any

import pytest
from sqlalchemy import select
from sqlmodel import Session

from api import reports
from reintegration.db import AuditRecord
from tests.conftest import Stack
from tests.journey import TODAY, Journey, day
from tests.reports_support import answers_meanwhile

COUNTRY, OTHER = "SI", "HR"  # no other test's cases are there


def born(years_ago: int) -> str:
    """A birth date that makes the person this old on the day the tests open their cases."""
    return date(TODAY.year - years_ago, 1, 1).isoformat()


@pytest.fixture(scope="module")
async def region(stack: Stack) -> Stack:
    """Five women of 30 and a man of 20 identified in SI today; the first woman given a shelter."""
    admin = stack.auth("admin", "admin-reports")
    agency = f"shelter-si-{stack.backend}"
    r = await stack.http.post(
        "/v1/agencies",
        headers=admin,
        json={"agency_id": agency, "name": "Zavetišče", "org_type": "NGO", "country": COUNTRY, "services": ["shelter"]},
    )
    assert r.status_code == 201, r.text
    journeys = []
    for gender, age in [("Feminine", 30)] * 5 + [("Masculine", 20)]:
        j = Journey(stack, caseworker="cw-si", countries=[COUNTRY])
        await j.open(country=COUNTRY, gender=gender, birthdate=born(age), first_name=f"P{len(journeys)}")
        journeys.append(j)
    await journeys[0].deliver("shelter", agency)
    return stack


def rows(table: dict) -> dict[tuple[str, ...], dict]:
    return {tuple(r["group"].values()): r["cells"] for r in table["rows"]}


async def test_a_supervisor_reads_the_regions_indicators_as_json_and_csv(region: Stack):
    stack = region
    sup = stack.auth("supervisor", "sup-si-read", countries=[COUNTRY])
    period = {"from": day(-30), "to": day(30)}

    r = await stack.http.get("/v1/reports/indicators", headers=sup, params={**period, "group_by": "sex"})
    assert r.status_code == 200, r.text
    report = r.json()
    assert (report["period_from"], report["period_to"], report["countries"]) == (day(-30), day(30), [COUNTRY])
    assert (report["group_by"], report["threshold"]) == (["sex"], 5)
    people = rows(report["people"])
    # The man's 1 is small; the women's 5 is hidden with it, or 6 - 5 would give it away.
    assert {g: c["identified"] for g, c in people.items()} == {("Feminine",): "<5", ("Masculine",): "<5"}
    assert people[("Feminine",)]["assisted"] == "<5" and people[("Masculine",)]["assisted"] == 0
    assert report["people"]["total"]["cells"] == {
        "identified": 6,
        "assisted": "<5",
        "returned": 0,
        "granted_residence": 0,
        "reintegration_started": 0,
        "reintegrated": 0,
        "closed": 0,
    }
    assert rows(report["services"]) == {
        ("Feminine", "shelter", f"shelter-si-{stack.backend}"): {"delivered": "<5", "people": "<5"}
    }
    assert report["services"]["total"]["cells"] == {"delivered": "<5", "people": "<5"}
    assert report["closures"]["rows"] == [] and report["sustainability"]["rows"] == []
    # Each case left identification for protection when it opened with consent, within seconds.
    assert [(d["stage"], d["group"], d["stays"], d["median_days"]) for d in report["stage_days"]] == [
        ("identification", {}, 6, 0.0),
        # Five stays, but their count is hidden: a median would say "5 or more", and so 6 - 5 = 1.
        ("identification", {"sex": "Feminine"}, "<5", None),
        ("identification", {"sex": "Masculine"}, "<5", None),
    ]

    by_age = (
        await stack.http.get("/v1/reports/indicators", headers=sup, params={**period, "group_by": "age_band,sex"})
    ).json()
    assert by_age["group_by"] == ["age_band", "sex"]
    assert {g: c["identified"] for g, c in rows(by_age["people"]).items()} == {
        ("18-24", "Masculine"): "<5",
        ("25-34", "Feminine"): "<5",
    }

    # A threshold raised: the 6 identified is under 7 now.
    raised = (await stack.http.get("/v1/reports/indicators", headers=sup, params={**period, "threshold": 7})).json()
    assert raised["threshold"] == 7 and raised["people"]["total"]["cells"]["identified"] == "<7"
    assert raised["people"]["rows"] == [] and raised["people"]["keys"] == []

    r = await stack.http.get(
        "/v1/reports/indicators", headers=sup, params={**period, "group_by": "sex", "format": "csv"}
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/csv")
    assert r.headers["content-disposition"] == f'attachment; filename="indicators-{day(-30)}-to-{day(30)}.csv"'
    lines = list(csv.reader(io.StringIO(r.text)))
    assert lines[0] == [
        "table",
        "sex",
        "age_band",
        "exploitation_type",
        "country",
        "pathway",
        "service",
        "agency_id",
        "stage",
        "measure",
        "value",
    ]
    cells = {(line[0], line[1], line[6], line[9]): line[10] for line in lines[1:]}
    assert cells[("people", "", "", "identified")] == "6"
    assert cells[("people", "Feminine", "", "identified")] == "<5"
    assert cells[("people", "Masculine", "", "identified")] == "<5"
    assert cells[("people", "Masculine", "", "assisted")] == "0"
    assert cells[("services", "Feminine", "shelter", "delivered")] == "<5"
    assert cells[("sustainability", "", "", "share")] == ""
    # Every cell of the JSON is a line of the CSV, and the other way round.
    assert len(lines) - 1 == sum(
        len(report[t]["columns"]) * (1 + len(report[t]["rows"])) for t in ("people", "closures", "services")
    ) + 3 * len(report["stage_days"]) + 3 * (1 + len(report["sustainability"]["rows"]))

    with Session(stack.engine) as session:
        audited = session.execute(
            select(AuditRecord).where(AuditRecord.actor_sub == "sup-si-read", AuditRecord.action == "report.indicators")
        ).scalars()
        details = [row.detail for row in audited]
    assert {"from": day(-30), "to": day(30), "group_by": ["sex"], "format": "csv"}.items() <= details[-1].items()
    assert len(details) == 4


async def test_only_supervisors_and_only_their_region(region: Stack):
    stack = region
    period = {"from": day(-30), "to": day(30)}
    for headers in (
        stack.auth("caseworker", "cw-si", countries=[COUNTRY]),
        stack.auth("partner", f"partner-shelter-si-{stack.backend}", agency=f"shelter-si-{stack.backend}"),
    ):
        assert (await stack.http.get("/v1/reports/indicators", headers=headers, params=period)).status_code == 403
    elsewhere = stack.auth("supervisor", "sup-hr", countries=[OTHER])
    for params in (period, {**period, "country": COUNTRY}):
        r = await stack.http.get("/v1/reports/indicators", headers=elsewhere, params=params)
        assert r.status_code == 200, r.text
        assert r.json()["people"]["total"]["cells"]["identified"] == 0
        assert r.json()["countries"] == ([OTHER] if "country" not in params else [])
    everywhere = stack.auth("supervisor", "sup-all")
    r = await stack.http.get("/v1/reports/indicators", headers=everywhere, params={**period, "country": COUNTRY})
    assert r.json()["people"]["total"]["cells"]["identified"] == 6
    # By default the year ending today (UTC).
    r = await stack.http.get("/v1/reports/indicators", headers=stack.auth("supervisor", "sup-si", countries=[COUNTRY]))
    assert r.status_code == 200
    start, end = date.fromisoformat(r.json()["period_from"]), date.fromisoformat(r.json()["period_to"])
    assert (end - start).days in (364, 365) and abs((end - TODAY).days) <= 1


async def test_a_bad_query_is_refused_clearly_and_nothing_is_audited(stack: Stack):
    sup = stack.auth("supervisor", "sup-si-422", countries=[COUNTRY])
    for params, english, spanish in (
        (
            {"from": "2026-02-30"},
            "from is not a date: give it as YYYY-MM-DD, for example 2026-01-31",
            "from no es una fecha: indíquela como AAAA-MM-DD, por ejemplo 2026-01-31",
        ),
        (
            {"to": "20260131"},
            "to is not a date: give it as YYYY-MM-DD, for example 2026-01-31",
            "to no es una fecha: indíquela como AAAA-MM-DD, por ejemplo 2026-01-31",
        ),
        (
            {"from": "2026-03-02", "to": "2026-03-01"},
            "the period is empty: from is after to",
            "el periodo está vacío: from es posterior a to",
        ),
        (
            {"from": "2016-03-01", "to": "2026-03-01"},
            "a report's period is at most 10 years long",
            "el periodo de un informe dura como máximo 10 años",
        ),
        (
            {"group_by": ["sex", "religion"]},
            "religion is not a group; a report is grouped by any of: "
            "sex, age_band, exploitation_type, country, pathway, service",
            "religion no es un grupo; un informe se agrupa por cualquiera de: "
            "sex, age_band, exploitation_type, country, pathway, service",
        ),
        (
            {"threshold": "4"},
            "the small-cell threshold may be raised from 5 up to 1000, never lowered",
            "el umbral de las celdas pequeñas puede subirse desde 5 hasta 1000, nunca bajarse",
        ),
    ):
        r = await stack.http.get("/v1/reports/indicators", headers=sup, params=params)
        assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json", params
        assert r.json()["detail"] == english
        r = await stack.http.get("/v1/reports/indicators", headers={**sup, "Accept-Language": "es"}, params=params)
        assert r.status_code == 422 and r.json()["detail"] == spanish
    for params in ({"format": "xml"}, {"country": "si"}, {"threshold": "five"}, {"group_by": ["sex"] * 13}):
        assert (await stack.http.get("/v1/reports/indicators", headers=sup, params=params)).status_code == 422
    # Ten years to the day, and one day, are periods.
    for params in ({"from": "2016-03-02", "to": "2026-03-01"}, {"from": "2026-03-01", "to": "2026-03-01"}):
        assert (await stack.http.get("/v1/reports/indicators", headers=sup, params=params)).status_code == 200
    with Session(stack.engine) as session:
        audited = session.execute(select(AuditRecord).where(AuditRecord.actor_sub == "sup-si-422")).scalars().all()
    assert [row.detail["from"] for row in audited] == ["2016-03-02", "2026-03-01"]


async def test_a_long_report_does_not_hold_up_other_requests(stack: Stack, monkeypatch: pytest.MonkeyPatch):
    """At 100,000 cases a report takes seconds (benchmarks/reports.py): computed and written in a
    worker thread, while the server (on this test's event loop) keeps answering. A computation made
    slow stands in for the large database."""
    computed = reports.indicators

    def slowly(*args: Any, **kwargs: Any) -> Any:
        time.sleep(1.0)
        return computed(*args, **kwargs)

    monkeypatch.setattr(reports, "indicators", slowly)
    sup = stack.auth("supervisor", "sup-si-slow", countries=[COUNTRY])
    for params in ({}, {"format": "csv"}):
        asking = stack.http.get("/v1/reports/indicators", headers=sup, params=params)
        r, answered, longest = await answers_meanwhile(stack.http, asking)
        assert r.status_code == 200
        assert answered >= 5 and longest < 0.5, (answered, longest)
