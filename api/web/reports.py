"""The indicators for programmes and donors in the workspace: a supervisor's page (a period, a country
of the region, the groups to break the counts down by; the tables, their charts drawn on the server,
the rule that hides small counts), its downloads (CSV, JSON) and its printable PDF.

One computation: ``reintegration.reports.indicators``, as ``GET /v1/reports/indicators`` calls it,
over the supervisor's region (``api.supervision.region``), with the same threshold and the API's own
rules for the period and the groups (``api.reports.parse_period``, ``parse_groups``); the CSV is the
API's own writer (``api.reports.indicators_csv``), the JSON the same model, each file named as the
API names it (``report_filename``). The workspace serves the downloads itself because it signs
people in with a cookie, the API with a bearer token. Each view, whatever its format, is audited as
the API audits it (``report.indicators`` with the format) before the figures leave; if the row
cannot be written nothing is shown.

Nothing of a report is computed or written on the event loop: the figures, the page and the CSV or
JSON in a worker thread with the database; the PDF, WeasyPrint's from ``reports_print.html`` (its CSS
inline, nothing fetched: every URL is refused), laid out and written in a thread of its own, two at
a time.
The charts are inline SVG with their colours as attributes, since WeasyPrint draws an inline SVG
without the page's CSS.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING, Annotated
from urllib.parse import urlencode

import anyio
import sqlalchemy
from babel import Locale, numbers
from fastapi import APIRouter, Depends, Query
from fastapi.responses import HTMLResponse, Response
from sqlmodel import col, select

from api.deps import read_in_thread
from api.errors import Unavailable, Unprocessable
from api.journeys import utcnow
from api.reports import MAX_PERIOD_YEARS, indicators_csv, parse_day, parse_groups, parse_period, report_filename
from api.supervision import region
from api.web import i18n, render, words
from api.web.context import Web, WebDep
from api.web.labels import LABELS, N_, REPORT_GROUP_VALUES
from reintegration.db import AgencyRecord, CaseRecord
from reintegration.reports import (
    CLOSURE_COLUMNS,
    GROUPS,
    PEOPLE_COLUMNS,
    SERVICE_COLUMNS,
    SUSTAINABILITY_COLUMNS,
    Cell,
    Group,
    Indicators,
    Row,
    StageDays,
    SustainabilityShare,
    Table,
    indicators,
)
from workflows.model import Role, Stage

if TYPE_CHECKING:  # imported where a report is printed: see ``document``
    import weasyprint

router = APIRouter(include_in_schema=False)

PAGE = "/workspace/reports"
FORMATS = {"csv": "text/csv; charset=utf-8", "json": "application/json", "pdf": "application/pdf"}
_COUNTRY = re.compile(r"^[A-Z]{2}$")

# The headline counts that get a chart of their own (the table has every column).
MAIN_MEASURES = ("identified", "assisted", "returned", "granted_residence", "reintegrated")
# A chart shows at most this many bars (the table has every row), and labels this long.
CHART_BARS = 30
LABEL_CHARS = 48

# The chart's drawing, in the SVG's own units (it scales to the width it is given).
CHART_WIDTH, LABEL_SPACE, BAR, GAP, ROW_END, VALUE_SPACE = 320, 18, 14, 4, 8, 60
# Two series told apart by form as well as colour: a filled bar, an outlined one.
SERIES = ({"fill": "#0b5cad", "stroke": "#0b5cad"}, {"fill": "#ffffff", "stroke": "#0b5cad"})

# Printing a PDF takes a CPU for a while (about a second per 100 rows of its tables, warm): at most
# two at once, each in a thread of its own, and a report of more rows than this is not printed (its
# CSV has them all; fewer groups make it shorter).
_PRINTING = anyio.CapacityLimiter(2)
PRINT_ROWS = 600

GROUP_WORDS = {
    "sex": N_("Sex"),
    "age_band": N_("Age at identification"),
    "exploitation_type": N_("Type of exploitation"),
    "country": N_("Country"),
    "pathway": N_("Pathway"),
    "service": N_("Service"),
    "agency_id": N_("Agency"),
    "stage": N_("Stage"),
}
COLUMN_WORDS = {
    "identified": N_("Identified"),
    "assisted": N_("Assisted"),
    "returned": N_("Returned"),
    "granted_residence": N_("Granted residence"),
    "reintegration_started": N_("Reintegration started"),
    "reintegrated": N_("Reintegrated"),
    "closed": N_("Closed"),
    "delivered": N_("Services delivered"),
    "people": N_("People served"),
    "cases_at_12_months": N_("Cases at 12 months"),
    "above_threshold": N_("Above every threshold"),
    "share": N_("Share above"),
    "stays": N_("Stays ended"),
    "median_days": N_("Median days"),
    "p90_days": N_("90th percentile of days"),
}
# Each people column said as a sentence's subject, for the charts' titles.
MEASURE_TITLES = {
    "identified": N_("People identified"),
    "assisted": N_("People assisted"),
    "returned": N_("People returned"),
    "granted_residence": N_("People granted residence"),
    "reintegrated": N_("People reintegrated"),
}


# --- The form --------------------------------------------------------------------------------------


@dataclass
class ReportQuery:
    """The page's form, read: the period, the country (``None``: the whole region) and the groups,
    with the words for what was wrong beside each field."""

    period_from: date
    period_to: date
    country: str | None = None
    group_by: list[Group] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    given: dict[str, str] = field(default_factory=dict)

    def params(self) -> str:
        """The query string that asks for this report again (for the downloads' links)."""
        pairs = [("from", self.period_from.isoformat()), ("to", self.period_to.isoformat())]
        pairs += [("country", self.country)] if self.country else []
        pairs += [("group_by", g.value) for g in self.group_by]
        return urlencode(pairs)


def read_query(
    _: Callable[[str], str],
    user_sees: Callable[[str], bool],
    *,
    period_from: str | None,
    period_to: str | None,
    country: str | None,
    group_by: list[str],
    today: date,
) -> ReportQuery:
    """The form's values, checked by the API's rules; a wrong one is said beside its field (and the
    API's default period, the year ending today, stands in for the form)."""
    start, end = parse_period(None, None, today)
    query = ReportQuery(period_from=start, period_to=end)
    given = {"from": (period_from or "").strip(), "to": (period_to or "").strip()}
    for name, value in given.items():
        if not value:
            continue
        query.given[name] = value
        try:
            parse_day(value, name)
        except Unprocessable:
            query.errors[name] = _("Enter a date as year-month-day, for example 2026-12-31.")
    if not query.errors:
        try:
            query.period_from, query.period_to = parse_period(given["from"] or None, given["to"] or None, today)
        except Unprocessable:  # the start after the end, or a period too long
            last = parse_day(given["to"], "to") if given["to"] else today
            if given["from"] and parse_day(given["from"], "from") > last:
                query.errors["to"] = _("The period ends before it begins: choose an end on or after its start.")
            else:
                query.errors["from"] = _("A report covers %(years)s years at most: choose a later start.") % {
                    "years": MAX_PERIOD_YEARS
                }
    if country and country.strip():
        code = country.strip().upper()
        query.given["country"] = code
        if not _COUNTRY.match(code):
            query.errors["country"] = _("A country is two letters, for example ES.")
        elif not user_sees(code):
            query.errors["country"] = _("This country is not in your region: choose one of the list.")
        else:
            query.country = code
    try:
        query.group_by = parse_groups(group_by)
    except Unprocessable:
        query.errors["group_by"] = _("Choose among the groups listed.")
        query.group_by = [g for g in GROUPS if g.value in set(group_by)]
    return query


# --- What the page shows: words and numbers in the person's language ---------------------------------


@dataclass(frozen=True)
class CellView:
    text: str
    suppressed: bool = False  # a small count hidden (``<5``)
    missing: bool = False  # a median, percentile or share not shown (too few to show)


@dataclass(frozen=True)
class RowView:
    groups: list[str]
    cells: list[CellView]


@dataclass(frozen=True)
class TableView:
    id: str
    title: str
    caption: str
    key_headings: list[str]
    column_headings: list[str]
    rows: list[RowView]
    total: RowView | None


@dataclass(frozen=True)
class PlacedBar:
    x: int
    y: int
    width: int
    height: int
    text: str
    text_x: int
    text_y: int
    fill: str
    stroke: str


@dataclass(frozen=True)
class PlacedRow:
    label: str
    label_y: int
    bars: list[PlacedBar]


@dataclass(frozen=True)
class Chart:
    id: str
    title: str
    desc: str
    caption: str
    width: int
    height: int
    rows: list[PlacedRow]
    legend: list[tuple[str, str, str]] = field(default_factory=list)  # (words, fill, stroke)
    more: int = 0  # rows not drawn (the table has them)


@dataclass(frozen=True)
class Bar:
    """One bar to draw: its value (``None``: no bar, only its text) and the text at its end."""

    value: float | None
    text: str


@dataclass(frozen=True)
class ChartRow:
    label: str
    bars: list[Bar]


@dataclass(frozen=True)
class ReportView:
    period_from: date
    period_to: date
    region: str
    generated_at: datetime
    threshold: int
    group_by: list[str]
    tables: list[TableView]
    charts: dict[str, list[Chart]]


class Words:
    """The report's words and numbers in one language (a page's, or the printed report's)."""

    def __init__(self, language: str, agencies: dict[str, str]) -> None:
        self.language = language
        self.agencies = agencies

    def _(self, message: str) -> str:
        return i18n.gettext(self.language, message)

    def count(self, value: int) -> str:
        return i18n.format_number(value, self.language, 0)

    def days(self, value: float) -> str:
        return i18n.format_number(value, self.language, 1)

    def share(self, value: float) -> str:
        return numbers.format_percent(value, locale=Locale.parse(self.language))

    def country(self, code: str) -> str:
        name = Locale.parse(self.language).territories.get(code)
        return f"{name} ({code})" if name else code

    def value(self, key: str, value: str) -> str:
        """A group's value in words: a country's name, an agency's, a band, or the journey's label."""
        if key == "country":
            return self.country(value)
        if key == "agency_id":
            return f"{self.agencies[value]} ({value})" if value in self.agencies else value
        special = REPORT_GROUP_VALUES.get(key, {})
        if value in special:
            return self._(special[value])
        return self._(LABELS[value]) if value in LABELS else value

    def heading(self, name: str) -> str:
        if name in GROUP_WORDS:
            return self._(GROUP_WORDS[name])
        if name in COLUMN_WORDS:
            return self._(COLUMN_WORDS[name])
        return self._(LABELS[name]) if name in LABELS else name

    def cell(self, value: Cell) -> CellView:
        if isinstance(value, str):  # the mark of a hidden count: "<5"
            return CellView(value, suppressed=True)
        return CellView(self.count(value))

    def group(self, keys: list[str], group: dict[str, str]) -> list[str]:
        return [self.value(k, group[k]) if k in group else self._("All") for k in keys]

    def label(self, keys: list[str], group: dict[str, str]) -> str:
        """A row's groups in one line (a chart's label), ``All`` for the total."""
        found = [self.value(k, group[k]) for k in keys if k in group]
        return " · ".join(found) if found else self._("All")


def region_words(w: Words, countries: list[str] | None) -> str:
    if countries is None:
        return w._("Every country")
    return ", ".join(w.country(c) for c in sorted(countries)) or w._("No country")


def view(report: Indicators, w: Words) -> ReportView:
    """The report as the page and the PDF show it: each table in words, and its charts."""
    keys = [g.value for g in report.group_by]
    people = table_view(
        report.people,
        w,
        title=w._("People"),
        caption=w._("People counted in the period, by what happened to them"),
        columns=list(PEOPLE_COLUMNS),
    )
    closures = table_view(
        report.closures,
        w,
        title=w._("Closures by reason"),
        caption=w._("Cases closed in the period, by the reason for closing"),
        columns=list(CLOSURE_COLUMNS),
    )
    services = table_view(
        report.services,
        w,
        title=w._("Services delivered"),
        caption=w._("Services delivered in the period, by service and agency"),
        columns=list(SERVICE_COLUMNS),
    )
    # A chart with nothing to draw (no row, or no figure shown) is left out: the table says why.
    charts = {
        "people": people_charts(report.people, w),
        "services": [services_chart(report.services, w)] if report.services.rows else [],
        "stage_days": [stage_chart(report.stage_days, w, keys)]
        if any(e.median_days is not None for e in report.stage_days)
        else [],
        "sustainability": [sustainability_chart(report.sustainability_shares, w, keys)]
        if any(s.share is not None for s in report.sustainability_shares)
        else [],
    }
    return ReportView(
        period_from=report.period_from,
        period_to=report.period_to,
        region=region_words(w, report.countries),
        generated_at=report.generated_at,
        threshold=report.threshold,
        group_by=[w.heading(k) for k in keys],
        tables=[
            people,
            closures,
            services,
            stage_table(report.stage_days, w, keys),
            sustainability_table(report.sustainability, report.sustainability_shares, w),
        ],
        charts=charts,
    )


def table_view(table: Table, w: Words, *, title: str, caption: str, columns: list[str]) -> TableView:
    columns = [c for c in table.columns if c in columns] + [c for c in table.columns if c not in columns]

    def row(r: Row) -> RowView:
        return RowView(w.group(table.keys, r.group), [w.cell(r.cells.get(c, 0)) for c in columns])

    return TableView(
        id=table.name,
        title=title,
        caption=caption,
        key_headings=[w.heading(k) for k in table.keys],
        column_headings=[w.heading(c) for c in columns],
        rows=[row(r) for r in table.rows],
        total=RowView([w._("Total")], row(table.total).cells),
    )


def _not_shown(w: Words) -> CellView:
    return CellView(w._("not shown"), missing=True)


def _stage_order(entry: StageDays) -> int:
    order = [s.value for s in Stage]
    return order.index(entry.stage) if entry.stage in order else len(order)


def stage_table(entries: list[StageDays], w: Words, keys: list[str]) -> TableView:
    rows = []
    for e in sorted(entries, key=_stage_order):  # stable: each stage's groups as the report gives them
        rows.append(
            RowView(
                [w.value("stage", e.stage), *w.group(keys, e.group)],
                [
                    w.cell(e.stays),
                    CellView(w.days(e.median_days)) if e.median_days is not None else _not_shown(w),
                    CellView(w.days(e.p90_days)) if e.p90_days is not None else _not_shown(w),
                ],
            )
        )
    return TableView(
        id="stage_days",
        title=w._("Days per stage"),
        caption=w._("Stays in a stage that ended in the period: how many, and how many days they took"),
        key_headings=[w.heading("stage"), *(w.heading(k) for k in keys)],
        column_headings=[w.heading(c) for c in ("stays", "median_days", "p90_days")],
        rows=rows,
        total=None,
    )


def _group_key(group: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(group.items()))


def sustainability_table(table: Table, shares: list[SustainabilityShare], w: Words) -> TableView:
    by_group = {_group_key(s.group): s.share for s in shares}
    columns = list(SUSTAINABILITY_COLUMNS)

    def row(r: Row, groups: list[str]) -> RowView:
        share = by_group.get(_group_key(r.group))
        cells = [w.cell(r.cells.get(c, 0)) for c in columns]
        return RowView(groups, [*cells, CellView(w.share(share)) if share is not None else _not_shown(w)])

    return TableView(
        id=table.name,
        title=w._("Sustainability at 12 months"),
        caption=w._(
            "Cases whose monitoring visit at 12 months fell in the period, and those at or above the "
            "threshold of every dimension"
        ),
        key_headings=[w.heading(k) for k in table.keys],
        column_headings=[*(w.heading(c) for c in columns), w.heading("share")],
        rows=[row(r, w.group(table.keys, r.group)) for r in table.rows],
        total=row(table.total, [w._("Total")]),
    )


# --- Charts --------------------------------------------------------------------------------------


def _short(label: str) -> str:
    return label if len(label) <= LABEL_CHARS else label[: LABEL_CHARS - 1].rstrip() + "…"


def bar_chart(
    id: str,
    title: str,
    caption: str,
    rows: list[ChartRow],
    *,
    top: float | None = None,
    legend: list[str] | None = None,
) -> Chart:
    """Horizontal bars, a row per group: its label above, a bar per series, each with its text at
    its end. ``top`` is the value of a full bar (the largest value if not given)."""
    drawn = rows[:CHART_BARS]
    highest = top if top is not None else max((b.value or 0 for r in drawn for b in r.bars), default=0)
    room = CHART_WIDTH - VALUE_SPACE
    placed, y = [], 0
    for r in drawn:
        bars = []
        for i, b in enumerate(r.bars):
            bar_y = y + LABEL_SPACE + i * (BAR + GAP)
            width = 0
            if b.value and highest:
                width = max(2, round(room * min(b.value, highest) / highest))
            colours = SERIES[i % len(SERIES)]
            bars.append(
                PlacedBar(
                    x=0,
                    y=bar_y,
                    width=width,
                    height=BAR,
                    text=b.text,
                    text_x=width + 5,
                    text_y=bar_y + BAR - 3,
                    fill=colours["fill"],
                    stroke=colours["stroke"],
                )
            )
        placed.append(PlacedRow(label=_short(r.label), label_y=y + 13, bars=bars))
        y += LABEL_SPACE + len(r.bars) * (BAR + GAP) + ROW_END
    desc = "; ".join(f"{r.label}: {' / '.join(b.text for b in r.bars)}" for r in drawn)
    return Chart(
        id=id,
        title=title,
        desc=desc,
        caption=caption,
        width=CHART_WIDTH,
        height=max(y, LABEL_SPACE + BAR + ROW_END),
        rows=placed,
        legend=[(words, SERIES[i]["fill"], SERIES[i]["stroke"]) for i, words in enumerate(legend or [])],
        more=max(0, len(rows) - CHART_BARS),
    )


def _count_bar(w: Words, value: Cell) -> Bar:
    """A count's bar; a hidden count gets no bar, only its mark."""
    return Bar(None, value) if isinstance(value, str) else Bar(float(value), w.count(value))


def people_charts(table: Table, w: Words) -> list[Chart]:
    """Without groups, one chart of the headline counts; with groups, one per headline count, a bar
    per group (a count that is nobody everywhere draws no chart: the table says it)."""
    if not table.rows:
        values = [table.total.cells.get(m, 0) for m in MAIN_MEASURES]
        if all(v == 0 for v in values):
            return []
        rows = [ChartRow(w.heading(m), [_count_bar(w, v)]) for m, v in zip(MAIN_MEASURES, values, strict=True)]
        title = w._("People in the period")
        return [bar_chart("chart-people", title, w._("The same figures are in the table above."), rows)]
    charts = []
    for measure in MAIN_MEASURES:
        values = [r.cells.get(measure, 0) for r in table.rows]
        if all(v == 0 for v in values):
            continue
        rows = [
            ChartRow(w.label(table.keys, r.group), [_count_bar(w, v)]) for r, v in zip(table.rows, values, strict=True)
        ]
        title = w._(MEASURE_TITLES[measure])
        charts.append(
            bar_chart(f"chart-people-{measure}", title, w._("The same figures are in the table above."), rows)
        )
    return charts


def services_chart(table: Table, w: Words) -> Chart:
    rows = [ChartRow(w.label(table.keys, r.group), [_count_bar(w, r.cells.get("delivered", 0))]) for r in table.rows]
    return bar_chart(
        "chart-services",
        w._("Services delivered by type and agency"),
        w._("Each service and agency: how many times it was delivered. The same figures are in the table above."),
        rows,
    )


def stage_chart(entries: list[StageDays], w: Words, keys: list[str]) -> Chart:
    rows = []
    for e in sorted(entries, key=_stage_order):
        label = " · ".join([w.value("stage", e.stage), *(w.value(k, e.group[k]) for k in keys if k in e.group)])
        rows.append(
            ChartRow(
                label,
                [
                    Bar(e.median_days, w.days(e.median_days) if e.median_days is not None else w._("not shown")),
                    Bar(e.p90_days, w.days(e.p90_days) if e.p90_days is not None else w._("not shown")),
                ],
            )
        )
    return bar_chart(
        "chart-stage-days",
        w._("Median and 90th percentile of days per stage"),
        w._("The first bar of each stage is the median, the second (outlined) the 90th percentile."),
        rows,
        legend=[w._("Median days"), w._("90th percentile of days")],
    )


def sustainability_chart(shares: list[SustainabilityShare], w: Words, keys: list[str]) -> Chart:
    rows = [
        ChartRow(
            w.label(keys, s.group),
            [Bar(s.share, w.share(s.share)) if s.share is not None else Bar(None, w._("not shown"))],
        )
        for s in shares
    ]
    return bar_chart(
        "chart-sustainability",
        w._("Share of cases above every threshold at 12 months"),
        w._("A full bar is 100%. The same figures are in the table above."),
        rows,
        top=1.0,
    )


# --- The routes ----------------------------------------------------------------------------------


def _asked(
    web: WebDep,
    period_from: Annotated[str | None, Query(alias="from", max_length=20)] = None,
    period_to: Annotated[str | None, Query(alias="to", max_length=20)] = None,
    country: Annotated[str | None, Query(max_length=20)] = None,
    group_by: Annotated[list[str] | None, Query(max_length=len(GROUPS) * 2)] = None,
) -> ReportQuery:
    """The form of the page and of its downloads, read by ``read_query``."""
    return read_query(
        web._,
        web.user.sees_country,
        period_from=period_from,
        period_to=period_to,
        country=country,
        group_by=group_by or [],
        today=utcnow().date(),
    )


AskedDep = Annotated[ReportQuery, Depends(_asked)]


@router.get("/workspace/reports")
async def reports_page(web: WebDep, query: AskedDep) -> Response:
    """The form and, for a valid one, the indicators with their charts."""
    if (refusal := words.only_for(web, Role.supervisor)) is not None:
        return refusal

    def page() -> Response:
        countries = _countries(web)
        if query.errors:
            return _page(web, query, countries, None, status=422)
        report, w = _report(web, query)
        try:
            _audit(web, query, "html")
        except Unavailable:
            return _busy(web)
        return _page(web, query, countries, view(report, w), printable_report=printed_rows(report) <= PRINT_ROWS)

    return await read_in_thread(web.session, page)


@router.get("/workspace/reports/indicators.{extension}")
async def download(extension: str, web: WebDep, query: AskedDep) -> Response:
    """The same indicators as CSV, JSON or a printable PDF, as an attachment named by the period."""
    if (refusal := words.only_for(web, Role.supervisor)) is not None:
        return refusal
    if extension not in FORMATS:
        gone = web._("The indicators are downloaded as CSV, JSON or PDF.")
        return words.refused(web, 404, web._("No such page"), gone, back=PAGE)

    def figures() -> Response | tuple[Indicators, Words]:
        countries = _countries(web)
        if query.errors:  # the form again, with what was wrong
            return _page(web, query, countries, None, status=422)
        report, w = _report(web, query)
        too_long = extension == "pdf" and printed_rows(report) > PRINT_ROWS
        try:
            _audit(web, query, "html" if too_long else extension)
        except Unavailable:
            return _busy(web)
        if too_long:  # the page instead, saying why, with the figures
            return _page(web, query, countries, view(report, w), printable_report=False, status=422)
        if extension != "pdf":  # written here, in the thread: a report grouped by everything is long
            return _attachment(report, extension, indicators_csv(report) if extension == "csv" else None)
        return report, w

    # The database's part in a thread, its connection given back before the PDF is drawn (in a
    # thread of its own, two at a time: laid out from the HTML, it takes a CPU for seconds).
    found = await read_in_thread(web.session, figures)
    if isinstance(found, Response):
        return found
    report, w = found
    return _attachment(report, "pdf", await anyio.to_thread.run_sync(print_report, report, w, limiter=_PRINTING))


def _attachment(report: Indicators, extension: str, body: str | bytes | None) -> Response:
    """The report as a file named by its period (``body``: its CSV or PDF; None: its JSON)."""
    return Response(
        report.model_dump_json() if body is None else body,
        media_type=FORMATS[extension],
        headers={
            **render.HEADERS,
            "Content-Disposition": f'attachment; filename="{report_filename(report, extension)}"',
        },
    )


def _report(web: Web, query: ReportQuery) -> tuple[Indicators, Words]:
    """The indicators for the form, computed as ``GET /v1/reports/indicators`` computes them."""
    settings, journey = web.settings, web.settings.journey
    report = indicators(
        web.session,
        countries=region(web.user, query.country),
        period_from=query.period_from,
        period_to=query.period_to,
        group_by=query.group_by,
        threshold=settings.report_min_cell,
        thresholds=journey.sustainability_thresholds,
        grace_days=journey.monitoring_grace_days,
    )
    agencies = {a.agency_id: a.name for a in web.session.exec(select(AgencyRecord))}
    return report, Words(web.language, agencies)


def _audit(web: Web, query: ReportQuery, format: str) -> None:
    """The view recorded as the API records it, before the figures leave (``Unavailable`` if the row
    cannot be written: then nothing is shown)."""
    web.auditor.record(
        "report.indicators",
        detail={
            "from": query.period_from.isoformat(),
            "to": query.period_to.isoformat(),
            "group_by": [g.value for g in query.group_by],
            "format": format,
            "threshold": web.settings.report_min_cell,
            "country": query.country,
        },
    )


def printed_rows(report: Indicators) -> int:
    """How many rows the printed report's tables have: what its time to print grows with."""
    tables = (report.people, report.closures, report.services, report.sustainability)
    return sum(len(t.rows) for t in tables) + len(report.stage_days)


def _countries(web: Web) -> list[str]:
    """The countries the form offers: the region's, or (for every country) those with cases, by the
    country that manages or identified them (a figure counts in the latter too)."""
    scope = web.user.country_scope
    if scope is not None:
        return sorted(scope)
    found = sqlalchemy.union(
        sqlalchemy.select(col(CaseRecord.owner_country)), sqlalchemy.select(col(CaseRecord.destination_country))
    )
    return sorted(web.session.connection().scalars(found).all())


def _page(
    web: Web,
    query: ReportQuery,
    countries: list[str],
    report: ReportView | None,
    *,
    printable_report: bool = True,
    status: int = 200,
) -> HTMLResponse:
    names = Words(web.language, {})
    return web.render(
        "reports.html",
        {
            "query": query,
            "countries": countries,
            "country_names": {c: names.country(c) for c in countries},
            "groups": [(g.value, names.heading(g.value)) for g in GROUPS],
            "report": report,
            "printable": printable_report,
            "print_rows": PRINT_ROWS,
            "downloads": {ext: f"{PAGE}/indicators.{ext}?{query.params()}" for ext in FORMATS},
        },
        status=status,
    )


def _busy(web: Web) -> HTMLResponse:
    return words.refused(
        web,
        503,
        web._("Try again in a moment"),
        web._("The report could not be recorded in the audit trail, so it was not shown. Try again in a moment."),
        back=PAGE,
    )


# --- The printed report ----------------------------------------------------------------------------


def printable(report: Indicators, w: Words) -> str:
    """The report as the HTML WeasyPrint prints: A4, its CSS inline, in the person's language."""
    return render.environment(w.language).get_template("reports_print.html").render({"report": view(report, w)})


def document(html: str) -> weasyprint.Document:
    """The report laid out in pages (what ``pdf_of`` writes; the tests read its text).

    WeasyPrint is imported here, at the first report printed, not when the API starts: it costs
    about a second of every API process's start, and a machine without Pango still serves everything
    but the PDF. Its fetcher allows no scheme: the report is whole in its HTML, so any address it
    names (a stylesheet, an image, a file) is refused, never read."""
    import weasyprint

    fetch_nothing = weasyprint.URLFetcher(allowed_protocols=frozenset())
    return weasyprint.HTML(string=html, base_url=None, url_fetcher=fetch_nothing).render()


def pdf_of(html: str) -> bytes:
    """The printable report as a PDF (slow: run it in a thread)."""
    pdf: bytes | None = document(html).write_pdf()
    assert pdf is not None  # written to bytes, not to a target
    return pdf


def print_report(report: Indicators, w: Words) -> bytes:
    """The report's PDF, from its printable HTML (``printable``, ``pdf_of``): all of it in a thread."""
    return pdf_of(printable(report, w))
