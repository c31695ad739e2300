"""The journey's rules as pure functions: what is allowed now, what a step changes, what is due.

The workflows validate and apply every command with these functions, and the read model shows
their answers (allowed steps, open items), so the API, the history and the view never disagree.
No I/O, no clock and no randomness here: the caller passes ``now`` and an id factory.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta

from pydantic import ValidationError

from workflows.model import (
    STEP_BODIES,
    TASK_BODIES,
    Actor,
    AgencyNeed,
    AppealBody,
    AssignTaskBody,
    CaseOpening,
    CaseStatus,
    ClosureBody,
    ClosureReason,
    CompleteTaskBody,
    ConsentBody,
    DeclineTaskBody,
    DeliveryFailedBody,
    DepartureBody,
    GuardianBody,
    JourneyState,
    MonitoringBody,
    MonitoringVisit,
    OpenItem,
    OriginAssessment,
    Pathway,
    PathwayBody,
    PathwayDecision,
    Projection,
    ReassignOwner,
    ReassignTaskBody,
    ReintegrationPlanBody,
    RejectClosureBody,
    ResidenceApplicationBody,
    ResidenceDecision,
    ResidenceDecisionBody,
    RiskAssessmentBody,
    RiskLevel,
    Role,
    SafetyPlanBody,
    SecurityGuaranteeBody,
    Service,
    Stage,
    StallReason,
    Step,
    StepCommand,
    TaskAction,
    TaskCommand,
    TaskOutcome,
    TaskState,
    TaskStatus,
    TimelineEvent,
    TravelPlanBody,
    WithdrawConsentBody,
)

NewId = Callable[[], str]

CHILD_STAGES = (Stage.return_, Stage.residence, Stage.reintegration)

IMMEDIATE_SERVICES = frozenset(
    {Service.shelter, Service.medical, Service.police_protection, Service.psychosocial, Service.legal}
)
RETURN_SERVICES = frozenset(
    {Service.origin_assessment, Service.travel_documents, Service.family_assessment, Service.reception}
)
RESIDENCE_SERVICES = frozenset({Service.legal_assistance})
REINTEGRATION_SERVICES = frozenset(
    {
        Service.medical,
        Service.psychosocial,
        Service.legal,
        Service.job_orientation,
        Service.education,
        Service.housing,
        Service.financial,
        Service.family,
        Service.security_follow_up,
    }
)
SUPERVISOR_STEPS = frozenset({Step.approve_closure, Step.reject_closure})
# Delivered in the country of origin; every other service is delivered where the case is owned.
ORIGIN_SERVICES = frozenset({Service.origin_assessment, Service.family_assessment, Service.reception})


# --- Errors: each maps to one HTTP status in the API ---------------------------------------------


class JourneyRuleError(Exception):
    """A command the journey refuses; nothing changes."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class StepNotAllowed(JourneyRuleError):
    """The step or task action is not allowed in the case's current state (409)."""

    def __init__(self, detail: str, allowed_steps: list[Step]) -> None:
        super().__init__(detail)
        self.allowed_steps = allowed_steps


class InvalidCommand(JourneyRuleError):
    """The command's content is wrong whatever the state (422)."""


class TaskNotFound(JourneyRuleError):
    """No such task on this case (404)."""


class Forbidden(JourneyRuleError):
    """This caller may never do this (403)."""


class VersionMismatch(JourneyRuleError):
    """The caller's version of the case is stale (412)."""


# --- Dates --------------------------------------------------------------------------------------


def add_months(day: date, months: int) -> date:
    month_index = day.month - 1 + months
    year, month = day.year + month_index // 12, month_index % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def start_of(day: date) -> datetime:
    return datetime.combine(day, time(0, 0), tzinfo=UTC)


def end_of(day: date) -> datetime:
    """A due date means due by the end of that day (UTC)."""
    return datetime.combine(day, time(23, 59, 59), tzinfo=UTC)


def age_on(birth: date, day: date) -> int:
    return day.year - birth.year - ((day.month, day.day) < (birth.month, birth.day))


# --- Starting a journey -------------------------------------------------------------------------


def workflow_id(case_id: str) -> str:
    return f"case-{case_id}"


CASE_IN_WORKFLOW_ID = re.compile(r"^case-([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})")


def case_of_workflow(workflow_id: str | None) -> str | None:
    """The case a workflow id names (every workflow of a case is ``case-<case id>...``), if any."""
    match = CASE_IN_WORKFLOW_ID.match(workflow_id or "")
    return match.group(1) if match else None


def stage_workflow_id(state: JourneyState) -> str:
    """The workflow that owns the case now: the stage's child, or the case workflow itself."""
    if state.stage in CHILD_STAGES:
        return f"case-{state.case_id}-{state.stage.value}-{state.stage_runs}"
    return workflow_id(state.case_id)


def new_journey(opening: CaseOpening, now: datetime) -> JourneyState:
    return JourneyState(
        case_id=opening.case_id,
        reference=opening.reference,
        config=opening.config,
        opened_at=now,
        identified_on=opening.identified_on,
        owner_country=opening.owner_country,
        owner_caseworker=opening.owner_caseworker,
        origin_country=opening.origin_country,
        destination_country=opening.owner_country,
        is_minor=opening.is_minor,
        exploitation_types=opening.exploitation_types,
        trafficking_status=opening.trafficking_status,
        referred_by=opening.referred_by,
        stage=Stage.identification,
        stage_entered_at=now,
        last_activity_at=now,
    )


