"""Across borders (issue 15): the receiving caseworker reads the case and drafts the plan before
arrival, acting on nothing else; the sending office keeps reading it after the hand-over (the
person's details only with consent); transfers to another country's office, accepted or refused;
statistics by the identifying and the owning country."""

from __future__ import annotations

from sqlmodel import Session, col, select

from reintegration.db import UserNotificationRecord
from tests.journey import Journey, day


async def read(stack, case_id: str, headers, **params):
    return await stack.http.get(f"/v1/cases/{case_id}", headers=headers, params=params)


async def test_the_receiving_caseworker_prepares_before_arrival_and_the_sending_office_keeps_reading(stack):
    j = Journey(stack, caseworker="cw-es-x1")
    await j.open(consent=False)
    await j.step("consent", {"assistance": True, "data_sharing": False, "given_on": day(0)})
    await j.through_protection()
    await j.step("pathway", {"pathway": "voluntary_return", "decided_on": day(3)})
    other_ro = stack.auth("caseworker", "cw-ro-other", countries=["RO"])
    assert (await read(stack, j.case_id, j.cw_origin)).status_code == 404  # not named yet
    await j.deliver("origin-assessment", "origin-office-ro", assessment="safe")
    await j.deliver("travel-documents", "consulate-ro")
    await j.step(
        "travel-plan", {"travel_date": day(10), "route": "MAD-OTP", "escort": True, "receiving_caseworker": "cw-ro-1"}
    )

    # Before arrival: the receiving caseworker reads the case and drafts the plan; nothing else.
    r = await read(stack, j.case_id, j.cw_origin)
    assert r.status_code == 200 and r.json()["access"] == "receiving" and r.json()["timeline"]
    assert (await read(stack, j.case_id, j.cw_origin, include="person")).status_code == 403  # no consent to share
    assert (await read(stack, j.case_id, other_ro)).status_code == 404
    await j.step("departure", {"departed_on": day(10)}, headers=j.cw_origin, expect=404)
    r = await stack.http.post(
        f"/v1/cases/{j.case_id}/tasks",
        json={"service": "reception", "agency_id": "origin-office-ro"},
        headers=j.cw_origin,
    )
    assert r.status_code == 404
    draft = {"services": [{"service": "medical"}, {"service": "job-orientation"}], "notes": "training first"}
    r = await stack.http.put(f"/v1/cases/{j.case_id}/plan-draft", json=draft, headers=j.cw_origin)
    assert r.status_code == 200 and r.json()["version"] == 1 and r.json()["notes"] == "training first"
    r = await stack.http.put(
        f"/v1/cases/{j.case_id}/plan-draft", json={"services": [{"service": "x"}]}, headers=j.cw_origin
    )
    assert r.status_code == 422
    r = await stack.http.get(f"/v1/cases/{j.case_id}/plan-draft", headers=j.cw)  # the owning office sees it
    assert r.status_code == 200 and [s["service"] for s in r.json()["services"]] == ["medical", "job-orientation"]
    work = (await stack.http.get("/v1/me/worklist", headers=j.cw_origin, params={"why": "plan-to-draft"})).json()
    assert j.case_id in {i["case_id"] for i in work["items"]}

    # The arrival hands the case over: the receiving office owns it, the sending one reads it.
    await j.step("departure", {"departed_on": day(10)})
    await j.deliver("reception", "origin-office-ro", arrived_on=day(10))
    r = await read(stack, j.case_id, j.cw_origin)
    assert r.json()["access"] == "owner" and r.json()["owner"] == {"country": "RO", "caseworker": "cw-ro-1"}
    r = await read(stack, j.case_id, j.cw)
    assert r.status_code == 200 and r.json()["access"] == "sending"
    assert [e for e in r.json()["timeline"] if e["name"] == "handed-over"]
    assert (await read(stack, j.case_id, j.cw, include="person")).status_code == 403
    await j.step("monitoring", {"visited_on": day(20), "economic": 1, "social": 1, "psychosocial": 1}, expect=404)
    r = await stack.http.put(f"/v1/cases/{j.case_id}/plan-draft", json=draft, headers=j.cw)
    assert r.status_code == 403
    work = (await stack.http.get("/v1/me/worklist", headers=j.cw_origin, params={"why": "plan-to-draft"})).json()
    assert j.case_id not in {i["case_id"] for i in work["items"]}


