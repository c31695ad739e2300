"""Who owns the case: a supervisor gives it to another caseworker."""

from __future__ import annotations

from datetime import datetime

from workflows.model import CaseStatus, JourneyState, ReassignOwner, Role, TimelineEvent
from workflows.rules.base import NewId
from workflows.rules.errors import N_, Forbidden, InvalidCommand, StepNotAllowed
from workflows.rules.events import event


def check_reassign_owner(state: JourneyState, cmd: ReassignOwner) -> None:
    if cmd.actor.role != Role.supervisor:
        raise Forbidden(N_("a supervisor reassigns a case"))
    if state.status == CaseStatus.closed:
        raise StepNotAllowed(N_("the case is closed"), [])
    if cmd.caseworker == state.owner_caseworker:
        raise InvalidCommand(N_("the case is already this caseworker's"))


def apply_reassign_owner(state: JourneyState, cmd: ReassignOwner, now: datetime, new_id: NewId) -> list[TimelineEvent]:
    state.version += 1
    previous, state.owner_caseworker = state.owner_caseworker, cmd.caseworker
    return [
        event(
            state,
            now,
            new_id,
            "case",
            "reassigned",
            cmd.actor,
            facts={"from_caseworker": previous, "to_caseworker": cmd.caseworker},
        )
    ]
