"""One log format for everything a process writes: structlog's lines and the standard library's
(uvicorn's own, the Temporal SDK's, SQLAlchemy's) come out as the same JSON, through the same
redaction, and an exception is logged by its type and frames, never its message or its locals."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
import time
from contextlib import redirect_stderr

import httpx

from reintegration.logs import configure_logging
from tests.conftest import free_port

MARKER = "Zyxwa-Qorbel-1987"  # stands for a name someone typed


def _json_lines(text: str) -> list[dict]:
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines
    return [json.loads(line) for line in lines]  # every line is one JSON object


def test_standard_library_records_come_out_as_redacted_json_with_exceptions_by_type() -> None:
    configure_logging()
    err = io.StringIO()
    with redirect_stderr(err):
        logging.getLogger("some.library").warning("started on port %d", 8000)
        logging.getLogger("some.library").info("a value", extra={"first_name": MARKER})
        try:
            raise ValueError(f"invalid input: {MARKER}")
        except ValueError:
            secret = MARKER  # a local the frame holds  # noqa: F841
            logging.getLogger("some.library").exception("failed")
    text = err.getvalue()
    first, second, third = _json_lines(text)
    assert first["event"] == "started on port 8000"
    assert first["logger"] == "some.library" and first["level"] == "warning" and "timestamp" in first
    assert second["first_name"] == "[redacted]"
    assert third["exception"][0]["type"] == "builtins.ValueError"
    assert any("test_logs.py" in frame for frame in third["exception"][0]["frames"])
    assert MARKER not in text


def test_the_api_served_by_uvicorn_writes_only_json_and_no_query_string(tmp_path) -> None:
    """`reintegration api` as deployed: uvicorn's start-up and shutdown lines are JSON too, and a
    query string (a search's words) reaches no line."""
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("REINTEGRATION_")},
        "REINTEGRATION_DATA_DIR": str(tmp_path / "data"),
        "REINTEGRATION_API_PORT": str(port),
        "REINTEGRATION_TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}",  # nobody there: the API serves anyway
        "REINTEGRATION_TEMPORAL_CONNECT_WAIT_SECONDS": "0.5",
    }
    log = tmp_path / "api.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "reintegration.cli", "api"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        for path in (f"/v1/persons/search?q={MARKER}", f"/no-such-page?name={MARKER}", f"/v1/cases?{MARKER}=1"):
            httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    text = log.read_text()
    lines = _json_lines(text)
    assert MARKER not in text
    servers = [line for line in lines if line.get("logger", "").startswith("uvicorn")]
    assert any("Uvicorn running" in line["event"] for line in servers), text
    assert any("Shutting down" in line["event"] or "Finished server process" in line["event"] for line in servers)
    requests = [line for line in lines if line.get("event") == "request"]
    assert requests, text  # the API's own line per request, with the route's template


def test_a_records_dump_after_its_first_line_is_not_written() -> None:
    """asyncio's "Task exception was never retrieved" appends the task's repr, the exception's
    message with it: only the first line of a standard library record is kept."""
    configure_logging()
    err = io.StringIO()
    with redirect_stderr(err):
        logging.getLogger("asyncio").error(
            "Task exception was never retrieved\nfuture: <Task finished exception=ValueError(%r)>", MARKER
        )
    (line,) = _json_lines(err.getvalue())
    assert line["event"] == "Task exception was never retrieved" and line["logger"] == "asyncio"
    assert MARKER not in err.getvalue()
