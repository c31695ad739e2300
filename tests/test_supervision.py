"""Supervision over the real API: reassignment of a case, the summary, the stalled list's scope."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlmodel import Session

from reintegration.db import StageVisitRecord
from tests.journey import Journey, day


async def test_a_supervisor_reassigns_a_case_and_caseworkers_may_not(stack):
    j = Journey(stack)
    await j.open()
    stack.token("caseworker", "cw-es-2", countries=["ES"])  # signed in once: known to the directory
    r = await stack.http.post(f"/v1/cases/{j.case_id}/reassign", json={"caseworker": "cw-es-2"}, headers=j.cw)
    assert r.status_code == 403
    r = await stack.http.post(
        f"/v1/cases/{j.case_id}/reassign", json={"caseworker": "cw-es-2", "reason": "leave"}, headers=j.supervisor
    )
    assert r.status_code == 200, r.text
    assert r.json()["owner"] == {"country": "ES", "caseworker": "cw-es-2"}
    assert r.json()["timeline"][-1]["name"] == "reassigned"
    again = await stack.http.post(
        f"/v1/cases/{j.case_id}/reassign", json={"caseworker": "cw-es-2"}, headers=j.supervisor
    )
    assert again.status_code == 422
    other_region = stack.auth("supervisor", "sup-ro", countries=["RO"])
    r = await stack.http.post(f"/v1/cases/{j.case_id}/reassign", json={"caseworker": "cw-x"}, headers=other_region)
    assert r.status_code == 404


async def test_the_summary_counts_the_region(stack):
    sup = stack.auth("supervisor", "sup-sum", countries=["FI"])
    before = (await stack.http.get("/v1/supervision/summary", headers=sup)).json()
    j = Journey(stack, caseworker="cw-fi", countries=["FI"])
    admin = stack.auth("admin", "admin-1")
    await stack.http.post(
        "/v1/agencies",
        headers=admin,
        json={
            "agency_id": f"shelter-fi-{stack.backend}",
            "name": "Turvakoti",
            "org_type": "NGO",
            "country": "FI",
            "services": ["shelter", "legal-assistance"],
        },
    )
    await j.open(country="FI")
    await j.assign("shelter", f"shelter-fi-{stack.backend}")
    await j.through_protection()
    await j.step("pathway", {"pathway": "residence", "decided_on": day(3)})
    after = (await stack.http.get("/v1/supervision/summary", headers=sup)).json()
    assert after["total"] == before["total"] + 1
    assert after["by_country"] == {"FI": after["total"]}
    assert after["by_stage"].get("residence", 0) == before["by_stage"].get("residence", 0) + 1
    assert after["by_pathway"].get("residence", 0) >= 1
    assert after["by_agency"][f"shelter-fi-{stack.backend}"] >= 1
    assert {"identification", "protection", "pathway"} <= set(after["median_days_per_stage"])
    caseworker = stack.auth("caseworker", "cw-fi", countries=["FI"])
    assert (await stack.http.get("/v1/supervision/summary", headers=caseworker)).status_code == 403
    assert (await stack.http.get("/v1/supervision/stalled", headers=caseworker)).status_code == 403
    stalled = (await stack.http.get("/v1/supervision/stalled", headers=sup)).json()
    assert all(c["owner"]["country"] == "FI" for c in stalled["items"])


async def test_the_median_days_per_stage_are_exact_for_odd_and_even_counts_and_keep_to_the_region(stack):
    """Stays written straight into the read model, in countries of this test's own."""
    entered = datetime(2026, 1, 5, tzinfo=UTC)
    stays = {
        # country, stage: days of the completed stays (None: a stay not over yet, never counted)
        ("XA", "protection"): [9, 1, 5],  # odd: the middle one, 5
        ("XA", "pathway"): [4, 10, 2, 8],  # even: the mean of the middle two, (4 + 8) / 2
        ("XB", "protection"): [100, 300],  # another country: 200 alone, 9 and 5 and 100 and 300 together
        ("XA", "reintegration"): [None],
    }
    with Session(stack.engine) as session:
        for (country, stage), days in stays.items():
            for n, d in enumerate(days):
                session.add(
                    StageVisitRecord(
                        visit_id=f"median-{stack.backend}-{country}-{stage}-{n}",
                        case_id=f"median-case-{country}-{n}",
                        stage=stage,
                        entered_at=entered,
                        left_at=None if d is None else entered + timedelta(days=d),
                        days=d,
                        country=country,
                    )
                )
        session.commit()

    async def medians(countries, country=None):
        sup = stack.auth("supervisor", "sup-median", countries=countries)
        r = await stack.http.get("/v1/supervision/summary", headers=sup, params={"country": country} if country else {})
        assert r.status_code == 200, r.text
        return r.json()["median_days_per_stage"]

    assert await medians(["XA"]) == {"protection": 5.0, "pathway": 6.0}
    assert await medians(["XB"]) == {"protection": 200.0}
    assert await medians(["XA", "XB"]) == {"protection": 9.0, "pathway": 6.0}  # 1 5 9 100 300
    assert await medians(["XA", "XB"], country="XB") == {"protection": 200.0}
    assert await medians(["XC"]) == {}
