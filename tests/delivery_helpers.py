"""A partner simulator registered as a fresh agency, for the tests and the benchmark."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from reintegration.partner_sim import SimulatorConfig, SimulatorStats, create_simulator
from tests.conftest import served

SIMULATORS: dict[str, SimulatorConfig] = {}  # agency -> its live configuration, for benchmarks to change
SECRET = "webhook-secret-for-the-tests-0123456789"


@asynccontextmanager
async def simulator(
    stack,
    *,
    services: list[str],
    country: str = "ES",
    secret: str = SECRET,
    registered_secret: str | None = None,
    **options,
) -> AsyncIterator[tuple[str, SimulatorStats]]:
    """A fresh agency in the registry whose webhook is a running partner simulator."""
    agency = f"sim-{uuid.uuid4().hex[:8]}"
    token = stack.token("partner", f"partner-{agency}", agency=agency)
    config = SimulatorConfig(
        agencies=[agency], secret=secret, api_url=stack.base_url, tokens={agency: token}, **options
    )
    app, stats = create_simulator(config)
    SIMULATORS[agency] = config
    async with served(app) as url:
        r = await stack.http.post(
            "/v1/agencies",
            headers=stack.auth("admin", "admin-1"),
            json={
                "agency_id": agency,
                "name": "Simulated agency",
                "org_type": "NGO",
                "country": country,
                "services": services,
                "webhook_url": f"{url}/webhook/{agency}",
                "webhook_secret": registered_secret or secret,
            },
        )
        assert r.status_code == 201, r.text
        if registered_secret in (None, secret):  # the simulator confirms the address with its token
            await until(lambda: stats.confirmed, what="the webhook address confirmed")
        try:
            yield agency, stats
        finally:
            # Unhook the agency so that no delivery keeps retrying against a stopped simulator.
            await stack.http.patch(
                f"/v1/agencies/{agency}", json={"webhook_url": None}, headers=stack.auth("admin", "admin-1")
            )


async def until(condition, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
