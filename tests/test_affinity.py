"""Each Python process of the stack on a CPU of its own (``reintegration.affinity``): the lists it
takes, the CPUs ``auto`` hands out (one process each, given back when a process ends however it
ends), every thread following, and a served API's processes each on their own CPU."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from reintegration import affinity
from reintegration.affinity import cpus_of
from reintegration.settings import Settings
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
ALLOWED = sorted(os.sched_getaffinity(0))
several_cpus = pytest.mark.skipif(len(ALLOWED) < 2, reason="this machine gives the tests one CPU")


@pytest.mark.parametrize(
    ("text", "cpus"),
    [("0", {0}), ("0,2", {0, 2}), ("1-3", {1, 2, 3}), ("0,2-3,7", {0, 2, 3, 7}), ("5-5", {5})],
)
def test_cpu_lists_read_as_taskset_writes_them(text: str, cpus: set[int]) -> None:
    assert affinity.parse_cpus(text) == cpus
    assert Settings(cpu_affinity=text).cpu_affinity == text


@pytest.mark.parametrize("text", ["", "x", "0,", ",0", "0-", "-1", "3-1", "0;1", "1 2", "all", "AUTO", "00000"])
def test_a_setting_that_is_no_cpu_list_is_refused_saying_what_it_takes(text: str) -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(cpu_affinity=text)
    assert "REINTEGRATION_CPU_AFFINITY is auto, off or a CPU list" in str(refused.value)
    with pytest.raises(ValueError):
        affinity.pin_process(text)


def test_off_is_the_default_and_leaves_the_process_as_it_is() -> None:
    assert Settings().cpu_affinity == "off"  # as the image's containers run: they see no claims but their own
    before = os.sched_getaffinity(0)
    assert affinity.pin_process("off") is None
    assert os.sched_getaffinity(0) == before


@several_cpus
@pytest.mark.parametrize("case", ["shared folder", "a file", "a link", "another's lock file", "cannot be made"])
def test_a_lock_folder_that_is_not_this_users_alone_leaves_the_process_as_it_is(tmp_path: Path, case: str) -> None:
    """Another user's folder could hold every lock, or put links where the locks go: the process
    then runs as it would have, and says why in its log; nothing is raised."""
    folder = tmp_path / "claims"
    if case == "shared folder":
        folder.mkdir(mode=0o755)
        folder.chmod(0o755)
    elif case == "a file":
        folder.write_text("")
    elif case == "a link":
        (tmp_path / "elsewhere").mkdir(mode=0o700)
        folder.symlink_to(tmp_path / "elsewhere")
    elif case == "another's lock file":
        folder.mkdir(mode=0o700)
        (tmp_path / "target").write_text("")
        for cpu in ALLOWED:
            (folder / f"cpu-{cpu}.lock").symlink_to(tmp_path / "target")
    else:
        (tmp_path / "a file").write_text("")
        folder = tmp_path / "a file" / "claims"  # cannot be made, whoever runs the tests (root too)
    # In a process of its own: were the folder taken for this user's, this one would be pinned.
    script = HOLDER.replace("sys.stdin.read()", "pass")
    done = subprocess.run(
        [sys.executable, "-c", script, "auto", str(folder)], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "none", done.stdout
    assert "process not pinned: its CPU could not be claimed" in done.stderr
    assert str(folder) in done.stderr, "the line names the folder, for the operator to look at"


# The processes below pin themselves, never this one (the suite's other tests use every CPU).
HOLDER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from reintegration import affinity
    from reintegration.logs import configure_logging
    configure_logging()  # its lines on standard error, as the stack's processes write them
    taken = affinity.pin_process(sys.argv[1], folder=Path(sys.argv[2]))
    print(",".join(str(c) for c in sorted(taken)) if taken else "none", flush=True)
    sys.stdin.read()  # holds its CPU until told to end
    """
)


def holder(setting: str, folder: Path) -> tuple[subprocess.Popen[str], str]:
    """A process that pins itself with ``setting`` and holds what it took; what it says it took."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, setting, str(folder)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    assert line, process.stderr.read() if process.stderr else ""
    return process, line


@several_cpus
def test_auto_gives_each_process_a_cpu_no_other_took_and_takes_one_back_when_a_process_dies(tmp_path: Path) -> None:
    processes = []
    try:
        taken = []
        for _ in ALLOWED:
            process, said = holder("auto", tmp_path)
            processes.append(process)
            taken.append(said)
            assert cpus_of(process.pid) == said, "the process runs where it said"
        assert sorted(int(c) for c in taken) == ALLOWED, "one CPU each, every CPU taken"
        # One more: every CPU is held by another process; this one is left to the kernel.
        extra, said = holder("auto", tmp_path)
        processes.append(extra)
        assert said == "none" and cpus_of(extra.pid) == cpus_of(os.getpid())  # as the kernel writes all
        # The first is killed (no chance to tidy up): the kernel releases its lock, the next takes its CPU.
        os.kill(processes[0].pid, signal.SIGKILL)
        processes[0].wait(timeout=10)
        again, said = holder("auto", tmp_path)
        processes.append(again)
        assert said == taken[0] and cpus_of(again.pid) == taken[0]
    finally:
        for process in processes:
            process.kill()
            process.wait(timeout=10)


@several_cpus
def test_a_list_pins_every_thread_of_the_process_and_every_thread_it_starts_after(tmp_path: Path) -> None:
    last = str(ALLOWED[-1])
    script = textwrap.dedent(
        """
        import os, sys, threading
        from pathlib import Path
        from reintegration import affinity
        from reintegration.logs import configure_logging
        configure_logging()
        started = threading.Event(); stop = threading.Event()
        def wait():
            started.set(); stop.wait()
        before = threading.Thread(target=wait); before.start(); started.wait()
        affinity.pin_process(sys.argv[1])
        after = threading.Thread(target=stop.wait); after.start()
        for task in sorted(Path("/proc/self/task").iterdir()):
            try:
                print(affinity.cpus_of(f"self/task/{task.name}"))
            except OSError:
                continue  # a thread that ended meanwhile (none of ours does)
        stop.set(); before.join(); after.join()
        """
    )
    found = subprocess.run(
        [sys.executable, "-c", script, last], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    threads = found.stdout.split()
    assert len(threads) == 3 and set(threads) == {last}, found.stdout


@several_cpus
def test_a_list_is_shared_not_held(tmp_path: Path) -> None:
    """Two processes given one CPU by name both run there: a list is the operator's, not a claim."""
    first, said_first = holder(str(ALLOWED[0]), tmp_path)
    second, said_second = holder(str(ALLOWED[0]), tmp_path)
    try:
        assert said_first == said_second == str(ALLOWED[0])
        assert cpus_of(first.pid) == cpus_of(second.pid) == str(ALLOWED[0])
    finally:
        for process in (first, second):
            process.kill()
            process.wait(timeout=10)


