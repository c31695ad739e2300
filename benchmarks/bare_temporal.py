"""The bare-Temporal baselines of ``make bench``, with no API, no database and no codec:

- ``BareJourney``: one workflow per journey executing as many updates and trivial activities as a
  real journey does (the benchmark counts them in the real journeys' histories);
- ``ShapedJourney``: the same updates and activities in the real journey's shape, as its histories
  show it: a workflow for the case and a child workflow for each later stage, started one after
  the other, each run with as many patch markers, local activities and timers (started, replaced,
  cancelled) as the real one's, and the activities' inputs of the real ones' mean size, with the
  projection's heartbeat timeout. What the engine spends on that shape is not the application's
  work: it is the least any code of this design could cost.

``python -m benchmarks.bare_temporal`` runs their worker in a process of its own, as the real
worker runs, until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
from dataclasses import dataclass, field
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


@dataclass
class ShapedRun:
    """One workflow run of a journey's shape, as the real run's history holds it."""

    commands: list[int]  # the activities of each update the run receives
    patches: int = 0  # ``workflow.patched`` calls at its start (a marker each, and the SDK's search attribute)
    local_activities: int = 0  # one in each of its first updates, as the agencies' check runs
    timers: int = 0  # timers over the run: one from its start, replaced at each update until this many
    payload: int = 0  # characters in each activity's input
    heartbeat_seconds: float = 0  # each activity's heartbeat timeout, as the projection's (0: none)


@dataclass
class ShapedJourneyInput:
    """The case's run first, then each stage's, a child of the case's, one after the other."""

    runs: list[ShapedRun] = field(default_factory=list)


@activity.defn
async def carry(text: str) -> int:
    return len(text)


def child_id(workflow_id: str, number: int) -> str:
    """The id of the ``number``-th stage's child workflow of a shaped journey."""
    return f"{workflow_id}-{number}"


class _Shaped:
    """A run of the shape: its updates, patches, local activities and timers."""

    def __init__(self, run: ShapedRun) -> None:
        self.plan, self.done = run, 0
        self.lock = asyncio.Lock()

    async def hold(self) -> None:
        for n in range(self.plan.patches):
            workflow.patched(f"bench-patch-{n}")
        timer: asyncio.Task[None] | None = None
        started = 0
        while self.done < len(self.plan.commands):
            if timer is None and started < self.plan.timers:
                timer, started = asyncio.create_task(workflow.sleep(timedelta(days=30))), started + 1
            seen = self.done
            await workflow.wait_condition(lambda seen=seen: self.done != seen)
            if timer is not None and started < self.plan.timers:
                timer.cancel()  # replaced, as the real hold replaces its timer for a sooner deadline
                timer = None
        if timer is not None:
            timer.cancel()
        await workflow.wait_condition(workflow.all_handlers_finished)

    async def command(self, command: BareCommand) -> int:
        async with self.lock:  # as the real journey: one command at a time
            if self.done < self.plan.local_activities:
                await workflow.execute_local_activity(carry, "", start_to_close_timeout=timedelta(seconds=60))
            heartbeat = timedelta(seconds=self.plan.heartbeat_seconds) if self.plan.heartbeat_seconds else None
            for _ in range(command.activities):
                await workflow.execute_activity(
                    carry,
                    "x" * self.plan.payload,
                    start_to_close_timeout=timedelta(seconds=60),
                    heartbeat_timeout=heartbeat,
                )
            self.done += 1
            return self.done


@workflow.defn
class ShapedJourney(_Shaped):
    @workflow.init
    def __init__(self, journey: ShapedJourneyInput) -> None:
        super().__init__(journey.runs[0])

    @workflow.run
    async def run(self, journey: ShapedJourneyInput) -> int:
        await self.hold()
        for number, stage in enumerate(journey.runs[1:], 1):
            await workflow.execute_child_workflow(
                ShapedStage.run, stage, id=child_id(workflow.info().workflow_id, number)
            )
        return self.done

    @workflow.update
    async def command(self, command: BareCommand) -> int:
        return await super().command(command)


@workflow.defn
class ShapedStage(_Shaped):
    @workflow.init
    def __init__(self, run: ShapedRun) -> None:
        super().__init__(run)

    @workflow.run
    async def run(self, run: ShapedRun) -> int:
        await self.hold()
        return self.done

    @workflow.update
    async def command(self, command: BareCommand) -> int:
        return await super().command(command)


async def main() -> None:
    # On the CPUs the benchmark gives it (the real worker's), as the real worker runs on its own.
    # Imported here: the workflows above run in the SDK's sandbox, which re-imports this module.
    from reintegration import affinity

    affinity.pin_process(os.environ.get("REINTEGRATION_CPU_AFFINITY", affinity.OFF))
    client = await Client.connect(os.environ["BENCH_TEMPORAL_ADDRESS"], namespace=os.environ["BENCH_NAMESPACE"])
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with Worker(
        client,
        task_queue=TASK_QUEUE,
        workflows=[BareJourney, ShapedJourney, ShapedStage],
        activities=[trivial, carry],
    ):
        print("bare worker started", flush=True)
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main())
