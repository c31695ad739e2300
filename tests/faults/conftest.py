"""Fixtures of the fault suite, and its summary: one line per fault at the end of the run."""

from __future__ import annotations

import pytest

from tests.faults.harness import SUMMARIES


@pytest.fixture
def temporal_address(temporal_env) -> str:
    """The session's Temporal dev server (faults that restart Temporal run their own)."""
    return temporal_env.client.service_client.config.target_host


def pytest_terminal_summary(terminalreporter) -> None:  # type: ignore[no-untyped-def]
    if SUMMARIES:
        terminalreporter.section("fault suite")
        for line in SUMMARIES:
            terminalreporter.write_line(line)
