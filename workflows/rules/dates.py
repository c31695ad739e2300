"""Calendar arithmetic for deadlines: months, whole days, ages."""

from __future__ import annotations

import calendar
from datetime import UTC, date, datetime, time


def add_months(day: date, months: int) -> date:
    month_index = day.month - 1 + months
    year, month = day.year + month_index // 12, month_index % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def start_of(day: date) -> datetime:
    return datetime.combine(day, time(0, 0), tzinfo=UTC)


def end_of(day: date) -> datetime:
    """A due date means due by the end of that day (UTC)."""
    return datetime.combine(day, time(23, 59, 59), tzinfo=UTC)


def as_moment(day: date | datetime | None, *, end: bool) -> datetime | None:
    """A day as the moment it ends (a due date) or starts (a start); a datetime as it is."""
    if isinstance(day, date) and not isinstance(day, datetime):
        return end_of(day) if end else start_of(day)
    return day


def age_on(birth: date, day: date) -> int:
    return day.year - birth.year - ((day.month, day.day) < (birth.month, birth.day))