def opened_event(state: JourneyState, actor: Actor, now: datetime, new_id: NewId) -> TimelineEvent:
    state.version += 1
    return _event(state, now, new_id, "case", "opened", actor, facts={"country": state.owner_country})


# --- What is allowed now ------------------------------------------------------------------------


def _done_this_stage(state: JourneyState, service: Service) -> list[TaskState]:
    """Tasks of this service done during the current run of the current stage.

    A return after a change of pathway starts afresh: earlier assessments and documents are stale.
    """
    return [
        t
        for t in state.tasks.values()
        if t.service == service
        and t.stage == state.stage
        and t.stage_run == state.stage_runs
        and t.status == TaskStatus.completed
        and t.outcome == TaskOutcome.done
    ]


def latest_origin_assessment(state: JourneyState) -> OriginAssessment | None:
    done = _done_this_stage(state, Service.origin_assessment)
    return max(done, key=lambda t: t.completed_at or t.assigned_at).assessment if done else None


def _task_done(state: JourneyState, service: Service) -> bool:
    return bool(_done_this_stage(state, service))


def open_tasks(state: JourneyState) -> list[TaskState]:
    return [t for t in state.tasks.values() if t.is_open]


def why_not(state: JourneyState, step: Step) -> str | None:
    """None when the step is allowed now, otherwise why not, in words a caseworker understands."""
    if state.status == CaseStatus.closed:
        return "the case is closed"
    stage = state.stage
    closure_pending = state.closure_requested is not None
    if step == Step.withdraw_consent:
        return None
    if step in SUPERVISOR_STEPS:
        return None if closure_pending else "no closure is waiting for approval"
    if closure_pending:
        return "a closure is waiting for a supervisor's decision"
    if step == Step.consent:
        return None
    if state.consent is None or not state.consent.assistance:
        return "informed consent to assistance has not been recorded"
    match step:
        case Step.risk_assessment:
            return None if stage in (Stage.protection, Stage.pathway) else _stage_only(stage, "protection")
        case Step.safety_plan:
            if stage not in (Stage.protection, Stage.pathway):
                return _stage_only(stage, "protection")
            return None if state.risk_level else "the risk assessment comes first"
        case Step.guardian:
            if not state.is_minor:
                return "a guardian is appointed only for a minor"
            if stage not in (Stage.protection, Stage.pathway):
                return _stage_only(stage, "protection")
            return None
        case Step.security_guarantee:
            if stage != Stage.protection:
                return _stage_only(stage, "protection")
            if state.risk_level is None:
                return "the risk assessment comes first"
            if state.risk_level in (RiskLevel.medium, RiskLevel.high):
                if state.safety_plan_on is None:
                    return f"a safety plan is required for {state.risk_level.value} risk"
                if any(t.safety_plan for t in open_tasks(state)):
                    return "the safety plan's tasks are not all completed"
            return None
        case Step.pathway:
            return _why_not_pathway(state)
        case Step.travel_plan:
            if stage != Stage.return_:
                return _stage_only(stage, "return")
            if state.departed_on:
                return "the person has already left"
            return _origin_block(state)
        case Step.departure:
            if stage != Stage.return_:
                return _stage_only(stage, "return")
            if state.departed_on:
                return "the departure is already recorded"
            if state.travel_plan_on is None:
                return "the travel plan comes first"
            if not _task_done(state, Service.travel_documents):
                return "the travel documents task is not completed"
            return _origin_block(state)
        case Step.residence_application:
            if stage != Stage.residence:
                return _stage_only(stage, "residence")
            return "the application is already filed" if state.residence_applied_on else None
        case Step.residence_decision:
            if stage != Stage.residence:
                return _stage_only(stage, "residence")
            if state.residence_applied_on is None:
                return "the residence application comes first"
            if state.residence_decisions and state.appeal_filed_on is None:
                return "a decision is recorded; a new one follows only an appeal"
            return None
        case Step.appeal:
            if stage != Stage.residence:
                return _stage_only(stage, "residence")
            if not _last_residence_rejected(state):
                return "an appeal follows only a rejection"
            return "an appeal is already pending" if state.appeal_filed_on else None
        case Step.reintegration_plan:
            if stage != Stage.reintegration:
                return _stage_only(stage, "reintegration")
            if state.plan_agreed_on and not state.plan_revision_needed:
                return "the plan is agreed; it is revised when monitoring flags it"
            return None
        case Step.monitoring:
            if stage != Stage.reintegration:
                return _stage_only(stage, "reintegration")
            return None if state.plan_agreed_on else "the reintegration plan comes first"
        case Step.closure:
            if stage != Stage.reintegration:
                return _stage_only(stage, "reintegration")
            if state.plan_agreed_on is None:
                return "the reintegration plan comes first"
            if open_tasks(state):
                return "open tasks must be completed or cancelled first"
            return None
    return "not a step of this journey"  # pragma: no cover - every Step is matched above


def _stage_only(stage: Stage, wanted: str) -> str:
    return f"allowed in the {wanted} stage, and the case is in {stage.value}"


