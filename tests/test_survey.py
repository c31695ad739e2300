"""The sustainability survey at a monitoring visit (issue 17), against the real stack: through the API
(scored, flagging the plan, refused when a dimension has too few answers, the three scores typed in
still taken), and through the workspace's monitoring page and the case page's scores over time."""

from __future__ import annotations

import re
from datetime import date
from types import SimpleNamespace

import pytest
from starlette.datastructures import ImmutableMultiDict

from api.web import survey_form
from api.web.case_view import PLOT_BOTTOM, PLOT_LEFT, PLOT_RIGHT, PLOT_TOP, VisitScores, scores_chart
from tests.journey import Journey, day
from tests.test_workspace_cases import caseworker, check_page, send_form
from workflows.model import SURVEY_INDICATORS, SurveyIndicator

INDICATORS = [(i.value, d.value) for i, d in SURVEY_INDICATORS.items()]


def answers(answer: int | None = 4, **given: int | None) -> dict[str, int | None]:
    return {i.value: given.get(i.value, answer) for i in SurveyIndicator}


async def planned(stack) -> Journey:
    """A case returned to Romania, its reintegration plan agreed on day 20 and its task done."""
    j = Journey(stack)
    await j.open()
    await j.to_reintegration_by_return()
    await j.step(
        "reintegration-plan",
        {"agreed_on": day(20), "services": [{"service": "medical", "agency_id": "reintegration-partner-ro"}]},
    )
    for task in list(j.case["open_tasks"]):
        await j.task_action(task["task_id"], task["agency_id"], "accept")
        await j.task_action(task["task_id"], task["agency_id"], "complete", {"outcome": "done"})
    return j


async def test_a_visit_scored_by_the_survey_through_the_api(stack):
    j = await planned(stack)
    version = (await j.get())["version"]
    short = answers(4, housing=None, education=None, justice=None)
    problem = await j.step("monitoring", {"visited_on": day(110), "survey": short}, expect=422)
    assert problem["detail"] == "the survey needs at least 3 answers in each dimension; too few in: social"
    problem = await j.step(
        "monitoring",
        {"visited_on": day(110), "survey": answers(), "economic": 0.5, "social": 0.5, "psychosocial": 0.5},
        expect=422,
    )
    assert "one of the two" in problem["detail"]
    await j.step("monitoring", {"visited_on": day(110), "survey": {**answers(), "karaoke": 3}}, expect=422)
    assert (await j.get())["version"] == version  # nothing changed

    # Social weak: 2 2 2 and two not applicable -> 0.25, below its threshold of 0.5.
    given = answers(4, housing=2, education=None, justice=2, documentation=2, public_services=None, wellbeing=5)
    case = await j.step("monitoring", {"visited_on": day(110), "survey": given, "notes": "marker visit note"})
    (visit,) = case["facts"]["monitoring_visits"]
    assert visit["survey"] == given and list(visit["survey"]) == [i.value for i in SurveyIndicator]
    assert visit["scores"] == {"economic": 0.75, "social": 0.25, "psychosocial": 0.8}
    assert visit["weighted_score"] == pytest.approx(round(0.4 * 0.75 + 0.3 * 0.25 + 0.3 * 0.8, 4))
    assert visit["below_threshold"] == ["social"]
    assert case["facts"]["plan_revision_needed"] is True and "reintegration-plan" in case["allowed_steps"]
    entry = case["timeline"][-1]
    assert (entry["name"], entry["facts"]["social"], entry["facts"]["below_threshold"]) == (
        "monitoring",
        0.25,
        ["social"],
    )
    assert "survey" not in entry["facts"] and "marker visit note" not in str(entry)

    # The three scores typed in, as before the survey: still a visit of its own.
    case = await j.step("monitoring", {"visited_on": day(200), "economic": 0.7, "social": 0.8, "psychosocial": 0.9})
    second = case["facts"]["monitoring_visits"][1]
    assert second["survey"] == {} and second["scores"] == {"economic": 0.7, "social": 0.8, "psychosocial": 0.9}
    read = await j.get()
    assert read["facts"]["monitoring_visits"] == case["facts"]["monitoring_visits"]


