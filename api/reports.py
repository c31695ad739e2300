"""Reports: the indicators of a supervisor's region for a period (``reintegration/reports.py``
defines them and their suppression), as JSON or as one CSV file.

The query is checked before anything is read, each problem a ``422`` that says what is wrong: the
period (``from`` and ``to``, ISO dates, the start not after the end, 10 years at most), the groups
and the small-cell threshold, which a request may raise above ``REINTEGRATION_REPORT_MIN_CELL`` but
never lower. A country outside the caller's region gives an empty report, as the summary does. Every
report is audited (``report.indicators``: the period, the groups, the format; counts are not
personal data, and none are recorded). The report is computed and written (JSON or CSV) in a worker
thread: at 100,000 cases it takes seconds (``benchmarks/reports.py``), and the event loop serves the
other requests meanwhile.

The CSV is long: one line per cell, ``table,<group columns>,measure,value``, the group columns the
same whatever the request (``CSV_COLUMNS``; empty: every value, as in a total), a suppressed cell
``<5``, a value not shown (a median over too few stays) empty. Spreadsheets pivot it as they like.
The workspace's downloads use the same writer (``indicators_csv``).
"""

from __future__ import annotations

import csv
import io
import re
from datetime import date, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from api.audit import AuditorDep
from api.deps import SessionDep, read_in_thread, require
from api.errors import Unprocessable, responses
from api.journeys import utcnow
from api.languages import N_
from api.supervision import region
from reintegration.reports import (
    CLOSURE_COLUMNS,
    GROUPS,
    MAX_THRESHOLD,
    PEOPLE_COLUMNS,
    SERVICE_COLUMNS,
    SUSTAINABILITY_COLUMNS,
    Group,
    Indicators,
    Row,
    indicators,
)
from reintegration.settings import Settings
from reintegration.tokens import Claims
from workflows.model import Role
from workflows.rules import add_months

router = APIRouter(prefix="/v1/reports", tags=["reports"])

# A period of 10 calendar years at most: a report over decades is no report, and its
# cost grows with it.
MAX_PERIOD_YEARS = 10
_ISO_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")

# The CSV's columns: the table, every group column any table has (``stage`` for the days per
# stage; ``service`` and ``agency_id`` for the services), the measure and its value.
CSV_COLUMNS = ["table", *(g.value for g in GROUPS), "agency_id", "stage", "measure", "value"]


def parse_day(value: str, name: str) -> date:
    """A date of the query (``YYYY-MM-DD``), or ``422`` naming the parameter."""
    if _ISO_DAY.fullmatch(value):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    # The HTCDS export's words for the same mistakes (api/exports.py): one sentence to translate.
    raise Unprocessable(
        N_("{parameter} is not a date: give it as YYYY-MM-DD, for example 2026-01-31"), params={"parameter": name}
    )


def parse_period(period_from: str | None, period_to: str | None, today: date) -> tuple[date, date]:
    """The period asked for: ``to`` today by default, ``from`` a year before ``to`` (the year
    ending on ``to``, both days included) by default; ``422`` for a start after the end or a
    period over 10 years."""
    end = parse_day(period_to, "to") if period_to is not None else today
    if period_from is not None:
        start = parse_day(period_from, "from")
    else:
        try:
            start = add_months(end, -12) + timedelta(days=1)
        except (ValueError, OverflowError):  # a year before the calendar's first
            start = date.min
    if start > end:
        raise Unprocessable(N_("the period is empty: from is after to"))
    try:
        too_long = end >= add_months(start, 12 * MAX_PERIOD_YEARS)
    except (ValueError, OverflowError):  # 10 years after it is past the calendar's last day
        too_long = False
    if too_long:
        raise Unprocessable(N_("a report's period is at most {years} years long"), params={"years": MAX_PERIOD_YEARS})
    return start, end


def parse_groups(values: list[str]) -> list[Group]:
    """The groups asked for, each once in the order asked: repeated (``group_by=sex&group_by=age_band``)
    or comma-separated (``group_by=sex,age_band``); ``422`` naming one that is not a group."""
    found: list[Group] = []
    for value in values:
        for name in (v.strip() for v in value.split(",")):
            if not name:
                continue
            if name not in {g.value for g in GROUPS}:
                raise Unprocessable(
                    N_("{group} is not a group; a report is grouped by any of: {groups}"),
                    params={"group": name[:40], "groups": ", ".join(g.value for g in GROUPS)},
                )
            if Group(name) not in found:
                found.append(Group(name))
    return found


def check_threshold(threshold: int | None, settings: Settings) -> int:
    """The small-cell threshold: this system's (``report_min_cell``) or one raised above it, never
    lower; ``422`` otherwise."""
    minimum = settings.report_min_cell
    if threshold is None:
        return minimum
    if not minimum <= threshold <= MAX_THRESHOLD:
        raise Unprocessable(
            N_("the small-cell threshold may be raised from {minimum} up to {maximum}, never lowered"),
            params={"minimum": minimum, "maximum": MAX_THRESHOLD},
        )
    return threshold