def _origin_block(state: JourneyState) -> str | None:
    assessment = latest_origin_assessment(state)
    if assessment is None:
        return "the origin assessment is not completed"
    if assessment == OriginAssessment.unsafe:
        return "the origin assessment found return unsafe"
    return None


def _last_residence_rejected(state: JourneyState) -> bool:
    return bool(state.residence_decisions) and state.residence_decisions[-1].decision == "rejected"


def _why_not_pathway(state: JourneyState) -> str | None:
    stage = state.stage
    if stage == Stage.pathway:
        if state.is_minor and state.guardian_on is None:
            return "a guardian must be appointed before a minor's pathway decision"
        return None
    if stage == Stage.return_:
        return "the person has already left" if state.departed_on else None
    if stage == Stage.residence:
        if not _last_residence_rejected(state):
            return "a change follows a residence refusal"
        return "an appeal is pending" if state.appeal_filed_on else None
    return "the pathway is decided after the security guarantee"


def allowed_steps(state: JourneyState) -> list[Step]:
    return [step for step in Step if why_not(state, step) is None]


def allowed_services(state: JourneyState) -> frozenset[Service]:
    if state.status == CaseStatus.closed or state.consent is None or not state.consent.assistance:
        return frozenset()
    services = set(IMMEDIATE_SERVICES)
    if state.stage == Stage.return_:
        services |= RETURN_SERVICES
    elif state.stage == Stage.residence:
        services |= RESIDENCE_SERVICES
    elif state.stage == Stage.reintegration:
        services |= REINTEGRATION_SERVICES
    return frozenset(services)


# --- Checking and applying steps ----------------------------------------------------------------


def parse_body(model: type, body: dict) -> object:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        fields = ", ".join(".".join(str(p) for p in e["loc"]) or "body" for e in exc.errors())
        raise InvalidCommand(f"invalid body: {fields}") from None


def check_step(state: JourneyState, cmd: StepCommand) -> object:
    """Raise if the step may not be recorded now; return its parsed body."""
    if cmd.step in SUPERVISOR_STEPS and cmd.actor.role != Role.supervisor:
        raise Forbidden(f"{cmd.step.value} is a supervisor's decision")
    if cmd.actor.role not in (Role.caseworker, Role.supervisor):
        raise Forbidden("only caseworkers and supervisors record steps")
    reason = why_not(state, cmd.step)
    if reason:
        raise StepNotAllowed(f"{cmd.step.value} is not allowed now: {reason}", allowed_steps(state))
    if cmd.expected_version is not None and cmd.expected_version != state.version:
        raise VersionMismatch("the case moved on since that version; read it again")
    body = parse_body(STEP_BODIES[cmd.step], cmd.body)
    match body:
        case SafetyPlanBody() if any(m.service and m.service not in IMMEDIATE_SERVICES for m in body.measures):
            raise InvalidCommand(
                "a safety measure's service is one of: " + ", ".join(sorted(s.value for s in IMMEDIATE_SERVICES))
            )
        case SafetyPlanBody() | ReintegrationPlanBody() if any(
            getattr(i, "service", None) and not i.agency_id
            for i in getattr(body, "measures", getattr(body, "services", []))
        ):
            raise InvalidCommand("every partner task of a plan names its agency")
        case ReintegrationPlanBody() if any(i.service not in REINTEGRATION_SERVICES for i in body.services):
            raise InvalidCommand(
                "a reintegration service is one of: " + ", ".join(sorted(s.value for s in REINTEGRATION_SERVICES))
            )
        case MonitoringBody() if state.plan_agreed_on and body.visited_on < state.plan_agreed_on:
            raise InvalidCommand("a monitoring visit comes after the plan was agreed")
        case MonitoringBody() if (earliest := _earliest_next_visit(state)) and body.visited_on < earliest:
            raise InvalidCommand(f"the next scheduled monitoring visit can be recorded from {earliest}")
        case DepartureBody() if body.departed_on < state.identified_on:
            raise InvalidCommand("the departure is after the identification")
        case ConsentBody() if state.stage != Stage.identification and not body.assistance:
            raise InvalidCommand("consent to assistance cannot be removed here: use withdraw-consent")
        case PathwayBody() if state.pathway is not None and body.pathway == state.pathway:
            raise InvalidCommand(f"the pathway is already {body.pathway.value}")
        case PathwayBody() if state.stage == Stage.return_ and body.pathway != Pathway.residence:
            raise InvalidCommand("from the return stage the pathway can change only to residence")
        case ResidenceDecisionBody() if body.decision == "granted" and body.valid_until is None:
            raise InvalidCommand("a granted permit needs valid_until")
        case ClosureBody() if body.reason == ClosureReason.completed:
            if len(state.monitoring_visits) < len(state.config.monitoring_offsets_months):
                raise StepNotAllowed(
                    "closure as completed needs every scheduled monitoring visit",
                    allowed_steps(state),
                )
            if state.plan_revision_needed:
                raise StepNotAllowed("closure as completed needs the flagged plan revised first", allowed_steps(state))
    if cmd.step == Step.approve_closure and cmd.actor.sub == state.closure_requested_by:
        raise Forbidden("a closure is approved by someone other than who requested it")
    return body


