"""Lists in pages: ``?limit=`` (default 50, at most 500) and an opaque ``?cursor=``, answered as
``{"items": [...], "next_cursor": ...}``. Every list pages by keyset, written once here: the rows after
the cursor's position in the list's order, never an offset (a list that grows while it is read
neither repeats nor skips a row)."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, TypeVar

from fastapi import Query
from sqlalchemy import ColumnElement, SQLColumnExpression
from sqlalchemy.orm import QueryableAttribute, SQLORMExpression
from sqlmodel import Session, SQLModel
from sqlmodel.sql.expression import SelectOfScalar

from api.deps import IDENTIFIER
from api.errors import Unprocessable
from api.languages import N_
from reintegration.db import aware

Row = TypeVar("Row", bound=SQLModel)

Limit = Annotated[int, Query(ge=1, le=500, description="Items per page")]
Cursor = Annotated[str | None, Query(max_length=500, description="`next_cursor` of the page before")]

_FORGED = N_("the cursor is not one this API gave")


@dataclass(frozen=True)
class Keyset:
    """The order a list is paged in: a sort column holding a time, and the id that breaks its ties;
    or, with no ``key``, a unique whole number (an audit row's ``seq``)."""

    sort: SQLORMExpression[datetime | None] | SQLORMExpression[int]
    key: SQLORMExpression[str] | None = None
    descending: bool = False

    def order_by(self) -> list[SQLColumnExpression[Any]]:
        columns: list[SQLColumnExpression[Any]] = [self.sort] if self.key is None else [self.sort, self.key]
        return [c.desc() for c in columns] if self.descending else columns

    def after(self, cursor: str) -> ColumnElement[bool]:
        """The condition for the rows after the cursor's position."""
        if self.key is None:
            number = _number(cursor)
            return self.sort < number if self.descending else self.sort > number
        at, key = _time_and_key(cursor)
        if self.descending:
            return (self.sort < at) | ((self.sort == at) & (self.key < key))
        return (self.sort > at) | ((self.sort == at) & (self.key > key))

    def cursor_of(self, row: SQLModel) -> str | None:
        """The cursor that continues after this row; none where its sort value is missing."""
        value = getattr(row, _attribute(self.sort))
        if value is None:
            return None
        if self.key is None:
            text = str(value)
        else:
            text = f"{aware(value).isoformat()}|{getattr(row, _attribute(self.key))}"
        return base64.urlsafe_b64encode(text.encode()).decode()


def _attribute(column: SQLORMExpression[Any]) -> str:
    """The row attribute a table's column is read from: ``opened_at`` for ``col(CaseRecord.opened_at)``."""
    if not isinstance(column, QueryableAttribute):
        raise TypeError("a keyset orders by the columns of a table's class, e.g. col(CaseRecord.opened_at)")
    return column.key


def page(
    session: Session, query: SelectOfScalar[Row], order: Keyset, *, limit: int, cursor: str | None
) -> tuple[list[Row], str | None]:
    """One page of the query's rows in the keyset's order, and the cursor of the next page (if any)."""
    if cursor:
        query = query.where(order.after(cursor))
    rows = list(session.exec(query.order_by(*order.order_by()).limit(limit + 1)).all())
    next_cursor = order.cursor_of(rows[limit - 1]) if len(rows) > limit else None
    return rows[:limit], next_cursor


def _decoded(cursor: str) -> str:
    try:
        return base64.urlsafe_b64decode(cursor.encode()).decode()
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise Unprocessable(_FORGED) from None


def _number(cursor: str) -> int:
    text = _decoded(cursor)
    if not re.fullmatch(r"[0-9]{1,19}", text) or int(text) >= 2**63:
        raise Unprocessable(_FORGED)
    return int(text)


def _time_and_key(cursor: str) -> tuple[datetime, str]:
    at, _, key = _decoded(cursor).partition("|")
    try:
        parsed = datetime.fromisoformat(at)
    except ValueError:
        raise Unprocessable(_FORGED) from None
    # The key is a case or task id; anything else (a NUL byte, which PostgreSQL refuses) is forged.
    if not re.fullmatch(IDENTIFIER, key):
        raise Unprocessable(_FORGED)
    return parsed, key
