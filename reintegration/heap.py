"""The garbage collector and a long-running process (the API, the worker)."""

from __future__ import annotations

import gc


def settle() -> None:
    """Put what the process made while starting (modules, the app and its routes, table metadata,
    the workflows' definitions) out of the cyclic collector's reach, once it is ready to serve.

    Those hundreds of thousands of objects live as long as the process, yet every full collection
    walked them again: a pause of tens of milliseconds in whichever request it fell on, measured as
    the p99 of a case read doubling under load (``make bench``). Collected once first, so nothing
    already garbage is kept. Once per process: a process that starts several apps (the tests) would
    otherwise keep, at each start, whatever was alive then."""
    if gc.get_freeze_count():
        return
    gc.collect()
    gc.freeze()
