"""Reintegration: the plan and its revision, monitoring visits scored for sustainability, and their deadlines."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from tests.rules.builders import (
    IDENTIFIED_ON,
    PARTNER_RO,
    PLAN_DAY,
    Case,
    applied,
    arrived,
    assert_step_refused,
    closure_requested,
    granted,
    iso,
    monitored,
    planned,
    returning,
    survey,
    surveyed,
    visit,
)
from workflows import rules
from workflows.model import (
    SURVEY_INDICATORS,
    JourneyConfig,
    JourneyState,
    MonitoringVisit,
    Service,
    Stage,
    SurveyIndicator,
    SustainabilityDimension,
    TaskStatus,
)
from workflows.rules.dates import end_of, start_of
from workflows.rules.reintegration import (
    MonitoringBody,
    SurveyAnswers,
    dimension_scores,
    earliest_next_visit,
    short_dimensions,
)

PLAN_ON = IDENTIFIED_ON + timedelta(days=PLAN_DAY)  # 2027-01-29: visits due 2027-04-29, 2027-07-29, 2028-01-29
ONE_OF_TWO = (
    "a monitoring visit is scored either by the survey's answers (survey) or by all three scores "
    "(economic, social and psychosocial), one of the two"
)


def flagged(visits: int = 1) -> Case:
    """Reintegration: the first visit found the economic dimension weak; ``visits`` visits in all."""
    case = planned()
    visit(case, 1, economic=0.2)
    for number in range(2, visits + 1):
        visit(case, number)
    return case


def revised() -> Case:
    case = flagged()
    case.step(
        "reintegration-plan",
        {"agreed_on": "2027-05-02", "services": [{"service": "financial", "agency_id": PARTNER_RO}]},
    )
    return case


def visits_body(visited_on: date | str, score: float = 0.7) -> dict:
    return {"visited_on": str(visited_on), "economic": score, "social": score, "psychosocial": score}


@pytest.mark.parametrize(
    ("build", "allowed"),
    [
        (granted, ["consent", "reintegration-plan", "withdraw-consent"]),
        (arrived, ["consent", "reintegration-plan", "withdraw-consent"]),
        (lambda: planned(tasks_done=False), ["consent", "monitoring", "withdraw-consent"]),
        (planned, ["consent", "monitoring", "closure", "withdraw-consent"]),
        (flagged, ["consent", "reintegration-plan", "monitoring", "closure", "withdraw-consent"]),
        (revised, ["consent", "monitoring", "withdraw-consent"]),
        (monitored, ["consent", "monitoring", "closure", "withdraw-consent"]),
    ],
    ids=[
        "after-permit",
        "after-arrival",
        "planned-tasks-open",
        "planned-tasks-done",
        "flagged",
        "revised-tasks-open",
        "every-visit-done",
    ],
)
def test_allowed_steps(build, allowed):
    case = build()
    assert case.state.stage == Stage.reintegration
    assert case.allowed == allowed


@pytest.mark.parametrize(
    ("build", "step", "reason"),
    [
        (returning, "reintegration-plan", "allowed in the reintegration stage, and the case is in return"),
        (planned, "reintegration-plan", "the plan is agreed; it is revised when monitoring flags it"),
        (revised, "reintegration-plan", "the plan is agreed; it is revised when monitoring flags it"),
        (applied, "monitoring", "allowed in the reintegration stage, and the case is in residence"),
        (granted, "monitoring", "the reintegration plan comes first"),
        (arrived, "monitoring", "the reintegration plan comes first"),
    ],
    ids=[
        "plan-in-return",
        "plan-twice",
        "plan-after-revision",
        "monitoring-in-residence",
        "monitoring-before-plan",
        "monitoring-before-plan-after-arrival",
    ],
)
def test_refusals(build, step, reason):
    assert_step_refused(build(), step, reason)


@pytest.mark.parametrize(
    ("services", "detail"),
    [
        ([{"service": "housing"}], "every partner task of a plan names its agency"),
        (
            [{"service": "shelter", "agency_id": PARTNER_RO}],
            "a reintegration service is one of: education, family, "
            "financial, housing, job-orientation, legal, medical, psychosocial, security-follow-up",
        ),
        (
            [{"service": "reception", "agency_id": PARTNER_RO}],
            "a reintegration service is one of: education, family, "
            "financial, housing, job-orientation, legal, medical, psychosocial, security-follow-up",
        ),
        ([], "invalid body: services"),
        ([{"service": "karaoke", "agency_id": PARTNER_RO}], "invalid body: services.0.service"),
    ],
    ids=["no-agency", "not-a-reintegration-service", "a-return-service", "no-services", "unknown-service"],
)
def test_plan_checks(services, detail):
    error = granted().refusal("reintegration-plan", {"agreed_on": iso(PLAN_DAY), "services": services})
    assert type(error) is rules.InvalidCommand and error.detail == detail


@pytest.mark.parametrize(
    ("build", "body", "detail"),
    [
        (planned, visits_body(PLAN_ON - timedelta(days=1)), "a monitoring visit comes after the plan was agreed"),
        (
            planned,
            visits_body("2027-04-14"),
            "the next scheduled monitoring visit can be recorded from 2027-04-15",
        ),
        (
            lambda: monitored(1),
            visits_body("2027-07-14"),
            "the next scheduled monitoring visit can be recorded from 2027-07-15",
        ),
        (
            lambda: monitored(2),
            visits_body("2028-01-14"),
            "the next scheduled monitoring visit can be recorded from 2028-01-15",
        ),
        (monitored, visits_body(PLAN_ON - timedelta(days=1)), "a monitoring visit comes after the plan was agreed"),
        (planned, {**visits_body("2027-04-29"), "economic": 1.5}, "invalid body: economic"),
        (planned, {"visited_on": "2027-04-29", "economic": 0.5}, ONE_OF_TWO),
    ],
    ids=[
        "before-the-plan",
        "before-first-window",
        "before-second-window",
        "before-third-window",
        "extra-visit-before-the-plan",
        "score-above-one",
        "scores-missing",
    ],
)
def test_monitoring_checks(build, body, detail):
    error = build().refusal("monitoring", body)
    assert type(error) is rules.InvalidCommand and error.detail == detail


@pytest.mark.parametrize(
    ("build", "visited_on"),
    [(planned, "2027-04-15"), (lambda: monitored(1), "2027-07-15"), (monitored, str(PLAN_ON))],
    ids=["first-window-opens", "second-window-opens", "extra-visit-any-day-after-the-plan"],
)
def test_monitoring_accepted(build, visited_on):
    case = build()
    count = len(case.state.monitoring_visits)
    case.step("monitoring", visits_body(visited_on))
    assert len(case.state.monitoring_visits) == count + 1


@pytest.mark.parametrize(
    ("build", "earliest"),
    [
        (granted, None),
        (planned, date(2027, 4, 15)),
        (lambda: monitored(1), date(2027, 7, 15)),
        (lambda: monitored(2), date(2028, 1, 15)),
        (monitored, None),
    ],
    ids=["no-plan", "first", "second", "third", "all-done"],
)
def test_earliest_next_visit(build, earliest):
    assert earliest_next_visit(build().state) == earliest


def test_the_plan_gives_each_service_to_its_agency():
    case = granted().on(PLAN_DAY)
    body = {
        "agreed_on": iso(PLAN_DAY),
        "services": [
            {"service": "housing", "agency_id": PARTNER_RO, "notes": "marker note"},
            {"service": "job-orientation", "agency_id": "training-es", "due_date": iso(PLAN_DAY + 60)},
        ],
    }
    events = case.step("reintegration-plan", body)
    state = case.state
    assert state.plan_agreed_on == PLAN_ON and state.plan_revisions == 0 and not state.plan_revision_needed
    assert [(e.kind, e.name) for e in events] == [
        ("step", "reintegration-plan"),
        ("task", "assigned"),
        ("task", "assigned"),
    ]
    assert events[0].facts == {"agreed_on": iso(PLAN_DAY)}  # the services are free text
    housing, job = rules.open_tasks(state)
    assert (housing.service, housing.agency_id, housing.notes) == (Service.housing, PARTNER_RO, "marker note")
    assert housing.due_on == case.now.date() + timedelta(days=14)
    assert (job.service, job.agency_id, job.due_on.isoformat()) == (
        Service.job_orientation,
        "training-es",
        iso(PLAN_DAY + 60),
    )
    assert all(t.plan_item and not t.safety_plan and t.stage == Stage.reintegration for t in (housing, job))


def test_a_revised_plan_adds_services_and_keeps_the_schedule():
    case = revised()
    state = case.state
    assert state.plan_agreed_on == PLAN_ON  # the visits stay on the first plan's schedule
    assert (state.plan_revisions, state.plan_revision_needed) == (1, False)
    assert [t.service.value for t in rules.open_tasks(state)] == ["financial"]
    assert [t.service.value for t in state.tasks.values() if t.status == TaskStatus.completed] == ["housing"]


@pytest.mark.parametrize(
    ("scores", "weighted", "below"),
    [
        ((0.7, 0.7, 0.7), 0.7, []),
        ((0.5, 0.5, 0.5), 0.5, []),
        ((0.2, 0.8, 0.9), 0.59, ["economic"]),
        ((0.9, 0.49, 0.9), 0.777, ["social"]),
        ((0.1, 0.1, 0.1), 0.1, ["economic", "social", "psychosocial"]),
        ((1.0, 0.0, 1.0), 0.7, ["social"]),
    ],
    ids=["sustainable", "at-the-threshold", "economic-weak", "social-weak", "all-weak", "extremes"],
)
def test_a_visit_is_scored_and_a_weak_dimension_flags_the_plan(scores, weighted, below):
    case = planned()
    economic, social, psychosocial = scores
    events = visit(case, 1, economic=economic, social=social, psychosocial=psychosocial)
    (recorded,) = case.state.monitoring_visits
    assert recorded == MonitoringVisit(
        visited_on=date(2027, 4, 29),
        scores={"economic": economic, "social": social, "psychosocial": psychosocial},
        weighted_score=weighted,  # rounded to four decimals
        below_threshold=below,
    )
    assert case.state.plan_revision_needed is bool(below)
    assert events[0].facts["weighted_score"] == weighted
    assert events[0].facts["below_threshold"] == below
    assert len(events) == 1


def test_a_good_visit_does_not_clear_a_flag():
    case = flagged(visits=2)
    assert case.state.monitoring_visits[-1].below_threshold == []
    assert case.state.plan_revision_needed is True


def test_a_visits_notes_stay_out_of_the_timeline():
    case = planned()
    case.now = start_of(date(2027, 4, 29))
    (entry,) = case.step("monitoring", {**visits_body("2027-04-29"), "notes": "marker note"})
    assert "notes" not in entry.facts and entry.facts["visited_on"] == "2027-04-29"


def test_a_visit_scored_by_typing_the_three_scores_is_recorded_as_before_the_survey():
    """The body of old clients and of every stored history: the same visit, the same timeline entry;
    the API's own dump of it (the survey's ``None`` among its fields) changes neither."""
    for extra in ({}, {"survey": None, "notes": ""}):
        case = planned()
        case.now = start_of(date(2027, 4, 29))
        (entry,) = case.step("monitoring", {**visits_body("2027-04-29", 0.6), **extra})
        assert entry.facts == {
            "visited_on": "2027-04-29",
            "economic": 0.6,
            "social": 0.6,
            "psychosocial": 0.6,
            "weighted_score": 0.6,
            "below_threshold": [],
        }
        (recorded,) = case.state.monitoring_visits
        assert recorded.survey == {} and recorded.scores == {"economic": 0.6, "social": 0.6, "psychosocial": 0.6}


@pytest.mark.parametrize(
    ("config", "weighted", "below"),
    [
        (JourneyConfig(sustainability_weights={"economic": 1.0}), 0.2, ["economic"]),
        (JourneyConfig(sustainability_weights={}), 0.0, ["economic"]),
        (JourneyConfig(sustainability_thresholds={"social": 0.9}), 0.4 * 0.2 + 0.3 * 0.8 + 0.3 * 0.9, ["social"]),
        (JourneyConfig(sustainability_thresholds={}), 0.4 * 0.2 + 0.3 * 0.8 + 0.3 * 0.9, []),
    ],
    ids=["economic-only", "no-weights", "social-threshold-only", "no-thresholds"],
)
def test_weights_and_thresholds_are_configuration(config, weighted, below):
    state = granted(config=config).state
    body = MonitoringBody(visited_on=date(2027, 4, 29), economic=0.2, social=0.8, psychosocial=0.9)
    result = rules.assess_sustainability(state, body)
    assert result.weighted_score == pytest.approx(weighted, abs=1e-4)
    assert result.below_threshold == below


def day_end(day: date | str) -> object:
    return end_of(date.fromisoformat(str(day)))


def day_start(day: date | str) -> object:
    return start_of(date.fromisoformat(str(day)))


@pytest.mark.parametrize(
    ("build", "items"),
    [
        (granted, [("reintegration-plan", "2027-02-18", "2027-01-19")]),  # 30 days after the permit
        (arrived, [("reintegration-plan", "2026-12-31", "2026-12-01")]),  # 30 days after the arrival
        (planned, [("monitoring", "2027-05-13", "2027-04-29")]),  # 3 months after the plan, plus grace
        (lambda: monitored(1), [("monitoring", "2027-08-12", "2027-07-29")]),
        (lambda: monitored(2), [("monitoring", "2028-02-12", "2028-01-29")]),
        (monitored, []),
        (flagged, [("reintegration-plan", "2027-05-29", "2027-04-29"), ("monitoring", "2027-08-12", "2027-07-29")]),
        (closure_requested, []),  # nothing of the plan while a closure waits
    ],
    ids=[
        "plan-after-permit",
        "plan-after-arrival",
        "first-visit",
        "second-visit",
        "third-visit",
        "all-visits-done",
        "flagged",
        "closure-waiting",
    ],
)
def test_deadlines(build, items):
    steps = [(i.name, i.due_at, i.since, i.turn) for i in build().items() if i.kind == "step"]
    steps = [s for s in steps if s[0] != "approve-closure"]
    assert steps == [(name, day_end(due), day_start(since), "caseworker") for name, due, since in items]


def test_deadlines_follow_the_configuration():
    config = JourneyConfig(reintegration_plan_days=10, monitoring_offsets_months=[1, 2], monitoring_grace_days=7)
    case = granted(config=config)
    assert case.item("reintegration-plan").due_at == day_end("2027-01-29")
    case = planned(config=config)
    assert case.item("monitoring").due_at == day_end("2027-03-07")  # 2027-02-28 (a month on, clamped) + 7 days


def test_a_visit_a_month_on_from_the_end_of_a_month_is_on_the_months_last_day():
    case = granted()
    case.on(PLAN_DAY).step(
        "reintegration-plan", {"agreed_on": "2027-11-30", "services": [{"service": "housing", "agency_id": PARTNER_RO}]}
    )
    assert case.item("monitoring").since == day_start("2028-02-29")  # three months on, in a leap year


def test_a_later_visit_does_not_move_the_revision_deadline():
    case = flagged(visits=1)
    due = case.item("reintegration-plan").due_at
    visit(case, 2)  # sustainable: flags nothing new
    assert case.state.plan_revision_needed is True
    assert case.item("reintegration-plan").due_at == due == day_end("2027-05-29")
    assert case.item("reintegration-plan").since == day_start("2027-04-29")


def test_a_later_visit_that_flags_again_does_not_move_the_revision_deadline_either():
    case = flagged(visits=1)
    visit(case, 2, social=0.2)
    assert case.state.monitoring_visits[-1].below_threshold == ["social"]
    assert case.state.plan_revision_flagged_on == date(2027, 4, 29)  # the first visit to flag it
    assert case.item("reintegration-plan").due_at == day_end("2027-05-29")


def test_a_revision_clears_the_flagging_visit_and_the_next_flag_runs_from_its_own_visit():
    case = revised()
    assert case.state.plan_revision_flagged_on is None
    visit(case, 2, economic=0.1)
    assert case.state.plan_revision_flagged_on == date(2027, 7, 29)
    visit(case, 3)
    assert case.item("reintegration-plan").due_at == day_end("2027-08-28")  # 30 days after the second visit


def test_a_revision_overdue_stays_overdue_after_a_later_visit():
    case = flagged(visits=1)
    visit(case, 2)  # 2027-07-29: two months after the revision was due
    (reason,) = rules.stall_reasons(case.state, case.now)
    assert (reason.key, reason.due_at) == ("step:reintegration-plan", day_end("2027-05-29"))


def test_before_the_patch_a_later_visit_moved_the_revision_deadline():
    """``revision_due_from_flagging_visit`` off: a run from before the patch (its history replays so)."""
    case = flagged(visits=1)
    case.state.revision_due_from_flagging_visit = False
    assert case.item("reintegration-plan").due_at == day_end("2027-05-29")
    visit(case, 2)
    assert case.item("reintegration-plan").due_at == day_end("2027-08-28")  # from the latest visit
    assert case.item("reintegration-plan").since == day_start("2027-07-29")
    assert rules.stall_reasons(case.state, case.now) == []  # the overdue revision was forgotten


def test_a_revision_flagged_where_the_flagging_visit_was_not_noted_runs_from_the_latest_visit():
    """A state handed over by a run of the code before the patch has no ``plan_revision_flagged_on``."""
    case = flagged(visits=2)
    case.state.plan_revision_flagged_on = None
    assert case.item("reintegration-plan").due_at == day_end("2027-08-28")


def test_a_state_from_before_the_patch_decodes_to_the_old_rule():
    """Payloads written before the patch (a child's input, a continuation) lack both new fields."""
    state = flagged(visits=2).state
    old = state.model_dump(mode="json", exclude={"revision_due_from_flagging_visit", "plan_revision_flagged_on"})
    decoded = JourneyState.model_validate(old)
    assert decoded.revision_due_from_flagging_visit is False and decoded.plan_revision_flagged_on is None
    assert rules.open_items(decoded)[0].due_at == day_end("2027-08-28")


# --- The sustainability survey ---------------------------------------------------------------------


def test_the_survey_asks_its_fifteen_indicators_five_per_dimension_in_order():
    assert list(SurveyAnswers.model_fields) == [i.value for i in SurveyIndicator] == list(SURVEY_INDICATORS)
    for dimension in SustainabilityDimension:
        assert sum(d == dimension for d in SURVEY_INDICATORS.values()) == 5
    assert list(SURVEY_INDICATORS)[:5] == [
        SurveyIndicator.economic_satisfaction,
        SurveyIndicator.food_security,
        SurveyIndicator.ability_to_borrow,
        SurveyIndicator.debt_to_spending,
        SurveyIndicator.employment,
    ]
    assert SURVEY_INDICATORS[SurveyIndicator.public_services] == SustainabilityDimension.social
    assert SURVEY_INDICATORS[SurveyIndicator.physical_safety] == SustainabilityDimension.psychosocial


def answers(**given: int | None) -> dict[SurveyIndicator, int | None]:
    return {i: given.get(i.value) for i in SurveyIndicator}


FULL = {
    # economic: 5 4 3 2 1 -> 1, .75, .5, .25, 0
    "economic_satisfaction": 5,
    "food_security": 4,
    "ability_to_borrow": 3,
    "debt_to_spending": 2,
    "employment": 1,
    # social: all 3 -> .5
    **dict.fromkeys(["housing", "education", "justice", "documentation", "public_services"], 3),
    # psychosocial: 5 5 5 1 1 -> (1 + 1 + 1 + 0 + 0) / 5
    **dict.fromkeys(["social_participation", "support_network", "discrimination"], 5),
    **dict.fromkeys(["wellbeing", "physical_safety"], 1),
}


@pytest.mark.parametrize(
    ("given", "weights", "expected"),
    [
        (FULL, {}, {"economic": 0.5, "social": 0.5, "psychosocial": 0.6}),
        # Weights within a dimension: employment (0) weighs 3, economic_satisfaction (1) nothing.
        (
            FULL,
            {"employment": 3.0, "economic_satisfaction": 0.0},
            {"economic": round((0.75 + 0.5 + 0.25) / 6, 4), "social": 0.5, "psychosocial": 0.6},
        ),
        # A weight names its indicator only: the other dimensions are as unweighted.
        (FULL, {"wellbeing": 2.0}, {"economic": 0.5, "social": 0.5, "psychosocial": round(3 / 6, 4)}),
        # Not applicable: out of the mean, not a zero. Three answers are enough.
        (
            {**FULL, "ability_to_borrow": None, "debt_to_spending": None, "housing": None, "education": None},
            {},
            {"economic": round((1 + 0.75 + 0) / 3, 4), "social": 0.5, "psychosocial": 0.6},
        ),
        # Rounded to four decimals: 2/3.
        (
            {
                **FULL,
                "economic_satisfaction": 5,
                "food_security": 5,
                "ability_to_borrow": 1,
                "debt_to_spending": None,
                "employment": None,
            },
            {},
            {"economic": 0.6667, "social": 0.5, "psychosocial": 0.6},
        ),
        (dict.fromkeys(FULL, 5), {}, {"economic": 1.0, "social": 1.0, "psychosocial": 1.0}),
        (dict.fromkeys(FULL, 1), {}, {"economic": 0.0, "social": 0.0, "psychosocial": 0.0}),
    ],
    ids=["unweighted", "weighted", "one-weight", "not-applicable", "rounded", "best", "worst"],
)
def test_each_dimension_is_the_weighted_mean_of_its_answers_on_zero_to_one(given, weights, expected):
    assert dimension_scores(answers(**given), weights) == expected


def test_the_survey_scores_the_visit_and_the_overall_score_weighs_the_dimensions():
    case = planned()
    (entry,) = surveyed(case, 1, FULL)
    (recorded,) = case.state.monitoring_visits
    weighted = round(0.4 * 0.5 + 0.3 * 0.5 + 0.3 * 0.6, 4)
    assert recorded == MonitoringVisit(
        visited_on=date(2027, 4, 29),
        scores={"economic": 0.5, "social": 0.5, "psychosocial": 0.6},
        weighted_score=weighted,
        below_threshold=[],
        survey=FULL,
    )
    assert list(recorded.survey) == [i.value for i in SurveyIndicator]  # every indicator, in order
    # The timeline entry says the scores, as a visit typed in does; the answers stay with the visit.
    assert entry.facts == {
        "visited_on": "2027-04-29",
        "economic": 0.5,
        "social": 0.5,
        "psychosocial": 0.6,
        "weighted_score": weighted,
        "below_threshold": [],
    }
    assert case.state.plan_revision_needed is False


def test_a_survey_left_partly_unanswered_records_its_gaps_as_none():
    case = planned()
    given = {k: v for k, v in FULL.items() if k not in ("justice", "wellbeing")}  # left out: not applicable
    surveyed(case, 1, {**given, "education": None})
    (recorded,) = case.state.monitoring_visits
    assert recorded.survey["justice"] is None and recorded.survey["education"] is None
    assert recorded.survey["wellbeing"] is None and len(recorded.survey) == 15
    assert recorded.scores == {"economic": 0.5, "social": 0.5, "psychosocial": 0.75}


@pytest.mark.parametrize(
    ("given", "below"),
    [
        (survey(4), []),
        (survey(4, housing=2, education=2, justice=2, documentation=3, public_services=2), ["social"]),  # 0.3
        (survey(3), []),  # 0.5: at the threshold is not below it
        (survey(2, social_participation=None, support_network=None), ["economic", "social", "psychosocial"]),
    ],
    ids=["sustainable", "social-weak", "at-the-threshold", "all-weak"],
)
def test_a_dimension_below_its_threshold_by_the_survey_flags_the_plan(given, below):
    case = planned()
    (entry,) = surveyed(case, 1, given)
    assert case.state.monitoring_visits[-1].below_threshold == below
    assert entry.facts["below_threshold"] == below
    assert case.state.plan_revision_needed is bool(below)
    assert case.state.plan_revision_flagged_on == (date(2027, 4, 29) if below else None)
    if below:
        assert "reintegration-plan" in case.allowed


def test_the_surveys_weights_and_the_dimensions_weights_and_thresholds_are_configuration():
    config = JourneyConfig(
        survey_indicator_weights={"employment": 4.0},
        sustainability_weights={"economic": 1.0, "social": 0.0, "psychosocial": 0.0},
        sustainability_thresholds={"economic": 0.6},
    )
    case = planned(config=config)
    surveyed(case, 1, survey(5, employment=1))  # economic: (4 * 1 + 4 * 0) / 8
    (recorded,) = case.state.monitoring_visits
    assert recorded.scores == {"economic": 0.5, "social": 1.0, "psychosocial": 1.0}
    assert (recorded.weighted_score, recorded.below_threshold) == (0.5, ["economic"])


SHORT = "the survey needs at least 3 answers in each dimension; too few in: {}"


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (
            {"survey": survey(4, ability_to_borrow=None, debt_to_spending=None, employment=None)},
            SHORT.format("economic"),
        ),
        (
            {"survey": {k: v for k, v in survey(4).items() if SURVEY_INDICATORS[SurveyIndicator(k)] != "social"}},
            SHORT.format("social"),
        ),
        ({"survey": {"housing": 3}}, SHORT.format("economic, social, psychosocial")),
        ({"survey": {}}, SHORT.format("economic, social, psychosocial")),
        ({"survey": survey(), "economic": 0.5, "social": 0.5, "psychosocial": 0.5}, ONE_OF_TWO),
        ({"survey": survey(), "economic": 0.5}, ONE_OF_TWO),
        ({}, ONE_OF_TWO),
        ({"survey": None}, ONE_OF_TWO),
        ({"economic": 0.5, "social": 0.5}, ONE_OF_TWO),
        ({"survey": {**survey(), "karaoke": 3}}, "invalid body: survey.karaoke"),
        ({"survey": survey(4, housing=6)}, "invalid body: survey.housing"),
        ({"survey": survey(4, housing=0)}, "invalid body: survey.housing"),
        ({"survey": survey(4, wellbeing=2.5)}, "invalid body: survey.wellbeing"),
        ({"survey": survey(4, wellbeing="often")}, "invalid body: survey.wellbeing"),
        ({"survey": survey(4, wellbeing=True)}, "invalid body: survey.wellbeing"),  # not 1, the worst
        ({"survey": [4] * 15}, "invalid body: survey"),
    ],
    ids=[
        "economic-short",
        "social-missing",
        "all-short",
        "empty",
        "both",
        "survey-and-one-score",
        "neither",
        "null-survey",
        "two-scores",
        "unknown-indicator",
        "answer-above-five",
        "answer-below-one",
        "answer-not-whole",
        "answer-in-words",
        "answer-true",
        "survey-a-list",
    ],
)
def test_a_survey_that_cannot_be_scored_is_refused_and_changes_nothing(body, detail):
    error = planned().refusal("monitoring", {"visited_on": "2027-04-29", **body})
    assert type(error) is rules.InvalidCommand and error.detail == detail


