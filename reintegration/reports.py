"""Indicators for programmes and donors: counts over a period, disaggregated, with small cells
suppressed. One computation (``indicators``) serves the API's JSON and CSV, the workspace's page
and its printable PDF.

Definitions (a period is ``[period_from, period_to]``, dates inclusive, UTC; a case is counted in
a period by the date of the event, whatever its state today):

People (table ``people``, one row per group):
- ``identified``: cases whose person was identified in the period (``identified_on``).
- ``assisted``: cases with at least one service delivered in the period (a partner task completed
  with outcome ``done``).
- ``returned``: cases whose arrival in the country of origin was confirmed in the period.
- ``granted_residence``: cases with a residence decision ``granted`` in the period.
- ``reintegration_started``: cases whose reintegration plan was agreed in the period.
- ``reintegrated``: cases closed in the period with reason ``completed`` after a reintegration plan.
- ``closed``: cases closed in the period, whatever the reason.

Closures (table ``closures``): the cases closed in the period, one column per reason
(``completed``, ``withdrew``, ``lost-contact``, ``transferred``, ``other``); a row's columns add up to
its ``closed`` in ``people``.

Services (table ``services``): one row per service and agency (and group): ``delivered``, tasks
completed ``done`` in the period, and ``people``, the cases they were delivered to.

Days per stage (``stage_days``): the stays in a stage that ended in the period: how many, the median
and the 90th percentile of their days (nearest-rank), per stage and group.

Sustainability (table ``sustainability``): the cases whose monitoring visit at 12 months (the first
visit on or after the plan's agreement plus 12 months, less the grace period) fell in the period:
``cases_at_12_months``, and ``above_threshold``, those whose every dimension was at or above its
threshold at that visit; ``share`` is their ratio.

Disaggregation (``group_by``, any of ``GROUPS``): ``sex`` and ``age_band`` (the case facts),
``exploitation_type`` (a case counts once under each of its types), ``country`` (where the figure
happened: below), ``pathway`` (``none`` before a decision), ``service`` (a case counts once under
each service delivered to it; ``none`` if none). With a multi-valued group (exploitation type,
service) the groups' rows add up to more than the total; the total row counts each case once.

Small cells: a count from 1 to ``threshold - 1`` is shown as ``"<threshold>"`` (``"<5"``), never its
value; then, for every set of cells whose sum is shown (the rows of a column under its total, the
reasons of a row under its ``closed``), if exactly one cell of the set is hidden, or its hidden cells
add up to so little that a reader would know a small one better than its mark says (two 1s under a
total: each is 1, being 1 or more), the smallest other non-zero cell of the set is hidden too
(complementary suppression), repeated until no total gives a hidden cell away. A median or 90th
percentile is shown only beside a count of ``threshold`` stays or more that is shown itself, and a
share only over ``threshold`` cases or more, both counts shown (``null`` otherwise). Zero is shown:
it reveals nobody.

What the definitions above leave open, decided here:

- Countries: each figure counts in the country where it happened, so that a region's report holds
  what its offices did, whoever manages the case now (an arrival hands a returned case over to the
  country of origin, a transfer to another office): an identification in the country that
  identified the case (``destination_country``); a return in that country, which the person left
  (the office that returned them, unless the case was transferred before), and in the country of
  origin, which they reached; a service, and so a person assisted, in its agency's country; a stay
  in the country that managed the case during it (as the dashboard's medians); a residence granted,
  a plan, a closure and a visit at 12 months in the country that manages the case now (a residence
  case is not handed over, a plan and its visits come after the hand-over, a closed case does not
  move, and a case transferred goes with the person, whose residence the new office then asks for).
  ``country``, as a group, is that country: a return, or a person assisted in two countries, counts
  under both.
- Reopened cases: the read model holds each case as it is now. A reopening clears the closure, and
  in the stage it reopens the arrival and residence decisions (protection) or the plan and its
  visits (either): a report of an earlier period made after the reopening no longer counts them.
- Group values: a case without case facts is ``NonSpecifiedUnknown`` and ``unknown`` (age band);
  without exploitation types, ``unknown``; the services a case counts under (``service``) are
  those delivered to it by the end of the period, wherever. A stay or a task counts under its
  case's groups. In ``services`` the keys are the request's groups without ``service`` (a row's
  service is the task's own), then ``service`` and ``agency_id``. Rows are listed only for groups
  with a count, in the picklists' order (``unknown`` and ``none`` last).
- A visit at 12 months is above the thresholds as it found itself (its ``below_threshold``, with
  the case's own thresholds); ``thresholds`` decide only for a visit that does not say.
- Percentiles are nearest-rank: the p-th of n sorted values is the ``ceil(p / 100 * n)``-th (the
  median of 4 is the 2nd), in days to one decimal.
- The sets of complementary suppression (``Sum``): each column of each table, its rows under its
  total (also with a multi-valued group, whose rows nearly add up: most cases have one value); each
  row of ``closures``, its reasons under its ``closed`` in ``people``, and its ``completed`` as the
  ``reintegrated`` of ``people`` and those closed completed without a plan (never shown, but hidden
  when small); each row of ``sustainability``, ``above_threshold`` and the cases below (likewise)
  under ``cases_at_12_months``; the ``people`` of ``services``' total, the same cases as ``people``'s
  total ``assisted``; each stage's stays, its groups under its total; and, with two groups or more,
  the rows that differ in one group only, whose sum a request grouped by the others shows.
  A set's total is one of its cells: a total hidden by another set, its parts all shown, hides the
  smallest part too. Example: a column of 12, 3, 0 and 7 under a total of 22 is shown as 12, "<5",
  0, "<5": 3 is under 5, and 7, the smallest other non-zero cell, hides it (22 - 12 - 0 is 3 + 7);
  the total stays. Every hidden cell shows the same mark, ``"<5"``, also one hidden to protect
  another (7 above): a mark of its own would tell a reader which cell is the large one, and with
  the sum (a 1 and a 5 under 6, say) give both away.
- Bounds (``Within``, ``Exclusive``): a count that holds some of the people of another bounds it
  without adding up to it: a group's people served by one service and agency are some of its people
  assisted (and as many as the tasks delivered, at most); a multi-valued group's ``unknown`` (or
  ``none``) row counts the cases with no other value, so it is at most the total less any other row
  (and that row at most the total less ``unknown``). Where such a bound would tell a reader more of
  a hidden cell than its mark does (a small one: that it is under ``threshold - 1``; one hidden to
  protect another: its value within ``threshold - 2``, which would pin the small one beside it), the
  shown cell that gives the bound is hidden too, and the sets above are looked at again. (With a
  multi-valued group and another group whose rows differ, the ``unknown`` rows are bounded by the
  other group's totals, which only another report shows: not looked at; see the last point.)
- What is left to a reader: narrowing a hidden count, never to one value (``tests/test_reports.py``
  attacks random reports so): every hidden count is 1 or more, so two hidden reasons under a hidden
  ``closed`` make it 2 or more.
- Not protected: what two reports give away together. Each report protects its own cells; the
  difference of two reports of the same period (the region by country and one of its countries
  alone, or one grouped by sex and one by sex and age band) can give a hidden cell away. Publish one
  report, with every breakdown the readers need, or check that the others hide the same cells.
"""

