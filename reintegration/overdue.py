"""Overdue tasks in the read model: the journey's one rule (``rules.task_overdue``) applied to a
task's row, and the same rule as a query condition for the lists. ``tests/test_overdue.py`` holds
the two to agreeing."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, or_
from sqlmodel import col

from reintegration.db import TaskRecord, aware
from workflows import rules
from workflows.model import OPEN_TASK_STATUS_VALUES, TaskStatus


def is_overdue(task: TaskRecord, now: datetime | None = None) -> bool:
    """Whether the task's row is overdue now (or at ``now``)."""
    return rules.task_overdue(task.status, aware(task.accept_by), task.due_on, now or datetime.now(UTC))


def overdue_condition(now: datetime) -> Any:
    """The rows ``is_overdue`` holds overdue at ``now``, as a query condition."""
    return or_(
        and_(col(TaskRecord.status) == TaskStatus.assigned.value, col(TaskRecord.accept_by) < now),
        and_(
            col(TaskRecord.status).in_(sorted(OPEN_TASK_STATUS_VALUES)),
            col(TaskRecord.due_on) <= rules.last_overdue_day(now),
        ),
    )
