"""Liveness and readiness."""

from __future__ import annotations

import anyio
from fastapi import APIRouter, Request
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlmodel import Session

from api.errors import Unavailable, responses
from api.languages import N_

router = APIRouter(tags=["health"])


@router.get("/health", summary="The process is up")
async def health() -> dict[str, str]:
    # ``async``: a plain ``def`` route runs in the thread pool, and so does the check of its answer
    # (two thread hops per probe: measured, half of what /health cost beyond the bare floor).
    return {"status": "ok"}


@router.get("/ready", summary="Database and Temporal reachable", responses=responses(503))
async def ready(request: Request) -> dict[str, str]:
    try:
        await anyio.to_thread.run_sync(_database_answers, request.app.state.engine)
    except Exception:
        raise Unavailable(N_("the database is unavailable")) from None
    client = request.app.state.temporal
    try:
        healthy = client is not None and await client.service_client.check_health()
    except Exception:
        healthy = False
    if not healthy:
        raise Unavailable(N_("Temporal is unavailable"))
    return {"status": "ready"}


def _database_answers(engine: Engine) -> None:
    with Session(engine) as session:
        session.execute(text("SELECT 1"))