from __future__ import annotations

import heapq
import itertools
import json
import math
from collections import Counter, defaultdict
from collections.abc import Collection, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from typing import Any, Generic, TypeVar

import sqlalchemy
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session
from sqlmodel import col

from reintegration.case_facts import GENDERS, UNKNOWN_SEX, AgeBand
from reintegration.db import AgencyRecord, CaseFactsRecord, CaseRecord, StageVisitRecord, TaskRecord, aware
from workflows.model import ClosureReason, ExploitationType, JourneyConfig, Pathway, Service, Stage
from workflows.rules import add_months, start_of

# A shown count, or the suppressed cell's mark (e.g. "<5").
Cell = int | str


class Group(StrEnum):
    sex = "sex"
    age_band = "age_band"
    exploitation_type = "exploitation_type"
    country = "country"
    pathway = "pathway"
    service = "service"


GROUPS = tuple(Group)
MULTI_VALUED = frozenset({Group.exploitation_type, Group.service})

PEOPLE_COLUMNS = (
    "identified",
    "assisted",
    "returned",
    "granted_residence",
    "reintegration_started",
    "reintegrated",
    "closed",
)
CLOSURE_COLUMNS = ("completed", "withdrew", "lost-contact", "transferred", "other")
SERVICE_COLUMNS = ("delivered", "people")
SUSTAINABILITY_COLUMNS = ("cases_at_12_months", "above_threshold")

# The smallest threshold that hides anything (1 would hide nothing), and the largest taken.
MIN_THRESHOLD = 2
MAX_THRESHOLD = 1000
# Group values for what a case has not recorded.
UNKNOWN = "unknown"
NONE = "none"
# A multi-valued group's value for a case that has none of the others (``Exclusive``).
EXCLUSIVE = {Group.exploitation_type.value: UNKNOWN, Group.service.value: NONE}
# The monitoring visit the sustainability table reads: the one at 12 months after the plan.
SUSTAINABILITY_MONTHS = 12
DEFAULT_GRACE_DAYS = JourneyConfig().monitoring_grace_days
# Counts never shown, but suppressed as cells, so that a difference of two shown counts cannot give
# a small one away: the cases below the thresholds at 12 months (cases_at_12_months - above_threshold),
# and those closed completed without a plan (closures' completed - people's reintegrated).
_BELOW = "below_threshold"
_UNPLANNED = "completed_without_plan"


class Row(BaseModel):
    """One row of a table: the group's values (``{}`` for the total) and a cell per column."""

    group: dict[str, str] = Field(default_factory=dict)
    cells: dict[str, Cell] = Field(default_factory=dict)


class Table(BaseModel):
    name: str
    # The group columns (the request's group_by, plus ``service`` and ``agency_id`` for ``services``).
    keys: list[str]
    columns: list[str]
    rows: list[Row]
    total: Row


class StageDays(BaseModel):
    stage: str
    group: dict[str, str] = Field(default_factory=dict)
    stays: Cell
    median_days: float | None = None
    p90_days: float | None = None


class SustainabilityShare(BaseModel):
    group: dict[str, str] = Field(default_factory=dict)
    share: float | None = None  # above_threshold / cases_at_12_months; None when suppressed


class Indicators(BaseModel):
    period_from: date
    period_to: date
    countries: list[str] | None = Field(description="The region the report covers; null: every country")
    group_by: list[Group]
    threshold: int
    generated_at: datetime
    people: Table
    closures: Table
    services: Table
    stage_days: list[StageDays]
    sustainability: Table
    sustainability_shares: list[SustainabilityShare]


# --- Small cells -------------------------------------------------------------------------------

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class Sum(Generic[K]):
    """Cells whose sum is known: ``total``, a cell of the report, or None for a sum shown elsewhere
    (by a request grouped by fewer groups)."""

    parts: tuple[K, ...]
    total: K | None = None

    @property
    def cells(self) -> tuple[K, ...]:
        return self.parts if self.total is None else (*self.parts, self.total)


@dataclass(frozen=True)
class Within(Generic[K]):
    """``inner`` counts some of what ``outer`` counts, so ``inner <= outer``: a shown one bounds a
    hidden other (a group's people served by one service and agency, of its people assisted)."""

    outer: K
    inner: K


