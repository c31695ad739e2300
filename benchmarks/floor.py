"""The bare-FastAPI floor of ``make bench``: a constant JSON endpoint on an app with no middleware,
served by uvicorn with the API's own options (``reintegration.cli.uvicorn_options``), on the CPUs the
benchmark gives it (the API's: ``reintegration.affinity``).
``python -m benchmarks.floor`` serves it on ``REINTEGRATION_API_PORT``."""

from __future__ import annotations

import uvicorn
from fastapi import FastAPI

from reintegration import affinity
from reintegration.cli import uvicorn_options
from reintegration.settings import get_settings

app = FastAPI()


@app.get("/")
async def constant() -> dict[str, str]:
    return {"status": "ok"}


if __name__ == "__main__":
    # On the CPUs the benchmark gives it (the API's), as the API's processes run on their own.
    affinity.pin_process(get_settings().cpu_affinity)
    uvicorn.run("benchmarks.floor:app", **uvicorn_options(get_settings()))
