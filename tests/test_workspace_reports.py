"""The indicators in the workspace (api/web/reports.py): the form's rules, the charts' drawing and the
page's words as pure functions; then, against the real stack, a supervisor's page, its CSV, JSON and
PDF downloads and their audit rows, over read-model rows written straight into the database (cases
of a country no other test uses, so the counts are this module's own); a caseworker refused; the
page in Spanish and French; and the page in Chromium at phone width, checked by axe."""

from __future__ import annotations

import csv
import io
import re
import time
import uuid
import zlib
from datetime import UTC, date, datetime
from typing import Any

import httpx
import pytest
from sqlmodel import Session, col, select
from weasyprint.formatting_structure import boxes

from api.web import reports
from api.web.reports import (
    CHART_BARS,
    CHART_WIDTH,
    VALUE_SPACE,
    Bar,
    ChartRow,
    Words,
    bar_chart,
    document,
    pdf_of,
    printable,
    printed_rows,
    read_query,
    view,
)
from reintegration.db import AuditRecord
from reintegration.reports import Group, Indicators, Row, StageDays, SustainabilityShare, Table
from tests import reports_support as support
from tests.browser import PHONE, chromium, visit
from tests.conftest import Stack
from tests.reports_support import answers_meanwhile, at
from tests.workspace import Person

PAGE = "/workspace/reports"
PERIOD = "from=2031-01-01&to=2031-12-31"
# User-assigned ISO codes: no other test has cases there.
COUNTRY = "QM"

# --- The form -------------------------------------------------------------------------------------

TODAY = date(2031, 6, 15)


def ask(**given: Any) -> Any:
    values = {"period_from": None, "period_to": None, "country": None, "group_by": [], **given}
    return read_query(str, lambda c: c in ("ES", "PT"), today=TODAY, **values)


def test_the_form_asks_for_the_year_ending_today_by_default_as_the_api_does():
    query = ask()
    assert (query.period_from, query.period_to, query.country, query.group_by) == (
        date(2030, 6, 16),
        TODAY,
        None,
        [],
    )
    assert not query.errors


def test_the_form_takes_a_period_a_country_of_the_region_and_groups():
    query = ask(period_from="2031-01-01", period_to="2031-03-31", country="es", group_by=["service", "sex"])
    assert not query.errors
    assert (query.period_from, query.period_to, query.country) == (date(2031, 1, 1), date(2031, 3, 31), "ES")
    assert query.group_by == [Group.service, Group.sex]
    assert query.params() == "from=2031-01-01&to=2031-03-31&country=ES&group_by=service&group_by=sex"


@pytest.mark.parametrize(
    ("given", "field", "words"),
    [
        ({"period_from": "31/01/2031"}, "from", "Enter a date as year-month-day"),
        ({"period_to": "2031-02-30"}, "to", "Enter a date as year-month-day"),
        ({"period_from": "2031-05-01", "period_to": "2031-04-30"}, "to", "The period ends before it begins"),
        ({"period_from": "2019-01-01", "period_to": "2031-01-01"}, "from", "A report covers 10 years at most"),
        ({"country": "Spain"}, "country", "A country is two letters"),
        ({"country": "RO"}, "country", "This country is not in your region"),
        ({"group_by": ["sex", "religion"]}, "group_by", "Choose among the groups listed"),
    ],
)
def test_each_wrong_value_is_said_beside_its_field(given, field, words):
    query = ask(**given)
    assert list(query.errors) == [field] and query.errors[field].startswith(words)


# --- Charts and words -----------------------------------------------------------------------------


def test_bars_are_as_long_as_their_values_and_a_hidden_count_draws_none():
    chart = bar_chart("c", "Title", "Caption", [ChartRow("A", [Bar(10, "10")]), ChartRow("B", [Bar(None, "<5")])])
    full, hidden = chart.rows[0].bars[0], chart.rows[1].bars[0]
    assert full.width == CHART_WIDTH - VALUE_SPACE and full.text_x == full.width + 5
    assert hidden.width == 0 and hidden.text == "<5" and hidden.text_x == 5
    assert chart.desc == "A: 10; B: <5"
    assert chart.rows[1].label_y > full.y + full.height  # one row under the other
    half = bar_chart("c", "T", "C", [ChartRow("A", [Bar(0.5, "50%")])], top=1.0).rows[0].bars[0]
    assert half.width == round((CHART_WIDTH - VALUE_SPACE) / 2)


