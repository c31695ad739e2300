"""Whole journeys through the HTTP API on a real Temporal server and a real database."""

from __future__ import annotations

from tests.journey import Journey


async def test_voluntary_return_from_opening_to_closure(stack):
    j = Journey(stack)
    case = await j.open()
    assert case["stage"] == "protection"  # consent given on opening
    assert case["status"] == "active" and case["owner"] == {"country": "ES", "caseworker": "cw-es-1"}
    assert "risk-assessment" in case["allowed_steps"]
    await j.to_reintegration_by_return()
    case = await j.get()
    assert case["stage"] == "reintegration"
    assert case["owner"] == {"country": "RO", "caseworker": "cw-ro-1"}  # handed over on reception
    await j.through_reintegration_to_closure()
    assert j.case["stage"] == "closed" and j.case["status"] == "closed"
    assert j.case["htcds_status"] == "Closed" and j.case["closure_reason"] == "completed"
    names = [e["name"] for e in j.case["timeline"]]
    assert names[0] == "opened" and "handed-over" in names and names[-1] == "closed"


async def test_residence_from_opening_to_closure(stack):
    j = Journey(stack)
    await j.open()
    await j.to_reintegration_by_residence()
    assert j.case["stage"] == "reintegration" and j.case["owner"]["country"] == "ES"
    await j.through_reintegration_to_closure()
    assert j.case["status"] == "closed"
