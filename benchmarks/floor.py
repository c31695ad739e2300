"""The bare-FastAPI floors of ``make bench``, on an app with no middleware, served by uvicorn with the
API's own options (``reintegration.cli.uvicorn_options``), on the CPUs the benchmark gives it (the
API's: ``reintegration.affinity``):

- ``GET /``: a constant JSON endpoint, the floor issue 13's ratios are taken against;
- ``GET /rows/{case_id}``: a case's row read by its key with SQLModel's session in a worker thread
  and sent as JSON, as a FastAPI tutorial would write it: what the web framework, the ORM and one
  thread hop cost together for the simplest read, with nothing of ours (no token, no scope, no
  decryption, no access line), from the stack's own database.

``python -m benchmarks.floor`` serves it on ``REINTEGRATION_API_PORT``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import uvicorn
from fastapi import FastAPI, HTTPException, Response
from sqlmodel import Session

from reintegration import affinity
from reintegration.cli import uvicorn_options
from reintegration.db import CaseRecord, make_engine
from reintegration.settings import get_settings


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    app.state.engine = make_engine(get_settings())  # the stack's database, as its API reaches it
    try:
        yield
    finally:
        app.state.engine.dispose()


app = FastAPI(lifespan=lifespan)


@app.get("/")
async def constant() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/rows/{case_id}")
async def case_row(case_id: str) -> Response:
    def read() -> bytes | None:
        with Session(app.state.engine) as session:
            case = session.get(CaseRecord, case_id)
            return None if case is None else case.model_dump_json().encode()

    body = await anyio.to_thread.run_sync(read)
    if body is None:
        raise HTTPException(404)
    return Response(body, media_type="application/json")


if __name__ == "__main__":
    # On the CPUs the benchmark gives it (the API's), as the API's processes run on their own.
    affinity.pin_process(get_settings().cpu_affinity)
    uvicorn.run("benchmarks.floor:app", **uvicorn_options(get_settings()))
