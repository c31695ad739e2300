"""The activities of a bulk reassignment (``workflows/reassignment.py``): one case moved, and the
record of how it ended."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col
from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from reintegration import commands, directory
from reintegration.crypto import Keyring
from reintegration.db import CaseRecord, ReassignmentRecord
from workflows.model import ActivityName, ReassignmentProgress, ReassignOne, ReassignOwner
from workflows.reassignment import SKIPPED, reason_purpose


class ReassignmentActivities:
    def __init__(self, *, client: Client, engine: Engine, keyring: Keyring) -> None:
        self._client, self._engine, self._keyring = client, engine, keyring

    @activity.defn(name=ActivityName.REASSIGN_CASE)
    async def reassign_case(self, one: ReassignOne) -> str:
        """Send the case its ``reassign_owner`` command ("done"), or say why it was left ("skipped:...").
        The update id is the reassignment's and the case's: a retry is the same command, applied once."""
        refused, reason, country = await asyncio.to_thread(self._refused, one)
        if refused:
            return SKIPPED + refused
        # In the country checked: a case transferred meanwhile is refused by the journey, not moved.
        command = ReassignOwner(caseworker=one.to_caseworker, reason=reason, actor=one.actor, from_country=country)
        try:
            await commands.send_command(
                self._client,
                self._engine,
                one.case_id,
                "reassign_owner",
                command,
                update_id=f"reassignment:{one.reassignment_id}:{one.case_id}",
            )
        except commands.NoSuchCase:
            return SKIPPED + "no such case"
        except commands.CaseClosed:
            return SKIPPED + "the case is closed"
        except commands.CommandRefused as exc:
            return SKIPPED + exc.message
        except commands.TemporalUnavailable as exc:
            raise ApplicationError(f"the case could not be reached: {exc.message}") from None
        return "done"

    def _refused(self, one: ReassignOne) -> tuple[str, str, str]:
        """Why the case cannot go to the caseworker now ("" if it can): she must still be a known,
        active caseworker of the case's country. (A case already hers is sent the command all the
        same: a retry of this one gets its first answer, any other the journey's refusal.)"""
        with Session(self._engine) as session:
            case = session.get(CaseRecord, one.case_id)
            if case is None:
                return "no such case", "", ""
            if case.owner_caseworker not in (one.from_caseworker, one.to_caseworker):
                return f"no longer {one.from_caseworker}'s: another reassignment came first", "", ""
            try:
                directory.check_owner(session, one.to_caseworker, case.owner_country)
            except directory.UnknownUser as exc:
                return str(exc), "", ""
            row = session.get(ReassignmentRecord, one.reassignment_id)
            sealed = row.reason if row is not None else ""
        reason = self._keyring.open_system(sealed, purpose=reason_purpose(one.reassignment_id)) if sealed else ""
        return "", reason, case.owner_country

    @activity.defn(name=ActivityName.FINISH_REASSIGNMENT)
    async def finish_reassignment(self, reassignment_id: str, progress: ReassignmentProgress) -> None:
        def finish() -> None:
            with Session(self._engine) as session:
                session.execute(
                    update(ReassignmentRecord)
                    .where(col(ReassignmentRecord.reassignment_id) == reassignment_id)
                    .values(
                        status="finished",
                        done=len(progress.done),
                        skipped=progress.skipped,
                        finished_at=datetime.now(UTC),
                    )
                )
                session.commit()

        await asyncio.to_thread(finish)