@dataclass(frozen=True)
class Exclusive(Generic[K]):
    """A multi-valued group's rows under ``total``: ``none`` counts the cases with none of the
    ``others``' values, so ``none <= total - other`` and ``other <= total - none`` for each."""

    total: K
    none: K
    others: tuple[K, ...]


Bound = Within[K] | Exclusive[K]


def hidden_cells(
    values: Mapping[K, int], sums: Iterable[Sum[K]], threshold: int, bounds: Iterable[Bound[K]] = ()
) -> set[K]:
    """The cells not to show: every count from 1 to ``threshold - 1``; then, while a sum gives a
    hidden cell away (``exposed``: one hidden cell, which its other cells give away, or hidden cells
    adding up to too little), the smallest other non-zero part of that sum (the first in its order
    among equals), or its total if no part is left to hide; then the shown cells whose bound on a
    hidden one says more than its mark (``too_close``), and the sums again, until nothing changes
    (a fixed point)."""
    known, limits = list(sums), list(bounds)
    hidden = {k for k, v in values.items() if 0 < v < threshold}
    while True:
        hidden = _complements(values, known, hidden, threshold)
        more = _bounded(values, limits, hidden, threshold)
        if not more:
            return hidden
        hidden |= more


def exposed(values: Mapping[K, int], s: Sum[K], hidden: Collection[K], threshold: int) -> bool:
    """Whether a sum gives a hidden cell away: it has only one; or its total is known (shown, or
    shown elsewhere) and its hidden parts, each 1 or more, add up to so little that a small one
    among them is at most less than ``threshold - 1`` (a 1 and a 2 under a total: the two are 3, so
    each is 1 or 2), which tells more than its mark."""
    inside = [c for c in s.cells if c in hidden]
    if len(inside) == 1:
        return True
    if not inside or (s.total is not None and s.total in hidden):
        return False
    parts = [values[p] for p in s.parts if p in hidden]
    return min(parts) < threshold and sum(parts) - (len(parts) - 1) < threshold - 1


def _complements(values: Mapping[K, int], known: Sequence[Sum[K]], hidden: set[K], threshold: int) -> set[K]:
    """``hidden`` and the complements each sum that gives a hidden cell away needs (``exposed``)."""
    hidden = set(hidden)
    sums_of: dict[K, list[int]] = defaultdict(list)
    for index, s in enumerate(known):
        for cell in s.cells:
            sums_of[cell].append(index)
    waiting = list(range(len(known)))  # the sums to look at again, as a heap (a stable order)
    heapq.heapify(waiting)
    queued = set(waiting)
    while waiting:
        index = heapq.heappop(waiting)
        queued.discard(index)
        s = known[index]
        if not exposed(values, s, hidden, threshold):
            continue
        shown = [(values[p], n) for n, p in enumerate(s.parts) if p not in hidden and values[p] > 0]
        if shown:
            chosen = s.parts[min(shown)[1]]
        elif s.total is not None and s.total not in hidden and values[s.total] > 0:
            chosen = s.total
        else:
            continue  # nothing left to hide: its one hidden cell is zero's complement elsewhere
        hidden.add(chosen)
        for other in sums_of[chosen]:
            if other not in queued:
                queued.add(other)
                heapq.heappush(waiting, other)
    return hidden


def too_close(value: int, bound: int, *, upper: bool, threshold: int) -> bool:
    """Whether a bound a reader can work out for a hidden cell of ``value`` tells more than its mark:
    for a small count (its mark says from 1 to ``threshold - 1``), an upper bound under
    ``threshold - 1``; for a count hidden to protect a small one beside it, a bound less than
    ``threshold - 2`` from it (the small one's own bound would then be narrower than its mark)."""
    if value < threshold:
        return upper and bound < threshold - 1
    return abs(bound - value) < threshold - 2


def _bounded(values: Mapping[K, int], bounds: Sequence[Bound[K]], hidden: set[K], threshold: int) -> set[K]:
    """The shown cells to hide because of what they bound (``too_close``)."""
    more: set[K] = set()

    def close(cell: K, bound: int, upper: bool) -> bool:
        return too_close(values[cell], bound, upper=upper, threshold=threshold)

    for b in bounds:
        if isinstance(b, Within):
            outer, inner = b.outer, b.inner
            if outer in hidden and inner not in hidden and values[inner] > 0 and close(outer, values[inner], False):
                more.add(inner)
            elif inner in hidden and outer not in hidden and close(inner, values[outer], True):
                more.add(outer)
            continue
        if b.total in hidden:
            continue
        total, none = values[b.total], values[b.none]
        for other in b.others:
            if b.none in hidden and other not in hidden and values[other] > 0:
                if close(b.none, total - values[other], True):
                    more.add(other)
            elif other in hidden and b.none not in hidden and none > 0 and close(other, total - none, True):
                more.add(b.none)
    return more - hidden


def suppress(
    values: Mapping[K, int], sums: Iterable[Sum[K]], threshold: int, bounds: Iterable[Bound[K]] = ()
) -> dict[K, Cell]:
    """Each cell as shown: its count, or ``"<threshold>"`` when hidden (``hidden_cells``)."""
    if threshold < MIN_THRESHOLD:
        raise ValueError(f"a threshold of {threshold} hides nothing")
    hidden = hidden_cells(values, sums, threshold, bounds)
    mark = f"<{threshold}"
    return {k: mark if k in hidden else v for k, v in values.items()}


def percentile(values: Sequence[float], p: float) -> float:
    """The nearest-rank percentile: the ``ceil(p / 100 * n)``-th smallest of the n values."""
    if not values or not 0 < p <= 100:
        raise ValueError("a percentile of no values, or outside (0, 100]")
    ordered = sorted(values)
    return ordered[max(math.ceil(p / 100 * len(ordered)), 1) - 1]


# --- A case as the report reads it --------------------------------------------------------------


