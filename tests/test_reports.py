"""The indicators (reintegration/reports.py): the suppression of small cells, percentiles and groups as
pure functions; the definitions over read-model rows written straight into a database (SQLite and
the machine's PostgreSQL: the facts' JSON is read by each dialect's own operators)."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterator
from datetime import date
from typing import Any

import pytest
from sqlalchemy import create_engine
from sqlalchemy.pool import StaticPool
from sqlmodel import Session

from api.errors import Unprocessable
from api.reports import check_threshold, parse_groups, parse_period
from reintegration import reports
from reintegration.db import metadata
from reintegration.reports import (
    CaseFacts,
    Exclusive,
    Group,
    Indicators,
    Period,
    Sum,
    Within,
    _Counts,
    _people_measures,
    case_groups,
    hidden_cells,
    indicators,
    load_cases,
    percentile,
    suppress,
    sustainable,
    too_close,
    visit_at_12_months,
)
from reintegration.settings import Settings
from tests.conftest import _drop_postgres_database, _postgres_database
from tests.reports_support import add_agency, add_case, add_stay, add_task, at

# --- Suppression ---------------------------------------------------------------------------------


def column(values: list[int], total: int | None = None, threshold: int = 5) -> tuple[list[Any], Any]:
    """A column's cells under its total, as shown."""
    cells = {f"r{i}": v for i, v in enumerate(values)}
    cells["total"] = sum(values) if total is None else total
    shown = suppress(cells, [Sum(tuple(f"r{i}" for i in range(len(values))), "total")], threshold)
    return [shown[f"r{i}"] for i in range(len(values))], shown["total"]


def test_the_worked_example_hides_the_small_cell_and_the_smallest_other():
    # 3 is under 5; 22 - 12 - 0 would give it away, so 7, the smallest other non-zero cell, goes too.
    assert column([12, 3, 0, 7]) == ([12, "<5", 0, "<5"], 22)


def test_nothing_small_nothing_hidden_and_zero_is_shown():
    assert column([12, 5, 0, 7]) == ([12, 5, 0, 7], 24)
    assert column([0, 0, 0]) == ([0, 0, 0], 0)
    assert column([]) == ([], 0)


def test_two_small_cells_protect_each_other():
    assert column([12, 3, 4, 9]) == ([12, "<5", "<5", 9], 28)


def test_equal_candidates_hide_the_first_in_order():
    assert column([8, 2, 8]) == (["<5", "<5", 8], 18)


def test_a_small_total_is_hidden_with_its_rows():
    assert column([3, 0]) == (["<5", 0], "<5")
    assert column([1, 2]) == (["<5", "<5"], "<5")


@pytest.mark.parametrize(
    ("threshold", "expected"),
    [
        (2, ["<2", 3, 4, 9, "<2", 20]),  # only the 1 is small; the first 3, the smallest other, hides it
        (5, ["<5", "<5", "<5", 9, "<5", 20]),  # four small cells: they protect one another
        (10, ["<10", "<10", "<10", "<10", "<10", 20]),
    ],
)
def test_the_threshold_decides_what_is_small(threshold, expected):
    assert column([3, 3, 4, 9, 1, 20], threshold=threshold) == (expected, 40)


def test_a_threshold_under_two_is_refused():
    with pytest.raises(ValueError):
        suppress({"a": 1}, [], 1)


def test_rows_and_columns_both_and_to_a_fixed_point():
    """A grid whose rows add up to row totals and columns to column totals (closures by reason
    under closed, say): the cell hidden in a column unbalances a row, which hides another, and so on."""
    grid = {("a", "x"): 3, ("a", "y"): 9, ("b", "x"): 8, ("b", "y"): 6}
    values: dict[Any, int] = dict(grid)
    sums = []
    for r in "ab":
        values[(r, "total")] = grid[(r, "x")] + grid[(r, "y")]
        sums.append(Sum(((r, "x"), (r, "y")), (r, "total")))
    for c in "xy":
        values[("total", c)] = grid[("a", c)] + grid[("b", c)]
        sums.append(Sum((("a", c), ("b", c)), ("total", c)))
    hidden = hidden_cells(values, sums, 5)
    # (a, x) is 3: its column hides (b, x), its row (a, y); then row b has one hidden, (b, x): (b, y)
    # goes too; every set has two hidden cells (or none): nothing is left to deduce.
    assert hidden == {("a", "x"), ("a", "y"), ("b", "x"), ("b", "y")}
    for s in sums:
        assert sum(c in hidden for c in s.cells) != 1


def test_a_total_hidden_by_another_set_hides_a_part_of_its_own():
    # t (13) is a part of y, whose 2 is small: t is hidden there; x's parts would still give t back.
    values = {"p1": 6, "p2": 7, "t": 13, "q": 2, "u": 15}
    sums = [Sum(("p1", "p2"), "t"), Sum(("t", "q"), "u")]
    assert hidden_cells(values, sums, 5) == {"q", "t", "p1"}


def test_a_sum_shown_elsewhere_counts_too():
    # Rows that differ in one group only add up to a row of a report grouped by the others.
    values = {"a": 3, "b": 6, "c": 9}
    assert hidden_cells(values, [Sum(("a", "b", "c"))], 5) == {"a", "b"}


def test_a_lone_hidden_cell_with_nothing_to_hide_beside_it_stays_alone():
    assert hidden_cells({"a": 3, "b": 0}, [Sum(("a", "b"))], 5) == {"a"}