def test_a_chart_draws_its_first_bars_and_says_how_many_it_left_to_the_table():
    rows = [ChartRow(f"group {i} " + "x" * 60, [Bar(i + 1, str(i + 1))]) for i in range(CHART_BARS + 7)]
    chart = bar_chart("c", "T", "C", rows)
    assert len(chart.rows) == CHART_BARS and chart.more == 7
    assert chart.rows[0].label.endswith("…") and len(chart.rows[0].label) <= 48


def sample() -> Indicators:
    """A report grouped by sex, as ``indicators`` gives one (small cells already hidden)."""
    people = ["identified", "assisted", "returned", "granted_residence", "reintegration_started", "reintegrated"]
    reasons = ["completed", "withdrew", "lost-contact", "transferred", "other"]
    return Indicators(
        period_from=date(2031, 1, 1),
        period_to=date(2031, 12, 31),
        countries=["ES"],
        group_by=[Group.sex],
        threshold=5,
        generated_at=datetime(2032, 1, 2, 9, 30, tzinfo=UTC),
        people=Table(
            name="people",
            keys=["sex"],
            columns=[*people, "closed"],
            rows=[
                Row(group={"sex": "Feminine"}, cells={**dict.fromkeys(people, 0), "identified": 12, "closed": 0}),
                Row(group={"sex": "Masculine"}, cells={**dict.fromkeys(people, 0), "identified": "<5", "closed": 0}),
            ],
            total=Row(cells={**dict.fromkeys(people, 0), "identified": 15, "closed": 0}),
        ),
        closures=Table(
            name="closures", keys=["sex"], columns=reasons, rows=[], total=Row(cells=dict.fromkeys(reasons, 0))
        ),
        services=Table(
            name="services",
            keys=["sex", "service", "agency_id"],
            columns=["delivered", "people"],
            rows=[
                Row(
                    group={"sex": "Feminine", "service": "shelter", "agency_id": "a-1"},
                    cells={"delivered": 9, "people": 6},
                )
            ],
            total=Row(cells={"delivered": 9, "people": 6}),
        ),
        stage_days=[
            StageDays(stage="protection", stays=7, median_days=12.0, p90_days=30.5),
            StageDays(stage="protection", group={"sex": "Feminine"}, stays="<5"),
        ],
        sustainability=Table(
            name="sustainability",
            keys=["sex"],
            columns=["cases_at_12_months", "above_threshold"],
            rows=[],
            total=Row(cells={"cases_at_12_months": 8, "above_threshold": 6}),
        ),
        sustainability_shares=[SustainabilityShare(share=0.75)],
    )


def test_the_page_words_each_value_and_keeps_the_hidden_mark():
    report = view(sample(), Words("es", {"a-1": "Casa Abierta"}))
    people = report.tables[0]
    assert people.key_headings == ["Sexo"] and people.column_headings[0] == "Identificadas"
    assert [r.groups for r in people.rows] == [["Mujer"], ["Hombre"]]
    male = people.rows[1].cells[0]
    assert (male.text, male.suppressed) == ("<5", True)
    assert people.total is not None and people.total.cells[0].text == "15"
    services = report.tables[2]
    assert services.rows[0].groups == ["Mujer", "Alojamiento protegido", "Casa Abierta (a-1)"]
    stages = report.tables[3]
    assert [r.groups for r in stages.rows] == [["Protección", "Todos"], ["Protección", "Mujer"]]
    assert [c.text for c in stages.rows[0].cells] == ["7", "12", "30,5"]
    assert [c.text for c in stages.rows[1].cells] == ["<5", "no se muestra", "no se muestra"]
    assert report.tables[4].total is not None and report.tables[4].total.cells[-1].text == "75\xa0%"
    # Charts: one per headline count that is not nobody everywhere, and one each for the rest.
    assert [c.id for c in report.charts["people"]] == ["chart-people-identified"]
    assert report.charts["people"][0].desc == "Mujer: 12; Hombre: <5"
    assert report.charts["stage_days"][0].rows[0].bars[1].text == "30,5"
    assert report.charts["sustainability"][0].desc == "Todos: 75\xa0%"


