"""A caseworker, a supervisor and partners driving journeys through the HTTP API, for the tests."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import httpx

from tests.conftest import Stack

TODAY = date.today()


def day(offset: int) -> str:
    return (TODAY + timedelta(days=offset)).isoformat()


def case_body(
    *,
    country: str = "ES",
    origin: str = "RO",
    birthdate: str = "1998-03-14",
    consent: bool = True,
    confirm_new: bool = True,
    **person: Any,
) -> dict[str, Any]:
    """An opening of a case for the same person each time unless told otherwise, so opened over the
    possible duplicates (``confirm_new``) unless ``confirm_new=False`` (tests/test_person_search.py)."""
    body: dict[str, Any] = {
        "person": {
            "first_name": "Maria",
            "second_name": "Ionescu",
            "birthdate": birthdate,
            "gender": "Feminine",
            "citizenship": [origin],
            "primary_language": "ro",
            **person,
        },
        "identification": {
            "identified_on": day(0),
            "country": country,
            "place": "Madrid",
            "referred_by": "LawEnforcement",
            "exploitation_types": ["ForcedLabour"],
        },
        "origin_country": origin,
    }
    if consent:
        body["consent"] = {"assistance": True, "data_sharing": True, "given_on": day(0)}
    if confirm_new:
        body["confirm_new"] = True
    return body


class Journey:
    """Drives one case; every call asserts the HTTP status it expects."""

    def __init__(self, stack: Stack, *, caseworker: str = "cw-es-1", countries: list[str] | None = None) -> None:
        self.stack = stack
        self.http: httpx.AsyncClient = stack.http
        self.cw = stack.auth("caseworker", caseworker, countries=countries or ["ES"])
        self.cw_origin = stack.auth("caseworker", "cw-ro-1", countries=["RO"])
        self.supervisor = stack.auth("supervisor", "sup-1")
        self.case_id: str = ""
        self.case: dict[str, Any] = {}

    def partner(self, agency: str) -> dict[str, str]:
        return self.stack.auth("partner", f"partner-{agency}", agency=agency)

    async def open(self, expect: int = 201, **kw: Any) -> dict[str, Any]:
        r = await self.http.post("/v1/cases", json=case_body(**kw), headers=self.cw)
        assert r.status_code == expect, r.text
        self.case = r.json()
        self.case_id = self.case.get("case_id", "")
        return self.case

    async def step(self, step: str, body: dict[str, Any], *, expect: int = 200, headers: dict | None = None) -> dict:
        r = await self.http.post(f"/v1/cases/{self.case_id}/steps/{step}", json=body, headers=headers or self.cw)
        assert r.status_code == expect, f"{step}: {r.status_code} {r.text}"
        if expect == 200:
            self.case = r.json()
        return r.json()

    async def get(self, headers: dict | None = None, **params: str) -> dict[str, Any]:
        r = await self.http.get(f"/v1/cases/{self.case_id}", headers=headers or self.cw, params=params)
        assert r.status_code == 200, r.text
        self.case = r.json()
        return self.case

    async def assign(self, service: str, agency: str, *, expect: int = 201, headers: dict | None = None) -> dict:
        r = await self.http.post(
            f"/v1/cases/{self.case_id}/tasks",
            json={"service": service, "agency_id": agency},
            headers=headers or self.cw,
        )
        assert r.status_code == expect, f"assign {service}: {r.status_code} {r.text}"
        return r.json()

    async def task_action(
        self, task_id: str, agency: str, action: str, body: dict | None = None, *, expect: int = 200
    ) -> dict:
        r = await self.http.post(f"/v1/tasks/{task_id}/{action}", json=body or {}, headers=self.partner(agency))
        assert r.status_code == expect, f"{action}: {r.status_code} {r.text}"
        return r.json()

    async def deliver(self, service: str, agency: str, **complete: Any) -> dict:
        """Assign a task, and the agency accepts and completes it."""
        task = await self.assign(service, agency)
        await self.task_action(task["task_id"], agency, "accept")
        return await self.task_action(task["task_id"], agency, "complete", {"outcome": "done", **complete})

    async def through_protection(self, *, level: str = "low") -> None:
        await self.step("risk-assessment", {"level": level, "threats": [], "assessed_on": day(1)})
        await self.step("security-guarantee", {"confirmed_on": day(2)})
        assert self.case["stage"] == "pathway"

    async def to_reintegration_by_return(self) -> None:
        await self.through_protection()
        await self.to_reintegration_by_return_from_pathway()

    async def to_return(self, *, assessment: str | None = None, documents: bool = False) -> None:
        """Opened, protected, voluntary return chosen; optionally an origin assessment and documents."""
        await self.open()
        await self.through_protection()
        await self.step("pathway", {"pathway": "voluntary_return", "decided_on": day(3)})
        if assessment:
            await self.deliver("origin-assessment", "origin-office-ro", assessment=assessment)
        if documents:
            await self.deliver("travel-documents", "consulate-ro")

    async def to_reintegration_by_return_from_pathway(self) -> None:
        await self.step("pathway", {"pathway": "voluntary_return", "decided_on": day(3)})
        assert self.case["stage"] == "return"
        await self.deliver("origin-assessment", "origin-office-ro", assessment="safe")
        await self.deliver("travel-documents", "consulate-ro")
        await self.step(
            "travel-plan",
            {"travel_date": day(10), "route": "MAD-OTP", "escort": True, "receiving_caseworker": "cw-ro-1"},
        )
        await self.step("departure", {"departed_on": day(10)})
        await self.deliver("reception", "origin-office-ro", arrived_on=day(10))
        self.cw = self.cw_origin  # the case now belongs to the country of origin

    async def to_reintegration_by_residence(self) -> None:
        await self.through_protection()
        await self.to_reintegration_by_residence_from_pathway()

    async def to_reintegration_by_residence_from_protection(self) -> None:
        """From a protection stage whose safety-plan tasks are still open."""
        for task in list(self.case["open_tasks"]):
            await self.task_action(task["task_id"], task["agency_id"], "accept")
            await self.task_action(task["task_id"], task["agency_id"], "complete", {"outcome": "done"})
        await self.step("security-guarantee", {"confirmed_on": day(2)})
        await self.to_reintegration_by_residence_from_pathway()

    async def to_reintegration_by_residence_from_pathway(self) -> None:
        await self.step("pathway", {"pathway": "residence", "decided_on": day(3)})
        await self.deliver("legal-assistance", "legal-aid-es")
        await self.step(
            "residence-application",
            {"filed_on": day(5), "permit_type": "victim-of-trafficking", "authority_reference": "EXT-1"},
        )
        await self.step("residence-decision", {"decision": "granted", "decided_on": day(40), "valid_until": day(400)})

    async def through_reintegration_to_closure(self, *, approve: bool = True) -> None:
        await self.get()
        agency = "reintegration-partner-ro" if self.case["owner"]["country"] == "RO" else "clinic-es"
        await self.step(
            "reintegration-plan",
            {
                "agreed_on": day(20),
                "services": [
                    {"service": "medical", "agency_id": agency},
                    {"service": "job-orientation", "agency_id": agency},
                ],
            },
        )
        for task in list(self.case["open_tasks"]):
            await self.task_action(task["task_id"], task["agency_id"], "accept")
            await self.task_action(task["task_id"], task["agency_id"], "complete", {"outcome": "done"})
        for offset in (110, 200, 380):
            await self.step(
                "monitoring", {"visited_on": day(offset), "economic": 0.7, "social": 0.8, "psychosocial": 0.9}
            )
        await self.step("closure", {"reason": "completed"})
        assert self.case["allowed_steps"] == ["approve-closure", "reject-closure", "withdraw-consent"]
        if approve:
            await self.step("approve-closure", {}, headers=self.supervisor)