def test_a_bound_tells_more_than_a_mark_when_it_is_too_close():
    # A small count's mark says 1 to 4: an upper bound of 3 says more, one of 4 does not.
    assert too_close(1, 3, upper=True, threshold=5) and not too_close(1, 4, upper=True, threshold=5)
    assert not too_close(3, 3, upper=False, threshold=5)  # a lower bound on a small count: its mark says 1 already
    # A count hidden to protect a small one: a bound within 2 of it would pin the small one's.
    assert too_close(6, 6, upper=False, threshold=5) and too_close(9, 7, upper=True, threshold=5)
    assert not too_close(9, 6, upper=False, threshold=5)
    assert not too_close(1, 1, upper=True, threshold=2)  # "<2" says 1 already: nothing more to tell


def test_an_unknown_row_is_bounded_by_the_total_less_any_other_row():
    """By type of exploitation: 9 forced labour, 4 sexual exploitation (3 of them also forced
    labour), 1 not recorded, of 10 cases. The 4 and the 1 are hidden and the column holds; but the
    case not recorded has no other type, so it is at most 10 - 9: the 1 would be given away."""
    values = {"forced": 9, "sexual": 4, "unknown": 1, "total": 10}
    column = [Sum(("forced", "sexual", "unknown"), "total")]
    assert hidden_cells(values, column, 5) == {"sexual", "unknown"}
    bound = Exclusive("total", "unknown", ("forced", "sexual"))
    assert hidden_cells(values, column, 5, [bound]) == {"sexual", "unknown", "forced"}
    # Far enough from the total, the bound says no more than the mark.
    far = {"forced": 5, "sexual": 4, "unknown": 1, "total": 10}
    assert hidden_cells(far, column, 5, [bound]) == {"sexual", "unknown"}
    # The other way round: 7 not recorded, so each type at most 10 - 7 = 3.
    other_way = {"forced": 2, "sexual": 3, "unknown": 7, "total": 10}
    assert hidden_cells(other_way, column, 5) == {"forced", "sexual"}
    assert hidden_cells(other_way, column, 5, [bound]) == {"forced", "sexual", "unknown"}


def test_a_count_of_some_of_a_groups_people_bounds_the_groups_count():
    """People assisted by sex, 6 women and 4 men (hidden, and the 6 with them); the women all got
    shelter: the services' row of 6 women sheltered would say the 6 (at least 6, of 10 less the
    men's 1 or more), though the services' own column, where a man had two services, holds."""
    values = {
        ("people", "F"): 6,
        ("people", "M"): 4,
        ("people", "all"): 10,
        ("services", "F", "shelter"): 6,
        ("services", "M", "shelter"): 1,
        ("services", "M", "medical"): 4,
        ("services", "all"): 10,
    }
    served = (("services", "F", "shelter"), ("services", "M", "shelter"), ("services", "M", "medical"))
    sums = [Sum((("people", "F"), ("people", "M")), ("people", "all")), Sum(served, ("services", "all"))]
    assert ("services", "F", "shelter") not in hidden_cells(values, sums, 5)
    bounds = [
        Within(("people", "F"), served[0]),
        Within(("people", "M"), served[1]),
        Within(("people", "M"), served[2]),
    ]
    assert ("services", "F", "shelter") in hidden_cells(values, sums, 5, bounds)
    # 18 women, 8 of them sheltered: at least 8 says little of the 18, and is shown.
    values.update({("people", "F"): 18, ("people", "all"): 22, served[0]: 8, ("services", "all"): 22})
    assert ("services", "F", "shelter") not in hidden_cells(values, sums, 5, bounds)


def test_hidden_cells_adding_up_to_too_little_hide_another():
    # 1 and 1 under 8 with a 6 shown: 8 - 6 = 2, and each is 1 or more: both 1.
    assert column([6, 1, 1]) == (["<5", "<5", "<5"], 8)
    # 3 and 4 under 28: each could be 1 to 6, more than its mark says: the column holds.
    assert column([12, 3, 4, 9]) == ([12, "<5", "<5", 9], 28)


# --- Percentiles and groups ----------------------------------------------------------------------


def test_percentiles_are_nearest_rank():
    ten = [float(d) for d in range(10, 0, -1)]
    assert percentile(ten, 50) == 5.0
    assert percentile(ten, 90) == 9.0
    assert percentile(ten, 100) == 10.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0  # the 2nd of 4, not the mean of the middle two
    assert percentile([7.5], 90) == 7.5
    with pytest.raises(ValueError):
        percentile([], 50)


def test_a_case_counts_once_under_each_combination_of_its_groups():
    case = CaseFacts(
        case_id="c",
        country="ES",
        sex="Feminine",
        age_band="25-34",
        exploitation_types=["SexualExploitation", "ForcedLabour", "ForcedLabour"],
        services={"shelter", "medical"},
    )
    assert case_groups(case, [Group.sex, Group.exploitation_type, Group.service]) == [
        ("Feminine", "SexualExploitation", "shelter"),
        ("Feminine", "SexualExploitation", "medical"),
        ("Feminine", "ForcedLabour", "shelter"),
        ("Feminine", "ForcedLabour", "medical"),
    ]
    assert case_groups(case, []) == [()]
    bare = CaseFacts(case_id="d", country="PT", sex="not-a-picklist-value", age_band="")
    assert case_groups(bare, list(Group)) == [("NonSpecifiedUnknown", "unknown", "unknown", "PT", "none", "none")]


# --- Definitions ---------------------------------------------------------------------------------

YEAR_2026 = Period(date(2026, 1, 1), date(2026, 12, 31))