def apply_step(
    state: JourneyState, cmd: StepCommand, body: object, now: datetime, new_id: NewId
) -> list[TimelineEvent]:
    """Record a checked step; return the timeline events it makes."""
    state.version += 1
    events = [_event(state, now, new_id, "step", cmd.step.value, cmd.actor, facts=_facts(cmd.body))]
    today = now.date()
    match body:
        case ConsentBody():
            state.consent = body
            if state.stage == Stage.identification and body.assistance:
                events.append(_enter(state, Stage.protection, now, new_id))
        case RiskAssessmentBody():
            state.risk_level, state.risk_assessed_on = body.level, body.assessed_on
        case SafetyPlanBody():
            state.safety_plan_on = body.agreed_on
            for measure in body.measures:
                if measure.service and measure.agency_id:
                    task = _new_task(
                        state, measure.service, measure.agency_id, measure.due_date, measure.notes, now, new_id
                    )
                    task.safety_plan = True
                    events.append(_task_event(state, task, "assigned", cmd.actor, now, new_id))
        case GuardianBody():
            state.guardian_on = body.appointed_on
        case SecurityGuaranteeBody():
            state.security_guarantee_on = body.confirmed_on
            events.append(_enter(state, Stage.pathway, now, new_id))
        case PathwayBody():
            state.pathway = body.pathway
            state.pathway_decisions.append(
                PathwayDecision(pathway=body.pathway, decided_on=body.decided_on, reason=body.reason)
            )
            events += _cancel_stage_tasks(state, cmd.actor, now, new_id, "pathway changed")
            state.travel_plan_on = state.travel_date = None
            state.residence_applied_on = state.appeal_filed_on = None
            state.residence_decisions = []
            next_stage = Stage.return_ if body.pathway == Pathway.voluntary_return else Stage.residence
            events.append(_enter(state, next_stage, now, new_id))
        case TravelPlanBody():
            state.travel_plan_on, state.travel_date = today, body.travel_date
            state.receiving_caseworker = body.receiving_caseworker
        case DepartureBody():
            state.departed_on = body.departed_on
        case ResidenceApplicationBody():
            state.residence_applied_on = body.filed_on
        case ResidenceDecisionBody():
            state.residence_decisions.append(
                ResidenceDecision(decision=body.decision, decided_on=body.decided_on, valid_until=body.valid_until)
            )
            state.appeal_filed_on = None
            if body.decision == "granted":
                state.permit_valid_until = body.valid_until
                state.reintegration_started_on = body.decided_on
                events += _cancel_stage_tasks(state, cmd.actor, now, new_id, "permit granted")
                events.append(_enter(state, Stage.reintegration, now, new_id))
        case AppealBody():
            state.appeal_filed_on = body.filed_on
        case ReintegrationPlanBody():
            if state.plan_agreed_on is None:
                state.plan_agreed_on = body.agreed_on
            else:
                state.plan_revisions += 1
            state.plan_revision_needed = False
            for item in body.services:
                task = _new_task(state, item.service, item.agency_id or "", item.due_date, item.notes, now, new_id)
                task.plan_item = True
                events.append(_task_event(state, task, "assigned", cmd.actor, now, new_id))
        case MonitoringBody():
            visit = assess_sustainability(state, body)
            state.monitoring_visits.append(visit)
            state.plan_revision_needed = state.plan_revision_needed or bool(visit.below_threshold)
            events[0].facts.update(weighted_score=visit.weighted_score, below_threshold=visit.below_threshold)
        case ClosureBody():
            state.closure_requested, state.closure_requested_at = body.reason, now
            state.closure_requested_by = cmd.actor.sub
        case RejectClosureBody():
            state.closure_requested = state.closure_requested_at = state.closure_requested_by = None
            state.closure_rejections += 1
        case WithdrawConsentBody():
            state.consent_withdrawn_on = body.withdrawn_on
            events += _cancel_tasks(state, open_tasks(state), cmd.actor, now, new_id, "consent withdrawn")
            events.append(_close(state, ClosureReason.withdrew, now, new_id))
        case _ if cmd.step == Step.approve_closure:
            reason = state.closure_requested or ClosureReason.other
            state.closure_requested_by = None
            events.append(_close(state, reason, now, new_id))
    return events


def _earliest_next_visit(state: JourneyState) -> date | None:
    """A scheduled visit can be recorded from its grace period before its date; extra visits any time."""
    done, offsets = len(state.monitoring_visits), state.config.monitoring_offsets_months
    if state.plan_agreed_on is None or done >= len(offsets):
        return None
    scheduled = add_months(state.plan_agreed_on, offsets[done])
    return scheduled - timedelta(days=state.config.monitoring_grace_days)


def assess_sustainability(state: JourneyState, body: MonitoringBody) -> MonitoringVisit:
    scores = {"economic": body.economic, "social": body.social, "psychosocial": body.psychosocial}
    weights = state.config.sustainability_weights
    total = sum(weights.get(k, 0.0) for k in scores) or 1.0
    weighted = sum(scores[k] * weights.get(k, 0.0) for k in scores) / total
    below = [k for k, v in scores.items() if v < state.config.sustainability_thresholds.get(k, 0.0)]
    return MonitoringVisit(
        visited_on=body.visited_on, scores=scores, weighted_score=round(weighted, 4), below_threshold=below
    )


