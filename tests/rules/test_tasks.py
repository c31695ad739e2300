"""Task actions: who may act, from which status, refusals and effects, the agencies needed, task deadlines."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from tests.rules.builders import (
    ADMIN,
    CASEWORKER,
    CLINIC,
    CONSULATE,
    ORCHESTRATOR,
    ORIGIN_OFFICE,
    PARTNER_RO,
    POINTS,
    SHELTER,
    SUPERVISOR,
    Case,
    arrived,
    at,
    closure_requested,
    consented,
    day,
    iso,
    partner,
    withdrawn,
)
from workflows import rules
from workflows.model import (
    AgencyNeed,
    AssignTaskBody,
    ConsentBody,
    ReassignTaskBody,
    Service,
    Stage,
    Step,
    TaskAction,
    TaskStatus,
)
from workflows.rules.dates import end_of
from workflows.rules.protection import SafetyPlanBody
from workflows.rules.reintegration import ReintegrationPlanBody

FAILED_DELIVERY = {"agency_id": SHELTER, "assignment": 1, "delivery_id": "delivery-1", "reason": "410 from the agency"}
ACTION_BODIES = {
    TaskAction.assign: {"service": "shelter", "agency_id": SHELTER},
    TaskAction.accept: {},
    TaskAction.complete: {"outcome": "done"},
    TaskAction.decline: {"reason": "no capacity"},
    TaskAction.reassign: {"agency_id": CLINIC},
    TaskAction.cancel: {"reason": "no longer needed"},
    TaskAction.delivery_failed: FAILED_DELIVERY,
}


def task_in(status: str) -> tuple[Case, str]:
    """Protection, one shelter task for ``SHELTER`` assigned on day 0 and brought to ``status``."""
    case = consented()
    task_id = case.assign("shelter", SHELTER)
    match TaskStatus(status):
        case TaskStatus.accepted:
            case.task("accept", task_id=task_id)
        case TaskStatus.completed:
            case.complete(task_id)
        case TaskStatus.declined:
            case.task("decline", ACTION_BODIES[TaskAction.decline], task_id)
        case TaskStatus.delivery_failed:
            case.task("delivery_failed", FAILED_DELIVERY, task_id)
        case TaskStatus.cancelled:
            case.task("cancel", ACTION_BODIES[TaskAction.cancel], task_id)
    assert case.by_id(task_id).status == TaskStatus(status)
    return case, task_id


# --- Who may do what ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "actor", "detail"),
    [
        ("assign", partner(SHELTER), "only a caseworker may assign a task"),
        ("assign", ADMIN, "only a caseworker may assign a task"),
        ("reassign", partner(SHELTER), "only a caseworker may reassign a task"),
        ("cancel", partner(SHELTER), "only a caseworker may cancel a task"),
        ("cancel", ORCHESTRATOR, "only a caseworker may cancel a task"),
        ("accept", CASEWORKER, "only the agency's partner may accept a task"),
        ("complete", SUPERVISOR, "only the agency's partner may complete a task"),
        ("decline", ORCHESTRATOR, "only the agency's partner may decline a task"),
        ("accept", ADMIN, "only the agency's partner may accept a task"),
        ("delivery_failed", CASEWORKER, "only the orchestrator reports a failed delivery"),
        ("delivery_failed", partner(SHELTER), "only the orchestrator reports a failed delivery"),
    ],
    ids=[
        "partner-assigns",
        "admin-assigns",
        "partner-reassigns",
        "partner-cancels",
        "orchestrator-cancels",
        "caseworker-accepts",
        "supervisor-completes",
        "orchestrator-declines",
        "admin-accepts",
        "caseworker-reports-failed-delivery",
        "partner-reports-failed-delivery",
    ],
)
def test_who_may_act(action, actor, detail):
    case, task_id = task_in("assigned")
    error = case.task_refusal(action, ACTION_BODIES[TaskAction(action)], task_id, actor)
    assert type(error) is rules.Forbidden and error.detail == detail


@pytest.mark.parametrize(
    ("actor", "task_id"),
    [(partner(CLINIC), None), (CASEWORKER, "no-such-task"), (partner(SHELTER), "no-such-task")],
    ids=["another-agencys-partner", "unknown-task", "partner-unknown-task"],
)
def test_a_task_is_found_only_by_its_agency(actor, task_id):
    case, own = task_in("assigned")
    action = "cancel" if actor.role == "caseworker" else "accept"
    error = case.task_refusal(action, ACTION_BODIES[TaskAction(action)], task_id or own, actor)
    assert type(error) is rules.TaskNotFound and error.detail == "no such task on this case"


@pytest.mark.parametrize(
    ("action", "body", "detail"),
    [
        ("complete", {"outcome": "maybe"}, "invalid body: outcome"),
        ("decline", {}, "invalid body: reason"),
        ("reassign", {"agency_id": "two words"}, "invalid body: agency_id"),
        ("delivery_failed", {**FAILED_DELIVERY, "assignment": 0}, "invalid body: assignment"),
        ("assign", {"service": "shelter", "agency_id": SHELTER, "priority": "high"}, "invalid body: priority"),
    ],
    ids=["unknown-outcome", "decline-without-reason", "bad-agency-id", "assignment-zero", "unknown-field"],
)
def test_bodies_are_checked_first(action, body, detail):
    case, task_id = task_in("assigned")
    error = case.task_refusal(action, body, task_id, ADMIN)  # the body is refused before the caller
    assert type(error) is rules.InvalidCommand and error.detail == detail


# --- The case's state ---------------------------------------------------------------------------------


@pytest.mark.parametrize("action", list(TaskAction), ids=str)
def test_a_closed_case_takes_no_task_action(action):
    case = withdrawn()
    (task_id,) = case.state.tasks
    error = case.task_refusal(action, ACTION_BODIES[action], None if action == TaskAction.assign else task_id)
    assert type(error) is rules.StepNotAllowed
    assert (error.detail, error.allowed_steps) == ("the case is closed", [])


@pytest.mark.parametrize("action", ["assign", "reassign"])
def test_a_waiting_closure_holds_new_assignments(action):
    case = closure_requested()
    error = case.task_refusal(action, ACTION_BODIES[TaskAction(action)], "any-task")
    assert type(error) is rules.StepNotAllowed and error.detail == "a closure is waiting for a supervisor's decision"
    assert error.allowed_steps == [Step.approve_closure, Step.reject_closure, Step.withdraw_consent]


def test_a_waiting_closure_lets_a_task_be_cancelled():
    case = closure_requested()
    (task_id, *_) = case.state.tasks
    error = case.task_refusal("cancel", ACTION_BODIES[TaskAction.cancel], task_id)
    assert error.detail == "a task that is completed cannot be cancelled"  # past the closure check


def test_an_assignment_names_its_agency():
    error = consented().task_refusal("assign", {"service": "shelter"})
    assert type(error) is rules.InvalidCommand and error.detail == "name the agency for the shelter task"


@pytest.mark.parametrize(
    ("point", "service"),
    [
        ("identification", "shelter"),
        ("protection", "reception"),
        ("pathway", "origin-assessment"),
        ("return", "legal-assistance"),
        ("return", "housing"),
        ("residence", "travel-documents"),
        ("reintegration", "reception"),
        ("reintegration", "legal-assistance"),
    ],
    ids=lambda v: v,
)
def test_a_service_is_asked_for_only_in_its_stages(point, service):
    case = POINTS[point]()
    error = case.task_refusal("assign", {"service": service, "agency_id": CLINIC})
    assert type(error) is rules.StepNotAllowed
    assert error.detail == f"a {service} task is not allowed in the {case.state.stage.value} stage"
    assert error.allowed_steps == rules.allowed_steps(case.state)


IMMEDIATE = {"shelter", "medical", "police-protection", "psychosocial", "legal"}
RETURN = {"origin-assessment", "travel-documents", "family-assessment", "reception"}
REINTEGRATION = {"job-orientation", "education", "housing", "financial", "family", "security-follow-up"}


SERVICES_AT = {
    "identification": set(),
    "protection": IMMEDIATE,
    "pathway": IMMEDIATE,
    "return": IMMEDIATE | RETURN,
    "return-departed": IMMEDIATE | RETURN,
    "residence": IMMEDIATE | {"legal-assistance"},
    "reintegration": IMMEDIATE | REINTEGRATION,
    "closure-requested": IMMEDIATE | REINTEGRATION,  # the assignment itself waits for the decision
    "closed": set(),
    "withdrawn": set(),
}


@pytest.mark.parametrize("point", list(SERVICES_AT))
def test_the_services_each_stage_may_ask_for(point):
    assert {s.value for s in rules.allowed_services(POINTS[point]().state)} == SERVICES_AT[point]


# --- From which status ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "action", "past"),
    [
        ("accepted", "accept", "accepted"),
        ("completed", "accept", "accepted"),
        ("declined", "accept", "accepted"),
        ("delivery_failed", "accept", "accepted"),
        ("cancelled", "accept", "accepted"),
        ("assigned", "complete", "completed"),
        ("completed", "complete", "completed"),
        ("declined", "complete", "completed"),
        ("delivery_failed", "complete", "completed"),
        ("cancelled", "complete", "completed"),
        ("completed", "decline", "declined"),
        ("declined", "decline", "declined"),
        ("delivery_failed", "decline", "declined"),
        ("cancelled", "decline", "declined"),
        ("completed", "reassign", "reassigned"),
        ("cancelled", "reassign", "reassigned"),
        ("completed", "cancel", "cancelled"),
        ("cancelled", "cancel", "cancelled"),
        ("accepted", "delivery_failed", "marked undeliverable"),
        ("completed", "delivery_failed", "marked undeliverable"),
        ("declined", "delivery_failed", "marked undeliverable"),
        ("delivery_failed", "delivery_failed", "marked undeliverable"),
        ("cancelled", "delivery_failed", "marked undeliverable"),
    ],
    ids=lambda v: v.replace(" ", "-"),
)
def test_an_action_from_the_wrong_status_is_refused(status, action, past):
    case, task_id = task_in(status)
    error = case.task_refusal(action, ACTION_BODIES[TaskAction(action)], task_id)
    assert type(error) is rules.StepNotAllowed
    assert error.detail == f"a task that is {status} cannot be {past}"
    assert error.allowed_steps == rules.allowed_steps(case.state)


@pytest.mark.parametrize(
    ("status", "action", "after"),
    [
        ("assigned", "accept", "accepted"),
        ("accepted", "complete", "completed"),
        ("assigned", "decline", "declined"),
        ("accepted", "decline", "declined"),
        ("declined", "reassign", "assigned"),
        ("delivery_failed", "reassign", "assigned"),
        ("assigned", "cancel", "cancelled"),
        ("accepted", "cancel", "cancelled"),
        ("declined", "cancel", "cancelled"),
        ("delivery_failed", "cancel", "cancelled"),
        ("assigned", "delivery_failed", "delivery_failed"),
    ],
    ids=lambda v: v,
)
def test_each_action_moves_the_task_on(status, action, after):
    case, task_id = task_in(status)
    version = case.state.version
    case.on(1)
    events, returned = case.task(action, ACTION_BODIES[TaskAction(action)], task_id)
    task = case.by_id(task_id)
    assert returned == task_id and task.status == TaskStatus(after)
    assert case.state.version == task.version == version + 1
    assert case.state.last_activity_at == case.now
    assert [(e.kind, e.task_id, e.seq) for e in events] == [("task", task_id, version + 1)]


@pytest.mark.parametrize(
    ("status", "offset", "allowed"),
    [
        ("assigned", timedelta(days=3), False),  # at the acceptance deadline: not yet overdue
        ("assigned", timedelta(days=3, seconds=1), True),
        ("accepted", timedelta(days=3, seconds=1), False),  # accepted: its due day counts
        ("accepted", timedelta(days=14, hours=15), True),  # past the end of its due day
    ],
    ids=["assigned-on-time", "assigned-unaccepted-too-long", "accepted-on-time", "accepted-past-its-due-day"],
)
def test_an_overdue_task_can_be_reassigned(status, offset, allowed):
    case, task_id = task_in(status)
    case.now = case.by_id(task_id).assigned_at + offset
    assert rules.is_overdue(case.by_id(task_id), case.now) is allowed
    if allowed:
        case.task("reassign", ACTION_BODIES[TaskAction.reassign], task_id)
        assert case.by_id(task_id).agency_id == CLINIC
    else:
        error = case.task_refusal("reassign", ACTION_BODIES[TaskAction.reassign], task_id)
        assert type(error) is rules.StepNotAllowed
        assert error.detail == "only a declined, undeliverable or overdue task can be reassigned"


@pytest.mark.parametrize(
    ("status", "offset", "overdue"),
    [
        ("completed", timedelta(days=30), False),
        ("cancelled", timedelta(days=30), False),
        ("declined", timedelta(days=14, hours=14, minutes=59), False),
        ("declined", timedelta(days=15), True),
    ],
    ids=["completed", "cancelled", "declined-on-its-due-day", "declined-past-its-due-day"],
)
def test_when_a_task_is_overdue(status, offset, overdue):
    case, task_id = task_in(status)
    task = case.by_id(task_id)
    assert rules.is_overdue(task, task.assigned_at + offset) is overdue


@pytest.mark.parametrize("status", ["declined", "delivery_failed"])
def test_a_task_goes_to_another_agency(status):
    case, task_id = task_in(status)
    error = case.task_refusal("reassign", {"agency_id": SHELTER}, task_id)
    assert type(error) is rules.InvalidCommand and error.detail == "reassign to another agency"


@pytest.mark.parametrize(
    "body",
    [{**FAILED_DELIVERY, "agency_id": CLINIC}, {**FAILED_DELIVERY, "assignment": 2}],
    ids=["another-agency", "another-assignment"],
)
def test_a_failed_delivery_of_another_assignment_is_stale(body):
    case, task_id = task_in("assigned")
    error = case.task_refusal("delivery_failed", body, task_id)
    assert type(error) is rules.StepNotAllowed and error.detail == "the task has moved to another agency since"


def test_a_failed_delivery_to_the_previous_agency_is_stale_after_a_reassignment():
    case, task_id = task_in("declined")
    case.task("reassign", ACTION_BODIES[TaskAction.reassign], task_id)
    error = case.task_refusal("delivery_failed", FAILED_DELIVERY, task_id)
    assert error.detail == "the task has moved to another agency since"
    case.task("delivery_failed", {**FAILED_DELIVERY, "agency_id": CLINIC, "assignment": 2}, task_id)
    assert case.by_id(task_id).status == TaskStatus.delivery_failed


# --- What each action records ----------------------------------------------------------------------------


def test_an_assignment_makes_a_task():
    case = consented().on(1)
    events, task_id = case.task("assign", {"service": "medical", "agency_id": CLINIC, "notes": "marker note"})
    task = case.by_id(task_id)
    assert (task.service, task.agency_id, task.status, task.stage, task.stage_run) == (
        Service.medical,
        CLINIC,
        TaskStatus.assigned,
        Stage.protection,
        0,
    )
    assert (task.assigned_at, task.accept_by, task.due_on) == (
        case.now,
        case.now + timedelta(days=3),
        case.now.date() + timedelta(days=14),
    )
    assert (task.notes, task.assignment, task.version) == ("marker note", 1, case.state.version)
    assert not task.safety_plan and not task.plan_item
    (event,) = events
    assert (event.kind, event.name, event.task_id, event.actor_sub) == ("task", "assigned", task_id, CASEWORKER.sub)
    assert event.facts == {"service": "medical", "agency_id": CLINIC, "assignment": 1}


def test_an_assignment_may_set_its_due_day():
    case = consented()
    task_id = case.assign("medical", CLINIC, due_date=iso(1))
    assert case.by_id(task_id).due_on.isoformat() == iso(1)


def test_acceptance_completion_and_their_facts():
    case, task_id = task_in("assigned")
    case.on(1)
    (accepted,), _ = case.task("accept", {"notes": "on it"}, task_id)
    assert case.by_id(task_id).accepted_at == case.now and accepted.name == "accepted"
    assert accepted.actor_sub == f"partner-{SHELTER}"
    case.on(2)
    (completed,), _ = case.task("complete", {"outcome": "unable", "notes": "marker note"}, task_id)
    task = case.by_id(task_id)
    assert (task.completed_at, task.outcome.value, task.outcome_notes) == (case.now, "unable", "marker note")
    assert completed.facts == {"service": "shelter", "agency_id": SHELTER, "assignment": 1, "outcome": "unable"}


def test_a_decline_keeps_the_reason_for_the_caseworker():
    case, task_id = task_in("accepted")
    case.on(1)
    (event,), _ = case.task("decline", {"reason": "no capacity"}, task_id)
    task = case.by_id(task_id)
    assert (task.declined_at, task.decline_reason, event.name) == (case.now, "no capacity", "declined")
    assert "reason" not in event.facts


def test_a_failed_delivery_gives_the_task_back():
    case, task_id = task_in("assigned")
    case.on(1)
    (event,), _ = case.task("delivery_failed", FAILED_DELIVERY, task_id)
    task = case.by_id(task_id)
    assert (task.delivery_failed_at, task.decline_reason) == (case.now, "410 from the agency")
    assert (event.name, event.actor_sub, event.facts["delivery_id"]) == (
        "delivery-failed",
        ORCHESTRATOR.sub,
        "delivery-1",
    )


@pytest.mark.parametrize(
    ("body", "notes", "due_on"),
    [
        ({"agency_id": CLINIC}, "first notes", None),
        ({"agency_id": CLINIC, "notes": "new notes", "due_date": iso(20)}, "new notes", iso(20)),
    ],
    ids=["defaults", "new-notes-and-due-day"],
)
def test_a_reassignment_starts_the_task_afresh_with_the_new_agency(body, notes, due_on):
    case = consented()
    task_id = case.assign("shelter", SHELTER, notes="first notes")
    case.task("accept", task_id=task_id)
    case.task("decline", {"reason": "no capacity"}, task_id)
    case.on(2)
    (event,), _ = case.task("reassign", body, task_id)
    task = case.by_id(task_id)
    assert (task.agency_id, task.previous_agencies, task.assignment, task.status) == (
        CLINIC,
        [SHELTER],
        2,
        TaskStatus.assigned,
    )
    assert (task.assigned_at, task.accept_by) == (case.now, case.now + timedelta(days=3))
    assert (task.accepted_at, task.declined_at, task.delivery_failed_at, task.decline_reason) == (None, None, None, "")
    assert task.due_on.isoformat() == (due_on or (case.now.date() + timedelta(days=14)).isoformat())
    assert task.notes == notes
    assert (event.name, event.facts) == (
        "reassigned",
        {"service": "shelter", "agency_id": CLINIC, "assignment": 2, "from_agency": SHELTER},
    )


def test_a_cancellation_keeps_its_reason():
    case, task_id = task_in("declined")
    (event,), _ = case.task("cancel", {"reason": "a family placement was found"}, task_id)
    task = case.by_id(task_id)
    assert (task.status, task.outcome_notes, event.name) == (
        TaskStatus.cancelled,
        "a family placement was found",
        "cancelled",
    )


# --- The agencies a command needs -----------------------------------------------------------------------


def need(service: str, agency: str, country: str) -> AgencyNeed:
    return AgencyNeed(service=service, agency_id=agency, country=country)


@pytest.mark.parametrize(
    ("point", "body", "needs"),
    [
        ("protection", AssignTaskBody(service="shelter", agency_id=SHELTER), [need("shelter", SHELTER, "ES")]),
        (
            "return",
            AssignTaskBody(service="origin-assessment", agency_id=ORIGIN_OFFICE),
            [need("origin-assessment", ORIGIN_OFFICE, "RO")],
        ),
        (
            "return",
            AssignTaskBody(service="travel-documents", agency_id=CONSULATE),
            [need("travel-documents", CONSULATE, "ES")],
        ),
        ("protection", AssignTaskBody(service="shelter"), []),
        (
            "protection",
            SafetyPlanBody(
                agreed_on=iso(1),
                measures=[
                    {"measure": "shelter placement", "service": "shelter", "agency_id": SHELTER},
                    {"measure": "new phone number"},
                    {"measure": "escort", "service": "police-protection"},
                ],
            ),
            [need("shelter", SHELTER, "ES")],
        ),
        (
            "reintegration",
            ReintegrationPlanBody(
                agreed_on=iso(70),
                services=[{"service": "housing", "agency_id": PARTNER_RO}, {"service": "medical", "agency_id": CLINIC}],
            ),
            [need("housing", PARTNER_RO, "ES"), need("medical", CLINIC, "ES")],
        ),
        ("protection", ConsentBody(assistance=True, given_on=iso(0)), []),
    ],
    ids=[
        "assign",
        "assign-in-origin",
        "assign-at-home",
        "assign-without-agency",
        "safety-plan",
        "reintegration-plan",
        "other",
    ],
)
def test_the_agencies_a_command_gives_tasks_to(point, body, needs):
    assert rules.agency_needs(POINTS[point]().state, body) == needs


def test_a_reassignment_needs_the_new_agency_for_the_tasks_service():
    case, task_id = task_in("declined")
    assert rules.agency_needs(case.state, ReassignTaskBody(agency_id=CLINIC), task_id) == [
        need("shelter", CLINIC, "ES")
    ]


def test_after_arrival_a_plan_needs_agencies_in_the_country_of_origin():
    body = ReintegrationPlanBody(agreed_on=iso(20), services=[{"service": "housing", "agency_id": PARTNER_RO}])
    assert rules.agency_needs(arrived().state, body) == [need("housing", PARTNER_RO, "RO")]


# --- Task deadlines -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "due", "turn", "since"),
    [
        ("assigned", timedelta(days=3), "agency", timedelta(0)),  # the acceptance deadline comes first
        ("accepted", None, "agency", timedelta(0)),  # the end of its due day
        ("declined", timedelta(days=3), "caseworker", timedelta(0)),  # reassign within 3 days of the decline
        ("delivery_failed", timedelta(days=3), "caseworker", timedelta(0)),
    ],
    ids=["assigned", "accepted", "declined", "delivery-failed"],
)
def test_an_open_task_is_due_in_turn(status, due, turn, since):
    case, task_id = task_in(status)
    task = case.by_id(task_id)
    (item,) = [i for i in case.items() if i.kind == "task"]
    start = task.declined_at or task.delivery_failed_at or task.assigned_at
    assert (item.name, item.task_id, item.agency_id, item.turn) == ("shelter", task_id, SHELTER, turn)
    assert item.since == start + since
    assert item.due_at == (start + due if due else end_of(task.due_on))
    assert item.key == f"task:{task_id}"


def test_an_assigned_task_due_before_its_acceptance_deadline_is_due_that_day():
    case = consented()
    task_id = case.assign("medical", CLINIC, due_date=iso(0))
    (item,) = [i for i in case.items() if i.kind == "task"]
    assert item.task_id == task_id and item.due_at == end_of(case.by_id(task_id).due_on)


@pytest.mark.parametrize("status", ["completed", "cancelled"])
def test_a_closed_task_is_no_open_item(status):
    case, _ = task_in(status)
    assert [i for i in case.items() if i.kind == "task"] == []
    assert rules.open_tasks(case.state) == []


@pytest.mark.parametrize(
    ("status", "now", "overdue"),
    [
        ("assigned", at(3), False),
        ("assigned", at(3) + timedelta(seconds=1), True),
        ("accepted", at(3) + timedelta(seconds=1), False),
        ("accepted", end_of(day(14)), False),
        ("accepted", end_of(day(14)) + timedelta(seconds=1), True),
        ("declined", end_of(day(14)) + timedelta(seconds=1), True),
        ("delivery_failed", end_of(day(14)) + timedelta(seconds=1), True),
        ("completed", end_of(day(30)), False),
        ("cancelled", end_of(day(30)), False),
    ],
    ids=[
        "assigned-at-its-acceptance-deadline",
        "assigned-past-its-acceptance-deadline",
        "accepted-past-the-acceptance-deadline",
        "accepted-at-the-end-of-its-due-day",
        "accepted-past-its-due-day",
        "declined-past-its-due-day",
        "undeliverable-past-its-due-day",
        "completed",
        "cancelled",
    ],
)
def test_what_overdue_means_wherever_it_is_asked(status, now, overdue):
    # Accept by day 3 at 09:00, due by the end of day 14: the defaults for a task assigned on day 0.
    assert rules.task_overdue(status, at(3), day(14), now) is overdue
    assert rules.task_overdue(TaskStatus(status), at(3), day(14), now) is overdue


@pytest.mark.parametrize(
    ("now", "last"),
    [
        (datetime(2026, 11, 20, 12, 0, tzinfo=UTC), date(2026, 11, 19)),
        (datetime(2026, 11, 20, 0, 0, tzinfo=UTC), date(2026, 11, 19)),
        (datetime(2026, 11, 20, 23, 59, 59, tzinfo=UTC), date(2026, 11, 19)),
        (datetime(2026, 11, 20, 23, 59, 59, 500000, tzinfo=UTC), date(2026, 11, 20)),
        (datetime(2026, 11, 21, 1, 0, tzinfo=timezone(timedelta(hours=2))), date(2026, 11, 19)),
    ],
    ids=["midday", "midnight", "last-second", "after-the-last-second", "another-time-zone"],
)
def test_the_last_overdue_day(now, last):
    assert rules.last_overdue_day(now) == last
    # An open task due on that day is overdue now, and one due the day after is not.
    assert rules.task_overdue("accepted", now, last, now) is True
    assert rules.task_overdue("accepted", now, last + timedelta(days=1), now) is False
