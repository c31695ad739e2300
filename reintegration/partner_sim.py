"""A partner simulator: a real HTTP server that plays one or more partner agencies.

It receives task deliveries on ``POST /webhook/<agency_id>``, verifies their signatures, drops
repeated idempotency keys (and counts them), can fail the first N deliveries or answer slowly, and
after a delay accepts and completes each task through the API with its own partner token. It
confirms a new webhook address as an agency's system would: it gives the challenge of a signed
``webhook.verification`` back through the API, and keeps each ``webhook.changing`` notice.
``GET /stats`` tells what it saw. Run it with ``reintegration partner-sim`` (see the README).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import httpx
import structlog
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

log = structlog.get_logger("partner-sim")

MAX_SKEW_SECONDS = 300


@dataclass
class SimulatorConfig:
    agencies: list[str]
    secret: str
    fail_first: int = 0
    slow_seconds: float = 0.0
    reject_status: int | None = None
    act_after: float | None = None
    api_url: str = "http://127.0.0.1:8000"
    tokens: dict[str, str] = field(default_factory=dict)  # agency -> partner bearer token


@dataclass
class SimulatorStats:
    received: Counter[str] = field(default_factory=Counter)  # idempotency key -> deliveries seen
    events: list[dict[str, Any]] = field(default_factory=list)  # first delivery of each key
    bad_signatures: int = 0
    failed_on_purpose: int = 0
    acted: list[str] = field(default_factory=list)
    act_errors: list[str] = field(default_factory=list)
    received_at: dict[str, float] = field(default_factory=dict)  # key -> time of first receipt
    confirmed: list[str] = field(default_factory=list)  # verification ids confirmed through the API
    notices: list[dict[str, Any]] = field(default_factory=list)  # webhook.changing notices received

    def as_dict(self) -> dict[str, Any]:
        return {
            "unique_keys": len(self.received),
            "repeats": sum(n - 1 for n in self.received.values()),
            "received": dict(self.received),
            "events": self.events,
            "bad_signatures": self.bad_signatures,
            "failed_on_purpose": self.failed_on_purpose,
            "acted": self.acted,
            "act_errors": self.act_errors,
            "received_at": self.received_at,
            "confirmed": self.confirmed,
            "notices": self.notices,
        }


def verify(secret: str, timestamp: str, body: bytes, signature: str, *, now: float | None = None) -> bool:
    """The check every agency makes: our HMAC over ``<timestamp>.<body>``, and a fresh timestamp."""
    try:
        age = abs((now or time.time()) - int(timestamp))
    except ValueError:
        return False
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return age <= MAX_SKEW_SECONDS and hmac.compare_digest(f"sha256={digest}".encode(), signature.encode())


def create_simulator(config: SimulatorConfig) -> tuple[FastAPI, SimulatorStats]:
    stats = SimulatorStats()
    lock = asyncio.Lock()
    pending: set[asyncio.Task[None]] = set()
    app = FastAPI(title="Partner simulator")

    @app.get("/stats")
    async def read_stats() -> dict[str, Any]:
        return stats.as_dict()

    @app.post("/webhook/{agency_id}")
    async def webhook(agency_id: str, request: Request) -> JSONResponse:
        body = await request.body()
        signed = verify(
            config.secret,
            request.headers.get("x-reintegration-timestamp", ""),
            body,
            request.headers.get("x-reintegration-signature", ""),
        )
        if agency_id not in config.agencies or not signed:
            stats.bad_signatures += 1
            return JSONResponse({"error": "bad signature"}, status_code=401)
        try:
            message = json.loads(body)
            key = str(message["delivery_id"])  # signed, unlike the header, which must agree with it
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": "not a delivery"}, status_code=400)
        if request.headers.get("idempotency-key") != key:
            return JSONResponse({"error": "Idempotency-Key does not match the signed delivery_id"}, status_code=400)
        if message.get("event") == "webhook.verification":  # about the webhook itself, not a task
            return await _confirm(
                config, stats, agency_id, key, str(message.get("challenge", "")), request.url.hostname or ""
            )
        if message.get("event") == "webhook.changing":
            stats.notices.append({"agency_id": agency_id, "new_host": message.get("new_host")})
            return JSONResponse({"status": "noted"})
        if config.reject_status:
            return JSONResponse({"error": "refused on purpose"}, status_code=config.reject_status)
        async with lock:
            if stats.failed_on_purpose < config.fail_first:  # read live: a test may reopen the agency
                stats.failed_on_purpose += 1
                return JSONResponse({"error": "failing on purpose"}, status_code=503)
            first = key not in stats.received
            stats.received[key] += 1  # counted on receipt, so a retry during a slow answer is a repeat
            if first:
                stats.received_at[key] = time.time()
        if not first:
            return JSONResponse({"status": "duplicate dropped"})
        task = {k: v for k, v in (message.get("task") or {}).items() if k != "person"}  # keep no personal data
        stats.events.append(
            {
                "agency_id": agency_id,
                "key": key,
                "event": message.get("event"),
                "task": task,
                "had_person": bool((message.get("task") or {}).get("person")),
            }
        )
        if config.slow_seconds:  # the agency's system takes its time to answer; a repeat is dropped at once
            await asyncio.sleep(config.slow_seconds)
        if message.get("event") == "task.assigned" and config.act_after is not None:
            job = asyncio.create_task(_act(config, stats, agency_id, message["task"]))
            pending.add(job)
            job.add_done_callback(pending.discard)
        return JSONResponse({"status": "received"})

    return app, stats


async def _confirm(
    config: SimulatorConfig, stats: SimulatorStats, agency_id: str, verification_id: str, challenge: str, host: str
) -> JSONResponse:
    """The agency's system confirms its new address (its own host, where the challenge came) with its
    partner token."""
    token = config.tokens.get(agency_id)
    if token is None:
        return JSONResponse({"error": "no partner token to confirm with"}, status_code=500)
    async with httpx.AsyncClient(base_url=config.api_url, timeout=60) as api:
        response = await api.post(
            f"/v1/agencies/{agency_id}/webhook/confirm",
            json={"challenge": challenge, "host": host},
            headers={"Authorization": f"Bearer {token}"},
        )
    if response.status_code != 200:
        log.warning("webhook confirmation refused", agency_id=agency_id, status=response.status_code)
        return JSONResponse({"error": "confirmation refused"}, status_code=502)
    stats.confirmed.append(verification_id)
    return JSONResponse({"status": "confirmed"})


async def _act(config: SimulatorConfig, stats: SimulatorStats, agency_id: str, task: dict[str, Any]) -> None:
    """Accept, then complete, the task through the API, as the agency's staff would."""
    await asyncio.sleep(config.act_after or 0)
    headers = {"Authorization": f"Bearer {config.tokens[agency_id]}"}
    completion: dict[str, Any] = {"outcome": "done", "notes": "done by the partner simulator"}
    if task["service"] == "origin-assessment":
        completion["assessment"] = "safe"
    if task["service"] == "reception":
        completion["arrived_on"] = date.today().isoformat()
    async with httpx.AsyncClient(base_url=config.api_url, timeout=60) as api:
        for action, body in (("accept", {}), ("complete", completion)):
            response = await api.post(f"/v1/tasks/{task['task_id']}/{action}", json=body, headers=headers)
            if response.status_code != 200:
                stats.act_errors.append(f"{task['task_id']} {action}: HTTP {response.status_code}")
                log.warning(
                    "partner action refused", task_id=task["task_id"], action=action, status=response.status_code
                )
                return
    stats.acted.append(task["task_id"])
    log.info("task completed by the simulator", task_id=task["task_id"], agency_id=agency_id)


async def register_webhooks(*, api_url: str, admin_token: str, agencies: list[str], base_url: str, secret: str) -> None:
    """Point each agency's webhook at this simulator (needs an admin token)."""
    async with httpx.AsyncClient(base_url=api_url, timeout=30) as api:
        for agency in agencies:
            response = await api.patch(
                f"/v1/agencies/{agency}",
                headers={"Authorization": f"Bearer {admin_token}"},
                json={"webhook_url": f"{base_url}/webhook/{agency}", "webhook_secret": secret},
            )
            response.raise_for_status()
