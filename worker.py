"""The worker's composition root: settings, logging, database, Temporal client, activities, Worker."""

from __future__ import annotations

import asyncio
import signal

import structlog
from temporalio.worker import Worker

from activities.read_model import ReadModelActivities
from reintegration.db import create_tables, make_engine
from reintegration.logs import configure_logging
from reintegration.settings import Settings, get_settings
from reintegration.temporal import connect
from workflows.case import CaseWorkflow
from workflows.stages import ALL_WORKFLOWS

log = structlog.get_logger("worker")


def build_worker(client, settings: Settings, engine) -> Worker:  # type: ignore[no-untyped-def]
    read_model = ReadModelActivities(engine=engine)
    return Worker(
        client,
        task_queue=settings.temporal_task_queue,
        workflows=[CaseWorkflow, *ALL_WORKFLOWS],
        activities=[read_model.project_case],
    )


async def main() -> None:
    settings = get_settings()
    configure_logging()
    engine = make_engine(settings)
    create_tables(engine)
    client = await connect(settings)
    worker = build_worker(client, settings, engine)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info("worker started", task_queue=settings.temporal_task_queue, namespace=settings.temporal_namespace)
    async with worker:
        await stop.wait()
    log.info("worker stopped")


if __name__ == "__main__":
    asyncio.run(main())
