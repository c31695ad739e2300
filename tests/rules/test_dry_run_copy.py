"""The copy a command's dry run changes (``workflows.journey.state_copy``): equal to the state, and
sharing nothing with it that the rules could change. Pure: the journey's real rules, no server."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from tests.rules.builders import (
    CLINIC,
    SHELTER,
    Case,
    closed,
    consented,
    departed,
    granted,
    monitored,
    opened,
    planned,
    withdrawn,
)
from workflows.journey import state_copy
from workflows.model import CommandResult, JourneyState, Stage


def _with_tasks() -> Case:
    case = consented()
    clinic = case.assign("medical", CLINIC)
    case.assign("shelter", SHELTER)
    case.task("accept", task_id=clinic)
    case.state.applied_updates["update-1"] = CommandResult(version=case.state.version, stage=Stage.protection)
    return case


def _mutable_parts(value: Any, found: dict[int, Any]) -> dict[int, Any]:
    """Every model, list, dict and set inside ``value``, by identity (kept alive in ``found``)."""
    if isinstance(value, BaseModel):
        found[id(value)] = value
        for name in type(value).model_fields:
            _mutable_parts(getattr(value, name), found)
    elif isinstance(value, dict):
        found[id(value)] = value
        for item in value.values():
            _mutable_parts(item, found)
    elif isinstance(value, list | set):
        found[id(value)] = value
        for item in value:
            _mutable_parts(item, found)
    return found


CASES = {
    "opened": opened,
    "tasks": _with_tasks,
    "departed": departed,
    "granted": granted,
    "planned": planned,
    "monitored": monitored,
    "closed": closed,
    "withdrawn": withdrawn,
}


@pytest.mark.parametrize("made", CASES.values(), ids=CASES.keys())
def test_the_dry_runs_copy_equals_the_state_and_shares_nothing_with_it(made):
    state = made().state
    JourneyState.model_validate(state.model_dump(), strict=True)  # the quick way applies, not the fallback
    copy = state_copy(state)
    assert type(copy) is JourneyState and copy == state
    assert copy.model_dump(mode="json") == state.model_dump(mode="json")
    shared = _mutable_parts(state, {}).keys() & _mutable_parts(copy, {}).keys()
    assert not shared, [type(_mutable_parts(state, {})[i]).__name__ for i in shared]


def test_a_state_its_model_would_refuse_is_still_copied_whole():
    state = monitored().state
    state.reference = "REF\x00"  # a control character: the model refuses it, the rules never make one
    with pytest.raises(ValueError):
        JourneyState.model_validate(state.model_dump(), strict=True)
    copy = state_copy(state)
    assert copy == state and copy is not state and copy.tasks is not state.tasks