def test_each_people_measure_counts_by_its_event_inside_the_period_both_days_included():
    d = date.fromisoformat
    case = CaseFacts(
        case_id="c",
        country="ES",
        identified_on=d("2026-01-01"),
        arrived_on=d("2026-12-31"),
        granted_on=[d("2025-06-01"), d("2026-06-01")],
        plan_agreed_on=d("2026-02-01"),
        closed_on=d("2026-11-30"),
        closure_reason="completed",
    )
    assert _people_measures(case, YEAR_2026, ["ES"]) == {
        "identified": ["ES"],
        "assisted": ["ES"],
        "returned": ["ES"],
        "granted_residence": ["ES"],
        "reintegration_started": ["ES"],
        "reintegrated": ["ES"],
        "closed": ["ES"],
    }
    before = CaseFacts(
        case_id="b",
        country="ES",
        identified_on=d("2025-12-31"),
        arrived_on=d("2027-01-01"),
        granted_on=[d("2025-06-01")],
        plan_agreed_on=d("2025-02-01"),
        closed_on=d("2026-03-01"),
        closure_reason="completed",
    )
    assert list(_people_measures(before, YEAR_2026)) == ["reintegrated", "closed"]
    withdrew = CaseFacts(case_id="w", country="ES", closed_on=d("2026-03-01"), closure_reason="withdrew")
    assert list(_people_measures(withdrew, YEAR_2026)) == ["closed"]


def test_each_people_measure_counts_in_the_country_where_it_happened():
    """Identified in ES, returned to RO (which manages the case since the arrival), a plan and a
    closure there; served in ES and in RO."""
    d = date.fromisoformat
    case = CaseFacts(
        case_id="h",
        country="RO",
        identified_in="ES",
        origin="RO",
        identified_on=d("2026-01-10"),
        arrived_on=d("2026-04-01"),
        granted_on=[],
        plan_agreed_on=d("2026-05-01"),
        closed_on=d("2026-12-01"),
        closure_reason="completed",
    )
    assert _people_measures(case, YEAR_2026, ["RO", "ES", "RO"]) == {
        "identified": ["ES"],
        "assisted": ["ES", "RO"],
        "returned": ["ES", "RO"],  # left ES, reached RO
        "reintegration_started": ["RO"],
        "reintegrated": ["RO"],
        "closed": ["RO"],
    }
    # Transferred with the person from ES to FR, which asked for the residence.
    residence = CaseFacts(case_id="r", country="FR", identified_in="ES", granted_on=[d("2026-02-01")])
    assert _people_measures(residence, YEAR_2026) == {"granted_residence": ["FR"]}


def test_the_visit_at_12_months_is_the_first_from_the_grace_period_on():
    plan = date(2026, 1, 31)  # + 12 months: 2027-01-31; less 14 days: 2027-01-17
    visits = [
        {"visited_on": v, "below_threshold": []} for v in ("2027-02-01", "2026-04-30", "2027-01-16", "2027-01-17")
    ]
    case = CaseFacts(case_id="c", country="ES", plan_agreed_on=plan, visits=visits)
    assert visit_at_12_months(case, 14) == visits[3]
    assert visit_at_12_months(case, 0) == visits[0]
    assert visit_at_12_months(CaseFacts(case_id="n", country="ES", visits=visits), 14) is None


def test_a_visit_is_above_as_it_found_itself_else_by_the_thresholds():
    thresholds = {"economic": 0.5, "social": 0.5}
    assert sustainable({"below_threshold": [], "scores": {"economic": 0.1}}, thresholds)
    assert not sustainable({"below_threshold": ["social"], "scores": {"economic": 0.9}}, thresholds)
    assert sustainable({"scores": {"economic": 0.5, "social": 0.7}}, thresholds)
    assert not sustainable({"scores": {"economic": 0.49, "social": 0.7}}, thresholds)


# --- Over a database -----------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request: pytest.FixtureRequest) -> Iterator[Any]:
    if request.param == "sqlite":
        made = create_engine("sqlite://", connect_args={"check_same_thread": False}, poolclass=StaticPool)
        metadata().create_all(made)
        yield made
        made.dispose()
        return
    name, url = _postgres_database()
    made = create_engine(url)
    try:
        metadata().create_all(made)
        yield made
    finally:
        made.dispose()
        _drop_postgres_database(name)


def visit(on: str, below: list[str]) -> dict[str, Any]:
    return {"visited_on": on, "scores": {}, "weighted_score": 0.0, "below_threshold": below}


