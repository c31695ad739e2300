"""`make bench` runs end to end, so it never rots. Tiny numbers, and no timing or ratio asserted:
the machines are shared and noisy, and the benchmark's numbers are for people to read."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENDPOINTS = {"floor", "floor_row", "health", "case", "cases", "tasks", "stalled", "summary"}
PATHWAYS = {"voluntary_return", "residence"}
RUNS = {
    "bench": ["benchmarks.bench", "--journeys", "4", "--clients", "2", "--seconds", "1"],
    "scale": ["benchmarks.scale", "--cases", "12,24", "--clients", "2", "--seconds", "1"],
}


@dataclass
class Run:
    """A benchmark running in its own interpreter, on a stack of its own (free ports, its own folder)."""

    process: subprocess.Popen[str]
    out: Path

    def finished(self, timeout: float) -> tuple[int, str, str]:
        """Its exit code, and what it printed on stdout and on stderr."""
        stdout, stderr = self.process.communicate(timeout=timeout)
        return self.process.returncode, stdout, stderr


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Run]]:
    """Both benchmarks started at once: each spends much of its run waiting (for its stack to start,
    through its fixed seconds per endpoint), so together they take little more than the longer one."""
    folder = tmp_path_factory.mktemp("benchmarks")
    started = {}
    for name, arguments in RUNS.items():
        out = folder / f"{name}.json"
        # Each benchmark's processes claim CPUs apart from the other's (``reintegration.affinity``
        # notes its claims under the temporary folder), as if each had the machine to itself.
        claims = folder / f"{name}-tmp"
        claims.mkdir()
        process = subprocess.Popen(
            [sys.executable, "-m", *arguments, "--out", str(out)],
            cwd=ROOT,
            env={**os.environ, "TMPDIR": str(claims)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        started[name] = Run(process, out)
    try:
        yield started
    finally:
        for run in started.values():
            if run.process.poll() is None:
                run.process.terminate()  # the benchmark stops its stack on SIGTERM
                try:
                    run.process.communicate(timeout=60)
                except subprocess.TimeoutExpired:
                    run.process.kill()


def test_the_benchmark_runs_end_to_end_and_writes_every_section(runs: dict[str, Run]) -> None:
    code, stdout, stderr = runs["bench"].finished(timeout=300)
    assert code == 0, stdout[-3000:] + stderr[-3000:]
    assert "PASS" in stdout or "MISS" in stdout  # the table, with its ratios
    results = json.loads(runs["bench"].out.read_text())

    journeys = results["journeys"]
    assert journeys["journeys"] == 4 and {c["pathway"] for c in journeys["cases"]} == PATHWAYS
    for key in ("journeys_per_second", "commands_per_second", "commands_per_journey"):
        assert journeys[key] > 0, key
    assert all(v > 0 for v in journeys["command_latency"].values())

    bare = results["bare_temporal"]
    assert bare["journeys"] == 4 and bare["updates"] > 0 and bare["commands_per_second"] > 0
    # Two rounds of each, half the journeys each, their seconds adding up to the phase's.
    for measured in (journeys, bare):
        assert [r["journeys"] for r in measured["rounds"]] == [2, 2]
        assert sum(r["seconds"] for r in measured["rounds"]) == pytest.approx(measured["seconds"], abs=0.02)
    assert "rounds: " in stdout
    assert all(v > 0 for v in bare["update_latency"].values())

    # The journeys' shape on bare Temporal: as many runs, updates, activities, children, markers,
    # search attribute upserts and timers per journey as the real journey whose runs it copies.
    shape = results["shaped_temporal"]
    assert shape["journeys"] == 4 and [r["journeys"] for r in shape["rounds"]] == [2, 2]
    assert shape["updates"] > 0 and all(v > 0 for v in shape["update_latency"].values())
    for pathway in PATHWAYS:
        real_runs, shaped = results["histories"][pathway]["runs"], shape["histories"][pathway]
        assert len(shape["plans"][pathway]["runs"]) == len(real_runs) >= 2
        for key in ("updates_completed", "activities", "children", "markers", "search_attribute_upserts", "timers"):
            assert shaped.get(key, 0) == sum(run.get(key, 0) for run in real_runs), (pathway, key)
        # Every activity's input the mean size of the real ones' (their payloads' metadata aside).
        real_inputs = results["histories"][pathway]["activity_input_bytes"]
        assert 0.95 * real_inputs <= shaped["activity_input_bytes"] <= 1.05 * real_inputs, pathway
    assert "its shape on bare Temporal" in stdout

    # What the engine served in each phase, from its own metrics.
    requests = results["temporal_requests_by_phase"]
    for name in ("journeys", "bare_temporal", "shaped_temporal"):
        assert requests[name]["frontend RespondWorkflowTaskCompleted"] > 0, name
    assert "Temporal requests per journey" in stdout

    assert set(results["endpoints"]) == ENDPOINTS
    for name, endpoint in results["endpoints"].items():
        assert endpoint["failures"] == {}, name
        assert endpoint["requests"] > 0 and endpoint["requests_per_second"] > 0, name
        assert endpoint["p50_ms"] > 0 and endpoint["p99_ms"] > 0 and endpoint["server_cpu_ms_per_request"] > 0, name

    assert set(results["histories"]) == PATHWAYS
    for pathway, history in results["histories"].items():
        for key in ("events", "updates_completed", "activities", "payload_bytes", "workflows"):
            assert history[key] > 0, (pathway, key)

    for process in ("temporal", "worker", "api"):
        usage = results["processes"][process]
        assert usage["peak_rss_mib"] > 0 and usage["cpu_seconds"] > 0, process

    # The CPU of each phase, the clients' (this process) included, and per journey in the table.
    by_phase = results["cpu_seconds_by_phase"]
    assert (
        by_phase["journeys"]["worker"] > 0 and by_phase["journeys"]["api"] > 0 and by_phase["journeys"]["clients"] > 0
    )
    for name in ("bare_temporal", "shaped_temporal"):
        assert by_phase[name]["bare_worker"] > 0 and by_phase[name]["clients"] > 0, name
    assert "CPU s per journey" in stdout

    computed = results["summary_computed"]
    assert computed["samples"] == 50 and computed["p50_ms"] > 0 and "summary computed after a write" in stdout

    assert len(results["ratios"]) == 12
    assert all(r["value"] > 0 for r in results["ratios"].values())

    assert set(results["two_processes"]) == {"case", "cases"}
    for name, endpoint in results["two_processes"].items():
        assert endpoint["failures"] == {} and endpoint["requests"] > 0 and endpoint["gain_vs_one_process"] > 0, name
        assert endpoint["connections_by_process"] == [1, 1], "the two clients' connections, one per process"

    # Each Python process on a CPU of its own, the baselines on their counterparts' (reintegration.affinity).
    cpus = results["cpus_by_process"]
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) >= 2:
        assert {cpus["api"], cpus["worker"]} == {str(allowed[0]), str(allowed[1])}, cpus
        assert cpus["floor"] == cpus["api"] and cpus["bare_worker"] == cpus["worker"], cpus
        assert sorted(cpus["api_2_processes"], key=int) == [str(allowed[0]), str(allowed[1])], cpus
        assert f"CPUs: api {cpus['api']}, worker {cpus['worker']}" in stdout


def test_the_scale_benchmark_runs_end_to_end_and_writes_every_step(runs: dict[str, Run]) -> None:
    """`make bench-scale` with two tiny steps: real case workflows loaded, the lists hammered, the
    worker restarted with them open. Numbers only checked to be there."""
    code, stdout, stderr = runs["scale"].finished(timeout=360)
    assert code == 0, stdout[-3000:] + stderr[-3000:]
    results = json.loads(runs["scale"].out.read_text())
    assert [s["open_cases"] for s in results["steps"]] == [12, 24]
    for step in results["steps"]:
        assert step["load"]["cases"] == 12 and step["load"]["cases_per_second"] > 0
        for name in ("cases", "stalled", "summary"):
            assert step["endpoints"][name]["failures"] == {} and step["endpoints"][name]["p95_ms"] > 0, name
        assert step["summary_computed"]["samples"] == 10 and step["summary_computed"]["p95_ms"] > 0
        assert step["worker"]["rss_mib"] > 0 and step["worker_after_restart"]["rss_mib"] > 0
        assert step["disk_bytes_per_case"]["temporal"] > 0 and step["disk_bytes_per_case"]["reintegration"] > 0
        assert 0 < step["worker_restart"]["to_worker_started_s"] <= step["worker_restart"]["to_first_command_s"]
        assert step["settled"]["seconds"] >= 3 and set(step["settled"]["busy_at_first"]) == {
            "temporal",
            "worker",
            "api",
        }
    assert set(results["ratios"]) == {f"{n}_p95_24_vs_12" for n in ("cases", "stalled", "summary")}


def test_the_scale_benchmark_refuses_bad_steps_before_starting_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # In this process (its command line is parsed before anything starts): four interpreters
    # importing the benchmark took seconds each.
    from benchmarks import scale

    for bad in ("100,10", "ten", "0", "10,10"):
        with pytest.raises(SystemExit) as exited:
            scale.main(["--cases", bad, "--out", str(tmp_path / "x.json")])
        assert exited.value.code == 2 and "--cases" in capsys.readouterr().err, bad
        assert not (tmp_path / "x.json").exists()


def test_the_shape_copies_each_run_of_the_real_journey() -> None:
    """Pure: the real runs' counts become the shaped runs' (patches from the search attribute
    upserts the SDK makes with them, the other markers as local activities)."""
    from benchmarks.bench import shaped_plans

    histories = {
        "voluntary_return": {
            "activities": 5,
            "payload_bytes": 9000,
            "activity_input_bytes": 5000,
            "runs": [
                {"updates_completed": 2, "activities": 3, "markers": 2, "search_attribute_upserts": 2, "timers": 1},
                {"updates_completed": 3, "activities": 2, "markers": 5, "search_attribute_upserts": 3},
            ],
        },
        "residence": {"activities": 0, "payload_bytes": 0, "runs": []},
    }
    plans = shaped_plans(histories)
    first, second = plans["voluntary_return"].runs
    assert (first.commands, first.patches, first.local_activities, first.timers) == ([2, 1], 2, 0, 1)
    assert (second.commands, second.patches, second.local_activities, second.timers) == ([1, 1, 0], 3, 2, 0)
    assert first.payload == second.payload == 1000  # the activities' inputs, not every payload
    assert first.heartbeat_seconds == second.heartbeat_seconds == 5  # the projection's
    assert [r.commands for r in plans["residence"].runs] == [[1]]  # nothing counted: one update


@pytest.mark.parametrize(
    "runs",
    [
        [{"updates_completed": 0, "activities": 1}],  # the first run takes no update
        [{"updates_completed": 1, "activities": 1}, {"updates_completed": 0, "timers": 1}],  # work, no update
        [{"updates_completed": 1, "activities": 1, "timers": 2}],  # more timers than updates
    ],
)
def test_a_shape_that_cannot_be_copied_is_refused(runs: list[dict[str, int]]) -> None:
    from benchmarks.bench import shaped_plans

    with pytest.raises(ValueError, match="run"):
        shaped_plans({"residence": {"activities": 1, "activity_input_bytes": 10, "runs": runs}})