def test_without_groups_one_chart_shows_the_headline_counts():
    report = sample().model_copy(update={"group_by": []})
    report.people = report.people.model_copy(update={"keys": [], "rows": []})
    charts = view(report, Words("en", {})).charts["people"]
    assert [c.id for c in charts] == ["chart-people"]
    assert charts[0].desc.startswith("Identified: 15; Assisted: 0; Returned: 0")


def page_text(html: str) -> str:
    """The words WeasyPrint laid out on the pages, in order (the SVG charts aside)."""
    found: list[str] = []

    def walk(box: Any) -> None:
        if isinstance(box, boxes.TextBox):
            found.append(box.text)
        for child in getattr(box, "children", None) or []:
            walk(child)

    for page in document(html).pages:
        walk(page._page_box)
    return " ".join(found)


def test_the_printed_report_has_its_period_its_tables_and_page_numbers():
    # An agency's name in Cyrillic and Greek letters: the PDF's font (DejaVu, in the image) has them.
    html = printable(sample(), Words("fr", {"a-1": "Притулок Ελπίδα"}))
    assert "<script" not in html and "http" not in html.split("</head>")[0].split("<style>")[1]
    text = page_text(html)
    # The title, and at the foot of every page (taken from it: no words inside the CSS).
    pages = len(document(html).pages)
    assert pages > 1 and text.count("Indicateurs du 1 janv. 2031 au 31 déc. 2031") == 1 + pages
    assert "Femme" in text and "Притулок Ελπίδα (a-1)" in text and "<5" in text
    assert re.search(r"\b1 / \d+\b", text)  # the page numbers of @page
    pdf = pdf_of(html)
    assert pdf.startswith(b"%PDF-")
    assert pdf_fonts(pdf) == {"DejaVu-Sans", "DejaVu-Sans-Bold"}  # no other font stood in for a letter


def pdf_fonts(pdf: bytes) -> set[str]:
    """The fonts a PDF embeds (their names are in its compressed object streams)."""
    found: set[str] = set()
    for stream in re.findall(rb"stream\r?\n(.*?)\r?\nendstream", pdf, re.S):
        try:
            text = zlib.decompress(stream)
        except zlib.error:
            continue
        found |= {n.decode() for n in re.findall(rb"/FontName\s*/[A-Z]{6}\+([\w-]+)", text)}
    return found


def test_the_printed_report_fetches_nothing(tmp_path):
    """An address in the report's HTML (a stylesheet, an image) is refused, never read."""
    red = tmp_path / "red.css"
    red.write_text("p, td, th, h1 { color: red }")
    html = printable(sample(), Words("en", {})).replace(
        "</head>", f'<link rel="stylesheet" href="file://{red}"><img src="http://127.0.0.1:9/x.png"></head>'
    )
    colours = set()

    def walk(box: Any) -> None:
        colours.add(str(box.style["color"]))
        for child in getattr(box, "children", None) or []:
            walk(child)

    for page in document(html).pages:
        walk(page._page_box)
    assert colours and not any("1.0 0.0 0.0" in c for c in colours), colours
    assert pdf_of(html).startswith(b"%PDF-")  # printed all the same, without them


def test_a_report_is_as_long_to_print_as_its_tables_rows():
    # 2 people rows, no closures, 1 service, 2 stays in a stage, no sustainability row.
    assert printed_rows(sample()) == 5


# --- Against the real stack -------------------------------------------------------------------------


def add_case(session: Session, *, sex: str, band: str, identified: str, **facts: Any) -> str:
    case_id = f"rep-{uuid.uuid4().hex[:12]}"
    return support.add_case(
        session, case_id, country=COUNTRY, sex=sex, band=band, opened=at(identified), identified_on=identified, **facts
    )


