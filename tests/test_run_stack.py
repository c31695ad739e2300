"""`reintegration run` (what `make run` starts), as a developer's machine runs it.

Security review, findings 1 and 6: the development codec token is no master key (good for the
codec routes only, for this running stack only, never on a command line), and what the stack
writes under data/ is its owner's only.
"""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import jwt
import pytest
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads

from reintegration.affinity import cpus_of
from reintegration.settings import Settings
from reintegration.tokens import (
    InvalidToken,
    mint,
    mint_codec,
    signing_key,
    verify_codec,
)
from tests.conftest import free_port
from workflows.model import Role

ROOT = Path(__file__).resolve().parents[1]


async def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 180) -> str:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if path.exists() and path.stat().st_size:
            return path.read_text().strip()
        assert proc.poll() is None, f"reintegration run exited with {proc.returncode}"
        await asyncio.sleep(0.2)
    raise AssertionError(f"{path} did not appear")


def _command_lines() -> list[str]:
    lines = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                lines.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
            except OSError:
                continue
    return lines


_CHILDREN = {"worker": " -m worker", "api": "reintegration.cli api", "temporal": "server start-dev"}


def _child(parent: int, marker: str) -> int:
    """The process ``parent`` started whose command line holds ``marker``."""
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == parent:
                if marker in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    return int(entry.name)
        except OSError:
            continue
    raise AssertionError(f"no process of {parent} runs {marker!r}")


def _private(path: Path) -> bool:
    return stat.S_IMODE(path.stat().st_mode) & 0o077 == 0


async def test_run_serves_a_codec_only_token_bound_to_the_stack_and_keeps_files_private(tmp_path):
    data = tmp_path / "data"
    api_port, temporal_port, ui_port = free_port(), free_port(), free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("REINTEGRATION_")},
        "REINTEGRATION_DATA_DIR": str(data),
        "REINTEGRATION_API_PORT": str(api_port),
        "REINTEGRATION_TEMPORAL_ADDRESS": f"127.0.0.1:{temporal_port}",
        "REINTEGRATION_TEMPORAL_UI_PORT": str(ui_port),
        "REINTEGRATION_RATE_LIMIT_BURST": "1000",
        "TMPDIR": str(tmp_path),  # the CPUs its processes claim, apart from any other stack's
    }
    out = open(tmp_path / "run.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "reintegration.cli", "run"],
        cwd=tmp_path,
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        endpoint = await _wait_for(data / "codec-endpoint", proc)
        token = endpoint.rsplit("/", 1)[1]
        claims = jwt.decode(token, options={"verify_signature": False})
        assert claims["aud"] == "reintegration-codec" and claims["role"] == "supervisor"
        assert claims["countries"] == ["*"] and claims["sub"].startswith("temporal-web-ui:")
        assert claims["exp"] - claims["iat"] <= 12 * 3600
        # Never on a command line: not the token, not the codec endpoint.
        assert not [line for line in _command_lines() if token in line or "/codec/" in line or "ui-codec" in line]
        api = f"http://127.0.0.1:{api_port}"
        async with httpx.AsyncClient(base_url=api, timeout=30) as http:
            # Good for the codec routes: it decodes (an empty batch here) ...
            empty = json_format.MessageToJson(
                Payloads(payloads=[Payload(metadata={"encoding": b"json/plain"}, data=b'"x"')])
            )
            r = await http.post(f"/codec/t/{token}/decode", content=empty)
            assert r.status_code == 200, r.text
            # ... and refused by every /v1 route, as a bearer token.
            bearer = {"Authorization": f"Bearer {token}"}
            for path in ("/v1/cases", "/v1/exports/htcds?include=person", "/v1/supervision/summary", "/v1/tasks"):
                assert (await http.get(path, headers=bearer)).status_code == 401, path
            # A codec token of another stack (another session), or an API token in the path: refused.
            settings = Settings(data_dir=data)
            other = mint_codec(settings, sub="temporal-web-ui:x", countries=["*"], session="another-stack")
            assert (await http.post(f"/codec/t/{other}/decode", content=empty)).status_code == 401
            api_token = mint(settings, role=Role.supervisor, sub="sup-1", countries=["*"])
            assert (await http.post(f"/codec/t/{api_token}/decode", content=empty)).status_code == 401
            # A supervisor's token is good for the API as before.
            assert (await http.get("/v1/cases", headers={"Authorization": f"Bearer {api_token}"})).status_code == 200
        # The worker and the API each on a CPU of their own (reintegration.affinity), Temporal's
        # server on every CPU it may use.
        allowed = sorted(os.sched_getaffinity(0))
        if len(allowed) >= 2:
            cpus = {name: cpus_of(_child(proc.pid, marker)) for name, marker in _CHILDREN.items()}
            assert {cpus["worker"], cpus["api"]} == {str(allowed[0]), str(allowed[1])}, cpus
            assert cpus["temporal"] == cpus_of(os.getpid()), cpus
        # What the stack wrote is its owner's only.
        assert stat.S_IMODE(data.stat().st_mode) == 0o700
        for path in [p for p in data.rglob("*") if p.is_file()]:
            assert _private(path), f"{path} is readable by others: {oct(path.stat().st_mode)}"
        assert {"reintegration.db", "temporal.db", "kek", "dev-signing-key", "codec-endpoint"} <= {
            p.name for p in data.iterdir()
        }
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
        out.close()
    assert not (data / "codec-endpoint").exists()  # the stack's endpoint goes with it
    log = (tmp_path / "run.log").read_text()
    assert "Codec Server" in log and token not in log  # told where to find it, not printed
    # The session the token was bound to died with the stack: an API started otherwise, or by the
    # next `reintegration run` (a new session), refuses it.
    settings = Settings(data_dir=data)
    key = signing_key(settings)
    for later in (settings, settings.model_copy(update={"codec_session": "the-next-stack"})):
        with pytest.raises(InvalidToken):
            verify_codec(later, token, key)
