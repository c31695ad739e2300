"""Authentication, role and country scope on every endpoint; validation errors as problem details."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import jwt

from reintegration.tokens import mint
from tests.journey import Journey, case_body, day
from workflows.model import Role


async def test_no_token_or_a_bad_one_is_401(stack):
    for headers in ({}, {"Authorization": "Bearer nonsense"}, {"Authorization": "Basic abc"}):
        r = await stack.http.get("/v1/cases", headers=headers)
        assert r.status_code == 401, headers
        assert r.headers["content-type"] == "application/problem+json"
    expired = mint(stack.settings, role=Role.caseworker, sub="cw", ttl=timedelta(seconds=-10))
    r = await stack.http.get("/v1/cases", headers={"Authorization": f"Bearer {expired}"})
    assert r.status_code == 401
    forged = jwt.encode(
        {
            "sub": "cw",
            "role": "supervisor",
            "iss": stack.settings.jwt_issuer,
            "aud": stack.settings.jwt_audience,
            "exp": 9999999999,
        },
        "not-our-key-" * 4,
        algorithm="HS256",
    )
    r = await stack.http.get("/v1/cases", headers={"Authorization": f"Bearer {forged}"})
    assert r.status_code == 401


async def test_roles_that_may_never_are_403(stack):
    j = Journey(stack)
    await j.open()
    partner = j.partner("shelter-es")
    admin = stack.auth("admin", "admin-1")
    for headers in (partner, admin):
        assert (await stack.http.get(f"/v1/cases/{j.case_id}", headers=headers)).status_code == 403
        assert (await stack.http.get("/v1/cases", headers=headers)).status_code == 403
        r = await stack.http.post("/v1/cases", json=case_body(), headers=headers)
        assert r.status_code == 403
        r = await stack.http.post(
            f"/v1/cases/{j.case_id}/steps/risk-assessment",
            json={"level": "low", "assessed_on": day(1)},
            headers=headers,
        )
        assert r.status_code == 403
    r = await stack.http.post("/v1/cases", json=case_body(), headers=j.supervisor)
    assert r.status_code == 403  # supervisors oversee; caseworkers open cases
    task = await j.assign("shelter", "shelter-es")
    r = await stack.http.post(f"/v1/tasks/{task['task_id']}/accept", json={}, headers=j.cw)
    assert r.status_code == 403  # only the agency acts on its task
    assert (await stack.http.get("/v1/tasks", headers=admin)).status_code == 403


async def test_outside_the_callers_countries_is_404(stack):
    j = Journey(stack)
    await j.open()
    other = stack.auth("caseworker", "cw-pt", countries=["PT"])
    region_ro = stack.auth("supervisor", "sup-ro", countries=["RO"])
    for headers in (other, region_ro):
        r = await stack.http.get(f"/v1/cases/{j.case_id}", headers=headers)
        assert r.status_code == 404 and r.json()["detail"] == "no such case"
        r = await stack.http.post(
            f"/v1/cases/{j.case_id}/steps/risk-assessment",
            json={"level": "low", "assessed_on": day(1)},
            headers=headers,
        )
        assert r.status_code == 404
        listed = (await stack.http.get("/v1/cases", headers=headers, params={"limit": 500})).json()["items"]
        assert j.case_id not in {c["case_id"] for c in listed}
    # Same answer as a case that does not exist at all: no leak of existence.
    r = await stack.http.get("/v1/cases/00000000-0000-0000-0000-000000000000", headers=j.cw)
    assert r.status_code == 404 and r.json()["detail"] == "no such case"
    # An unrestricted supervisor and the ES caseworker see it.
    assert (await stack.http.get(f"/v1/cases/{j.case_id}", headers=j.supervisor)).status_code == 200
    listed = (await stack.http.get("/v1/cases", headers=j.cw, params={"limit": 500})).json()["items"]
    assert j.case_id in {c["case_id"] for c in listed}
    assert all(c["owner"]["country"] == "ES" for c in listed)
    # A caseworker cannot open a case in a country outside their own.
    r = await stack.http.post("/v1/cases", json=case_body(country="FR"), headers=j.cw)
    assert r.status_code == 422


async def test_partners_see_only_their_agencys_tasks(stack):
    j = Journey(stack)
    await j.open()
    mine = await j.assign("shelter", "shelter-es")
    theirs = await j.assign("medical", "clinic-es")
    shelter = j.partner("shelter-es")
    r = await stack.http.get(f"/v1/tasks/{theirs['task_id']}", headers=shelter)
    assert r.status_code == 404
    r = await stack.http.post(f"/v1/tasks/{theirs['task_id']}/accept", json={}, headers=shelter)
    assert r.status_code == 404
    items = (await stack.http.get("/v1/tasks", headers=shelter, params={"limit": 500})).json()["items"]
    assert mine["task_id"] in {t["task_id"] for t in items}
    assert theirs["task_id"] not in {t["task_id"] for t in items}
    view = (await stack.http.get(f"/v1/tasks/{mine['task_id']}", headers=shelter)).json()
    assert "case_id" not in view and view["case_reference"] == j.case["reference"]
    assert "agency_id" not in view
    # Caseworkers of the case's country see both; another country's see neither.
    r = await stack.http.get(f"/v1/tasks/{theirs['task_id']}", headers=j.cw)
    assert r.status_code == 200 and r.json()["case_id"] == j.case_id
    other = stack.auth("caseworker", "cw-pt", countries=["PT"])
    assert (await stack.http.get(f"/v1/tasks/{theirs['task_id']}", headers=other)).status_code == 404


async def test_person_data_only_on_request(stack):
    j = Journey(stack)
    await j.open()
    case = await j.get()
    assert case["person"] is None and "Maria" not in str(case)
    case = await j.get(include="person")
    assert case["person"]["first_name"] == "Maria" and case["person"]["second_name"] == "Ionescu"


async def test_bad_input_is_a_clear_error_and_changes_nothing(stack):
    j = Journey(stack)
    cw = j.cw
    bad_bodies = [
        {},
        {**case_body(), "unknown": 1},
        {**case_body(), "origin_country": "Romania"},
        case_body(birthdate="not-a-date"),
        {**case_body(), "identification": {**case_body()["identification"], "exploitation_types": ["Bad"]}},
    ]
    before = len((await stack.http.get("/v1/cases", headers=j.supervisor, params={"limit": 500})).json()["items"])
    for body in bad_bodies:
        r = await stack.http.post("/v1/cases", json=body, headers=cw)
        assert r.status_code == 422, body
        problem = r.json()
        assert problem["status"] == 422 and problem["errors"]
        assert "Romania" not in r.text and "not-a-date" not in r.text  # submitted values are not echoed
    r = await stack.http.post("/v1/cases", content=b"{not json", headers={**cw, "content-type": "application/json"})
    assert r.status_code == 422
    after = len((await stack.http.get("/v1/cases", headers=j.supervisor, params={"limit": 500})).json()["items"])
    assert after == before

    await j.open()
    version = j.case["version"]
    for step, body in [
        ("risk-assessment", {"level": "extreme", "assessed_on": day(1)}),
        ("risk-assessment", {"level": "low"}),
        ("monitoring", {"visited_on": day(1), "economic": 2, "social": 0, "psychosocial": 0}),
    ]:
        r = await stack.http.post(f"/v1/cases/{j.case_id}/steps/{step}", json=body, headers=cw)
        assert r.status_code == 422, (step, r.text)
    r = await stack.http.post(f"/v1/cases/{j.case_id}/steps/teleport", json={}, headers=cw)
    assert r.status_code == 404
    r = await stack.http.post(
        f"/v1/cases/{j.case_id}/tasks", json={"service": "shelter", "agency_id": "nobody"}, headers=cw
    )
    assert r.status_code == 422 and "unknown agency" in r.json()["detail"]
    assert (await stack.http.get("/v1/cases", headers=cw, params={"cursor": "%%%"})).status_code == 422
    assert (await stack.http.get("/v1/cases", headers=cw, params={"limit": 501})).status_code == 422
    assert (await j.get())["version"] == version


async def test_etag_and_if_match(stack):
    j = Journey(stack)
    await j.open()
    r = await stack.http.get(f"/v1/cases/{j.case_id}", headers=j.cw)
    tag = r.headers["etag"]
    ok = await stack.http.post(
        f"/v1/cases/{j.case_id}/steps/risk-assessment",
        json={"level": "low", "assessed_on": day(1)},
        headers={**j.cw, "If-Match": tag},
    )
    assert ok.status_code == 200 and ok.headers["etag"] != tag
    stale = await stack.http.post(
        f"/v1/cases/{j.case_id}/steps/security-guarantee",
        json={"confirmed_on": day(2)},
        headers={**j.cw, "If-Match": tag},
    )
    assert stale.status_code == 412
    assert (await j.get())["stage"] == "protection"


async def test_pagination_walks_every_case_once(stack):
    j = Journey(stack, caseworker="cw-pages", countries=["PT"])
    ids = set()
    for _ in range(5):
        ids.add((await j.open(country="PT"))["case_id"])
    seen: list[str] = []
    cursor = None
    for _ in range(500):  # bounded: a cursor that does not move on fails here, never spins
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await stack.http.get("/v1/cases", headers=j.cw, params=params)).json()
        seen += [c["case_id"] for c in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert not cursor, f"still paging after {len(seen)} cases"
    assert len(seen) == len(set(seen)) and ids <= set(seen)


async def test_a_task_goes_to_the_services_default_agency_unless_one_is_named(stack):
    j = Journey(stack)
    await j.open()
    r = await stack.http.post(f"/v1/cases/{j.case_id}/tasks", json={"service": "medical"}, headers=j.cw)
    assert r.status_code == 201 and r.json()["agency_id"] == "clinic-es"
    r = await stack.http.post(
        f"/v1/cases/{j.case_id}/tasks", json={"service": "shelter", "agency_id": "clinic-es"}, headers=j.cw
    )
    assert r.status_code == 201 and r.json()["agency_id"] == "clinic-es"
    r = await stack.http.post(
        f"/v1/cases/{j.case_id}/tasks", json={"service": "medical", "agency_id": "shelter-es"}, headers=j.cw
    )
    assert r.status_code == 422 and r.json()["detail"] == "shelter-es does not offer medical"
    r = await stack.http.post(
        f"/v1/cases/{j.case_id}/tasks",
        json={"service": "psychosocial", "agency_id": "reintegration-partner-ro"},
        headers=j.cw,
    )
    assert r.status_code == 422 and "works in RO" in r.json()["detail"]
    await j.step("risk-assessment", {"level": "medium", "assessed_on": day(1)})
    await j.step(
        "safety-plan",
        {
            "agreed_on": day(1),
            "measures": [{"measure": "shelter placement", "service": "shelter"}, {"measure": "change of phone number"}],
        },
    )
    [shelter] = [t for t in j.case["open_tasks"] if t["safety_plan"]]
    assert shelter["agency_id"] == "shelter-es"
    await j.to_reintegration_by_residence_from_protection()
    r = await stack.http.post(f"/v1/cases/{j.case_id}/tasks", json={"service": "family"}, headers=j.cw)
    assert r.status_code == 422 and r.json()["detail"] == "no agency offers family in ES"
    r = await stack.http.post(f"/v1/cases/{j.case_id}/tasks", json={"service": "psychosocial"}, headers=j.cw)
    assert r.status_code == 422 and "one of clinic-es, shelter-es" in r.json()["detail"]


async def test_control_characters_and_odd_ids_are_422_never_500(stack):
    j = Journey(stack)
    await j.open()
    r = await stack.http.post(
        f"/v1/cases/{j.case_id}/tasks", json={"service": "shelter", "notes": "bed\x00now"}, headers=j.cw
    )
    assert r.status_code == 422
    r = await stack.http.post("/v1/cases", json=case_body(first_name="Ma\x00ria"), headers=j.cw)
    assert r.status_code == 422
    for path in ("/v1/cases/a%00b", "/v1/tasks/a%00b", "/v1/cases?caseworker=a%00b", "/v1/cases?agency=%00"):
        r = await stack.http.get(path, headers=j.supervisor)
        assert r.status_code in (404, 422), (path, r.status_code)
    r = await stack.http.post("/v1/cases", json=case_body(), headers={**j.cw, "Idempotency-Key": "bad key\x01"})
    assert r.status_code in (400, 422)


async def test_times_carry_their_zone_and_overdue_since_respects_it(stack):
    j = Journey(stack, caseworker="cw-tz", countries=["IT"])
    await j.open(country="IT")  # identified today: the risk assessment is due in 3 days
    case = await j.get()
    assert all(e["at"].endswith(("Z", "+00:00")) for e in case["timeline"])
    due = datetime.fromisoformat(case["open_steps"][0]["due_at"])
    ids = lambda r: {c["case_id"] for c in r.json()["items"]}  # noqa: E731
    after = (due + timedelta(minutes=30)).astimezone(timezone(timedelta(hours=2))).isoformat()
    before = (due - timedelta(minutes=30)).astimezone(timezone(timedelta(hours=-5))).isoformat()
    assert j.case_id in ids(await stack.http.get("/v1/cases", headers=j.cw, params={"overdue_since": after}))
    assert j.case_id not in ids(await stack.http.get("/v1/cases", headers=j.cw, params={"overdue_since": before}))