@dataclass
class CaseFacts:
    """What the report reads of one case (from ``cases``, ``case_facts`` and ``tasks``)."""

    case_id: str
    country: str  # the country that manages the case now
    identified_in: str = ""  # the country that identified it (``destination_country``); "": ``country``
    origin: str = ""  # the person's country of origin, where a return ends
    pathway: str | None = None
    sex: str = UNKNOWN_SEX
    age_band: str = AgeBand.unknown.value
    exploitation_types: list[str] = field(default_factory=list)
    identified_on: date | None = None
    arrived_on: date | None = None
    granted_on: list[date] = field(default_factory=list)
    plan_agreed_on: date | None = None
    closed_on: date | None = None
    closure_reason: str | None = None
    # The monitoring visits, as the read model keeps them (``MonitoringVisit`` in JSON); or their
    # JSON text, decoded when a visit is looked for (``monitoring_visits``).
    visits: list[dict[str, Any]] = field(default_factory=list)
    visits_json: str | None = None
    # The services delivered to the case by the period's end (tasks completed ``done``).
    services: set[str] = field(default_factory=set)

    def monitoring_visits(self) -> list[dict[str, Any]]:
        if self.visits_json is not None:
            self.visits = [v for v in _listed(self.visits_json) if isinstance(v, dict)]
            self.visits_json = None
        return self.visits


def group_values(case: CaseFacts, group: Group) -> list[str]:
    """The case's values for a group: one, or for a multi-valued group each of its values once
    (``country``: the country that manages it now; a figure puts its own in its place)."""
    if group == Group.sex:
        return [case.sex if case.sex in GENDERS else UNKNOWN_SEX]
    if group == Group.age_band:
        return [case.age_band or AgeBand.unknown.value]
    if group == Group.exploitation_type:
        return list(dict.fromkeys(case.exploitation_types)) or [UNKNOWN]
    if group == Group.country:
        return [case.country]
    if group == Group.pathway:
        return [case.pathway or NONE]
    return sorted(case.services, key=lambda s: _rank(Group.service.value, s)) or [NONE]


def case_groups(case: CaseFacts, group_by: Sequence[Group]) -> list[tuple[str, ...]]:
    """Every group the case counts under, once each: one value per group, every combination of a
    multi-valued group's values (``[()]`` without groups: the total only)."""
    return list(itertools.product(*(group_values(case, g) for g in group_by)))


# The order rows are listed in: a picklist's own order, then what it does not know alphabetically,
# ``unknown`` and ``none`` last.
_ORDERS: dict[str, list[str]] = {
    Group.sex.value: list(GENDERS),
    Group.age_band.value: [b.value for b in AgeBand],
    Group.exploitation_type.value: [t.value for t in ExploitationType],
    Group.pathway.value: [p.value for p in Pathway],
    Group.service.value: [s.value for s in Service],
    "stage": [s.value for s in Stage],
}


def _rank(key: str, value: str) -> tuple[int, int, str]:
    order = _ORDERS.get(key, [])
    if value in order:
        return (0, order.index(value), "")
    return (2 if value in (UNKNOWN, NONE) else 1, 0, value)


def _row_order(keys: Sequence[str]) -> Any:
    return lambda row: tuple(_rank(k, v) for k, v in zip(keys, row, strict=True))


# --- Counting -----------------------------------------------------------------------------------

CellId = tuple[str, tuple[str, ...] | None, str]  # (table, row's group values or None: the total, column)


