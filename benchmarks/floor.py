"""The bare-FastAPI floor of ``make bench``: a constant JSON endpoint on an app with no middleware,
served by uvicorn with the API's own options (``reintegration.cli.uvicorn_options``).
``python -m benchmarks.floor`` serves it on ``REINTEGRATION_API_PORT``."""

from __future__ import annotations

import uvicorn
from fastapi import FastAPI

from reintegration.cli import uvicorn_options
from reintegration.settings import get_settings

app = FastAPI()


@app.get("/")
async def constant() -> dict[str, str]:
    return {"status": "ok"}


if __name__ == "__main__":
    uvicorn.run("benchmarks.floor:app", **uvicorn_options(get_settings()))
