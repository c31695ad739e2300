"""The README's curl walkthrough runs as written against the real API."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def walkthrough() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## One journey with curl", 1)[1]
    return re.search(r"```sh\n(.*?)```", section, re.S).group(1)  # type: ignore[union-attr]


async def test_the_readme_walkthrough_takes_a_case_to_closure(stack):
    script = walkthrough().replace(".venv/bin/reintegration", str(Path(sys.executable).parent / "reintegration"))
    env = {**os.environ, "API": stack.base_url, "REINTEGRATION_DATA_DIR": str(stack.settings.data_dir)}
    proc = await asyncio.create_subprocess_exec(
        "bash",
        "-euo",
        "pipefail",
        "-c",
        script,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=300)
    output = out.decode()
    assert proc.returncode == 0, output + err.decode()
    assert '{"stage":"reintegration","owner":{"country":"RO","caseworker":"cw-ro-1"}}' in output
    assert '"status":"closed","htcds_status":"Closed","closure_reason":"completed"' in output
    assert output.rstrip().endswith("stage closed")
