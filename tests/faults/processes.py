"""The processes the fault suite breaks on purpose: workers, a Temporal dev server, a PostgreSQL cluster.

Each is a real process the suite starts itself, so that it can kill it (``SIGKILL``) or stop it and
start it again on the same store. The PostgreSQL cluster is a throwaway one on its own port and
folder; the machine's own server (5432) is never touched.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

from reintegration.settings import Settings
from reintegration.temporal import connect, dev_server_command
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]


# --- Workers -------------------------------------------------------------------------------------


class Workers:
    """Worker processes, as ``make run`` starts them, on one stack's database and task queue."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.running: list[subprocess.Popen] = []
        self.started = 0
        self.killed = 0
        self.kill_times: list[float] = []  # time.time() of each SIGKILL

    def _env(self) -> dict[str, str]:
        s = self.settings
        env = {k: v for k, v in os.environ.items() if not k.startswith("REINTEGRATION_") and k != "DATABASE_URL"}
        env.update(
            {
                "REINTEGRATION_TEMPORAL_ADDRESS": s.temporal_address,
                "REINTEGRATION_TEMPORAL_NAMESPACE": s.temporal_namespace,
                "REINTEGRATION_TEMPORAL_TASK_QUEUE": s.temporal_task_queue,
                "REINTEGRATION_DATA_DIR": str(s.data_dir),
                "DATABASE_URL": s.sqlalchemy_url,
                "REINTEGRATION_DELIVERY_TIMEOUT_SECONDS": str(s.delivery_timeout_seconds),
                "REINTEGRATION_DELIVERY_RETRY_INITIAL_SECONDS": str(s.delivery_retry_initial_seconds),
                "REINTEGRATION_DELIVERY_RETRY_MAX_SECONDS": str(s.delivery_retry_max_seconds),
            }
        )
        if s.smtp_host:
            env.update(
                {
                    "REINTEGRATION_SMTP_HOST": s.smtp_host,
                    "REINTEGRATION_SMTP_PORT": str(s.smtp_port),
                    "REINTEGRATION_SMTP_SECURITY": s.smtp_security,
                    "REINTEGRATION_SMTP_TIMEOUT_SECONDS": str(s.smtp_timeout_seconds),
                    "REINTEGRATION_MAIL_FROM": s.mail_from,
                }
            )
        return env

    def start(self) -> subprocess.Popen:
        self.started += 1
        log = open(self.settings.data_dir / f"worker-{self.started}.log", "ab")  # noqa: SIM115 - the process keeps it
        proc = subprocess.Popen([sys.executable, "-m", "worker"], cwd=ROOT, env=self._env(), stdout=log, stderr=log)
        log.close()
        self.running.append(proc)
        return proc

    def kill(self, proc: subprocess.Popen) -> None:
        """SIGKILL: no shutdown, no goodbye to the server; in-flight tasks are left to time out."""
        self.kill_times.append(time.time())
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        self.running.remove(proc)
        self.killed += 1

    def stop_all(self) -> None:
        for proc in self.running:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.running:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self.running.clear()


# --- Temporal ------------------------------------------------------------------------------------


class TemporalServer:
    """``temporal server start-dev`` on a fixed port and store, as ``make run`` runs it."""

    def __init__(self, data_dir: Path, namespace: str) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.port, self.ui_port = free_port(), free_port()
        self.settings = Settings(
            data_dir=data_dir, temporal_address=f"127.0.0.1:{self.port}", temporal_namespace=namespace
        )
        self.address = self.settings.temporal_address
        self.proc: subprocess.Popen | None = None
        self.restarts = 0

    async def start(self) -> None:
        log = open(self.settings.data_dir / "temporal.log", "ab")  # noqa: SIM115 - the process keeps it
        self.proc = subprocess.Popen(
            dev_server_command(self.settings, port=self.port, ui_port=self.ui_port), stdout=log, stderr=log
        )
        log.close()
        await connect(self.settings, keyring=None, attempts=300, delay=0.1)

    def stop(self, *, kill: bool = False) -> None:
        """SIGTERM (a clean stop), or SIGKILL (the process gone at once; its store must hold)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    async def restart(self, down_for: float, *, kill: bool = False) -> None:
        self.stop(kill=kill)
        await asyncio.sleep(down_for)
        await self.start()
        self.restarts += 1


# --- PostgreSQL ----------------------------------------------------------------------------------

PG_BIN = next((p for p in (Path("/usr/lib/postgresql/15/bin"),) if (p / "pg_ctl").exists()), None)


def _pg_tool(name: str) -> str:
    if PG_BIN is not None:
        return str(PG_BIN / name)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} is not installed")
    return found


def _as_postgres(*args: str) -> list[str]:
    """initdb and postgres refuse to run as root: run them as the postgres user when we are root."""
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else list(args)


class PostgresCluster:
    """A throwaway cluster in a temporary folder on its own port; trust authentication, no fsync."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="reintegration-faults-pg-"))
        self.data = self.root / "data"
        self.socket_dir = self.root / "socket"
        self.socket_dir.mkdir()
        self.port = free_port()
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
            shutil.chown(self.socket_dir, "postgres", "postgres")
        self.log = self.root / "postgres.log"
        self.outages = 0

    def _run(self, *args: str) -> None:
        subprocess.run(_as_postgres(*args), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)

    def init(self) -> None:
        self._run(_pg_tool("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")
        self.start()

    def start(self) -> None:
        # No fsync: a stop -m immediate kills the server's processes, not the machine, so what was
        # written stays in the OS's cache. (synchronous_commit stays on: off, a commit could be lost.)
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.socket_dir} -c fsync=off "
            "-c full_page_writes=off -c max_connections=200"
        )
        self._run(_pg_tool("pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start")

    def stop_immediately(self) -> None:
        """``pg_ctl stop -m immediate``: every connection dropped at once, recovery on the next start."""
        self._run(_pg_tool("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        self.outages += 1

    def create_database(self, name: str) -> str:
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{self.port}/postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"

    def destroy(self) -> None:
        if (self.data / "postmaster.pid").exists():
            try:
                self.stop_immediately()
            except subprocess.CalledProcessError:
                pass
        shutil.rmtree(self.root, ignore_errors=True)