@pytest.fixture
def region(engine: Any) -> Any:
    """Cases of 2026 in ES (and one in PT), each row of the read model written by hand."""
    with Session(engine) as session:
        for agency in ("shelter-es", "clinic-es", "legal-aid-es", "shelter-pt"):
            add_agency(session, agency, agency[-2:].upper())
        # Six women identified in 2026; F1 returned, her plan (2025) is a year old, closed completed.
        add_case(
            session,
            "F1",
            identified_on="2026-02-01",
            arrived_on="2026-04-01",
            plan_agreed_on="2025-03-01",  # at 12 months from 2026-02-15: the visit of 2026-02-20
            monitoring_visits=[visit("2025-06-01", ["economic"]), visit("2026-02-20", [])],
            closed_at=at("2026-06-30", 23, 30),
            reason="completed",
        )
        add_case(session, "F2", identified_on="2026-02-01", closed_at=at("2026-12-31", 23, 59), reason="withdrew")
        add_case(session, "F3", identified_on="2026-02-01", closed_at=at("2027-01-01", 0, 0), reason="completed")
        for n in (4, 5, 6):
            add_case(session, f"F{n}", identified_on="2026-02-01")
        # Three men identified on the period's last day, of two types each; M1 granted residence.
        for n in (1, 2, 3):
            add_case(
                session,
                f"M{n}",
                sex="Masculine",
                band="18-24",
                identified_on="2026-12-31",
                exploitation_types=["SexualExploitation", "ForcedLabour"],
                residence_decisions=[
                    {"decision": "rejected", "decided_on": "2026-03-01", "valid_until": None},
                    {"decision": "granted", "decided_on": "2026-07-01", "valid_until": "2027-07-01"},
                ]
                if n == 1
                else [],
            )
        # No case facts at all (a case from before them), no exploitation type recorded.
        add_case(session, "U1", sex=None, identified_on="2026-01-01", exploitation_types=[])
        # Outside: identified the day before the period; in another country.
        add_case(session, "O1", sex="TransgenderFeminine", identified_on="2025-12-31")
        add_case(session, "PT1", country="PT", identified_on="2026-05-01")
        # Sustainability: plans of 2025-01-10, the visit at 12 months from 2025-12-27 on.
        for n, below in enumerate([[], ["economic"], ["social"], [], [], [], []], start=1):
            add_case(
                session,
                f"S{n}",
                band="35-49",
                identified_on="2024-01-01",
                plan_agreed_on="2025-01-10",
                monitoring_visits=[visit("2025-04-10", ["economic"]), visit("2026-01-05", below)],
            )
        for n in range(1, 7):
            add_task(session, f"F{n}", "shelter", "shelter-es", at(f"2026-03-0{n}"))
        add_task(session, "M1", "medical", "clinic-es", at("2026-08-01"))
        add_task(session, "M2", "medical", "clinic-es", at("2026-08-01"), outcome="unable")
        add_task(session, "M3", "legal-assistance", "legal-aid-es", at("2025-11-01"))
        add_task(session, "PT1", "shelter", "shelter-pt", at("2026-05-02"), country="PT")
        for n in range(1, 7):  # protection stays of 1 to 6 days, and M1's of 10, ended in 2026
            add_stay(session, f"F{n}", "protection", float(n), at("2026-05-01"))
        add_stay(session, "M1", "protection", 10.0, at("2026-12-31", 23, 0))
        add_stay(session, "M2", "protection", 40.0, at("2025-12-31", 23, 0))  # ended before the period
        add_stay(session, "M3", "protection", None, None)  # not over
        add_stay(session, "PT1", "protection", 2.0, at("2026-05-01"), country="PT")  # another country
        session.commit()
    return engine


def report(
    engine: Any, group_by: list[Group], threshold: int = 5, countries: tuple[str, ...] | None = ("ES",)
) -> Indicators:
    with Session(engine) as session:
        return indicators(
            session,
            countries=countries,
            period_from=date(2026, 1, 1),
            period_to=date(2026, 12, 31),
            group_by=group_by,
            threshold=threshold,
            thresholds={"economic": 0.5, "social": 0.5, "psychosocial": 0.5},
        )


def rows(table: Any) -> dict[tuple[str, ...], dict[str, Any]]:
    return {tuple(r.group.values()): r.cells for r in table.rows}


def test_the_case_facts_are_read_from_each_database(region):
    with Session(region) as session:
        cases = load_cases(session, ["ES"])
        assert set(cases) == {"F1", "F2", "F3", "F4", "F5", "F6", "M1", "M2", "M3", "U1", "O1"} | {
            f"S{n}" for n in range(1, 8)
        }
        f1, m1, u1 = cases["F1"], cases["M1"], cases["U1"]
        assert (f1.identified_on, f1.arrived_on, f1.plan_agreed_on) == (
            date(2026, 2, 1),
            date(2026, 4, 1),
            date(2025, 3, 1),
        )
        assert (f1.closed_on, f1.closure_reason, f1.sex, f1.age_band) == (
            date(2026, 6, 30),
            "completed",
            "Feminine",
            "25-34",
        )
        assert [v["visited_on"] for v in f1.monitoring_visits()] == ["2025-06-01", "2026-02-20"]
        assert m1.granted_on == [date(2026, 7, 1)]  # the rejection is no grant
        assert m1.exploitation_types == ["SexualExploitation", "ForcedLabour"]
        assert (u1.sex, u1.age_band, u1.exploitation_types) == ("NonSpecifiedUnknown", "unknown", [])
        assert set(load_cases(session, None)) > set(cases)
        assert load_cases(session, []) == {}


def test_only_the_cases_that_can_count_in_the_period_are_read(engine):
    """Each case below can count in 2026 by one fact only; the last two by none."""
    with Session(engine) as session:
        add_case(session, "identified", identified_on="2026-12-31")
        add_case(session, "returned", identified_on="2025-01-01", arrived_on="2026-01-01")
        add_case(session, "planned", identified_on="2024-01-01", plan_agreed_on="2025-06-01")  # 12 months: 2026
        granted = [{"decision": "granted", "decided_on": "2026-05-01", "valid_until": None}]
        add_case(session, "granted", identified_on="2025-01-01", residence_decisions=granted)
        add_case(session, "closed", identified_on="2025-01-01", closed_at=at("2026-01-01", 0, 0), reason="other")
        add_case(session, "served", identified_on="2025-01-01")
        add_task(session, "served", "shelter", "shelter-es", at("2026-02-01"))
        add_case(session, "stayed", identified_on="2025-01-01")
        add_stay(session, "stayed", "protection", 3.0, at("2026-02-01"))
        add_case(session, "before", identified_on="2025-01-01", closed_at=at("2025-12-31", 23, 59), reason="other")
        add_task(session, "before", "shelter", "shelter-es", at("2025-12-31", 23, 59))
        add_stay(session, "before", "protection", 3.0, at("2025-12-31", 23, 59))
        add_case(session, "after", identified_on="2027-01-01", plan_agreed_on="2027-01-02")
        session.commit()
        assert set(load_cases(session, None, period=YEAR_2026)) == {
            "identified",
            "returned",
            "planned",
            "granted",
            "closed",
            "served",
            "stayed",
        }
        assert len(load_cases(session, None)) == 9


