"""A case's rows in the read model, and how they differ from the state of the workflow that owns it.

``compare`` works out what the rows should hold with the projection's own ``case_values`` and
``task_values`` and compares them with what the rows hold, free text opened (its ciphertexts are
randomized). A drift shows values only for fields that can't carry personal data or free text
(``SHOWN``); any other is reported as ``"differs"``. ``reintegration.reconcile`` checks cases with it
and repairs them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlmodel import col

from reintegration.crypto import FREE_TEXT_KEYS, DataKeyRecord, Keyring, Unreadable
from reintegration.db import CaseRecord, StageVisitRecord, TaskRecord, aware
from reintegration.projection import case_values, task_values
from workflows import rules
from workflows.model import JourneyState, Stage

DIFFERS = "differs"

# Fields whose values a drift may show: ids, enums, flags and versions, never personal data or free text.
SHOWN = {
    "cases": frozenset(
        {
            "version",
            "stage",
            "status",
            "pathway",
            "closure_reason",
            "active_workflow_id",
            "allowed_steps",
            "agencies",
            "stalled",
            "owner_country",
            "origin_country",
            "destination_country",
        }
    ),
    "tasks": frozenset(
        {
            "version",
            "case_id",
            "owner_country",
            "service",
            "agency_id",
            "status",
            "stage",
            "safety_plan",
            "outcome",
            "assessment",
            "previous_agencies",
        }
    ),
}


@dataclass
class Drift:
    """One difference between a row of the read model and the state of the case's workflow.

    ``field`` is a column, ``facts.<name>`` inside the case's facts, ``row`` (the row is missing or
    extra: the values say ``missing``/``present``), ``workflow`` (the case's workflow is missing) or
    ``open_stage`` (``stage_visits``). ``read_model``/``workflow`` hold the two values only for the
    fields in ``SHOWN``; otherwise ``"differs"``.
    """

    case_id: str
    table: str
    key: str
    field: str
    read_model: Any
    workflow: Any

    @property
    def where(self) -> str:
        """``cases.stage``, ``tasks[<task id>].status``: what the CLI prints (no values)."""
        return f"{self.table}.{self.field}" if self.key == self.case_id else f"{self.table}[{self.key}].{self.field}"


@dataclass
class Rows:
    case: dict[str, Any] | None
    tasks: dict[str, dict[str, Any]]
    open_stages: list[str]


def read_rows(engine: Engine, case_id: str) -> Rows:
    with engine.connect() as conn:
        # SQLModel's metaclass sets ``__table__`` on a table model without declaring it.
        cases, tasks_table = CaseRecord.__table__, TaskRecord.__table__  # type: ignore[attr-defined]
        case = conn.execute(select(cases).where(col(CaseRecord.case_id) == case_id)).mappings().first()
        tasks = {
            row["task_id"]: dict(row)
            for row in conn.execute(select(tasks_table).where(col(TaskRecord.case_id) == case_id)).mappings()
        }
        stages = sorted(
            conn.scalars(
                select(col(StageVisitRecord.stage)).where(
                    col(StageVisitRecord.case_id) == case_id, col(StageVisitRecord.left_at).is_(None)
                )
            )
        )
    return Rows(case=dict(case) if case is not None else None, tasks=tasks, open_stages=stages)


def erased(engine: Engine, case_id: str) -> bool:
    """The case's key was destroyed: its free text and its workflows' payloads can't be read."""
    with engine.connect() as conn:
        key = conn.execute(
            select(col(DataKeyRecord.wrapped), col(DataKeyRecord.destroyed_at)).where(
                col(DataKeyRecord.case_id) == case_id
            )
        ).first()
    return key is not None and (key.wrapped is None or key.destroyed_at is not None)


def _norm(value: Any) -> Any:
    """Values as both databases give them back: datetimes in UTC (SQLite drops the zone)."""
    if isinstance(value, datetime):
        return aware(value).astimezone(UTC)
    if isinstance(value, date):
        return value
    if isinstance(value, dict):
        return {k: _norm(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_norm(v) for v in value]
    return value


def shown_drift(case_id: str, table: str, key: str, name: str, read_model: Any, workflow: Any) -> Drift:
    """A drift with its two values if the field may show them (``SHOWN``), else ``"differs"``."""
    if name in SHOWN.get(table, frozenset()) and not isinstance(read_model, _Unreadable):
        return Drift(case_id, table, key, name, read_model, workflow)
    return Drift(case_id, table, key, name, DIFFERS, DIFFERS)


class _Unreadable:
    """A sealed value that does not decrypt (altered): equal to nothing the workflow holds."""


def _opened(keyring: Keyring, case_id: str, name: str, value: Any) -> Any:
    try:
        return keyring.open_fields(case_id, {name: value}, FREE_TEXT_KEYS)[name]
    except Unreadable:
        return _Unreadable()


def _compare_row(
    case_id: str, table: str, key: str, row: dict[str, Any], want: dict[str, Any], keyring: Keyring
) -> list[Drift]:
    drifts = []
    for name, expected in want.items():
        if name == "facts" and isinstance(row.get(name), dict) and isinstance(expected, dict):
            facts = row[name]
            for fact in sorted(set(facts) | set(expected)):
                if _norm(_opened(keyring, case_id, fact, facts.get(fact))) != _norm(expected.get(fact)):
                    drifts.append(Drift(case_id, table, key, f"facts.{fact}", DIFFERS, DIFFERS))
            continue
        actual = _opened(keyring, case_id, name, row.get(name))
        if _norm(actual) != _norm(expected):
            drifts.append(shown_drift(case_id, table, key, name, actual, expected))
    return drifts


def compare(state: JourneyState, rows: Rows, keyring: Keyring) -> list[Drift]:
    """Every difference between the rows and what the state says they should hold."""
    case_id = state.case_id
    drifts: list[Drift] = []
    want_case = {**case_values(rules.project(state, [])), "version": state.version}
    if rows.case is None:
        drifts.append(Drift(case_id, "cases", case_id, "row", "missing", "present"))
    else:
        drifts += _compare_row(case_id, "cases", case_id, rows.case, want_case, keyring)
    for task in state.tasks.values():
        row = rows.tasks.get(task.task_id)
        if row is None:
            drifts.append(Drift(case_id, "tasks", task.task_id, "row", "missing", "present"))
        else:
            want = {**task_values(state, task), "version": task.version}
            drifts += _compare_row(case_id, "tasks", task.task_id, row, want, keyring)
    for task_id in sorted(set(rows.tasks) - set(state.tasks)):
        drifts.append(Drift(case_id, "tasks", task_id, "row", "present", "missing"))
    open_stage = [] if state.stage == Stage.closed else [state.stage.value]
    if rows.open_stages != open_stage:
        drifts.append(
            Drift(
                case_id,
                "stage_visits",
                case_id,
                "open_stage",
                ",".join(rows.open_stages) or None,
                ",".join(open_stage) or None,
            )
        )
    return drifts


def settled(state: JourneyState, rows: Rows) -> bool:
    """The rows were written by the projection of the state's version (one transaction), or by none newer."""
    return (
        rows.case is not None
        and rows.case["version"] == state.version
        and all(t["version"] <= state.version for t in rows.tasks.values())
    )
