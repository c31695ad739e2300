"""Each of the stack's Python processes on one CPU of its own (``REINTEGRATION_CPU_AFFINITY``).

A Python process runs Python in one thread at a time. The API hands each request's database work
to a thread and takes the answer back; the worker runs each workflow task in a thread of the SDK's
and each projection in another. When those threads sit on different CPUs, every hand-over wakes a
sleeping CPU and moves the interpreter's lock and the request's data from one CPU's caches to the
other's. Measured on a 2-CPU virtual machine (``make bench``, and a hand-over of no work in a
loop): a hand-over cost 125-155 µs of CPU, 26-46 µs with the process on one CPU, and a case read
1.65-1.99 ms of the API's CPU, 1.02-1.07 ms pinned. What a pinned process gives up is the work its
threads did without the interpreter's lock at the same time on another CPU (SQLite's, the
encryption's, the Temporal SDK's core in Rust): measured, a net gain in the API and the worker
alike. Temporal's server and the database are left to the kernel, on every CPU.

- ``off`` (the default): left as it is.
- ``auto`` (what ``reintegration run`` gives the worker and the API it starts): the process takes
  the first CPU it may run on that no other process sharing its temporary folder (``TMPDIR``;
  ``lock_folder()``) has taken, by a lock file held for the process's life; the kernel releases it
  when the process ends, however it ends. When every CPU is taken, when the process may run on one
  CPU only, or when the folder cannot be used (not this user's alone, not writable), it is left as
  it is, and says so in its log. A process started while the one it replaces still holds its CPU
  (uvicorn's restart of its processes on SIGHUP) finds it taken.
- a list of CPUs as ``taskset -c`` takes it (``0``, ``0,2``, ``1-3``): the process runs on those,
  shared with whatever else is given them. A CPU the process may not run on is an error.

Containers each see a temporary folder of their own, so ``auto`` would put every container's
process on the same CPU: leave them ``off`` (the image's default) and give them a ``cpuset``.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import tempfile
from pathlib import Path

import structlog

log = structlog.get_logger("affinity")

AUTO, OFF = "auto", "off"
CPU_LIST = re.compile(r"^\d{1,4}(-\d{1,4})?(,\d{1,4}(-\d{1,4})?)*$")

# The lock on the CPU this process took (``auto``), held until the process ends.
_held: list[int] = []


class AffinityError(ValueError):
    """A CPU list the machine cannot honour; the message says which CPUs it may use."""


def parse_cpus(text: str) -> frozenset[int]:
    """The CPUs of a list as ``taskset -c`` takes it; ``ValueError`` for anything else."""
    if not CPU_LIST.fullmatch(text):
        raise ValueError(f"a CPU list is numbers and ranges separated by commas, as 0,2 or 1-3 (not {text!r})")
    cpus: set[int] = set()
    for part in text.split(","):
        first, _, last = part.partition("-")
        low, high = int(first), int(last or first)
        if high < low:
            raise ValueError(f"the range {part} goes down: write {high}-{low}")
        cpus.update(range(low, high + 1))
    return frozenset(cpus)


def cpu_list(cpus: set[int] | frozenset[int]) -> str:
    """CPUs as ``taskset -c`` and the kernel write them: ``0-3,6``."""
    ranges: list[list[int]] = []
    for cpu in sorted(cpus):
        if ranges and cpu == ranges[-1][1] + 1:
            ranges[-1][1] = cpu
        else:
            ranges.append([cpu, cpu])
    return ",".join(str(low) if low == high else f"{low}-{high}" for low, high in ranges)


def check_setting(value: str) -> str:
    """``auto``, ``off`` or a CPU list (the settings' validator)."""
    if value not in (AUTO, OFF):
        parse_cpus(value)
    return value


def lock_folder() -> Path:
    """Where the processes sharing this temporary folder (``TMPDIR``) note the CPUs they took: one
    folder for every stack of this user there (two stacks on one machine share its CPUs too)."""
    return Path(tempfile.gettempdir()) / f"reintegration-cpus-{os.getuid()}"


def named_cpus(setting: str) -> frozenset[int] | None:
    """The CPUs a list setting names, checked against those this process may run on (``AffinityError``
    saying which it may use); None for ``auto`` and ``off``. ``reintegration api`` checks this
    before it starts its processes, so a wrong list stops it with the reason, not a traceback."""
    check_setting(setting)
    if setting in (AUTO, OFF) or not hasattr(os, "sched_getaffinity"):  # Linux's
        return None
    wanted, allowed = parse_cpus(setting), os.sched_getaffinity(0)
    if not wanted <= allowed:
        missing, mine = cpu_list(wanted - allowed), cpu_list(allowed)
        raise AffinityError(
            f"REINTEGRATION_CPU_AFFINITY names CPUs ({missing}) this process may not run on; it may use {mine}"
        )
    return wanted


def pin_process(setting: str, *, folder: Path | None = None) -> frozenset[int] | None:
    """Put this process, each thread it has and every thread it starts after, on the CPUs
    ``setting`` gives it (module docstring); the CPUs, or None when it was left as it is."""
    wanted = named_cpus(setting)
    if wanted is not None:
        _set_for_every_thread(wanted)
        log.info("process pinned", cpus=sorted(wanted))
        return wanted
    if setting == OFF or not hasattr(os, "sched_getaffinity"):
        return None
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2 or _held:
        return None  # on one CPU already (taskset, a cpuset), or pinned before
    try:
        folder = folder or lock_folder()  # no usable temporary folder raises too
        cpu = _claim(allowed, folder)
    except OSError as exc:  # the process runs as it would have
        log.warning(
            "process not pinned: its CPU could not be claimed",
            error=type(exc).__name__,
            folder=str(folder),
            reason=exc.strerror or str(exc),
        )
        return None
    if cpu is None:
        log.info("process not pinned: every CPU is taken by another process", cpus=len(allowed))
        return None
    _set_for_every_thread(frozenset({cpu}))
    log.info("process pinned", cpus=[cpu])
    return frozenset({cpu})


def _claim(allowed: list[int], folder: Path) -> int | None:
    """The first of ``allowed`` whose lock file in ``folder`` no other process holds, now held by
    this one; None when every one is held. The folder must be this user's alone: another user's
    could hold the locks (and keep every process from its CPU) or put links in place of them."""
    import fcntl

    with contextlib.suppress(FileExistsError):
        folder.mkdir(mode=0o700)
    found = folder.lstat()
    if not stat.S_ISDIR(found.st_mode) or found.st_uid != os.getuid() or found.st_mode & 0o077:
        raise PermissionError(f"{folder} is not a folder of this user's alone")
    for cpu in allowed:
        descriptor = os.open(folder / f"cpu-{cpu}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            continue
        except BaseException:
            os.close(descriptor)
            raise
        _held.append(descriptor)
        return cpu
    return None


def _set_for_every_thread(cpus: frozenset[int]) -> None:
    """``sched_setaffinity`` sets one thread's; threads started later take their starter's."""
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(ProcessLookupError):  # a thread that ended meanwhile
            os.sched_setaffinity(int(task.name), cpus)


def cpus_of(process: int | str) -> str:
    """The CPUs ``/proc/<process>`` (a pid, ``self``, or ``<pid>/task/<tid>`` for a thread) may run
    on, as the kernel and ``taskset -c`` write them (``0``, ``0-1``)."""
    status = Path(f"/proc/{process}/status").read_text()
    return next(line.split(":", 1)[1].strip() for line in status.splitlines() if line.startswith("Cpus_allowed_list"))