def test_the_shortfall_is_found_per_dimension():
    assert short_dimensions(answers(**FULL)) == []
    assert short_dimensions(answers(**{**FULL, "housing": None, "justice": None, "education": None})) == [
        SustainabilityDimension.social
    ]


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ({"karaoke": 1.0}, "not indicators of the sustainability survey: karaoke"),
        ({"housing": -1.0}, "a survey indicator's weight is a number of 0 or more: housing"),
        ({"housing": float("nan")}, "a survey indicator's weight is a number of 0 or more: housing"),
        ({"housing": float("inf")}, "a survey indicator's weight is a number of 0 or more: housing"),
        (
            dict.fromkeys(["housing", "education", "justice"], 0.0),
            "at most 2 indicators of the social dimension may weigh 0",
        ),
    ],
    ids=["unknown", "negative", "nan", "infinite", "three-weightless"],
)
def test_the_survey_weights_are_checked_with_the_configuration(weights, message):
    with pytest.raises(ValueError, match=message):
        JourneyConfig(survey_indicator_weights=weights)


def test_two_weightless_indicators_of_a_dimension_are_allowed():
    config = JourneyConfig(survey_indicator_weights={"housing": 0.0, "education": 0.0, "employment": 2})
    assert config.survey_indicator_weights == {"housing": 0.0, "education": 0.0, "employment": 2.0}


def test_payloads_from_before_the_survey_decode():
    """A visit, and a case's configuration, as histories recorded before the survey carry them."""
    visit_payload = {
        "visited_on": "2027-04-29",
        "scores": {"economic": 0.7},
        "weighted_score": 0.7,
        "below_threshold": [],
    }
    assert MonitoringVisit.model_validate(visit_payload).survey == {}
    config = JourneyConfig().model_dump(mode="json", exclude={"survey_indicator_weights"})
    assert JourneyConfig.model_validate(config).survey_indicator_weights == {}
    body = MonitoringBody.model_validate(
        {"visited_on": "2027-04-29", **dict.fromkeys(["economic", "social", "psychosocial"], 0.7)}
    )
    assert body.survey is None and body.typed_scores == {"economic": 0.7, "social": 0.7, "psychosocial": 0.7}