# --- Tasks --------------------------------------------------------------------------------------


def check_task(state: JourneyState, cmd: TaskCommand, now: datetime) -> object:
    """Raise if the task action may not happen now; return its parsed body."""
    body = parse_body(TASK_BODIES[cmd.action], cmd.body)
    caseworker_actions = (TaskAction.assign, TaskAction.reassign, TaskAction.cancel)
    if cmd.action == TaskAction.delivery_failed:
        if cmd.actor.role != Role.system:
            raise Forbidden("only the orchestrator reports a failed delivery")
    elif cmd.action in caseworker_actions and cmd.actor.role not in (Role.caseworker, Role.supervisor):
        raise Forbidden(f"only a caseworker may {cmd.action.value} a task")
    elif cmd.action not in caseworker_actions and cmd.actor.role != Role.partner:
        raise Forbidden(f"only the agency's partner may {cmd.action.value} a task")
    if state.status == CaseStatus.closed:
        raise StepNotAllowed("the case is closed", [])
    if state.closure_requested is not None and cmd.action in (TaskAction.assign, TaskAction.reassign):
        raise StepNotAllowed("a closure is waiting for a supervisor's decision", allowed_steps(state))
    if cmd.action == TaskAction.assign:
        assert isinstance(body, AssignTaskBody)
        if body.agency_id is None:
            raise InvalidCommand(f"name the agency for the {body.service.value} task")
        services = allowed_services(state)
        if body.service not in services:
            raise StepNotAllowed(
                f"a {body.service.value} task is not allowed in the {state.stage.value} stage",
                allowed_steps(state),
            )
        return body
    task = state.tasks.get(cmd.task_id or "")
    if task is None:
        raise TaskNotFound("no such task on this case")
    if cmd.actor.role == Role.partner and cmd.actor.agency != task.agency_id:
        raise TaskNotFound("no such task on this case")
    allowed_from = {
        TaskAction.accept: {TaskStatus.assigned},
        TaskAction.complete: {TaskStatus.accepted},
        TaskAction.decline: {TaskStatus.assigned, TaskStatus.accepted},
        TaskAction.reassign: {
            TaskStatus.declined,
            TaskStatus.delivery_failed,
            TaskStatus.assigned,
            TaskStatus.accepted,
        },
        TaskAction.cancel: {TaskStatus.assigned, TaskStatus.accepted, TaskStatus.declined, TaskStatus.delivery_failed},
        TaskAction.delivery_failed: {TaskStatus.assigned},
    }[cmd.action]
    if task.status not in allowed_from:
        raise StepNotAllowed(f"a task that is {task.status.value} cannot be {_past(cmd.action)}", allowed_steps(state))
    if isinstance(body, CompleteTaskBody):
        if task.service == Service.origin_assessment and body.outcome == TaskOutcome.done:
            if body.assessment is None:
                raise InvalidCommand("an origin assessment completes with assessment safe or unsafe")
        if task.service == Service.reception and body.outcome == TaskOutcome.done:
            if state.departed_on is None:
                raise StepNotAllowed("reception is confirmed after the departure", allowed_steps(state))
            if body.arrived_on is None:
                raise InvalidCommand("reception completes with arrived_on")
            if body.arrived_on < state.departed_on:
                raise InvalidCommand("the arrival cannot be before the departure")
    if isinstance(body, DeliveryFailedBody) and (body.agency_id, body.assignment) != (task.agency_id, task.assignment):
        raise StepNotAllowed("the task has moved to another agency since", allowed_steps(state))
    if isinstance(body, ReassignTaskBody):
        if task.status not in (TaskStatus.declined, TaskStatus.delivery_failed) and not is_overdue(task, now):
            raise StepNotAllowed(
                "only a declined, undeliverable or overdue task can be reassigned", allowed_steps(state)
            )
        if body.agency_id == task.agency_id:
            raise InvalidCommand("reassign to another agency")
    return body


def service_country(state: JourneyState, service: Service) -> str:
    """Where a service is delivered: in the country of origin, or where the case is owned now."""
    return state.origin_country if service in ORIGIN_SERVICES else state.owner_country


def agency_needs(state: JourneyState, body: object, task_id: str | None = None) -> list[AgencyNeed]:
    """The agencies a checked step or task body gives tasks to, with their services and countries."""
    items: list[tuple[Service, str | None]] = []
    match body:
        case AssignTaskBody():
            items = [(body.service, body.agency_id)]
        case ReassignTaskBody():
            items = [(state.tasks[task_id or ""].service, body.agency_id)]
        case SafetyPlanBody():
            items = [(m.service, m.agency_id) for m in body.measures if m.service]
        case ReintegrationPlanBody():
            items = [(i.service, i.agency_id) for i in body.services]
    return [
        AgencyNeed(service=service, agency_id=agency_id, country=service_country(state, service))
        for service, agency_id in items
        if agency_id
    ]


def is_overdue(task: TaskState, now: datetime) -> bool:
    if task.status == TaskStatus.assigned and now > task.accept_by:
        return True
    return task.is_open and now > end_of(task.due_on)


