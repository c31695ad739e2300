"""Schemathesis against the running system: every operation of ``/openapi.json``, as each role.

The document is loaded over HTTP from the app under test. For each role and each operation,
schemathesis makes requests from the operation's own description, in its three phases:

- examples: the documented examples, as they stand and aimed at a seeded case, task or agency;
- fuzzing: drawn valid data (``positive``) and data that breaks the description (``negative``), a
  fixed number of each, seeded per role and operation; where the path names a case, task or agency,
  some more aimed at the seeded one so that the requests get past ``404``;
- coverage: schemathesis's deterministic boundary cases (lengths, limits, types, nulls, missing
  parts, methods the path does not have), for the operations open to the role.

Every response must be no ``5xx`` and must match the document: a documented status, content type,
headers and body. Requests are made from a thread with ``requests`` (schemathesis's transport) while
the event loop serves the API and runs the worker.

The inputs behind the run's findings, and a few near them it does not draw, are pinned afterwards
on both databases (PostgreSQL refuses a NUL byte where SQLite takes it).
"""

from __future__ import annotations

import asyncio
import base64
import time
import zlib
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, Verbosity, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import Stack, running_stack
from tests.journey import Journey, day

# Fuzzing, per role and operation: this many drawn cases of each kind, and this many valid ones
# aimed at the seeded resources where the path names one (invalid data is refused before any lookup,
# so aiming it adds nothing). Drawing, not sending, is most of the run's time (the suite's largest
# single test: 4, 4 and 3 took 65-92 s of the 15 minutes the whole suite may take on 2 cores; the
# coverage phase below still sends every operation's boundary cases).
DRAWN = {GenerationMode.POSITIVE: 3, GenerationMode.NEGATIVE: 3}
AIMED = {GenerationMode.POSITIVE: 2}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]

FUZZ_AGENCY = "fuzz-agency-es"  # the admin's PATCHes land here, not on an agency with tasks


@dataclass(frozen=True)
class Caller:
    role: str
    sub: str
    agency: str | None = None
    countries: list[str] | None = None


CALLERS = [
    Caller("caseworker", "cw-fuzz", countries=["ES"]),
    Caller("supervisor", "sup-fuzz"),
    Caller("partner", "partner-fuzz", agency="shelter-es"),
    Caller("admin", "admin-fuzz"),
]


@dataclass
class Tally:
    operations: set[str] = field(default_factory=set)
    covered: set[str] = field(default_factory=set)  # operations that had their coverage phase
    requests: Counter = field(default_factory=Counter)  # by (role, phase)
    statuses: Counter = field(default_factory=Counter)  # by (role, status)
    unsent: Counter = field(default_factory=Counter)  # drawn requests the client refused to send, by why
    findings: dict[tuple[str, str, str], str] = field(default_factory=dict)  # (role, operation, title): report

    def record(self, role: str, label: str, title: str, report: str) -> None:
        self.findings.setdefault((role, label, title), report)

    def by(self, index: int) -> dict[str, int]:
        totals: Counter = Counter()
        for key, count in self.requests.items():
            totals[key[index]] += count
        return dict(totals)

    def summary(self) -> str:
        """One line per finding (with the roles that met it), then one full report of each."""
        roles: dict[tuple[str, str], list[str]] = {}
        for role, label, title in self.findings:
            roles.setdefault((label, title), []).append(role)
        lines = [f"{label}: {title} ({', '.join(r)})" for (label, title), r in sorted(roles.items())]
        reports = [
            f"--- {label}: {title}\n{self.findings[(r[0], label, title)]}"
            for (label, title), r in sorted(roles.items())
        ]
        return "\n".join([f"{len(lines)} findings:", *lines, "", *reports])


@pytest.fixture(scope="module")
async def fuzzed(temporal_env, tmp_path_factory) -> AsyncIterator[Stack]:
    # Rate limits out of the way: the run is thousands of requests from four subjects.
    async with running_stack(
        "sqlite",
        temporal_env,
        tmp_path_factory.mktemp("schemathesis"),
        rate_limit_per_minute=1_000_000,
        rate_limit_burst=100_000,
    ) as s:
        yield s