@pytest.fixture(scope="module")
def region(stack: Stack) -> dict[str, int]:
    """Cases identified in 2031 in QM: 12 women, 3 men (a small cell), 6 of unknown sex (hidden beside
    it); each woman sheltered once, six of them with a protection stage that ended."""
    with Session(stack.engine) as session:
        women = [add_case(session, sex="Feminine", band="18-24", identified="2031-03-01") for _ in range(12)]
        for _ in range(3):
            add_case(session, sex="Masculine", band="25-34", identified="2031-04-01")
        for _ in range(6):
            add_case(session, sex="NonSpecifiedUnknown", band="unknown", identified="2031-05-01")
        for n, case_id in enumerate(women):
            support.add_task(session, case_id, "shelter", "shelter-qm", at("2031-03-10"), country=COUNTRY)
            if n < 6:
                support.add_stay(session, case_id, "protection", 10 + n, at("2031-04-15"), country=COUNTRY)
        session.commit()
    return {"women": 12, "men": 3, "unknown": 6, "total": 21}


async def supervisor(stack: Stack, language: str = "en") -> Person:
    return await Person(stack, language=language).sign_in("supervisor", f"sup-rep-{language}", countries=COUNTRY)


def row_of(html: str, table: str, header: str) -> list[str]:
    """The cells of a table's row, by its first header's words."""
    section = html.split(f'<section id="{table}"')[1].split("</section>")[0]
    row = section.split(f'<th scope="row">{header}</th>')[1].split("</tr>")[0]
    return re.findall(r"<td[^>]*>([^<]*)</td>", row)


def audited(stack: Stack, sub: str) -> list[dict[str, Any]]:
    with Session(stack.engine) as session:
        rows = session.exec(
            select(AuditRecord)
            .where(col(AuditRecord.action) == "report.indicators", col(AuditRecord.actor_sub) == sub)
            .order_by(col(AuditRecord.seq))
        ).all()
        return [dict(r.detail) for r in rows]


async def test_a_supervisor_sees_the_indicators_with_small_counts_hidden(stack, region):
    person = await supervisor(stack)
    try:
        html = await person.page(f"{PAGE}?{PERIOD}&group_by=sex")
        assert '<a href="/workspace/reports" aria-current="page">Indicators</a>' in html
        assert "From Jan 1, 2031 to Dec 31, 2031" in html and "Countries: QM." in html
        # Identified, assisted, ...: 12 women shown, 3 men hidden, and the 6 beside them too (else
        # 21 - 12 would give the 3 away); the total shown.
        assert row_of(html, "people", "Female")[:2] == ["12", "12"]
        assert row_of(html, "people", "Male")[0] == "&lt;5"
        assert row_of(html, "people", "Not specified or unknown")[0] == "&lt;5"
        total = html.split('<section id="people"')[1].split("<tfoot>")[1].split("</tfoot>")[0]
        assert re.findall(r"<td[^>]*>([^<]*)</td>", total)[0] == "21"
        assert ">3<" not in html.split('<section id="people"')[1].split("</section>")[0]
        services = html.split('<section id="services"')[1].split("</section>")[0]
        assert '<th scope="row">Shelter</th>' in services and '<th scope="row">shelter-qm</th>' in services
        # Days in protection: six stays of 10 to 15 days; median 12, 90th percentile 15.
        assert row_of(html, "stage_days", "Protection")[:3] == ["6", "12", "15"]
        # The charts: drawn on the server, named and described, the same figures as the tables.
        svg = re.search(r'<figure class="chart report-chart" id="chart-people-identified">.*?</figure>', html, re.S)
        assert svg is not None
        assert '<title id="chart-people-identified-title">People identified</title>' in svg.group(0)
        assert "Female: 12; Male: &lt;5; Not specified or unknown: &lt;5" in svg.group(0)
        assert 'id="chart-stage-days"' in html and 'id="chart-services"' in html
        assert "a count from 1 to 4 is shown as “&lt;5”" in html
        assert " style=" not in html and "<script" not in html
        assert audited(stack, "sup-rep-en")[-1] == {
            "from": "2031-01-01",
            "to": "2031-12-31",
            "group_by": ["sex"],
            "format": "html",
            "threshold": 5,
            "country": None,
        }
    finally:
        await person.aclose()