def apply_task(
    state: JourneyState, cmd: TaskCommand, body: object, now: datetime, new_id: NewId
) -> tuple[list[TimelineEvent], str]:
    """Record a checked task action; return the timeline events and the task's id."""
    state.version += 1
    state.last_activity_at = now
    if isinstance(body, AssignTaskBody):
        task = _new_task(state, body.service, body.agency_id, body.due_date, body.notes, now, new_id)
        return [_task_event(state, task, "assigned", cmd.actor, now, new_id)], task.task_id
    task = state.tasks[cmd.task_id or ""]
    task.version = state.version
    events: list[TimelineEvent] = []
    match body:
        case ReassignTaskBody():
            previous = task.agency_id
            task.previous_agencies.append(task.agency_id)
            task.agency_id, task.status = body.agency_id, TaskStatus.assigned
            task.assigned_at, task.accepted_at, task.declined_at = now, None, None
            task.delivery_failed_at = None
            task.decline_reason = ""  # the last agency's reason is not the next agency's business
            task.accept_by = now + timedelta(days=state.config.task_accept_days)
            task.due_on = body.due_date or (now.date() + timedelta(days=state.config.task_due_days))
            if body.notes:
                task.notes = body.notes
            events.append(_task_event(state, task, "reassigned", cmd.actor, now, new_id, from_agency=previous))
        case CompleteTaskBody():
            task.status, task.completed_at = TaskStatus.completed, now
            task.outcome, task.outcome_notes = body.outcome, body.notes
            task.assessment = body.assessment if task.service == Service.origin_assessment else None
            events.append(
                _task_event(
                    state,
                    task,
                    "completed",
                    cmd.actor,
                    now,
                    new_id,
                    outcome=body.outcome.value,
                    **({"assessment": body.assessment.value} if task.assessment else {}),
                )
            )
            if task.service == Service.reception and body.outcome == TaskOutcome.done:
                events += _hand_over_to_origin(state, body.arrived_on or now.date(), cmd.actor, now, new_id)
        case DeclineTaskBody():
            task.status, task.declined_at, task.decline_reason = TaskStatus.declined, now, body.reason
            events.append(_task_event(state, task, "declined", cmd.actor, now, new_id))
        case DeliveryFailedBody():
            task.status, task.delivery_failed_at = TaskStatus.delivery_failed, now
            task.decline_reason = body.reason
            events.append(
                _task_event(state, task, "delivery-failed", cmd.actor, now, new_id, delivery_id=body.delivery_id)
            )
        case _ if cmd.action == TaskAction.accept:
            task.status, task.accepted_at = TaskStatus.accepted, now
            events.append(_task_event(state, task, "accepted", cmd.actor, now, new_id))
        case _ if cmd.action == TaskAction.cancel:
            events += _cancel_tasks(state, [task], cmd.actor, now, new_id, body.reason)  # type: ignore[attr-defined]
    return events, task.task_id


def _past(action: TaskAction) -> str:
    return {
        TaskAction.accept: "accepted",
        TaskAction.complete: "completed",
        TaskAction.decline: "declined",
        TaskAction.reassign: "reassigned",
        TaskAction.cancel: "cancelled",
        TaskAction.delivery_failed: "marked undeliverable",
    }.get(action, action.value)


def _new_task(
    state: JourneyState,
    service: Service,
    agency_id: str,
    due_date: date | None,
    notes: str,
    now: datetime,
    new_id: NewId,
) -> TaskState:
    task = TaskState(
        task_id=new_id(),
        service=service,
        agency_id=agency_id,
        stage=state.stage,
        assigned_at=now,
        accept_by=now + timedelta(days=state.config.task_accept_days),
        due_on=due_date or (now.date() + timedelta(days=state.config.task_due_days)),
        notes=notes,
        version=state.version,
        stage_run=state.stage_runs,
    )
    state.tasks[task.task_id] = task
    return task


def _cancel_tasks(
    state: JourneyState, tasks: list[TaskState], actor: Actor, now: datetime, new_id: NewId, reason: str
) -> list[TimelineEvent]:
    events = []
    for task in tasks:
        task.status, task.version = TaskStatus.cancelled, state.version
        task.outcome_notes = reason
        events.append(_task_event(state, task, "cancelled", actor, now, new_id))
    return events


def _cancel_stage_tasks(
    state: JourneyState, actor: Actor, now: datetime, new_id: NewId, reason: str
) -> list[TimelineEvent]:
    """Leaving a stage cancels the open tasks that only made sense in it."""
    stage_services = RETURN_SERVICES | RESIDENCE_SERVICES
    moot = [t for t in open_tasks(state) if t.service in stage_services]
    return _cancel_tasks(state, moot, actor, now, new_id, reason)


def _hand_over_to_origin(
    state: JourneyState, arrived_on: date, actor: Actor, now: datetime, new_id: NewId
) -> list[TimelineEvent]:
    """Arrival hands the case to the country of origin; its history stays with it."""
    previous = state.owner_country
    state.arrived_on = arrived_on
    state.owner_country = state.origin_country
    state.owner_caseworker = state.receiving_caseworker
    state.reintegration_started_on = arrived_on
    events = [
        _event(
            state,
            now,
            new_id,
            "case",
            "handed-over",
            actor,
            facts={"from_country": previous, "to_country": state.owner_country},
        )
    ]
    events += _cancel_stage_tasks(state, actor, now, new_id, "arrived in the country of origin")
    events.append(_enter(state, Stage.reintegration, now, new_id))
    return events


