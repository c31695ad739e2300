"""Who owns the case: a supervisor gives it to another caseworker."""

from __future__ import annotations

from datetime import datetime

from workflows.model import CaseStatus, JourneyState, ReassignOwner, Role, TimelineEvent
from workflows.rules.base import NewId
from workflows.rules.errors import N_, Forbidden, InvalidCommand, StepNotAllowed
from workflows.rules.events import event


def check_reassign_owner(state: JourneyState, cmd: ReassignOwner) -> None:
    """A reassignment is a supervisor's; a transfer (``country``), the receiving office's acceptance:
    a caseworker or supervisor of that country (their scope is the API's to check)."""
    if cmd.country is None and cmd.actor.role != Role.supervisor:
        raise Forbidden(N_("a supervisor reassigns a case"))
    if cmd.country is not None and cmd.actor.role not in (Role.caseworker, Role.supervisor):
        raise Forbidden(N_("the receiving office accepts a transfer"))
    if state.status == CaseStatus.closed:
        raise StepNotAllowed(N_("the case is closed"), [])
    if cmd.from_country is not None and cmd.from_country != state.owner_country:
        raise InvalidCommand(N_("the case is no longer managed in {country}").format(country=cmd.from_country))
    if cmd.country is not None and cmd.country == state.owner_country:
        raise InvalidCommand(N_("the case is already managed in {country}").format(country=cmd.country))
    if cmd.country is None and cmd.caseworker == state.owner_caseworker:
        raise InvalidCommand(N_("the case is already this caseworker's"))


def apply_reassign_owner(state: JourneyState, cmd: ReassignOwner, now: datetime, new_id: NewId) -> list[TimelineEvent]:
    state.version += 1
    if cmd.country is not None:
        return _transfer(state, cmd, now, new_id)
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


def _transfer(state: JourneyState, cmd: ReassignOwner, now: datetime, new_id: NewId) -> list[TimelineEvent]:
    """The case moves to another country's office, accepted there: owner country and caseworker
    change, the history stays with the case (as at a hand-over on arrival)."""
    assert cmd.country is not None
    previous_country, previous_caseworker = state.owner_country, state.owner_caseworker
    state.owner_country, state.owner_caseworker = cmd.country, cmd.caseworker
    return [
        event(
            state,
            now,
            new_id,
            "case",
            "transferred",
            cmd.actor,
            facts={
                "from_country": previous_country,
                "to_country": cmd.country,
                "from_caseworker": previous_caseworker,
                "to_caseworker": cmd.caseworker,
            },
        )
    ]