async def seed_agency(stack: Stack) -> None:
    """An agency of the run's own, so that the admin's PATCHes change no agency with tasks."""
    r = await stack.http.post(
        "/v1/agencies",
        headers=stack.auth("admin", "admin-fuzz"),
        json={
            "agency_id": FUZZ_AGENCY,
            "name": "Agency for the schemathesis run",
            "org_type": "NGO",
            "country": "ES",
            "services": ["housing"],
        },
    )
    assert r.status_code == 201, r.text


async def seed_case(stack: Stack) -> dict[str, str]:
    """A fresh case of the fuzzing caseworker with a task for the partner's agency: the ids aimed at."""
    j = Journey(stack, caseworker="cw-fuzz")
    await j.open()
    task = await j.assign("shelter", "shelter-es")
    return {"case_id": j.case_id, "task_id": task["task_id"], "agency_id": FUZZ_AGENCY}


class OperationRun:
    """One role's requests to one operation, each response checked against the document."""

    def __init__(
        self,
        operation: Any,
        *,
        caller: Caller,
        headers: dict[str, str],
        base_url: str,
        ids: dict[str, str],
        session: requests.Session,
        tally: Tally,
    ) -> None:
        self.operation, self.caller, self.headers, self.base_url = operation, caller, headers, base_url
        self.session, self.tally = session, tally
        self.label = operation.label
        self.path_ids = {name: ids[name] for name in ids if f"{{{name}}}" in operation.path}
        self.drawn_positive: Counter = Counter()  # statuses of the drawn valid requests

    def run(self, *, coverage: bool) -> None:
        """Examples and fuzzing; then coverage, if asked and the operation is open to the role."""
        self.tally.operations.add(self.label)
        for example in self.operation.get_strategies_from_examples():
            self.draw(example, 1, "example")
            if self.path_ids:
                self.draw(example, 1, "example", aimed=True)
        for mode, count in DRAWN.items():
            self.draw(self.operation.as_strategy(generation_mode=mode), count, mode.value)
        if self.path_ids:
            for mode, count in AIMED.items():
                self.draw(
                    self.operation.as_strategy(generation_mode=mode, path_parameters=self.path_ids),
                    count,
                    mode.value,
                    aimed=True,
                )
        # An operation closed to the role refuses every request by role before it looks at the data:
        # its boundary cases would prove the same 403 again.
        if coverage and set(self.drawn_positive) != {403}:
            self.cover()
            self.tally.covered.add(self.label)

    def draw(self, strategy: st.SearchStrategy, count: int, kind: str, *, aimed: bool = False) -> None:
        @settings(
            max_examples=count,
            database=None,
            deadline=None,
            derandomize=False,
            verbosity=Verbosity.quiet,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=strategy)
        def test(case: Any) -> None:
            if aimed:
                case.path_parameters = {**case.path_parameters, **self.path_ids}
            status = self.call(case, "examples" if kind == "example" else "fuzzing")
            if kind == GenerationMode.POSITIVE.value and not aimed and status is not None:
                self.drawn_positive[status] += 1

        seed = zlib.crc32(f"{self.caller.role} {self.label} {kind} {aimed}".encode())
        try:
            hypothesis.seed(seed)(test)()
        except hypothesis.errors.Unsatisfiable:
            pass  # nothing in this operation to break (no parameters and no body)

    def cover(self) -> None:
        schema = self.operation.schema
        config = schema.config.generation_for(operation=self.operation, phase="coverage")
        for case in schema.iter_coverage_cases(
            self.operation,
            generation_config=config,
            generation_modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
        ):
            if self.path_ids and case.meta.generation.mode == GenerationMode.POSITIVE:
                case.path_parameters = {**case.path_parameters, **self.path_ids}
            self.call(case, "coverage")

    def call(self, case: Any, phase: str) -> int | None:
        try:
            response = case.call(base_url=self.base_url, session=self.session, headers=self.headers, timeout=60)
        except (requests.exceptions.InvalidHeader, requests.exceptions.InvalidURL, UnicodeError) as exc:
            self.tally.unsent[type(exc).__name__] += 1
            return None  # a request the client library refuses to send (e.g. a NUL byte in a header)
        role = self.caller.role
        self.tally.requests[(role, phase)] += 1
        self.tally.statuses[(role, response.status_code)] += 1
        try:
            case.validate_response(response, checks=CHECKS, headers=self.headers)
        except schemathesis.errors.FailureGroup as group:
            for failure in group.exceptions:
                self.tally.record(role, self.label, f"{failure.title} ({response.status_code})", str(group))
        return response.status_code


