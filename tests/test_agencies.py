"""The agency registry: everyone reads it, admins write it, and assignments follow it."""

from __future__ import annotations

import uuid

from tests.journey import Journey

SECRET = "s3cret-for-tests-0123456789abcdef-xyz"


async def test_admins_register_and_change_agencies_everyone_reads(stack):
    admin = stack.auth("admin", "admin-1")
    agency_id = f"shelter-pt-{uuid.uuid4().hex[:6]}"
    body = {
        "agency_id": agency_id,
        "name": "Casa Abrigo",
        "org_type": "NGO",
        "country": "PT",
        "services": ["shelter"],
        "webhook_url": "http://127.0.0.1:9/hook",
        "webhook_secret": SECRET,
    }
    for role in ("caseworker", "partner", "supervisor"):
        headers = stack.auth(role, f"{role}-x", **({"agency": "shelter-es"} if role == "partner" else {}))
        assert (await stack.http.post("/v1/agencies", json=body, headers=headers)).status_code == 403
    r = await stack.http.post("/v1/agencies", json=body, headers=admin)
    assert r.status_code == 201, r.text
    # Not used until a partner of the agency confirms it (tests/test_webhook_redirection.py).
    assert r.json()["webhook_configured"] is False and r.json()["webhook_pending"] is True
    assert r.json()["pending_webhook_url"] == "http://127.0.0.1:9/hook" and SECRET not in r.text
    assert (await stack.http.post("/v1/agencies", json=body, headers=admin)).status_code == 409
    cw = stack.auth("caseworker", "cw-any")
    seen = (await stack.http.get(f"/v1/agencies/{agency_id}", headers=cw)).json()
    assert seen["webhook_url"] is None and seen["services"] == ["shelter"]  # the address is for admins
    listed = (await stack.http.get("/v1/agencies", headers=cw, params={"country": "PT", "service": "shelter"})).json()
    assert agency_id in {a["agency_id"] for a in listed}
    r = await stack.http.patch(f"/v1/agencies/{agency_id}", json={"services": ["shelter", "housing"]}, headers=admin)
    assert r.status_code == 200 and r.json()["services"] == ["shelter", "housing"]
    r = await stack.http.patch(f"/v1/agencies/{agency_id}", json={"webhook_url": None}, headers=admin)
    assert r.json()["webhook_configured"] is False and r.json()["webhook_pending"] is False
    for bad in (
        {"org_type": "Gang"},
        {"country": "Portugal"},
        {"services": ["teleport"]},
        {"unknown": 1},
        {"webhook_url": "http://127.0.0.1:9/hook"},
        {"webhook_secret": "short"},
    ):
        r = await stack.http.patch(f"/v1/agencies/{agency_id}", json=bad, headers=admin)
        assert r.status_code == 422, (bad, r.text)
    assert (await stack.http.patch("/v1/agencies/nope", json={"name": "x"}, headers=admin)).status_code == 404


async def test_an_inactive_agency_gets_no_tasks(stack):
    admin = stack.auth("admin", "admin-1")
    agency_id = f"clinic-it-{uuid.uuid4().hex[:6]}"
    await stack.http.post(
        "/v1/agencies",
        headers=admin,
        json={
            "agency_id": agency_id,
            "name": "Clinica",
            "org_type": "HealthServiceOrganisation",
            "country": "IT",
            "services": ["medical"],
        },
    )
    j = Journey(stack, caseworker="cw-it", countries=["IT"])
    await j.open(country="IT")
    task = await j.assign("medical", agency_id)
    assert task["agency_id"] == agency_id
    await stack.http.patch(f"/v1/agencies/{agency_id}", json={"active": False}, headers=admin)
    r = await stack.http.post(
        f"/v1/cases/{j.case_id}/tasks", json={"service": "medical", "agency_id": agency_id}, headers=j.cw
    )
    assert r.status_code == 422 and "inactive" in r.json()["detail"]
