"""One meaning of "overdue" for a task: the journey's rule on a task's row (a partner's inbox, the
case view) and the same rule as SQL (``GET /v1/tasks?overdue=``) agree, on both databases, at the
edges of a due day and of the acceptance deadline."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel, select

from reintegration.db import TaskRecord
from reintegration.overdue import is_overdue, overdue_condition
from tests.conftest import _drop_postgres_database, _postgres_database
from workflows import rules
from workflows.model import TaskStatus

DUE = date(2026, 12, 10)
ACCEPT_BY = datetime(2026, 12, 3, 9, 30, tzinfo=UTC)
MOMENTS = [
    ACCEPT_BY - timedelta(microseconds=1),
    ACCEPT_BY,
    ACCEPT_BY + timedelta(seconds=1),
    datetime(2026, 12, 10, 0, 0, tzinfo=UTC),
    rules.end_of(DUE),
    rules.end_of(DUE) + timedelta(microseconds=500),
    rules.end_of(DUE) + timedelta(seconds=1),
    datetime(2026, 12, 11, 0, 0, tzinfo=UTC),
    datetime(2026, 12, 11, 1, 0, tzinfo=UTC),
    datetime(2027, 1, 1, tzinfo=UTC),
]


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request: pytest.FixtureRequest, tmp_path) -> Iterator[Engine]:
    name = None
    if request.param == "postgres":
        name, url = _postgres_database()
        request.node.add_marker(pytest.mark.postgres)
    else:
        url = f"sqlite:///{tmp_path / 'tasks.db'}"
    made = create_engine(url)
    SQLModel.metadata.create_all(made, tables=[TaskRecord.__table__])  # type: ignore[list-item]
    try:
        yield made
    finally:
        made.dispose()
        if name:
            _drop_postgres_database(name)


def _task(status: TaskStatus) -> TaskRecord:
    return TaskRecord(
        task_id=f"t-{status.value}",
        case_id="c-1",
        case_reference="ES-TEST",
        owner_country="ES",
        service="medical",
        agency_id="clinic-es",
        status=status.value,
        stage="protection",
        assigned_at=ACCEPT_BY - timedelta(days=3),
        accept_by=ACCEPT_BY,
        due_on=DUE,
    )


def test_the_rule_and_its_query_agree_at_every_edge(engine: Engine) -> None:
    with Session(engine) as session:
        session.add_all([_task(status) for status in TaskStatus])
        session.commit()
        rows = session.exec(select(TaskRecord)).all()
        for now in MOMENTS:
            by_rule = {t.task_id for t in rows if is_overdue(t, now)}
            by_query = set(session.exec(select(TaskRecord.task_id).where(overdue_condition(now))).all())
            assert by_query == by_rule, now


def test_what_overdue_means() -> None:
    assigned, accepted, done = _task(TaskStatus.assigned), _task(TaskStatus.accepted), _task(TaskStatus.completed)
    assert not is_overdue(assigned, ACCEPT_BY)
    assert is_overdue(assigned, ACCEPT_BY + timedelta(seconds=1))  # not accepted in time
    assert not is_overdue(accepted, ACCEPT_BY + timedelta(days=1))  # accepted: its due day counts
    assert not is_overdue(accepted, rules.end_of(DUE))  # due by the end of its due day
    assert is_overdue(accepted, rules.end_of(DUE) + timedelta(seconds=1))
    assert not is_overdue(done, datetime(2027, 1, 1, tzinfo=UTC))  # done is never overdue
    assert rules.last_overdue_day(rules.end_of(DUE)) == DUE - timedelta(days=1)
    assert rules.last_overdue_day(rules.end_of(DUE) + timedelta(seconds=1)) == DUE