def test_a_list_of_cpus_the_machine_lacks_stops_the_api_and_the_worker_with_the_reason(tmp_path: Path) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("REINTEGRATION_")},
        "REINTEGRATION_DATA_DIR": str(tmp_path),
        "REINTEGRATION_CPU_AFFINITY": "9999",
        "REINTEGRATION_TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}",  # never reached
        "REINTEGRATION_API_PORT": str(free_port()),
    }
    for command in ([sys.executable, "-m", "reintegration.cli", "api"], [sys.executable, "-m", "worker"]):
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 2, (command, done.stderr[-2000:])
        # The CPUs it may use as the kernel writes them (this process's are all the machine gives).
        assert f"names CPUs (9999) this process may not run on; it may use {cpus_of(os.getpid())}" in done.stderr
        assert "Traceback" not in done.stderr
    assert not (tmp_path / "reintegration.db").exists(), "nothing was started"


@several_cpus
def test_each_process_of_a_served_api_takes_a_cpu_of_its_own(tmp_path: Path) -> None:
    """``reintegration api`` with two processes, ``auto``: uvicorn's factory pins each as it loads the app,
    before the lifespan starts the database's and Temporal's threads, which follow it."""
    port = free_port()
    locks = tmp_path / "tmp"
    locks.mkdir()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("REINTEGRATION_")},
        "TMPDIR": str(locks),  # its claims apart from any other stack's on this machine
        "REINTEGRATION_DATA_DIR": str(tmp_path / "data"),
        "REINTEGRATION_TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}",  # /health needs no Temporal
        "REINTEGRATION_TEMPORAL_CONNECT_WAIT_SECONDS": "0",
        "REINTEGRATION_API_PORT": str(port),
        "REINTEGRATION_API_PROCESSES": "2",
        "REINTEGRATION_CPU_AFFINITY": "auto",
    }
    api = subprocess.Popen(
        [sys.executable, "-m", "reintegration.cli", "api"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        children: list[str] = []
        while time.monotonic() < deadline:
            children = [
                stat.parent.name
                for stat in Path("/proc").glob("[0-9]*/stat")
                if _parent_of(stat) == api.pid and "spawn" in _command_line(stat.parent)
            ]
            pinned = [cpus_of(pid) for pid in children if _alive(pid)]
            if len(pinned) == 2 and all("," not in c and "-" not in c for c in pinned) and _answers(port):
                break
            assert api.poll() is None, "the API exited"
            time.sleep(0.5)
        pinned = [cpus_of(pid) for pid in children]
        assert len(pinned) == 2 and len(set(pinned)) == 2, pinned
        # Every thread of each (the database's, Temporal's client's, started by the lifespan) is there too.
        for pid in children:
            for task in Path(f"/proc/{pid}/task").iterdir():
                try:
                    assert cpus_of(f"{pid}/task/{task.name}") == cpus_of(pid)
                except FileNotFoundError:
                    continue  # a thread that ended meanwhile (anyio's idle ones do)
        # The first two CPUs, each noted in the lock folder (the kernel holds the locks for them).
        assert sorted(int(c) for c in pinned) == ALLOWED[:2]
        assert sorted(p.name for p in (locks / f"reintegration-cpus-{os.getuid()}").iterdir()) == sorted(
            f"cpu-{c}.lock" for c in ALLOWED[:2]
        )
    finally:
        api.send_signal(signal.SIGTERM)
        try:
            api.wait(timeout=30)
        except subprocess.TimeoutExpired:
            api.kill()
            api.wait()


def _parent_of(stat: Path) -> int | None:
    try:
        return int(stat.read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _command_line(proc: Path) -> str:
    try:
        return (proc / "cmdline").read_text().replace("\0", " ")
    except OSError:
        return ""


def _alive(pid: str) -> bool:
    return Path(f"/proc/{pid}").exists()


def _answers(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