def test_the_indicators_by_sex_suppress_small_cells_and_complements(region):
    got = report(region, [Group.sex])
    assert got.people.keys == ["sex"]
    people = rows(got.people)
    assert list(people) == [("Feminine",), ("Masculine",), ("NonSpecifiedUnknown",)]  # O1's row has no count
    assert people[("Feminine",)] == {
        # The men's 3 and U1's 1 are hidden; beside a 6, they would add up to 4: each 1 to 3.
        "identified": "<5",
        # F1-F6 assisted, M1 too (1, small): the 6 is hidden with it, or 7 - 6 would give it away.
        "assisted": "<5",
        "returned": "<5",
        "granted_residence": 0,
        "reintegration_started": 0,  # F1's plan is of 2025
        "reintegrated": "<5",
        "closed": "<5",  # F1 and F2; F3 closed a minute after the period
    }
    assert people[("Masculine",)] == {
        "identified": "<5",
        "assisted": "<5",
        "returned": 0,
        "granted_residence": "<5",
        "reintegration_started": 0,
        "reintegrated": 0,
        "closed": 0,
    }
    assert people[("NonSpecifiedUnknown",)]["identified"] == "<5"
    assert got.people.total.cells == {
        "identified": 10,
        "assisted": 7,
        "returned": "<5",
        "granted_residence": "<5",
        "reintegration_started": 0,
        "reintegrated": "<5",
        "closed": "<5",
    }
    assert rows(got.closures) == {
        ("Feminine",): {"completed": "<5", "withdrew": "<5", "lost-contact": 0, "transferred": 0, "other": 0}
    }
    assert got.services.keys == ["sex", "service", "agency_id"]
    assert rows(got.services) == {
        ("Feminine", "shelter", "shelter-es"): {"delivered": "<5", "people": "<5"},
        ("Masculine", "medical", "clinic-es"): {"delivered": "<5", "people": "<5"},
    }
    assert got.services.total.cells == {"delivered": 7, "people": 7}
    protection = [d for d in got.stage_days if d.stage == "protection"]
    assert [(d.group, d.stays, d.median_days, d.p90_days) for d in protection] == [
        ({}, 7, 4.0, 10.0),  # 1 2 3 4 5 6 10
        # 6 stays, but their count hides M1's 1: a median there would say "5 or more", and so 7 - 6.
        ({"sex": "Feminine"}, "<5", None, None),
        ({"sex": "Masculine"}, "<5", None, None),
    ]
    assert {d.stage for d in got.stage_days} == {"protection"}
    # F1 and S1-S7 at 12 months (F1 at 2026-02-20, the others at 2026-01-05): 6 above, 2 below; the
    # 2 below (never shown) is small, so the 6 above is hidden, and the share.
    assert rows(got.sustainability) == {("Feminine",): {"cases_at_12_months": 8, "above_threshold": "<5"}}
    assert [s.share for s in got.sustainability_shares] == [None, None]


def test_a_lower_threshold_shows_more_and_the_share(region):
    got = report(region, [Group.sex], threshold=2)
    people = rows(got.people)
    assert people[("Feminine",)]["assisted"] == "<2"  # M1's 1 is still alone in its column
    assert people[("Feminine",)]["closed"] == 2
    # U1's 1 is small: the smallest other, the men's 3, hides it.
    assert [people[g]["identified"] for g in people] == [6, "<2", "<2"]
    assert rows(got.sustainability) == {("Feminine",): {"cases_at_12_months": 8, "above_threshold": 6}}
    assert [(s.group, s.share) for s in got.sustainability_shares] == [({}, 0.75), ({"sex": "Feminine"}, 0.75)]


def test_a_multi_valued_group_counts_a_case_under_each_value(region):
    got = report(region, [Group.exploitation_type], threshold=2)
    identified = {g: c["identified"] for g, c in rows(got.people).items()}
    # 9 forced labour, 3 sexual exploitation (the men, who count in both), U1 unknown: 13 for 10 cases.
    # The unknown 1 is small and alone: the 3, the smallest other, hides it.
    assert identified == {("ForcedLabour",): 9, ("SexualExploitation",): "<2", ("unknown",): "<2"}
    assert got.people.total.cells["identified"] == 10


def test_a_multi_valued_groups_unknown_row_is_not_given_away_by_the_largest_type(region):
    got = report(region, [Group.exploitation_type])
    identified = {g: c["identified"] for g, c in rows(got.people).items()}
    # U1, not recorded, is at most 10 - 9 (forced labour): the 9 is hidden too.
    assert identified == {("ForcedLabour",): "<5", ("SexualExploitation",): "<5", ("unknown",): "<5"}
    assert got.people.total.cells["identified"] == 10


def test_reintegrated_people_are_hidden_with_the_completed_closures_they_would_give_away(engine):
    """Six women reintegrated (closed completed after a plan) and one who withdrew: the 1 is small,
    the 6 completed beside it hidden; the 6 reintegrated, the same cases, would say it."""
    with Session(engine) as session:
        for n in range(6):
            add_case(session, f"R{n}", plan_agreed_on="2025-05-01", closed_at=at("2026-03-01"), reason="completed")
        add_case(session, "W", closed_at=at("2026-03-01"), reason="withdrew")
        for n in range(6):  # men, reintegrated: the column's other rows
            add_case(
                session,
                f"M{n}",
                sex="Masculine",
                plan_agreed_on="2025-05-01",
                closed_at=at("2026-03-01"),
                reason="completed",
            )
        session.commit()
    got = report(engine, [Group.sex])
    assert rows(got.closures)[("Feminine",)] == {
        "completed": "<5",
        "withdrew": "<5",
        "lost-contact": 0,
        "transferred": 0,
        "other": 0,
    }
    assert rows(got.people)[("Feminine",)]["closed"] == 7
    assert rows(got.people)[("Feminine",)]["reintegrated"] == "<5"  # 6, shown, would give 7 - 6 away
    # The total's 12 likewise (13 closed, 1 withdrew): the men's 6 then gives nothing away.
    assert got.people.total.cells["reintegrated"] == "<5" and rows(got.people)[("Masculine",)]["reintegrated"] == 6