def _enter(state: JourneyState, stage: Stage, now: datetime, new_id: NewId) -> TimelineEvent:
    previous = state.stage
    state.stage, state.stage_entered_at = stage, now
    if stage in CHILD_STAGES:
        state.stage_runs += 1
    return _event(state, now, new_id, "stage", stage.value, None, facts={"from": previous.value})


def _close(state: JourneyState, reason: ClosureReason, now: datetime, new_id: NewId) -> TimelineEvent:
    event = _enter(state, Stage.closed, now, new_id)
    state.status, state.closure_reason, state.closed_at = CaseStatus.closed, reason, now
    state.closure_requested = state.closure_requested_at = None
    event.facts["reason"] = reason.value
    return event


def _event(
    state: JourneyState,
    now: datetime,
    new_id: NewId,
    kind: str,
    name: str,
    actor: Actor | None,
    *,
    task_id: str | None = None,
    facts: dict | None = None,
) -> TimelineEvent:
    if kind != "supervision":  # the orchestrator noticing a stall is not activity on the case
        state.last_activity_at = now
    return TimelineEvent(
        event_id=new_id(),
        seq=state.version,
        at=now,
        kind=kind,
        name=name,
        actor_sub=actor.sub if actor else None,
        actor_role=actor.role if actor else None,
        task_id=task_id,
        facts=facts or {},
    )


def _task_event(
    state: JourneyState, task: TaskState, what: str, actor: Actor, now: datetime, new_id: NewId, **facts: str
) -> TimelineEvent:
    task.version = state.version
    return _event(
        state,
        now,
        new_id,
        "task",
        what,
        actor,
        task_id=task.task_id,
        facts={"service": task.service.value, "agency_id": task.agency_id, "assignment": task.assignment, **facts},
    )


def _facts(body: dict) -> dict:
    """What a step's timeline entry keeps: the structured facts, not free text."""
    return {k: v for k, v in body.items() if k not in ("notes", "threats", "measures", "services")}


def check_reassign_owner(state: JourneyState, cmd: ReassignOwner) -> None:
    if cmd.actor.role != Role.supervisor:
        raise Forbidden("a supervisor reassigns a case")
    if state.status == CaseStatus.closed:
        raise StepNotAllowed("the case is closed", [])
    if cmd.caseworker == state.owner_caseworker:
        raise InvalidCommand("the case is already this caseworker's")


def apply_reassign_owner(state: JourneyState, cmd: ReassignOwner, now: datetime, new_id: NewId) -> list[TimelineEvent]:
    state.version += 1
    previous, state.owner_caseworker = state.owner_caseworker, cmd.caseworker
    return [
        _event(
            state,
            now,
            new_id,
            "case",
            "reassigned",
            cmd.actor,
            facts={"from_caseworker": previous, "to_caseworker": cmd.caseworker},
        )
    ]


# --- Deadlines ----------------------------------------------------------------------------------


def open_items(state: JourneyState) -> list[OpenItem]:
    """Every open step and task with its due time and whose turn it is."""
    if state.status == CaseStatus.closed:
        return []
    cfg = state.config
    items: list[OpenItem] = []

    def step(
        name: Step, due: date | datetime | None, turn: str = "caseworker", since: date | datetime | None = None
    ) -> None:
        due_at = end_of(due) if isinstance(due, date) and not isinstance(due, datetime) else due
        start = start_of(since) if isinstance(since, date) and not isinstance(since, datetime) else since
        items.append(OpenItem(kind="step", name=name.value, due_at=due_at, turn=turn, since=start))

    identified = state.identified_on
    reflection_end = identified + timedelta(days=cfg.reflection_days)
    if state.stage == Stage.identification:
        step(Step.consent, None)
    if state.stage in (Stage.protection, Stage.pathway):
        if state.risk_level is None:
            step(Step.risk_assessment, identified + timedelta(days=cfg.risk_assessment_days), since=identified)
        guarantee_due = identified + timedelta(days=cfg.security_guarantee_days)
        if state.risk_level in (RiskLevel.medium, RiskLevel.high) and state.safety_plan_on is None:
            step(Step.safety_plan, guarantee_due, since=identified)
        if state.is_minor and state.guardian_on is None:
            step(Step.guardian, reflection_end, since=identified)
        if state.stage == Stage.protection:
            step(Step.security_guarantee, guarantee_due, since=identified)
        else:
            step(Step.pathway, reflection_end, since=identified)
    if state.stage == Stage.return_:
        if state.travel_plan_on is None:
            step(Step.travel_plan, None)
        elif state.departed_on is None:
            step(Step.departure, state.travel_date, since=state.travel_plan_on)
    if state.stage == Stage.residence:
        if state.residence_applied_on is None:
            step(Step.residence_application, None)
        elif not state.residence_decisions or state.appeal_filed_on:
            step(Step.residence_decision, None, turn="authority")
    if state.stage == Stage.reintegration and state.closure_requested is None:
        started = state.reintegration_started_on or (state.stage_entered_at or state.opened_at).date()
        if state.plan_agreed_on is None:
            step(Step.reintegration_plan, started + timedelta(days=cfg.reintegration_plan_days), since=started)
        else:
            if state.plan_revision_needed:
                last = state.monitoring_visits[-1].visited_on
                step(Step.reintegration_plan, last + timedelta(days=cfg.reintegration_plan_days), since=last)
            done = len(state.monitoring_visits)
            if done < len(cfg.monitoring_offsets_months):
                scheduled = add_months(state.plan_agreed_on, cfg.monitoring_offsets_months[done])
                step(Step.monitoring, scheduled + timedelta(days=cfg.monitoring_grace_days), since=scheduled)
    if state.closure_requested is not None and state.closure_requested_at is not None:
        step(
            Step.approve_closure,
            state.closure_requested_at + timedelta(days=cfg.closure_approval_days),
            turn="supervisor",
            since=state.closure_requested_at,
        )
    for task in state.tasks.values():
        if not task.is_open:
            continue
        since = task.assigned_at
        if task.status in (TaskStatus.declined, TaskStatus.delivery_failed):
            since = task.declined_at or task.delivery_failed_at or task.assigned_at
            due: datetime = since + timedelta(days=cfg.declined_reassign_days)
            turn = "caseworker"
        elif task.status == TaskStatus.assigned:
            due, turn = min(task.accept_by, end_of(task.due_on)), "agency"
        else:
            due, turn = end_of(task.due_on), "agency"
        items.append(
            OpenItem(
                kind="task",
                name=task.service.value,
                task_id=task.task_id,
                due_at=due,
                turn=turn,
                agency_id=task.agency_id,
                since=since,
            )
        )
    return items