def run_role(operations: list[Any], *, caller: Caller, stack: Stack, ids: dict[str, str], tally: Tally) -> None:
    token = stack.token(caller.role, caller.sub, agency=caller.agency, countries=caller.countries)
    with requests.Session() as session:
        for operation in operations:
            # The boundary cases test validation, which is the same for every role the operation is
            # open to: the first such role (in CALLERS' order) runs them.
            OperationRun(
                operation,
                caller=caller,
                headers={"Authorization": f"Bearer {token}"},
                base_url=stack.base_url,
                ids=ids,
                session=session,
                tally=tally,
            ).run(coverage=operation.label not in tally.covered)


@pytest.mark.schemathesis
async def test_every_operation_as_every_role_matches_the_document(fuzzed: Stack):
    await seed_agency(fuzzed)
    schema = await asyncio.to_thread(
        schemathesis.openapi.from_url, f"{fuzzed.base_url}/openapi.json", config=schemathesis.Config()
    )
    operations = [result.ok() for result in schema.get_all_operations()]
    tally = Tally()
    started = time.monotonic()
    for caller in CALLERS:
        # Each role meets a case and a task untouched by the roles before it (a caseworker may cancel
        # the task, an admin erase the case).
        ids = await seed_case(fuzzed)
        await asyncio.to_thread(run_role, operations, caller=caller, stack=fuzzed, ids=ids, tally=tally)
    elapsed = time.monotonic() - started
    print(
        f"\nschemathesis: {len(tally.operations)} operations, {sum(tally.requests.values())} requests in "
        f"{elapsed:.0f} s; by role {tally.by(0)}; by phase {tally.by(1)}"
    )
    print("statuses:", sorted(tally.statuses.items()), "not sent:", dict(tally.unsent))
    assert len(tally.operations) >= 40
    assert tally.covered == tally.operations  # every operation is open to one of the roles
    assert all(tally.by(0).get(c.role) for c in CALLERS)
    assert not tally.findings, tally.summary()


def b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


async def test_the_inputs_behind_its_findings_are_refused_as_documented(stack: Stack):
    j = Journey(stack, caseworker="cw-odd-input")
    await j.open()
    admin = stack.auth("admin", "admin-odd-input")
    refused = [
        # A body that is not UTF-8: the framework's 400, which the contract does not have.
        await stack.http.post(
            f"/v1/cases/{j.case_id}/steps/risk-assessment",
            content=b"\xff\xfe{",
            headers={**j.cw, "Content-Type": "application/json"},
        ),
        # An explicit null for a field an agency cannot be without: was a database error.
        await stack.http.patch("/v1/agencies/shelter-es", json={"name": None}, headers=admin),
        await stack.http.patch("/v1/agencies/shelter-es", json={"active": None}, headers=admin),
        # Times with no UTC equivalent: was an OverflowError.
        await stack.http.get("/v1/cases", params={"overdue_since": "0001-01-01T00:00:00+14:00"}, headers=j.supervisor),
        await stack.http.get("/v1/cases", params={"overdue_since": "9999-12-31T23:59:59-14:00"}, headers=j.supervisor),
        # A forged cursor whose key holds a NUL byte: PostgreSQL refused the query.
        *[
            await stack.http.get(path, params={"cursor": b64(f"{day(0)}T00:00:00+00:00|\x00")}, headers=j.supervisor)
            for path in ("/v1/cases", "/v1/tasks", "/v1/supervision/stalled")
        ],
    ]
    for r in refused:
        assert (r.status_code, r.headers["content-type"]) == (422, "application/problem+json"), (r.request.url, r.text)
    assert (await stack.http.get("/v1/agencies/shelter-es", headers=admin)).json()["name"]
    # And the document says so: every 422 is a problem, as sent.
    document = (await stack.http.get("/openapi.json")).json()
    for item in document["paths"].values():
        for operation in item.values():
            if "422" in operation["responses"]:
                assert list(operation["responses"]["422"]["content"]) == ["application/problem+json"]
    assert "HTTPValidationError" not in document["components"]["schemas"]