def test_each_figure_counts_in_the_country_where_it_happened(engine):
    """Two people identified in ES, sheltered there by an agency of ES, returned to RO (which
    manages their cases since the arrival), assisted and given a plan there; two identified in ES
    who stay. ES reports its identifications, shelters, stays and returns; RO its arrivals, plans and
    services; PT nothing."""
    with Session(engine) as session:
        add_agency(session, "shelter-es", "ES")
        add_agency(session, "reintegration-ro", "RO")
        for n in (1, 2):
            add_case(
                session,
                f"H{n}",
                country="RO",
                identified_in="ES",
                identified_on="2026-02-01",
                arrived_on="2026-05-01",
                plan_agreed_on="2026-06-01",
            )
            # The task's row names the case's owner now (RO: rewritten after the hand-over); its
            # agency says where it was delivered.
            add_task(session, f"H{n}", "shelter", "shelter-es", at("2026-03-01"), country="RO")
            add_task(session, f"H{n}", "psychosocial", "reintegration-ro", at("2026-07-01"), country="RO")
            add_stay(session, f"H{n}", "protection", 30.0, at("2026-03-15"), country="ES")
            add_stay(session, f"H{n}", "return", 40.0, at("2026-05-01"), country="ES")
            add_stay(session, f"H{n}", "reintegration", 20.0, at("2026-06-20"), country="RO")
        for n in (1, 2):
            add_case(session, f"E{n}", identified_on="2026-03-01")
        session.commit()

    spain = report(engine, [], threshold=2)
    assert spain.people.total.cells == {
        "identified": 4,
        "assisted": 2,
        "returned": 2,
        "granted_residence": 0,
        "reintegration_started": 0,
        "reintegrated": 0,
        "closed": 0,
    }
    assert [(r.group["service"], r.cells["delivered"]) for r in spain.services.rows] == [("shelter", 2)]
    assert {d.stage: d.stays for d in spain.stage_days} == {"protection": 2, "return": 2}

    romania = report(engine, [], threshold=2, countries=("RO",))
    assert romania.people.total.cells == {
        "identified": 0,
        "assisted": 2,
        "returned": 2,
        "granted_residence": 0,
        "reintegration_started": 2,
        "reintegrated": 0,
        "closed": 0,
    }
    assert [(r.group["service"], r.cells["delivered"]) for r in romania.services.rows] == [("psychosocial", 2)]
    assert {d.stage: d.stays for d in romania.stage_days} == {"reintegration": 2}

    portugal = report(engine, [Group.country], threshold=2, countries=("PT",))
    assert set(portugal.people.total.cells.values()) == {0} and portugal.people.rows == []
    assert portugal.services.rows == [] and portugal.stage_days == []

    # Everywhere, by country: each figure under its country, a return under both.
    everywhere = report(engine, [Group.country], threshold=2, countries=None)
    by_country = {g: (c["identified"], c["assisted"], c["returned"]) for g, c in rows(everywhere.people).items()}
    assert by_country == {("ES",): (4, 2, 2), ("RO",): (0, 2, 2)}
    assert everywhere.people.total.cells["returned"] == 2


def test_by_service_a_case_counts_under_what_it_received_by_the_end_of_the_period(region):
    got = report(region, [Group.service], threshold=2)
    identified = {g: c["identified"] for g, c in rows(got.people).items()}
    # M2's task was unable (none); M3's legal assistance was of 2025, still received.
    assert identified == {("shelter",): 6, ("medical",): "<2", ("legal-assistance",): "<2", ("none",): 2}
    assert got.services.keys == ["service", "agency_id"]
    assert rows(got.services) == {
        ("shelter", "shelter-es"): {"delivered": "<2", "people": "<2"},
        ("medical", "clinic-es"): {"delivered": "<2", "people": "<2"},
    }


def test_two_groups_make_a_row_per_combination(region):
    got = report(region, [Group.sex, Group.age_band], threshold=2)
    assert got.people.keys == ["sex", "age_band"]
    people = rows(got.people)
    assert {g: c["identified"] for g, c in people.items()} == {
        ("Feminine", "25-34"): 6,
        ("Masculine", "18-24"): "<2",
        ("NonSpecifiedUnknown", "unknown"): "<2",
    }
    # F1 alone at 25-34 (1 above); S1-S7 at 35-49 (7, 5 above). The 7 hides with F1's 1 (8 is the
    # total), and so does the 5 above: the report by sex alone shows the women's 6 above (6 - 5 = 1).
    assert rows(got.sustainability) == {
        ("Feminine", "25-34"): {"cases_at_12_months": "<2", "above_threshold": "<2"},
        ("Feminine", "35-49"): {"cases_at_12_months": "<2", "above_threshold": "<2"},
    }
    assert rows(report(region, [Group.sex], threshold=2).sustainability)[("Feminine",)]["above_threshold"] == 6