def _value(value: Any) -> str:
    if value is None:
        return ""
    text = str(value)
    # A spreadsheet would run a cell that starts like a formula (agency ids are chosen by admins).
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def csv_lines(report: Indicators) -> list[dict[str, Any]]:
    """Every cell of the report as one line of the long CSV (``CSV_COLUMNS``), tables in the JSON's
    order, each table's total first."""
    lines: list[dict[str, Any]] = []

    def add(table: str, group: dict[str, str], measures: dict[str, Any], stage: str | None = None) -> None:
        for measure, value in measures.items():
            lines.append({"table": table, **group, "stage": stage, "measure": measure, "value": value})

    for table in (report.people, report.closures, report.services):
        for row in (table.total, *table.rows):
            add(table.name, row.group, {c: row.cells[c] for c in table.columns})
    for days in report.stage_days:
        add(
            "stage_days",
            days.group,
            {"stays": days.stays, "median_days": days.median_days, "p90_days": days.p90_days},
            stage=days.stage,
        )
    shares = {_key(s.group): s.share for s in report.sustainability_shares}
    sustainability: tuple[Row, ...] = (report.sustainability.total, *report.sustainability.rows)
    for row in sustainability:
        cells = {c: row.cells[c] for c in report.sustainability.columns}
        add(report.sustainability.name, row.group, {**cells, "share": shares.get(_key(row.group))})
    return lines


def _key(group: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(group.items()))