async def test_the_downloads_are_the_same_figures_and_audited(stack, region):
    person = await supervisor(stack)
    try:
        html = await person.page(f"{PAGE}?{PERIOD}&group_by=sex")
        links = {
            ext: href.replace("&amp;", "&")
            for href, ext in re.findall(r'href="(/workspace/reports/indicators\.(\w+)\?[^"]+)"', html)
        }
        assert sorted(links) == ["csv", "json", "pdf"]

        r = await person.http.get(links["csv"])
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
        assert r.headers["content-disposition"] == 'attachment; filename="indicators-2031-01-01-to-2031-12-31.csv"'
        lines = list(csv.DictReader(io.StringIO(r.text)))
        identified = {
            line["sex"]: line["value"]
            for line in lines
            if line["table"] == "people" and line["measure"] == "identified"
        }
        assert identified == {"": "21", "Feminine": "12", "Masculine": "<5", "NonSpecifiedUnknown": "<5"}

        r = await person.http.get(links["json"])
        assert r.status_code == 200 and r.headers["content-type"] == "application/json"
        assert r.headers["content-disposition"].endswith('filename="indicators-2031-01-01-to-2031-12-31.json"')
        report = Indicators.model_validate_json(r.text)
        assert report.countries == [COUNTRY] and report.people.total.cells["identified"] == 21
        assert [row.cells["identified"] for row in report.people.rows] == [12, "<5", "<5"]
        page_csv, page_json = lines, r.json()

        # The API's own answers to the same query: the same lines, the same figures.
        api = stack.auth("supervisor", "sup-rep-api", countries=[COUNTRY])
        asked = {"from": "2031-01-01", "to": "2031-12-31", "group_by": "sex"}
        r = await stack.http.get("/v1/reports/indicators", headers=api, params={**asked, "format": "csv"})
        assert list(csv.DictReader(io.StringIO(r.text))) == page_csv
        r = await stack.http.get("/v1/reports/indicators", headers=api, params=asked)
        assert {**r.json(), "generated_at": None} == {**page_json, "generated_at": None}

        r = await person.http.get(links["pdf"])
        assert r.status_code == 200 and r.headers["content-type"] == "application/pdf"
        assert r.headers["content-disposition"].endswith('filename="indicators-2031-01-01-to-2031-12-31.pdf"')
        assert r.content.startswith(b"%PDF-") and r.content.rstrip().endswith(b"%%EOF")
        # Its words: the same print template over the same figures (the JSON just downloaded).
        text = page_text(printable(report, Words("en", {})))
        assert "Indicators from Jan 1, 2031 to Dec 31, 2031" in text and "Countries: QM." in text
        assert "Female 12 12" in text and "Male <5" in text and "Total 21" in text

        assert [d["format"] for d in audited(stack, "sup-rep-en")[-4:]] == ["html", "csv", "json", "pdf"]
        r = await person.http.get(f"{PAGE}/indicators.xlsx?{PERIOD}")
        assert r.status_code == 404 and "CSV, JSON or PDF" in r.text
    finally:
        await person.aclose()


async def test_a_wrong_form_shows_why_and_reports_nothing(stack, region):
    person = await supervisor(stack)
    try:
        before = len(audited(stack, "sup-rep-en"))
        html = await person.page(f"{PAGE}?from=2031-12-31&to=2031-01-01&country=ES", expect=422)
        assert 'id="report-to-error">The period ends before it begins' in html
        assert 'id="report-country-error">This country is not in your region' in html
        assert 'aria-invalid="true"' in html and 'id="people"' not in html
        r = await person.http.get(f"{PAGE}/indicators.pdf?from=yesterday")
        assert r.status_code == 422 and "Enter a date as year-month-day" in r.text
        assert len(audited(stack, "sup-rep-en")) == before
    finally:
        await person.aclose()


async def test_a_caseworker_is_refused_the_page_and_the_downloads(stack):
    person = await Person(stack).sign_in("caseworker", "cw-rep-1", countries=COUNTRY)
    try:
        for path in (PAGE, f"{PAGE}/indicators.csv", f"{PAGE}/indicators.pdf"):
            html = await person.page(path, expect=403)
            assert "Not for your role" in html and "Indicators" not in html.split("<main")[1]
    finally:
        await person.aclose()