def test_with_two_groups_the_rows_differing_in_one_add_up_to_another_requests_row():
    """Grouped by sex and age, the women's rows add up to the women's row of a report by sex alone:
    a small cell among them is protected there too, though the column has another small cell."""
    table = _Counts("people", ("sex", "age_band"), ("identified",))
    for (sex, band), n in {("F", "a"): 1, ("F", "b"): 7, ("M", "a"): 1, ("M", "b"): 9}.items():
        table.rows[(sex, band)]["identified"] = n
        table.total["identified"] += n
    shown = suppress(table.values(), table.sums(), 2)
    assert table.table(shown, ["identified"]).model_dump()["rows"] == [
        {"group": {"sex": "F", "age_band": "a"}, "cells": {"identified": "<2"}},
        {"group": {"sex": "F", "age_band": "b"}, "cells": {"identified": "<2"}},
        {"group": {"sex": "M", "age_band": "a"}, "cells": {"identified": "<2"}},
        {"group": {"sex": "M", "age_band": "b"}, "cells": {"identified": "<2"}},
    ]
    assert shown[("people", None, "identified")] == 18
    one_group = _Counts("people", ("sex",), ("identified",))
    one_group.rows[("F",)]["identified"], one_group.rows[("M",)]["identified"] = 1, 7
    one_group.total["identified"] = 8
    assert len(one_group.sums()) == 1  # the column alone


def test_the_region_decides_and_an_empty_one_counts_nothing(region):
    assert report(region, [], threshold=2, countries=None).people.total.cells["identified"] == 11  # PT1 too
    empty = report(region, [Group.sex], countries=())
    assert empty.countries == []
    assert empty.people.rows == [] and set(empty.people.total.cells.values()) == {0}
    assert empty.stage_days == [] and empty.services.rows == []
    totals = report(region, [], threshold=2)
    assert totals.people.rows == [] and totals.people.keys == []
    assert totals.people.total.cells["identified"] == 10
    assert totals.closures.total.cells == {
        "completed": "<2",
        "withdrew": "<2",
        "lost-contact": 0,
        "transferred": 0,
        "other": 0,
    }


def test_any_calendar_day_ends_a_period_without_overflow(region):
    with Session(region) as session:
        whole = indicators(
            session,
            countries=None,
            period_from=date.min,
            period_to=date.max,
            group_by=[Group.sex],
            threshold=2,
            thresholds={},
        )
    assert whole.people.total.cells["identified"] == 19  # whenever: the 10 of 2026, O1, S1-S7 and PT1


# --- The API's query ------------------------------------------------------------------------------


def test_the_period_asked_for_and_its_defaults():
    today = date(2026, 5, 10)
    assert parse_period(None, None, today) == (date(2025, 5, 11), today)  # the year ending today
    assert parse_period(None, "2024-02-29", today) == (date(2023, 3, 1), date(2024, 2, 29))
    assert parse_period("2026-05-10", None, today) == (today, today)
    assert parse_period("2016-03-02", "2026-03-01", today) == (date(2016, 3, 2), date(2026, 3, 1))  # 10 years
    assert parse_period(None, "0001-01-01", today) == (date.min, date.min)
    assert parse_period("9990-01-01", "9999-12-31", today) == (date(9990, 1, 1), date.max)
    for start, end in (("2016-03-01", "2026-03-01"), ("2026-05-11", None), ("2026-13-01", None), ("26-1-1", None)):
        with pytest.raises(Unprocessable):
            parse_period(start, end, today)


def test_the_groups_asked_for_and_the_threshold():
    assert parse_groups(["sex,age_band", " sex ", "service", ""]) == [Group.sex, Group.age_band, Group.service]
    assert parse_groups([]) == []
    with pytest.raises(Unprocessable) as refused:
        parse_groups(["sex,Sex"])
    assert refused.value.params["group"] == "Sex"
    settings = Settings(report_min_cell=5)
    assert check_threshold(None, settings) == 5
    assert check_threshold(12, settings) == 12
    for lowered in (4, 1, 0, -5, 1001):
        with pytest.raises(Unprocessable):
            check_threshold(lowered, settings)
    with pytest.raises(ValueError):
        Settings(report_min_cell=1)


# --- An attacker ----------------------------------------------------------------------------------

Key = tuple[Any, ...]
UNBOUNDED = 10**6


def key(table: str, group: dict[str, str], column: str) -> Key:
    return (table, *sorted(group.items()), column)


def figures(report: Indicators) -> dict[Key, Any]:
    """Every count of a report, by table, group and column."""
    found: dict[Key, Any] = {}
    for table in (report.people, report.closures, report.sustainability, report.services):
        for r in (table.total, *table.rows):
            found.update({key(table.name, r.group, c): r.cells[c] for c in table.columns})
    for d in report.stage_days:
        found[key("stage_days", {"stage": d.stage, **d.group}, "stays")] = d.stays
    return found