async def test_the_sending_office_reads_the_persons_details_only_with_consent(stack):
    j = Journey(stack, caseworker="cw-es-x2")
    await j.open()  # consent to share data given
    await j.to_reintegration_by_return()
    r = await read(stack, j.case_id, stack.auth("caseworker", "cw-es-x2", countries=["ES"]), include="person")
    assert r.status_code == 200 and r.json()["access"] == "sending" and r.json()["person"]["first_name"] == "Maria"


async def test_a_case_is_transferred_to_another_countrys_office_which_accepts_or_refuses(stack):
    j = Journey(stack, caseworker="cw-es-x3")
    await j.open()
    task = await j.assign("shelter", "shelter-es")
    pt = stack.auth("caseworker", "cw-pt-x3", countries=["PT"])
    fr_sup = stack.auth("supervisor", "sup-fr-x3", countries=["FR"])
    stack.token("caseworker", "cw-fr-x3", countries=["FR"])
    path = f"/v1/cases/{j.case_id}/transfers"
    for body, status in (
        ({"to_country": "ES", "reason": "x"}, 422),  # to itself
        ({"to_country": "PT", "to_caseworker": "nobody-x3", "reason": "x"}, 422),
        ({"to_country": "PT", "to_caseworker": "cw-es-x3", "reason": "x"}, 422),  # not of PT
        ({"to_country": "PT"}, 422),  # no reason
        ({"to_country": "Portugal", "reason": "x"}, 422),
    ):
        r = await stack.http.post(path, json=body, headers=j.cw)
        assert r.status_code == status, (body, r.text)
    assert (await stack.http.post(path, json={"to_country": "PT", "reason": "x"}, headers=pt)).status_code == 404
    assert (await read(stack, j.case_id, pt)).status_code == 404  # nothing offered yet

    r = await stack.http.post(
        path, json={"to_country": "PT", "to_caseworker": "cw-pt-x3", "reason": "moved to Porto"}, headers=j.cw
    )
    assert r.status_code == 201, r.text
    offer = r.json()
    assert (offer["status"], offer["from_country"], offer["reason"]) == ("pending", "ES", "moved to Porto")
    r = await stack.http.post(path, json={"to_country": "FR", "reason": "x"}, headers=j.cw)
    assert r.status_code == 409  # one pending at a time

    # The receiving office reads the case and has it in its worklist, and acts on nothing else.
    r = await read(stack, j.case_id, pt)
    assert r.status_code == 200 and r.json()["access"] == "offered"
    assert all(t["notes"] == "" for t in r.json()["open_tasks"])
    draft = {"services": [{"service": "medical"}]}
    r = await stack.http.put(f"/v1/cases/{j.case_id}/plan-draft", json=draft, headers=pt)
    assert r.status_code == 403  # offered, not taken: no draft yet
    await j.step("risk-assessment", {"level": "low", "threats": [], "assessed_on": day(1)}, headers=pt, expect=404)
    work = (await stack.http.get("/v1/me/worklist", headers=pt, params={"why": "transfer-to-accept"})).json()
    assert offer["transfer_id"] and j.case_id in {i["case_id"] for i in work["items"]}
    incoming = (await stack.http.get("/v1/transfers", headers=pt, params={"status": "pending"})).json()["items"]
    assert offer["transfer_id"] in {t["transfer_id"] for t in incoming}
    accept = f"/v1/transfers/{offer['transfer_id']}/accept"
    assert (await stack.http.post(accept, json={}, headers=j.cw)).status_code == 403  # the sender cannot
    assert (await stack.http.post(accept, json={}, headers=fr_sup)).status_code == 404  # not theirs

    r = await stack.http.post(accept, json={}, headers=pt)
    assert r.status_code == 200, r.text
    assert r.json()["owner"] == {"country": "PT", "caseworker": "cw-pt-x3"} and r.json()["access"] == "owner"
    again = await stack.http.post(accept, json={}, headers=pt)  # her own acceptance again: the same answer
    assert again.status_code == 200 and again.json()["owner"] == r.json()["owner"]
    pt_other = stack.auth("caseworker", "cw-pt-x3b", countries=["PT"])
    assert (await stack.http.post(accept, json={}, headers=pt_other)).status_code == 409  # answered already
    r = await read(stack, j.case_id, j.cw)
    assert r.json()["access"] == "sending" and [e for e in r.json()["timeline"] if e["name"] == "transferred"]
    # The case's tasks moved with it: the new office's to act on, no longer the old one's.
    assert (await stack.http.get(f"/v1/tasks/{task['task_id']}", headers=pt)).status_code == 200
    assert (await stack.http.get(f"/v1/tasks/{task['task_id']}", headers=j.cw)).status_code == 404
    r = await stack.http.get(f"/v1/transfers/{offer['transfer_id']}", headers=j.cw)
    assert (r.json()["status"], r.json()["decided_by"], r.json()["to_caseworker"]) == (
        "accepted",
        "cw-pt-x3",
        "cw-pt-x3",
    )
    await j.step("risk-assessment", {"level": "low", "threats": [], "assessed_on": day(1)}, expect=404)
    await j.step("risk-assessment", {"level": "low", "threats": [], "assessed_on": day(1)}, headers=pt)

    # Offered on to France, refused there with a reason: nothing moves, the asker is told.
    r = await stack.http.post(path, json={"to_country": "FR", "reason": "family in Lyon"}, headers=pt)
    assert r.status_code == 201, r.text
    onward = r.json()
    refuse = f"/v1/transfers/{onward['transfer_id']}/refuse"
    assert (await stack.http.post(refuse, json={}, headers=fr_sup)).status_code == 422
    r = await stack.http.post(refuse, json={"reason": "no partner in Lyon yet"}, headers=fr_sup)
    assert r.status_code == 200 and (r.json()["status"], r.json()["refusal"]) == ("refused", "no partner in Lyon yet")
    r = await stack.http.post(
        f"/v1/transfers/{onward['transfer_id']}/accept", json={"caseworker": "cw-fr-x3"}, headers=fr_sup
    )
    assert r.status_code == 409
    assert (await read(stack, j.case_id, pt)).json()["owner"]["country"] == "PT"
    assert (await read(stack, j.case_id, fr_sup)).status_code == 404  # refused: no access
    r = await stack.http.get(f"/v1/transfers/{onward['transfer_id']}", headers=fr_sup)
    assert (r.json()["status"], r.json()["reason"], r.json()["refusal"]) == ("refused", "", "")  # not its to keep

    # Offered again, then withdrawn by the offering office before any answer.
    r = await stack.http.post(path, json={"to_country": "FR", "reason": "family in Lyon"}, headers=pt)
    again = r.json()
    withdraw = f"/v1/transfers/{again['transfer_id']}/withdraw"
    assert (await stack.http.post(withdraw, headers=fr_sup)).status_code == 403  # the receiving side cannot
    r = await stack.http.post(withdraw, headers=pt)
    assert r.status_code == 200 and r.json()["status"] == "withdrawn"
    assert (
        await stack.http.post(f"/v1/transfers/{again['transfer_id']}/refuse", json={"reason": "x"}, headers=fr_sup)
    ).status_code == 409
    assert (await read(stack, j.case_id, fr_sup)).status_code == 404
    with Session(stack.engine) as session:
        told = session.exec(
            select(UserNotificationRecord.user_id, UserNotificationRecord.kind).where(
                col(UserNotificationRecord.case_id) == j.case_id
            )
        ).all()
    assert ("cw-pt-x3", "case.transfer-requested") in told
    assert ("cw-pt-x3", "case.transfer-refused") in told
    assert ("cw-es-x3", "case.transferred") in told  # the sending caseworker is told the case left

    # Statistics: the case counts for the country that identified it and the one that owns it.
    summary = (await stack.http.get("/v1/supervision/summary", headers=stack.auth("supervisor", "sup-all-x3"))).json()
    assert summary["by_identifying_country"]["ES"] >= 1 and summary["by_country"]["PT"] >= 1
    es_only = stack.auth("supervisor", "sup-es-x3", countries=["ES"])
    summary = (await stack.http.get("/v1/supervision/summary", headers=es_only)).json()
    assert "PT" not in summary["by_country"] and summary["by_identifying_country"]["ES"] >= 1