async def test_the_monitoring_page_asks_the_survey_and_the_case_page_shows_the_scores_over_time(stack):
    j = await planned(stack)
    case_page = f"/workspace/cases/{j.case_id}"
    path = f"{case_page}/steps/monitoring"
    person = await caseworker(stack, "cw-ro-1", countries="RO")
    try:
        page = await person.page(path)
        check_page(page)
        assert len(re.findall(r'<fieldset class="group"', page)) == 3  # a fieldset per dimension
        for legend in ("Economic", "Social", "Psychosocial"):
            assert f"<legend>{legend}</legend>" in page
        assert len(re.findall(r'<fieldset class="field radios"', page)) == 15
        assert len(re.findall(r'type="radio"', page)) == 15 * 6  # 1 to 5, and not applicable
        assert "How often the household had to reduce food" in page and "very often" in page and "never" in page
        assert 'name="economic"' not in page and 'type="number"' not in page  # the survey only, no scores typed in
        before = (await j.get())["version"]

        # Too few answers in a dimension: said beside it, nothing recorded.
        data = {"visited_on": day(110), "economic.food_security": "4", "economic.employment": "3"}
        data |= {f"social.{k}": "4" for k in ("housing", "justice", "documentation")}
        data |= {f"psychosocial.{k}": "5" for k in ("wellbeing", "support_network", "discrimination")}
        r = await send_form(person, path, path, data)
        assert r.status_code == 422
        check_page(r.text)
        assert re.search(r'id="economic-error">.*?Answer at least 3 of these questions', r.text, re.S)
        assert 'id="economic-food-security-4" name="economic.food_security" value="4" checked' in r.text  # kept
        assert (await j.get())["version"] == before

        data["economic.ability_to_borrow"] = "1"
        data["psychosocial.physical_safety"] = ""  # not applicable
        r = await send_form(person, path, path, data)
        assert r.status_code == 303, r.text[:3000]
        case = await j.get()
        (visit,) = case["facts"]["monitoring_visits"]
        assert visit["survey"]["food_security"] == 4 and visit["survey"]["physical_safety"] is None
        assert visit["scores"] == {"economic": round((0.75 + 0.5 + 0) / 3, 4), "social": 0.75, "psychosocial": 1.0}

        page = await person.page(case_page)
        check_page(page)
        section = page[page.index('id="scores-title"') : page.index('id="person-title"')]
        assert "Scores over time" in section and "<svg" in section and "<polyline" in section
        assert section.count('class="chart-dot"') == 4  # one visit: a dot per line
        for dimension, score in (("Economic", "0.42"), ("Social", "0.75"), ("Psychosocial", "1")):
            assert f'<td data-label="{dimension}">{score}</td>' in section, dimension
        assert "from the survey" in section
        assert '<span class="badge overdue">Economic</span>' in section  # 0.42: below its threshold of 0.5
    finally:
        await person.aclose()


def test_the_chart_spaces_the_visits_evenly_and_puts_the_scores_upwards():
    web = SimpleNamespace(_=lambda text: text, language="en")
    scores = [0.0, 0.25, 0.5, 0.75, 1.0]
    visits = [
        VisitScores(date(2027, m, 1), {"economic": s, "social": s}, overall=1 - s, below=[], survey=True)
        for m, s in zip(range(1, 6), scores, strict=True)
    ]
    chart = scores_chart(web, visits)  # type: ignore[arg-type]
    lines = {line["key"]: line for line in chart["lines"]}
    assert list(lines) == ["overall", "economic", "social"]  # no psychosocial score: no line
    xs = [x for x, _ in lines["economic"]["dots"]]
    assert xs[0] == PLOT_LEFT and xs[-1] == PLOT_RIGHT
    assert len({round(b - a, 1) for a, b in zip(xs, xs[1:], strict=False)}) == 1
    assert [y for _, y in lines["economic"]["dots"]][::4] == [PLOT_BOTTOM, PLOT_TOP]
    assert [y for _, y in lines["overall"]["dots"]][::4] == [PLOT_TOP, PLOT_BOTTOM]
    assert [d["text"] for d in chart["days"]] == ["1/1/27", "5/1/27"]  # five visits: the first and last day
    assert [t["text"] for t in chart["ticks"]] == ["0", "0.25", "0.5", "0.75", "1"]
    one = scores_chart(web, visits[:1])  # type: ignore[arg-type]
    assert one["lines"][0]["dots"] == [((PLOT_LEFT + PLOT_RIGHT) / 2, PLOT_TOP)]


def test_one_sending_of_the_survey_form_says_everything_wrong_with_it():
    """A caseworker on a phone sends the form once to learn all that is wrong: the missing day, an
    answer off the scale, and each dimension with too few answers (an answer off the scale is none)."""
    raw = ImmutableMultiDict(
        [
            ("economic.food_security", "4"),
            ("economic.employment", "3"),
            ("social.housing", "9"),
            *((f"social.{k}", "4") for k in ("justice", "documentation", "public_services")),
            *((f"psychosocial.{k}", "5") for k in ("wellbeing", "support_network")),
            ("psychosocial.discrimination", ""),  # not applicable
        ]
    )
    body, errors = survey_form.check(lambda text: text, raw)
    assert body is None
    assert [name for name, _ in errors.found] == ["visited_on", "social.housing", "economic", "psychosocial"]
    raw = ImmutableMultiDict([("visited_on", "2027-03-20"), *((f"{d}.{i}", "3") for i, d in INDICATORS)])
    body, errors = survey_form.check(lambda text: text, raw)
    assert not errors and body is not None and body.survey is not None
    assert body.survey.answers() == dict.fromkeys(SurveyIndicator, 3)