def relations(report: Indicators) -> tuple[list[tuple[list[Key], Key]], list[tuple[Key, Key]]]:
    """What holds between a report's counts whatever was hidden: sums (parts, total) and bounds
    (a, b: a <= b), written from the definitions, apart from the code under test."""
    sums: list[tuple[list[Key], Key]] = []
    below: list[tuple[Key, Key]] = []
    # Rows that add up to their total: grouped, by groups of one value each.
    multi = (Group.exploitation_type, Group.service)
    additive = bool(report.group_by) and not any(g in multi for g in report.group_by)
    for table in (report.people, report.closures, report.sustainability):
        for c in table.columns:
            parts = [key(table.name, r.group, c) for r in table.rows]
            total = key(table.name, {}, c)
            if additive:
                sums.append((parts, total))
            below += [(p, total) for p in parts]
    for r in (report.closures.total, *report.closures.rows):
        reasons = [key("closures", r.group, c) for c in report.closures.columns]
        sums.append((reasons, key("people", r.group, "closed")))
        below.append((key("people", r.group, "reintegrated"), key("closures", r.group, "completed")))
    for r in (report.sustainability.total, *report.sustainability.rows):
        below.append(
            (key("sustainability", r.group, "above_threshold"), key("sustainability", r.group, "cases_at_12_months"))
        )
    services = report.services
    if Group.exploitation_type not in report.group_by:  # else a task counts under each of its case's types
        delivered = [key("services", r.group, "delivered") for r in services.rows]
        sums.append((delivered, key("services", {}, "delivered")))
    sums.append(([key("services", {}, "people")], key("people", {}, "assisted")))
    for r in services.rows:
        below.append((key("services", r.group, "people"), key("services", r.group, "delivered")))
        if Group.service not in report.group_by:
            group = {k: v for k, v in r.group.items() if k not in ("service", "agency_id")}
            below.append((key("services", r.group, "people"), key("people", group, "assisted")))
    if report.group_by == [Group.exploitation_type]:  # a case not recorded has no other type
        for c in report.people.columns:
            unknown = key("people", {"exploitation_type": "unknown"}, c)
            for r in report.people.rows:
                if r.group["exploitation_type"] != "unknown":
                    # unknown + this type + the cases of other types only = the total
                    sums.append(
                        (
                            [unknown, key("people", r.group, c), ("slack", r.group["exploitation_type"], c)],
                            key("people", {}, c),
                        )
                    )
    by_stage: dict[str, list[Key]] = defaultdict(list)
    for d in report.stage_days:
        k = key("stage_days", {"stage": d.stage, **d.group}, "stays")
        by_stage[d.stage].append(k)
        if d.median_days is not None:  # shown over `threshold` stays or more
            below.append((("threshold",), k))
    if additive:
        sums += [(keys[1:], keys[0]) for keys in by_stage.values()]
    return sums, below


def audit(report: Indicators) -> dict[Key, tuple[int, int]]:
    """Each hidden count's range as a reader works it out: "1 or more", narrowed by every sum and
    bound (``relations``) until nothing moves."""
    known = figures(report)
    sums, below = relations(report)
    ranges: dict[Key, tuple[int, int]] = {("threshold",): (report.threshold, report.threshold)}
    for k, v in known.items():
        ranges[k] = (v, v) if isinstance(v, int) else (1, UNBOUNDED)
    for parts, total in sums:
        for k in (*parts, total):
            ranges.setdefault(k, (0, UNBOUNDED))  # a slack, or a row no table lists: 0 or more
    for k in {k for pair in below for k in pair}:
        ranges.setdefault(k, (0, 0))  # a row not listed counts nobody
    for _ in range(100):
        before = dict(ranges)
        for parts, total in sums:
            lows, highs = [ranges[p][0] for p in parts], [ranges[p][1] for p in parts]
            low_total, high_total = ranges[total]
            for i, p in enumerate(parts):
                low, high = ranges[p]
                ranges[p] = (max(low, low_total - sum(highs) + highs[i]), min(high, high_total - sum(lows) + lows[i]))
            ranges[total] = (max(low_total, sum(lows)), min(high_total, sum(highs)))
        for a, b in below:
            ranges[a] = (ranges[a][0], min(ranges[a][1], ranges[b][1]))
            ranges[b] = (max(ranges[b][0], ranges[a][0]), ranges[b][1])
        if ranges == before:
            break
    return {k: ranges[k] for k, v in known.items() if isinstance(v, str)}


def caseload(seed: int) -> Any:
    """A random small caseload of ES in 2026 (seeded): a database of its read model."""
    rng = random.Random(seed)
    made = create_engine("sqlite://", connect_args={"check_same_thread": False}, poolclass=StaticPool)
    metadata().create_all(made)
    types = [["ForcedLabour"], ["ForcedLabour"], ["SexualExploitation"], ["ForcedLabour", "SexualExploitation"], []]
    with Session(made) as session:
        add_agency(session, "shelter-es", "ES")
        add_agency(session, "clinic-es", "ES")
        for n in range(rng.randint(8, 40)):
            closed = rng.random() < 0.4
            add_case(
                session,
                f"C{n}",
                sex=rng.choice(["Feminine", "Feminine", "Masculine", None]),
                identified_on="2026-03-01" if rng.random() < 0.8 else "2025-03-01",
                exploitation_types=rng.choice(types),
                plan_agreed_on="2025-01-01" if rng.random() < 0.6 else None,
                monitoring_visits=[visit("2026-01-05", rng.choice([[], [], ["economic"]]))],
                closed_at=at("2026-06-01") if closed else None,
                reason=rng.choice(["completed", "completed", "withdrew"]) if closed else None,
            )
            for k, service in enumerate(rng.sample(["shelter", "medical"], rng.randint(0, 2))):
                add_task(
                    session,
                    f"C{n}",
                    service,
                    "shelter-es" if service == "shelter" else "clinic-es",
                    at("2026-04-01"),
                    n=k,
                )
            if rng.random() < 0.7:
                add_stay(session, f"C{n}", "protection", float(rng.randint(1, 30)), at("2026-05-01"))
        session.commit()
    return made


@pytest.mark.parametrize("seed", range(40))
def test_no_small_count_can_be_worked_out_of_a_report(seed, monkeypatch):
    """Random small caseloads, grouped by sex, by type of exploitation, by service, or not at all:
    no hidden small count can be worked out of the rest of its report (``audit``). (A reader may
    narrow one: two hidden reasons under a hidden closed make it 2 or more, for every hidden count
    is 1 or more; never to one value.)"""
    made = caseload(seed)
    try:
        for groups in ([], [Group.sex], [Group.exploitation_type], [Group.service]):
            hidden = audit(report(made, groups))
            with monkeypatch.context() as m:  # the same report, nothing hidden: the truth
                m.setattr(reports, "suppress", lambda values, sums, threshold, bounds=(): dict(values))
                truth = figures(report(made, groups))
            for k, (low, high) in hidden.items():
                if truth[k] < 5:
                    assert low < high, (groups, k, truth[k], (low, high))
    finally:
        made.dispose()
