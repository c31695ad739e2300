"""The API in several processes (`REINTEGRATION_API_PROCESSES=2`, uvicorn's workers) on the real
stack `reintegration run` starts: one effect per Idempotency-Key whichever process each attempt
reaches, an audit chain that does not fork, and rate limits that together never grant more than the
budget (issue 13, item 4)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from reintegration.settings import Settings
from reintegration.tokens import mint
from tests.conftest import free_port
from tests.journey import case_body
from workflows.model import Role

BURST = 40  # for both processes together: 20 each
PER_MINUTE = 60


def _api_processes(session_id: int) -> list[int]:
    """The uvicorn workers (spawned children) of the stack's process session."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getsid(int(entry.name)) != session_id:
                continue
            line = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ProcessLookupError):
            continue
        if "multiprocessing" in line and "spawn_main" in line:
            found.append(int(entry.name))
    return found


async def _ready(api: str, proc: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with httpx.AsyncClient(base_url=api, timeout=5) as http:
        while loop.time() < deadline:
            assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
            try:
                if (await http.get("/ready")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.3)
    raise AssertionError("the API never got ready:\n" + log.read_text(errors="replace")[-3000:])


async def test_two_api_processes_keep_one_effect_per_key_one_audit_chain_and_the_rate_limit(tmp_path):
    data = tmp_path / "data"
    api_port, temporal_port, ui_port = free_port(), free_port(), free_port()
    variables = {
        "REINTEGRATION_DATA_DIR": str(data),
        "REINTEGRATION_API_PORT": str(api_port),
        "REINTEGRATION_TEMPORAL_ADDRESS": f"127.0.0.1:{temporal_port}",
        "REINTEGRATION_TEMPORAL_UI_PORT": str(ui_port),
        "REINTEGRATION_API_PROCESSES": "2",
        "REINTEGRATION_RATE_LIMIT_BURST": str(BURST),
        "REINTEGRATION_RATE_LIMIT_PER_MINUTE": str(PER_MINUTE),
    }
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("REINTEGRATION_")}, **variables}
    log = tmp_path / "run.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "reintegration.cli", "run"],
        cwd=tmp_path,
        env=env,
        stdout=open(log, "wb"),  # noqa: SIM115 - the child's for its life
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    api = f"http://127.0.0.1:{api_port}"
    try:
        await _ready(api, proc, log)
        assert len(_api_processes(proc.pid)) == 2
        settings = Settings(
            _env_file=None, **{k.removeprefix("REINTEGRATION_").lower(): v for k, v in variables.items()}
        )
        caseworker = {
            "Authorization": "Bearer " + mint(settings, role=Role.caseworker, sub="cw-procs", countries=["ES"])
        }

        # One effect per key: the same opening sent at once over ten connections (so to both processes).
        async def attempt() -> httpx.Response:
            async with httpx.AsyncClient(base_url=api, timeout=120) as http:
                return await http.post(
                    "/v1/cases", json=case_body(), headers={**caseworker, "Idempotency-Key": "procs-open-1"}
                )

        answers = await asyncio.gather(*(attempt() for _ in range(10)))
        opened = [r for r in answers if r.status_code == 201]
        assert opened, [(r.status_code, r.text[:200]) for r in answers]
        # The others waited for the first and got its answer, or were told it is still under way.
        assert all(r.status_code in (201, 409) for r in answers), [(r.status_code, r.text[:200]) for r in answers]
        assert {r.json()["case_id"] for r in opened} == {opened[0].json()["case_id"]}
        async with httpx.AsyncClient(base_url=api, timeout=30) as http:
            listed = (await http.get("/v1/cases", headers=caseworker)).json()["items"]
            assert [c["case_id"] for c in listed] == [opened[0].json()["case_id"]]

        # The audit chain written by both processes is one chain.
        verified = subprocess.run(
            [sys.executable, "-m", "reintegration.cli", "audit", "verify"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert verified.returncode == 0, verified.stdout + verified.stderr

        # Rate limits: a caller's requests over fresh connections, spread over both processes, are
        # never granted more than the budget (each process holds half of it) and its refill.
        spender = {
            "Authorization": "Bearer " + mint(settings, role=Role.caseworker, sub="cw-spender", countries=["ES"])
        }

        async def one() -> int:
            async with httpx.AsyncClient(base_url=api, timeout=30) as http:
                return (await http.get("/v1/cases", headers=spender)).status_code

        started = asyncio.get_running_loop().time()
        statuses = []
        for _ in range(6):
            statuses += await asyncio.gather(*(one() for _ in range(15)))
        seconds = asyncio.get_running_loop().time() - started
        granted = statuses.count(200)
        assert set(statuses) <= {200, 429}
        assert granted <= BURST + PER_MINUTE / 60 * seconds + 1, (granted, seconds)
        assert statuses.count(429) >= len(statuses) - BURST - PER_MINUTE / 60 * seconds - 1
        print(f"granted {granted} of {len(statuses)} in {seconds:.1f} s (budget {BURST} + refill)")
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
