"""The bare-Temporal baseline of ``make bench``: one workflow per journey, no API, no database, no
codec, executing as many updates and trivial activities as a real journey does (the benchmark
counts them in the real journeys' histories). ``python -m benchmarks.bare_temporal`` runs its
worker in a process of its own, as the real worker runs, until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
from dataclasses import dataclass
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.worker import Worker

TASK_QUEUE = "bench-bare-temporal"


@dataclass
class BareJourneyInput:
    """How many updates the journey will receive before it ends."""

    updates: int


@dataclass
class BareCommand:
    """One command: the activities its update runs, one after the other."""

    activities: int


@activity.defn
async def trivial(n: int) -> int:
    return n + 1


@workflow.defn
class BareJourney:
    def __init__(self) -> None:
        self.done = 0
        self.lock = asyncio.Lock()

    @workflow.run
    async def run(self, journey: BareJourneyInput) -> int:
        await workflow.wait_condition(lambda: self.done >= journey.updates)
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self.done

    @workflow.update
    async def command(self, command: BareCommand) -> int:
        async with self.lock:  # as the real journey: one command at a time
            for n in range(command.activities):
                await workflow.execute_activity(trivial, n, start_to_close_timeout=timedelta(seconds=60))
            self.done += 1
            return self.done


async def main() -> None:
    client = await Client.connect(os.environ["BENCH_TEMPORAL_ADDRESS"], namespace=os.environ["BENCH_NAMESPACE"])
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with Worker(client, task_queue=TASK_QUEUE, workflows=[BareJourney], activities=[trivial]):
        print("bare worker started", flush=True)
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main())