# --- Stalled cases ------------------------------------------------------------------------------


def stall_reasons(state: JourneyState, now: datetime) -> list[StallReason]:
    """Each overdue open item, and inactivity past its limit; empty when the case is not stalled."""
    if state.status == CaseStatus.closed:
        return []
    reasons = [
        StallReason(
            key=item.key,
            kind=item.kind,
            name=item.name,
            task_id=item.task_id,
            agency_id=item.agency_id,
            turn=item.turn,
            due_at=item.due_at,
            escalate_at=item.escalate_at or item.due_at,
        )
        for item in open_items(state)
        if item.due_at is not None and item.due_at <= now
    ]
    quiet_until = _inactivity_due(state)
    if quiet_until <= now:
        limit = timedelta(days=state.config.inactivity_days)
        reasons.append(
            StallReason(
                key="inactivity",
                kind="inactivity",
                name="no activity",
                turn="caseworker",
                due_at=quiet_until,
                escalate_at=quiet_until + limit,
            )
        )
    return sorted(reasons, key=lambda r: r.due_at)


def _inactivity_due(state: JourneyState) -> datetime:
    return (state.last_activity_at or state.opened_at) + timedelta(days=state.config.inactivity_days)


def next_deadline(state: JourneyState, now: datetime) -> datetime | None:
    """When the stall can next change by the clock alone: a due time or an escalation to come."""
    if state.status == CaseStatus.closed:
        return None
    moments = [i.due_at for i in open_items(state) if i.due_at is not None]
    moments += [r.escalate_at for r in state.stall]
    moments.append(_inactivity_due(state))
    future = [m for m in moments if m > now]
    return min(future) if future else None


def evaluate_stall(state: JourneyState, now: datetime, new_id: NewId, *, by_clock: bool = False) -> list[TimelineEvent]:
    """Bring the stall up to date: new reasons notify the supervisors once, again at twice the
    deadline; the stall clears by itself when nothing is overdue. Returns the events it makes.

    After a command the change rides on the command's version; found by the clock alone
    (``by_clock``), it is a new version of the case."""
    reasons = stall_reasons(state, now)
    due_notices = [
        (reason, level, f"{reason.key}@{reason.due_at.isoformat()}:{level}")
        for reason in reasons
        for level, at in ((1, reason.due_at), (2, reason.escalate_at))
        if at <= now and (level == 1 or reason.escalate_at > reason.due_at)
    ]
    notices = [n for n in due_notices if n[2] not in state.notified]
    cleared = bool(state.stall) and not reasons
    if reasons == state.stall and not notices:
        return []
    if by_clock:  # first, so that the events below carry the new version
        state.version += 1
    state.stall = reasons
    state.stalled_since = (state.stalled_since or now) if reasons else None
    events: list[TimelineEvent] = []
    for reason, level, mark in notices:
        state.notified.append(mark)
        events.append(
            _event(
                state,
                now,
                new_id,
                "supervision",
                "stalled" if level == 1 else "escalated",
                None,
                task_id=reason.task_id,
                facts={
                    "item": reason.key,
                    "name": reason.name,
                    "turn": reason.turn,
                    "level": level,
                    "due_at": reason.due_at.isoformat(),
                    "notification": f"{state.case_id}:{mark}",
                },
            )
        )
    if cleared:
        events.append(_event(state, now, new_id, "supervision", "stall-cleared", None))
    return events


def project(state: JourneyState, events: list[TimelineEvent]) -> Projection:
    return Projection(
        state=state,
        events=events,
        allowed_steps=allowed_steps(state),
        open_items=open_items(state),
        active_workflow_id=stage_workflow_id(state),
    )