@pytest.mark.parametrize(
    ("language", "words"),
    [
        ("es", ["Indicadores", "Del 1 ene 2031 al 31 dic 2031", "Mujer", "Edad en la identificación", "18–24 años"]),
        ("fr", ["Indicateurs", "Du 1 janv. 2031 au 31 déc. 2031", "Femme", "Âge à l’identification", "18–24 ans"]),
    ],
)
async def test_the_page_speaks_spanish_and_french(stack, region, language, words):
    person = await supervisor(stack, language)
    try:
        html = await person.page(f"{PAGE}?{PERIOD}&group_by=sex&group_by=age_band")
        assert f'<html lang="{language}">' in html
        for expected in words:
            assert expected.replace("’", "&#39;").replace("'", "&#39;") in html or expected in html, expected
    finally:
        await person.aclose()


async def test_the_page_fits_a_phone_and_passes_axe(stack, region):
    async with chromium() as browser, visit(browser, stack.base_url, "reports-phone", viewport=PHONE) as person:
        await person.sign_in("supervisor", "sup-rep-browser", countries=COUNTRY)
        await person.page.get_by_role("navigation", name="Main").get_by_role("link", name="Indicators").click()
        await person.page.wait_for_url(re.compile(r"/workspace/reports$"))
        await person.check()
        await person.page.locator("#report-from").fill("2031-01-01")
        await person.page.locator("#report-to").fill("2031-12-31")
        for group in ("sex", "age_band", "service"):
            await person.page.locator(f"#group-{group}").check()
        await person.page.get_by_role("button", name="Show the indicators").click()
        await person.page.wait_for_url(re.compile(r"group_by=service"))
        await person.check("reports-by-sex-age-service")
        width = await person.page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"the page scrolls sideways at phone width ({width} px)"
        table = person.page.locator("#people .table-scroll")
        assert await table.evaluate("e => e.scrollWidth > e.clientWidth")  # the table scrolls in its box


async def test_a_report_too_long_to_print_says_so_and_offers_the_csv(stack, region, monkeypatch):
    monkeypatch.setattr(reports, "PRINT_ROWS", 4)  # the sample's three rows of people and more
    person = await supervisor(stack)
    try:
        html = await person.page(f"{PAGE}?{PERIOD}&group_by=sex")
        assert "too many rows to print (at most 4)" in html and "indicators.pdf" not in html
        assert "indicators.csv" in html
        r = await person.http.get(f"{PAGE}/indicators.pdf?{PERIOD}&group_by=sex")
        assert r.status_code == 422 and "too many rows to print" in r.text and not r.content.startswith(b"%PDF")
        assert audited(stack, "sup-rep-en")[-1]["format"] == "html"  # the page was shown, no PDF
    finally:
        await person.aclose()


async def test_printing_does_not_hold_up_other_requests(stack, region):
    """WeasyPrint runs in a thread: while a PDF is drawn, the server (on this test's event loop)
    keeps answering. One PDF takes 0.25-0.4 s here, near the least that tells the two apart on a
    fast machine, so the same PDF is printed until the prints have lasted a second: a print on the
    event loop would hold each ``/health`` for a whole print, and let about one through per print."""
    person = await supervisor(stack)
    groups = "&".join(f"group_by={g}" for g in ("sex", "age_band", "exploitation_type", "service"))
    prints: list[float] = []

    async def printing() -> httpx.Response:
        while True:
            started = time.monotonic()
            r = await person.http.get(f"{PAGE}/indicators.pdf?{PERIOD}&{groups}")
            prints.append(time.monotonic() - started)
            if not r.content.startswith(b"%PDF-") or sum(prints) > 1.0 or len(prints) == 20:
                return r

    try:
        r, answered, longest = await answers_meanwhile(stack.http, printing())
        assert r.content.startswith(b"%PDF-")
        assert min(prints) > 0.1, f"too quick to tell ({prints})"
        # As when one print was timed: no answer waits half a print (the first, the slowest, draws its
        # fonts; one answer waited 0.30 s beside prints of 0.43 and 0.76 s on a loaded machine).
        assert answered >= 3 * len(prints) and longest < max(prints) / 2, (answered, longest, prints)
    finally:
        await person.aclose()