def indicators_csv(report: Indicators) -> str:
    """The report as one CSV file (``CSV_COLUMNS``; a suppressed cell as ``<5``)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for line in csv_lines(report):
        writer.writerow([_value(line.get(c)) for c in CSV_COLUMNS])
    return buffer.getvalue()


def report_filename(report: Indicators, extension: str) -> str:
    """``indicators-<from>-to-<to>.<extension>``: the period in the name of the file."""
    return f"indicators-{report.period_from.isoformat()}-to-{report.period_to.isoformat()}.{extension}"


EXAMPLE = {
    "period_from": "2026-01-01",
    "period_to": "2026-12-31",
    "countries": ["ES"],
    "group_by": ["sex"],
    "threshold": 5,
    "generated_at": "2027-01-04T09:12:44.301000Z",
    "people": {
        "name": "people",
        "keys": ["sex"],
        "columns": list(PEOPLE_COLUMNS),
        "rows": [
            {
                "group": {"sex": "Feminine"},
                "cells": {
                    "identified": 12,
                    "assisted": 9,
                    "returned": "<5",
                    "granted_residence": 5,
                    "reintegration_started": "<5",
                    "reintegrated": 0,
                    "closed": "<5",
                },
            },
            {
                "group": {"sex": "Masculine"},
                "cells": {
                    "identified": 7,
                    "assisted": 6,
                    "returned": "<5",
                    "granted_residence": 0,
                    "reintegration_started": "<5",
                    "reintegrated": 0,
                    "closed": 0,
                },
            },
        ],
        "total": {
            "group": {},
            "cells": {
                "identified": 19,
                "assisted": 15,
                "returned": 5,
                "granted_residence": 5,
                "reintegration_started": 8,
                "reintegrated": 0,
                "closed": "<5",
            },
        },
    },
    "closures": {
        "name": "closures",
        "keys": ["sex"],
        "columns": list(CLOSURE_COLUMNS),
        "rows": [
            {"group": {"sex": "Feminine"}, "cells": dict.fromkeys(CLOSURE_COLUMNS, 0) | {"withdrew": "<5"}},
        ],
        "total": {"group": {}, "cells": dict.fromkeys(CLOSURE_COLUMNS, 0) | {"withdrew": "<5"}},
    },
    "services": {
        "name": "services",
        "keys": ["sex", "service", "agency_id"],
        "columns": list(SERVICE_COLUMNS),
        "rows": [
            {
                "group": {"sex": "Feminine", "service": "shelter", "agency_id": "shelter-es"},
                "cells": {"delivered": 9, "people": 9},
            },
            {
                "group": {"sex": "Masculine", "service": "shelter", "agency_id": "shelter-es"},
                "cells": {"delivered": 6, "people": 6},
            },
        ],
        "total": {"group": {}, "cells": {"delivered": 15, "people": 15}},
    },
    "stage_days": [
        {"stage": "protection", "group": {}, "stays": 14, "median_days": 9.2, "p90_days": 21.0},
        {"stage": "protection", "group": {"sex": "Feminine"}, "stays": 9, "median_days": 8.7, "p90_days": 19.5},
        {"stage": "protection", "group": {"sex": "Masculine"}, "stays": 5, "median_days": 10.1, "p90_days": 21.0},
    ],
    "sustainability": {
        "name": "sustainability",
        "keys": ["sex"],
        "columns": list(SUSTAINABILITY_COLUMNS),
        "rows": [],
        "total": {"group": {}, "cells": {"cases_at_12_months": 0, "above_threshold": 0}},
    },
    "sustainability_shares": [{"group": {}, "share": None}],
}
CSV_EXAMPLE = (
    ",".join(CSV_COLUMNS)
    + "\r\npeople,,,,,,,,,identified,19\r\npeople,Feminine,,,,,,,,identified,12\r\n"
    + "people,Masculine,,,,,,,,returned,<5\r\nstage_days,,,,,,,,protection,median_days,9.2\r\n"
)


@router.get(
    "/indicators",
    response_model=Indicators,
    summary="Indicators of the region for a period, small counts suppressed",
    description=(
        "People identified, assisted, returned, granted residence, starting reintegration, reintegrated and "
        "closed (with the closures by reason); services delivered by type and agency; the median and 90th "
        "percentile of the days per stage; the share of cases sustainable at 12 months. Each counts in the country "
        "where it happened (an identification where the case was identified, a return in the country left and "
        "the one reached, a service in its agency's country, a stay where the case was managed then; the rest "
        "where the case is managed now). Each disaggregated by "
        "`group_by` (any of `sex`, `age_band`, `exploitation_type`, `country`, `pathway`, `service`; repeated or "
        "comma-separated). The period is `from` to `to`, both included (default: the year ending today). A count "
        "under the threshold (`REINTEGRATION_REPORT_MIN_CELL`, 5 by default; `threshold` may raise it, never "
        "lower it) is shown as `<5`, and another cell beside it wherever a total would give it away. Each report "
        "protects its own cells: two reports of one period published together (by country and one country alone, "
        "or grouped two ways) can give a hidden cell away by their difference. "
        "`format=csv`: one line per cell, `table,sex,age_band,exploitation_type,country,pathway,service,"
        "agency_id,stage,measure,value`, as an attachment named after the period. Audited as `report.indicators`."
    ),
    responses={
        200: {
            "description": "The indicators",
            "content": {
                "application/json": {"example": EXAMPLE},
                "text/csv": {"schema": {"type": "string"}, "example": CSV_EXAMPLE},
            },
        },
        **responses(401, 403, 422, 503),
    },
)
async def read_indicators(
    request: Request,
    user: Annotated[Claims, require(Role.supervisor)],
    session: SessionDep,
    auditor: AuditorDep,
    period_from: Annotated[
        str | None, Query(alias="from", max_length=10, description="The first day, `YYYY-MM-DD` (included)")
    ] = None,
    period_to: Annotated[
        str | None, Query(alias="to", max_length=10, description="The last day, `YYYY-MM-DD` (included; default today)")
    ] = None,
    group_by: Annotated[
        list[str] | None,
        Query(
            max_length=len(GROUPS) * 2,
            description="Groups to disaggregate by, repeated or comma-separated: " + ", ".join(GROUPS),
        ),
    ] = None,
    country: Annotated[str | None, Query(pattern="^[A-Z]{2}$", description="One country of the region")] = None,
    threshold: Annotated[
        int | None, Query(description="A higher small-cell threshold than the system's (never a lower one)")
    ] = None,
    format_: Annotated[str, Query(alias="format", pattern="^(json|csv)$", description="`json` or `csv`")] = "json",
) -> Response:
    settings: Settings = request.app.state.settings
    start, end = parse_period(period_from, period_to, utcnow().date())
    groups = parse_groups(group_by or [])
    cells = check_threshold(threshold, settings)
    countries = region(user, country)
    journey = settings.journey

    def report() -> Response:
        found = indicators(
            session,
            countries=countries,
            period_from=start,
            period_to=end,
            group_by=groups,
            threshold=cells,
            thresholds=journey.sustainability_thresholds,
            grace_days=journey.monitoring_grace_days,
        )
        auditor.record(
            "report.indicators",
            detail={
                "from": start.isoformat(),
                "to": end.isoformat(),
                "group_by": [g.value for g in groups],
                "format": format_,
                "threshold": cells,
                "country": country,
            },
        )
        return indicators_response(found, format_)

    # Written in the thread too: a report grouped by every group has thousands of rows.
    return await read_in_thread(session, report)


def indicators_response(report: Indicators, format_: str) -> Response:
    """The report as its JSON (``Indicators``) or as the CSV file named after its period."""
    if format_ == "csv":
        return Response(
            indicators_csv(report),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{report_filename(report, "csv")}"'},
        )
    return Response(report.model_dump_json(), media_type="application/json")
