"""g. The mail server stops for a while, twice, and starts again: every e-mail asked for goes once,
none lost, none twice (the worker's MailNotification workflows retry until it is back)."""

from __future__ import annotations

import pytest
from sqlalchemy import func
from sqlmodel import Session, select

from reintegration.db import UserNotificationRecord
from tests.faults.harness import PLAN, assert_clean, fault_stack, run_fault

pytestmark = pytest.mark.faults

DOWN_FOR = 4.0  # seconds without a mail server, each time


async def stop_the_mail_server(ctx) -> None:
    mail = ctx.fs.mail
    for low, high in ((0.15, 0.35), (0.55, 0.75)):
        if await ctx.progress(ctx.at(low, high)):
            break
        mail.stop()
        finished = await ctx.pause(DOWN_FOR)
        mail.start()
        if finished:
            break
    ctx.log.append(f"mail server stopped {mail.stopped} times, {DOWN_FOR:.0f} s each")


async def test_the_mail_server_stops_and_starts_again(temporal_address, tmp_path):
    journeys, seed = PLAN["mail-outage"]
    async with fault_stack("mail", tmp_path, temporal_address=temporal_address) as fs:
        findings = await run_fault(fs, "mail-outage", journeys=journeys, seed=seed, fault=stop_the_mail_server)
        with Session(fs.stack.engine) as session:
            retried = session.exec(
                select(func.count())
                .select_from(UserNotificationRecord)
                .where(UserNotificationRecord.email_attempts > 1, UserNotificationRecord.email_status == "sent")
            ).one()
    assert_clean(findings)
    assert fs.mail.stopped >= 1
    assert retried > 0, "no e-mail met the mail server down: the fault tested nothing"
