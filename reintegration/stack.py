"""``reintegration run``: the embedded stack (Temporal's dev server, the worker and the API) as one
foreground process group, for development and demos; Ctrl-C stops it all."""

from __future__ import annotations

import asyncio
import getpass
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from reintegration.settings import Settings, get_settings
from reintegration.temporal import connect, dev_server_command
from reintegration.tokens import mint_codec


def restrict_files() -> None:
    """Whatever this process creates (databases, keys, logs) is readable by its owner only."""
    os.umask(0o077)


def run_stack() -> int:
    """Temporal dev server, worker and API as one foreground process group; Ctrl-C stops all."""
    restrict_files()
    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    settings.data_dir.chmod(0o700)
    logs = settings.data_dir / "logs"
    logs.mkdir(exist_ok=True)
    processes: list[tuple[str, subprocess.Popen[bytes]]] = []
    # The codec tokens of this stack are good while it runs: the API knows its session id from the
    # environment (never a command line, which `ps` shows to everyone), and forgets it when it stops.
    codec_session = secrets.token_urlsafe(24)
    environment = {**os.environ, "REINTEGRATION_CODEC_SESSION": codec_session}
    # The whole stack on this machine: the worker and the API each take a CPU of their own, unless
    # the operator said otherwise (``reintegration.affinity``; Temporal's server ignores it).
    environment.setdefault("REINTEGRATION_CPU_AFFINITY", "auto")

    def start(name: str, command: list[str]) -> None:
        log_file = open(logs / f"{name}.log", "ab")  # noqa: SIM115 - kept open for the child's life
        processes.append((name, subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=environment)))

    def stop(*_args: object) -> None:
        for _, proc in reversed(processes):
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 15
        for _, proc in reversed(processes):
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()

    # Ctrl-C reaches the whole process group; each child stops itself, and so does this loop.
    # Set explicitly: a shell that starts us in the background would otherwise have SIGINT ignored.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    endpoint_file = settings.data_dir / "codec-endpoint"
    try:
        started = time.monotonic()
        start("temporal", dev_server_command(settings))
        asyncio.run(connect(settings, keyring=None, attempts=240, delay=0.5))  # only waits for it
        print(
            f"Temporal   {settings.temporal_address}  (Web UI http://127.0.0.1:{settings.temporal_ui_port}, "
            f"namespace {settings.temporal_namespace})",
            flush=True,
        )
        start("worker", [sys.executable, "-m", "worker"])
        print(f"Worker     task queue {settings.temporal_task_queue}  (log {logs / 'worker.log'})", flush=True)
        start("api", [sys.executable, "-m", "reintegration.cli", "api"])
        _wait_ready(f"http://{settings.api_host}:{settings.api_port}/ready")
        print(
            f"API        http://{settings.api_host}:{settings.api_port}  (docs /docs, log {logs / 'api.log'})",
            flush=True,
        )
        print(
            f"Workspace  http://{settings.api_host}:{settings.api_port}/  (development sign-in: choose who you are)",
            flush=True,
        )
        _write_private(endpoint_file, _ui_codec_endpoint(settings, codec_session) + "\n")
        print(
            f"Payloads   the Web UI shows them encrypted; to read them, paste the endpoint in {endpoint_file} "
            "into its Codec Server settings (valid while this stack runs)",
            flush=True,
        )
        print(
            f"Ready in {time.monotonic() - started:.1f} s. Data in {settings.data_dir}/. Ctrl-C stops everything.",
            flush=True,
        )
        while True:
            for name, proc in processes:
                if proc.poll() is not None:
                    print(f"{name} exited with {proc.returncode}; see {logs / (name + '.log')}", file=sys.stderr)
                    return 1
            time.sleep(1)
    except KeyboardInterrupt:
        print("\nStopping…", flush=True)
        return 0
    finally:
        stop()
        endpoint_file.unlink(missing_ok=True)


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def _ui_codec_endpoint(settings: Settings, session: str) -> str:
    """The API's codec endpoint for the development Web UI, which can't send a header: a codec token
    rides in the path. It is good for the codec routes only (refused by /v1), for a supervisor of
    ``codec_ui_countries``, for 12 hours at most and only while this stack runs. It names the
    operating-system user who started the stack, so the audit trail says who reads through it."""
    try:
        who = "".join(c for c in getpass.getuser() if c.isalnum() or c in "._-")[:60] or "unknown"
    except (KeyError, OSError):
        who = "unknown"
    token = mint_codec(settings, sub=f"temporal-web-ui:{who}", countries=settings.codec_ui_countries, session=session)
    return f"http://{settings.api_host}:{settings.api_port}/codec/t/{token}"


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def _wait_ready(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"the API did not become ready at {url}")