@dataclass
class _Counts:
    """One table's counts before suppression: rows by their group values, and the total.
    ``exclusive``: the multi-valued keys and the value of a case with none of their others."""

    name: str
    keys: tuple[str, ...]
    columns: tuple[str, ...]
    exclusive: Mapping[str, str] = field(default_factory=dict)
    rows: defaultdict[tuple[str, ...], Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    total: Counter[str] = field(default_factory=Counter)

    def add(self, factors: Sequence[Sequence[str]], column: str, n: int = 1) -> None:
        """``n`` more in ``column``: in the total once, and in each row of the values' combinations
        (``factors``: each key's values; none without keys: the total only)."""
        self.total[column] += n
        if self.keys:
            for row in itertools.product(*factors):
                self.rows[row][column] += n

    def ordered_rows(self) -> list[tuple[str, ...]]:
        return sorted(self.rows, key=_row_order(self.keys))

    def values(self) -> dict[CellId, int]:
        found: dict[CellId, int] = {(self.name, None, c): self.total[c] for c in self.columns}
        for row, counts in self.rows.items():
            found.update({(self.name, row, c): counts[c] for c in self.columns})
        return found

    def sums(self) -> list[Sum[CellId]]:
        """Each column's rows under its total; with two groups or more, also the rows that differ in
        one group only, whose sum a request grouped by the others shows."""
        rows = self.ordered_rows()
        found = [Sum(tuple((self.name, r, c) for r in rows), (self.name, None, c)) for c in self.columns]
        if len(self.keys) > 1:
            for i in range(len(self.keys)):
                for members in self._slices(rows, i).values():
                    if len(members) > 1:
                        found += [Sum(tuple((self.name, r, c) for r in members)) for c in self.columns]
        return found

    def bounds(self) -> list[Exclusive[CellId]]:
        """For a multi-valued key whose rows all share the other keys' values (the key alone, most
        often), each column's ``unknown`` (or ``none``) row and the others under the total."""
        rows = self.ordered_rows()
        found: list[Exclusive[CellId]] = []
        for i, key in enumerate(self.keys):
            if key not in self.exclusive:
                continue
            slices = self._slices(rows, i)
            if len(slices) != 1:
                continue
            members = next(iter(slices.values()))
            nones = [r for r in members if r[i] == self.exclusive[key]]
            others = tuple(r for r in members if r[i] != self.exclusive[key])
            if not nones or not others:
                continue
            for c in self.columns:
                found.append(
                    Exclusive((self.name, None, c), (self.name, nones[0], c), tuple((self.name, r, c) for r in others))
                )
        return found

    @staticmethod
    def _slices(rows: Sequence[tuple[str, ...]], i: int) -> dict[tuple[str, ...], list[tuple[str, ...]]]:
        """The rows by their values of every key but the ``i``-th."""
        found: dict[tuple[str, ...], list[tuple[str, ...]]] = defaultdict(list)
        for r in rows:
            found[r[:i] + r[i + 1 :]].append(r)
        return found

    def table(self, shown: Mapping[CellId, Cell], columns: Sequence[str]) -> Table:
        def row(r: tuple[str, ...] | None) -> Row:
            group = {} if r is None else dict(zip(self.keys, r, strict=True))
            return Row(group=group, cells={c: shown[(self.name, r, c)] for c in columns})

        return Table(
            name=self.name,
            keys=list(self.keys),
            columns=list(columns),
            rows=[row(r) for r in self.ordered_rows()],
            total=row(None),
        )


@dataclass(frozen=True)
class Period:
    """Days from ``start`` to ``end``, both included."""

    start: date
    end: date

    def __contains__(self, day: date | None) -> bool:
        return day is not None and self.start <= day <= self.end


def _day(value: Any) -> date | None:
    """A date of the read model's facts (ISO text), or None."""
    if not isinstance(value, str):
        return None
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        return None


def last_moment(day: date) -> datetime:
    """The day's last moment (UTC), the inclusive end of a period: no day after it to overflow into."""
    return datetime.combine(day, time.max, tzinfo=UTC)


def _utc_day(value: datetime | None) -> date | None:
    return aware(value).astimezone(UTC).date() if value is not None else None


def load_cases(
    session: Session, countries: Sequence[str] | None, *, types: bool = True, period: Period | None = None
) -> dict[str, CaseFacts]:
    """The cases a report of these countries reads (``None``: every one): those the countries
    identified, manage or are the origin of, with only the facts the report reads (extracted from
    the facts' JSON by the database, the lists as their JSON text: most are empty, and an empty one
    is not decoded) and their case facts (sex and age band; unknown without a row). ``types``: read
    the exploitation types (only a report grouped by them needs them). ``period``: only the cases
    that can count in it (``_may_count``), the ones served or staying in the countries then too: a
    report's cost grows with its period, not with the history."""
    connection = session.connection()
    extracted, values = _facts_read(connection.dialect.name)
    identified, arrived, plan = extracted["identified_on"], extracted["arrived_on"], extracted["plan_agreed_on"]
    decisions = extracted["residence_decisions"]
    query = (
        sqlalchemy.select(
            col(CaseRecord.case_id),
            col(CaseRecord.owner_country),
            col(CaseRecord.destination_country),
            col(CaseRecord.origin_country),
            col(CaseRecord.pathway),
            col(CaseRecord.closed_at),
            col(CaseRecord.closure_reason),
            identified,
            arrived,
            plan,
            extracted["exploitation_types"] if types else sqlalchemy.null(),
            decisions,
            extracted["monitoring_visits"],
            col(CaseFactsRecord.sex),
            col(CaseFactsRecord.age_band),
        )
        .select_from(CaseRecord)
        .outerjoin(CaseFactsRecord, col(CaseFactsRecord.case_id) == col(CaseRecord.case_id))
    )
    if values is not None:
        query = query.join(values, sqlalchemy.true())
    if period is not None:
        query = query.where(_may_count(period, countries, identified, arrived, plan, decisions))
    elif countries is not None:
        query = query.where(_of_countries(countries))
    cases: dict[str, CaseFacts] = {}
    # The connection's rows (Core), not the ORM's: a tenth of the time at 100,000 cases.
    rows = connection.execute(query)
    for (
        case_id,
        country,
        destination,
        origin,
        pathway,
        closed_at,
        reason,
        identified,
        arrived,
        plan,
        kinds,
        decisions,
        visits,
        sex,
        band,
    ) in rows:
        plan_agreed_on = _day(plan)
        cases[case_id] = CaseFacts(
            case_id=case_id,
            country=country,
            identified_in=destination or country,
            origin=origin or "",
            pathway=pathway,
            sex=sex or UNKNOWN_SEX,
            age_band=band or AgeBand.unknown.value,
            exploitation_types=[str(t) for t in _listed(kinds)],
            identified_on=_day(identified),
            arrived_on=_day(arrived),
            granted_on=[
                d
                for x in (_listed(decisions) if decisions and "granted" in decisions else [])
                if isinstance(x, dict) and x.get("decision") == "granted" and (d := _day(x.get("decided_on")))
            ],
            plan_agreed_on=plan_agreed_on,
            closed_on=_utc_day(closed_at),
            closure_reason=reason,
            visits_json=visits if plan_agreed_on else None,  # only after a plan is a visit at 12 months
        )
    return cases


# The facts' keys the report reads, each as text (a list as its JSON).
_FACT_KEYS = (
    "identified_on",
    "arrived_on",
    "plan_agreed_on",
    "exploitation_types",
    "residence_decisions",
    "monitoring_visits",
)


def _facts_read(dialect: str) -> tuple[dict[str, Any], Any]:
    """The facts' values the report reads, as the database extracts them, and what to join for
    them: on PostgreSQL one ``json_to_record`` per row (its ``->>`` parses the whole ``json`` text
    again for each key: three times slower at 100,000 cases); elsewhere (SQLite) ``json_extract``."""
    facts = col(CaseRecord.facts)
    if dialect == "postgresql":
        record = (
            sqlalchemy.func.json_to_record(facts)
            .table_valued(*(sqlalchemy.column(k, sqlalchemy.Text) for k in _FACT_KEYS))
            .render_derived(name="fact_values", with_types=True)
        )
        return {k: record.c[k] for k in _FACT_KEYS}, record
    return {k: facts[k].as_string() for k in _FACT_KEYS}, None


def _of_countries(countries: Sequence[str]) -> Any:
    """A case these countries identified, manage now or are the origin of (where a return ends)."""
    return sqlalchemy.or_(
        col(CaseRecord.owner_country).in_(countries),
        col(CaseRecord.destination_country).in_(countries),
        col(CaseRecord.origin_country).in_(countries),
    )


def _delivered_in() -> Any:
    """The country a task was delivered in: its agency's (the task's owner's if the agency is gone)."""
    return sqlalchemy.func.coalesce(col(AgencyRecord.country), col(TaskRecord.owner_country))


def _done_tasks(*columns: Any) -> Any:
    """The tasks completed ``done``, with their agency for the country they were delivered in."""
    return (
        sqlalchemy.select(*columns)
        .select_from(TaskRecord)
        .outerjoin(AgencyRecord, col(AgencyRecord.agency_id) == col(TaskRecord.agency_id))
        .where(col(TaskRecord.status) == "completed", col(TaskRecord.outcome) == "done")
    )


def _may_count(
    period: Period, countries: Sequence[str] | None, identified: Any, arrived: Any, plan: Any, decisions: Any
) -> Any:
    """Whether a case can count in the period: of the countries (``_of_countries``), an event of
    ``people`` in it (its dates compared as ISO text, in SQLite's JSON and PostgreSQL's alike), a
    plan by its end (the visit at 12 months comes after it), a residence granted ever; or a service
    delivered or a stay ended in it, in the countries."""
    first, last = period.start.isoformat(), period.end.isoformat()
    start, end = start_of(period.start), last_moment(period.end)
    closed_at = col(CaseRecord.closed_at)
    case_id = col(CaseRecord.case_id)
    facts: Any = sqlalchemy.or_(
        identified.between(first, last),
        arrived.between(first, last),
        plan <= last,
        decisions.like("%granted%"),
        sqlalchemy.and_(closed_at >= start, closed_at <= end),
    )
    served = _done_tasks(col(TaskRecord.case_id)).where(
        col(TaskRecord.completed_at) >= start, col(TaskRecord.completed_at) <= end
    )
    stayed = sqlalchemy.select(col(StageVisitRecord.case_id)).where(
        col(StageVisitRecord.left_at) >= start, col(StageVisitRecord.left_at) <= end
    )
    if countries is not None:
        facts = sqlalchemy.and_(_of_countries(countries), facts)
        served = served.where(_delivered_in().in_(countries))
        stayed = stayed.where(col(StageVisitRecord.country).in_(countries))
    return sqlalchemy.or_(facts, case_id.in_(served), case_id.in_(stayed))


def _listed(text: str | None) -> list[Any]:
    """A list of the facts' JSON, from its text (None, or not a list: empty)."""
    if not text or text == "[]":
        return []
    found = json.loads(text)
    return found if isinstance(found, list) else []


def load_deliveries(
    session: Session, countries: Sequence[str] | None, period: Period
) -> list[tuple[str, str, str, str, bool]]:
    """The services delivered by the end of the period to the cases of these countries, or in them:
    (case, service, agency, the country it was delivered in, whether in the period), one per task
    completed with outcome ``done``. (The database compares the times: no timestamp is parsed here.)"""
    completed_at = col(TaskRecord.completed_at)
    country = _delivered_in()
    query = _done_tasks(
        col(TaskRecord.case_id),
        col(TaskRecord.service),
        col(TaskRecord.agency_id),
        country,
        completed_at >= start_of(period.start),
    ).where(completed_at <= last_moment(period.end))
    if countries is not None:
        of_countries = sqlalchemy.select(col(CaseRecord.case_id)).where(_of_countries(countries))
        query = query.where(sqlalchemy.or_(country.in_(countries), col(TaskRecord.case_id).in_(of_countries)))
    return [(c, s, a, where, bool(inside)) for c, s, a, where, inside in session.connection().execute(query)]


def load_stays(session: Session, countries: Sequence[str] | None, period: Period) -> list[tuple[str, str, float, str]]:
    """The stays in these countries that ended in the period: (case, stage, days, country)."""
    query = sqlalchemy.select(
        col(StageVisitRecord.case_id),
        col(StageVisitRecord.stage),
        col(StageVisitRecord.days),
        col(StageVisitRecord.country),
    ).where(
        col(StageVisitRecord.days).is_not(None),
        col(StageVisitRecord.left_at) >= start_of(period.start),
        col(StageVisitRecord.left_at) <= last_moment(period.end),
    )
    if countries is not None:
        query = query.where(col(StageVisitRecord.country).in_(countries))
    return [(c, s, float(d), where) for c, s, d, where in session.connection().execute(query) if d is not None]


def visit_at_12_months(case: CaseFacts, grace_days: int, until: date | None = None) -> dict[str, Any] | None:
    """The case's visit at 12 months: the first on or after the plan's agreement plus 12 months,
    less the grace period (a visit may be recorded from then on); None before it, and None when it
    could only come after ``until`` (its visits are then not even decoded)."""
    if case.plan_agreed_on is None:
        return None
    try:
        due = add_months(case.plan_agreed_on, SUSTAINABILITY_MONTHS) - timedelta(days=grace_days)
    except (ValueError, OverflowError):  # 12 months after the last day there is
        return None
    if until is not None and due > until:
        return None
    visits = case.monitoring_visits()
    dated = [(d, n, v) for n, v in enumerate(visits) if (d := _day(v.get("visited_on"))) is not None and d >= due]
    return min(dated, key=lambda item: (item[0], item[1]))[2] if dated else None


def sustainable(visit: Mapping[str, Any], thresholds: Mapping[str, float]) -> bool:
    """Every dimension at or above its threshold at the visit: as the visit itself found with the
    case's own thresholds (``below_threshold``), or, for a visit without that, by ``thresholds``."""
    below = visit.get("below_threshold")
    if isinstance(below, list):
        return not below
    scores = visit.get("scores") or {}
    return all(float(scores.get(k, 0.0)) >= t for k, t in thresholds.items())


def indicators(
    session: Session,
    *,
    countries: Sequence[str] | None,
    period_from: date,
    period_to: date,
    group_by: Sequence[Group],
    threshold: int,
    thresholds: Mapping[str, float],
    grace_days: int = DEFAULT_GRACE_DAYS,
    now: datetime | None = None,
) -> Indicators:
    """The indicators of ``countries`` (None: every country; []: none) for the period, disaggregated
    by ``group_by``, small cells suppressed under ``threshold`` (the module's docstring defines
    them). ``thresholds``: the sustainability thresholds for a visit that does not say whether it
    was below its own; ``grace_days``: the monitoring visits' grace period."""
    if period_from > period_to:
        raise ValueError("the period's start comes after its end")
    if not MIN_THRESHOLD <= threshold <= MAX_THRESHOLD:
        raise ValueError(f"a threshold from {MIN_THRESHOLD} to {MAX_THRESHOLD}")
    groups = list(dict.fromkeys(Group(g) for g in group_by))
    period = Period(period_from, period_to)
    region = None if countries is None else frozenset(countries)
    keys = tuple(g.value for g in groups)
    service_keys = tuple(g.value for g in groups if g != Group.service) + ("service", "agency_id")
    exclusive = {k: EXCLUSIVE[k] for k in keys if k in EXCLUSIVE}

    if region is not None and not region:
        cases: dict[str, CaseFacts] = {}
        deliveries: list[tuple[str, str, str, str, bool]] = []
        stays: list[tuple[str, str, float, str]] = []
    else:
        cases = load_cases(session, countries, types=Group.exploitation_type in groups, period=period)
        deliveries = load_deliveries(session, countries, period)
        stays = load_stays(session, countries, period)

    def ours(country: str) -> bool:
        return region is None or country in region

    # case: (service, agency, country delivered in): its tasks delivered in the period in the region
    in_period: dict[str, Counter[tuple[str, str, str]]] = defaultdict(Counter)
    for case_id, service, agency_id, where, inside in deliveries:
        case = cases.get(case_id)
        if case is None:
            continue
        case.services.add(service)
        if inside and ours(where):
            in_period[case_id][(service, agency_id, where)] += 1

    people = _Counts("people", keys, PEOPLE_COLUMNS, exclusive)
    closures = _Counts("closures", keys, (*CLOSURE_COLUMNS, _UNPLANNED), exclusive)
    services = _Counts(
        "services", service_keys, SERVICE_COLUMNS, {k: v for k, v in exclusive.items() if k != "service"}
    )
    sustainability = _Counts("sustainability", keys, (*SUSTAINABILITY_COLUMNS, _BELOW), exclusive)
    stage_days = {s.value: _Counts(f"stage_days:{s.value}", keys, ("stays",), exclusive) for s in Stage}
    days: dict[tuple[str, tuple[str, ...] | None], list[float]] = defaultdict(list)
    factors_of: dict[str, _Factors] = {}

    for case in cases.values():
        factors = factors_of[case.case_id] = _Factors(groups, [group_values(case, g) for g in groups], region)
        delivered = in_period.get(case.case_id)
        measures = _people_measures(case, period, [where for (_, _, where) in delivered] if delivered else ())
        for measure, countries_of in measures.items():
            if (f := factors.at(countries_of)) is not None:
                people.add(f, measure)
        if "closed" in measures and (f := factors.at(measures["closed"])) is not None:
            closures.add(f, _closure_reason(case))
            if case.closure_reason == ClosureReason.completed.value and "reintegrated" not in measures:
                closures.add(f, _UNPLANNED)
        if delivered:
            services.total["delivered"] += sum(delivered.values())
            services.total["people"] += 1
            served: set[tuple[str, ...]] = set()
            for (service, agency_id, where), n in delivered.items():
                f = factors.at([where], without=Group.service)
                assert f is not None  # delivered in the region
                for row in itertools.product(*f):
                    key = (*row, service, agency_id)
                    services.rows[key]["delivered"] += n
                    if key not in served:  # a person once per row
                        served.add(key)
                        services.rows[key]["people"] += 1
        visit = visit_at_12_months(case, grace_days, until=period_to)
        if visit is not None and _day(visit.get("visited_on")) in period:
            if (f := factors.at([case.country])) is not None:
                sustainability.add(f, "cases_at_12_months")
                sustainability.add(f, "above_threshold" if sustainable(visit, thresholds) else _BELOW)

    for case_id, stage, stay_days, where in stays:
        if case_id not in factors_of or stage not in stage_days:
            continue
        f = factors_of[case_id].at([where])
        if f is None:
            continue
        stage_days[stage].add(f, "stays")
        days[(stage, None)].append(stay_days)
        for row in itertools.product(*f) if groups else []:
            days[(stage, row)].append(stay_days)

    tables = [people, closures, services, sustainability, *stage_days.values()]
    values: dict[CellId, int] = {}
    sums: list[Sum[CellId]] = []
    bounds: list[Bound[CellId]] = []
    for t in tables:
        values.update(t.values())
        sums += t.sums()
        bounds += t.bounds()
    sums += _links(people, closures, sustainability)
    bounds += _services_bounds(services, groups, people)
    shown = suppress(values, sums, threshold, bounds)

    return Indicators(
        period_from=period_from,
        period_to=period_to,
        countries=sorted(countries) if countries is not None else None,
        group_by=groups,
        threshold=threshold,
        generated_at=now or datetime.now(UTC),
        people=people.table(shown, PEOPLE_COLUMNS),
        closures=closures.table(shown, CLOSURE_COLUMNS),
        services=services.table(shown, SERVICE_COLUMNS),
        stage_days=_stage_days(stage_days, days, shown, threshold),
        sustainability=sustainability.table(shown, SUSTAINABILITY_COLUMNS),
        sustainability_shares=_shares(sustainability, shown, threshold),
    )


@dataclass(frozen=True)
class _Factors:
    """A case's values for each group, and for a figure the same with the country where it happened
    in place of the case's own (``country``); None when that is outside the ``region``."""

    groups: Sequence[Group]
    values: list[Sequence[str]]
    region: frozenset[str] | None

    def at(self, where: Sequence[str], without: Group | None = None) -> list[Sequence[str]] | None:
        if self.region is not None:
            where = [c for c in where if c in self.region]
            if not where:
                return None
        if without is None and Group.country not in self.groups:
            return self.values  # (the common case, once per figure of every case: kept quick)
        pairs = zip(self.groups, self.values, strict=True)
        return [where if g == Group.country else v for g, v in pairs if g != without]


def _people_measures(case: CaseFacts, period: Period, served_in: Collection[str] = ()) -> dict[str, list[str]]:
    """The columns of ``people`` the case counts in for the period, each with the countries where
    it happened (the module's docstring); ``served_in``: the countries of its services in the period."""
    found: dict[str, list[str]] = {}
    identified_in = case.identified_in or case.country
    now = [case.country]
    if case.identified_on in period:
        found["identified"] = [identified_in]
    if served_in:
        found["assisted"] = sorted(set(served_in))
    if case.arrived_on in period:
        origin = case.origin or case.country
        found["returned"] = [identified_in] if origin == identified_in else [identified_in, origin]
    if case.granted_on and any(d in period for d in case.granted_on):
        found["granted_residence"] = now
    if case.plan_agreed_on in period:
        found["reintegration_started"] = now
    if case.closed_on in period:
        if case.closure_reason == ClosureReason.completed.value and case.plan_agreed_on is not None:
            found["reintegrated"] = now
        found["closed"] = now
    return found


def _closure_reason(case: CaseFacts) -> str:
    return case.closure_reason if case.closure_reason in CLOSURE_COLUMNS else ClosureReason.other.value


def _links(people: _Counts, closures: _Counts, sustainability: _Counts) -> list[Sum[CellId]]:
    """The sums across columns and tables: each row's closures by reason under its closed people,
    and its completed as its reintegrated people and those without a plan; its cases at 12 months
    as those above and below the thresholds."""
    found: list[Sum[CellId]] = []
    for r in [None, *closures.ordered_rows()]:
        found.append(Sum(tuple((closures.name, r, c) for c in CLOSURE_COLUMNS), (people.name, r, "closed")))
        found.append(
            Sum(((people.name, r, "reintegrated"), (closures.name, r, _UNPLANNED)), (closures.name, r, "completed"))
        )
    for r in [None, *sustainability.ordered_rows()]:
        s = sustainability.name
        found.append(Sum(((s, r, "above_threshold"), (s, r, _BELOW)), (s, r, "cases_at_12_months")))
    # The services' people are the people assisted: the same cases, the same count.
    found.append(Sum((("services", None, "people"),), (people.name, None, "assisted")))
    return found


def _services_bounds(services: _Counts, groups: Sequence[Group], people: _Counts) -> list[Bound[CellId]]:
    """Each row's people at most its tasks delivered; and, when ``people`` has the row's group (not
    grouped by service, whose rows there are the case's services, not the task's), at most the
    group's people assisted."""
    s = services.name
    found: list[Bound[CellId]] = [Within((s, None, "delivered"), (s, None, "people"))]
    for r in services.ordered_rows():
        found.append(Within((s, r, "delivered"), (s, r, "people")))
        group = r[:-2] if groups else None
        if Group.service not in groups and (group is None or group in people.rows):
            found.append(Within((people.name, group, "assisted"), (s, r, "people")))
    return found


def _stage_days(
    counts: Mapping[str, _Counts],
    days: Mapping[tuple[str, tuple[str, ...] | None], list[float]],
    shown: Mapping[CellId, Cell],
    threshold: int,
) -> list[StageDays]:
    """Per stage (in the journey's order) its total, then its groups: the stays, and their median
    and 90th percentile when there are ``threshold`` stays or more and their count is shown (beside
    a hidden count they would say it is ``threshold`` or more, and so which hidden count is the
    small one)."""
    found = []
    for stage, table in counts.items():
        if not table.total["stays"]:
            continue
        for row in [None, *table.ordered_rows()]:
            spent = days[(stage, row)]
            stays = shown[(table.name, row, "stays")]
            enough = isinstance(stays, int) and stays >= threshold
            found.append(
                StageDays(
                    stage=stage,
                    group={} if row is None else dict(zip(table.keys, row, strict=True)),
                    stays=stays,
                    median_days=round(percentile(spent, 50), 1) if enough else None,
                    p90_days=round(percentile(spent, 90), 1) if enough else None,
                )
            )
    return found


def _shares(table: _Counts, shown: Mapping[CellId, Cell], threshold: int) -> list[SustainabilityShare]:
    """The share above the thresholds, for the total and each row: shown over ``threshold`` cases or
    more, and only when both its counts are (else the share and one count would give the other)."""
    found = []
    for row in [None, *table.ordered_rows()]:
        counts = table.total if row is None else table.rows[row]
        cases, above = counts["cases_at_12_months"], counts["above_threshold"]
        visible = all(isinstance(shown[(table.name, row, c)], int) for c in SUSTAINABILITY_COLUMNS)
        found.append(
            SustainabilityShare(
                group={} if row is None else dict(zip(table.keys, row, strict=True)),
                share=round(above / cases, 4) if cases >= threshold and visible else None,
            )
        )
    return found
