"""What a case page shows: the case as the API gives it to the person, the agencies that may take
its tasks, the choices of its task and step forms, and its facts and timeline in words.

The office managing the case (``access`` "owner") sees everything its role allows; the office about
to take it ("receiving") and the one that had it ("sending") read the case and its timeline only
(``api.journeys.case_access``): their page asks for none of the owner's lists (notes, links,
documents), which the API keeps to the owner. The reintegration plan drafted before arrival and a
pending transfer are read through ``api.transfers``' own functions."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from babel import Locale, dates
from fastapi import Response
from pydantic import Field
from sqlmodel import Session, col, select

from api.cases import read_case_now
from api.documents import DocumentPublic, list_case_documents
from api.errors import NotFound
from api.journeys import Access
from api.links import LinkedCase, list_links
from api.notes import NotePublic, list_case_notes
from api.schemas import CasePublic, TaskPublic
from api.transfers import (
    PlanDraft,
    PlanDraftPublic,
    PlannedService,
    TransferPublic,
    TransferRequest,
    get_plan_draft,
    get_transfer,
)
from api.web import forms, i18n
from api.web.context import Web
from api.web.form_words import FIELD_LABELS
from api.web.forms import Choice, Options
from api.web.labels import LABELS, N_, SUSTAINABILITY_DIMENSIONS
from reintegration import agencies
from reintegration.db import AgencyRecord, PersonRecord, TransferRecord
from reintegration.tokens import Claims
from workflows import rules
from workflows.model import (
    CaseStatus,
    ConsentBody,
    JourneyConfig,
    JourneyState,
    Service,
    Stage,
    Step,
    Strict,
    SustainabilityDimension,
)

# The steps' services, where a step's form chooses among them.
STEP_SERVICES = {
    Step.safety_plan: rules.IMMEDIATE_SERVICES,
    Step.reintegration_plan: rules.STAGE_SERVICES[Stage.reintegration],
}
# The case's facts shown on its page, with their words (the rest is in the timeline).
FACTS: dict[str, str] = {
    "identified_on": N_("Identified on"),
    "exploitation_types": N_("Types of exploitation"),
    "trafficking_status": N_("Trafficking status"),
    "referred_by": N_("Referred by"),
    "risk_level": N_("Risk level"),
    "risk_assessed_on": N_("Risk assessed on"),
    "safety_plan_on": N_("Safety plan agreed on"),
    "guardian_on": N_("Guardian appointed on"),
    "security_guarantee_on": N_("Security guaranteed on"),
    "travel_date": N_("Travel date"),
    "receiving_caseworker": N_("Receiving caseworker"),
    "departed_on": N_("Departed on"),
    "arrived_on": N_("Arrived on"),
    "residence_applied_on": N_("Residence applied for on"),
    "permit_valid_until": N_("Permit valid until"),
    "plan_agreed_on": N_("Reintegration plan agreed on"),
    "plan_revision_needed": N_("The plan needs a revision"),
    "closure_requested": N_("Closure requested, reason"),
    "consent_withdrawn_on": N_("Consent withdrawn on"),
}
# What the timeline's facts are called, besides the fields of the forms (``forms.FIELD_LABELS``).
FACT_WORDS: dict[str, str] = {
    "from": N_("From"),
    "from_agency": N_("From agency"),
    "from_caseworker": N_("From caseworker"),
    "to_caseworker": N_("To caseworker"),
    "from_country": N_("From country"),
    "to_country": N_("To country"),
    "name": N_("Item"),
    "turn": N_("Whose turn"),
    "due_at": N_("Due"),
    "weighted_score": N_("Overall score"),
    "below_threshold": N_("Below the threshold"),
}
HIDDEN_FACTS = {"notification", "item", "assignment", "delivery_id"}
# A supervision entry's level (1: stalled, 2: escalated) is said by its name already.
HIDDEN_SUPERVISION_FACTS = HIDDEN_FACTS | {"level"}
CONSENT: dict[str, str] = {
    "assistance": N_("Assistance"),
    "data_sharing": N_("Sharing data with partner agencies"),
    "given_on": N_("Given on"),
}


# The newest notes shown on the case page; the older ones on the case's notes page, page by page.
NOTES_SHOWN = 20


@dataclass
class CaseView:
    """A case as the API gives it to this person, the agencies that may take its tasks, and its
    newest notes (read through ``GET /v1/cases/{id}/notes``: audited as its reads are)."""

    case: CasePublic
    agencies: list[AgencyRecord]
    notes: list[NotePublic] = field(default_factory=list)
    older_notes: str | None = None  # the cursor of the notes after those shown
    person_version: int | None = None  # the vault row's, when the person is shown: its correction form's
    links: list[LinkedCase] = field(default_factory=list)  # the linked cases in the person's scope
    documents: list[DocumentPublic] = field(default_factory=list)  # the newest, what each is
    draft: PlanDraftPublic | None = None  # the reintegration plan drafted before arrival (owner, receiving)
    transfer: TransferPublic | None = None  # the case's pending transfer, if the person's office is in it

    @property
    def owner(self) -> bool:
        """Whether the person's office manages the case (else it only reads it)."""
        return self.case.access == Access.owner

    def offering(self, service: str) -> list[Choice]:
        """The agencies offering the service in the country where it is needed."""
        country = agencies.service_country(
            service, owner_country=self.case.owner.country, origin_country=self.case.origin_country
        )
        return [
            Choice(a.agency_id, f"{a.name} ({a.agency_id})")
            for a in self.agencies
            if a.country == country and service in a.services
        ]

    def agency_groups(self, services: list[str], _: forms.Translate) -> list[tuple[str, list[Choice]]]:
        return [(_(LABELS.get(s, s)), choices) for s in services if (choices := self.offering(s))]

    @property
    def allowed_services(self) -> list[str]:
        """The services a task may be asked for now: the journey's rule (``rules.allowed_services``),
        asked of the case as the read model holds it (the rule reads its stage, status and consent)."""
        case = self.case
        identified = case.facts.get("identified_on")
        state = JourneyState(
            case_id=case.case_id,
            reference=case.reference,
            config=JourneyConfig(),
            opened_at=case.opened_at,
            identified_on=date.fromisoformat(identified) if isinstance(identified, str) else case.opened_at.date(),
            owner_country=case.owner.country,
            owner_caseworker=case.owner.caseworker,
            origin_country=case.origin_country,
            destination_country=case.destination_country,
            is_minor=case.is_minor,
            stage=Stage(case.stage),
            status=CaseStatus.closed if case.status == "closed" else CaseStatus.active,
            consent=ConsentBody.model_validate(case.consent) if case.consent else None,
        )
        allowed = rules.allowed_services(state)
        return [s.value for s in Service if s in allowed]


def case_view(web: Web, case_id: str, *, person: bool = False) -> CaseView:
    """The case through the API's own route (``GET /v1/cases/{id}``: scope, and with ``person`` the
    ``person.read`` audit row before the data leaves), its drafted plan and pending transfer; for
    the office managing it, the agencies of its two countries, its newest notes, links and documents."""
    case = read_case_now(web.session, case_id, web.user, web.settings, web.auditor, Response(), person=person)
    draft = plan_draft(web, case_id) if case.access != Access.sending else None
    transfer = pending_transfer(web.session, case_id, web.user)
    if case.access != Access.owner:
        return CaseView(case=case, agencies=[], draft=draft, transfer=transfer)
    countries = {case.owner.country, case.origin_country}
    found = web.session.exec(
        select(AgencyRecord)
        .where(col(AgencyRecord.country).in_(sorted(countries)), col(AgencyRecord.active))
        .order_by(col(AgencyRecord.name))
    ).all()
    notes = list_case_notes(case_id, web.user, web.session, web.auditor, limit=NOTES_SHOWN, cursor=None)
    stored = web.session.get(PersonRecord, case_id) if case.person is not None else None
    return CaseView(
        case=case,
        agencies=list(found),
        notes=notes.items,
        older_notes=notes.next_cursor,
        person_version=stored.version if stored is not None else None,
        links=list_links(case_id, web.user, web.session, limit=100, cursor=None).items,
        documents=list_case_documents(case_id, web.user, web.session, limit=100, cursor=None).items,
        draft=draft,
        transfer=transfer,
    )


def plan_draft(web: Web, case_id: str) -> PlanDraftPublic | None:
    """The reintegration plan drafted before arrival (``GET /v1/cases/{id}/plan-draft``), if any."""
    try:
        return get_plan_draft(case_id, web.user, web.session, web.auditor)
    except NotFound:
        return None


def pending_transfer(session: Session, case_id: str, user: Claims) -> TransferPublic | None:
    """The case's pending transfer (one at most), as ``GET /v1/transfers/{id}`` gives it to the
    person: only to the offices it is from or to."""
    found = session.exec(
        select(TransferRecord.transfer_id).where(
            col(TransferRecord.case_id) == case_id, col(TransferRecord.status) == "pending"
        )
    ).first()
    if found is None:
        return None
    try:
        return get_transfer(found, user, session)
    except NotFound:
        return None


class PlanDraftForm(Strict):
    """The draft as its form takes it: the services foreseen, as boxes to tick (``draft_form``),
    and notes. Sent as ``PlanDraft`` (``as_draft``)."""

    services: list[Service] = Field(default_factory=list, max_length=20)
    notes: str = Field(default="", max_length=4000)

    def as_draft(self, before: PlanDraftPublic | None) -> PlanDraft:
        """The draft to save: each service still foreseen keeps the agency the draft before named."""
        agencies = {s.service: s.agency_id for s in before.services} if before is not None else {}
        return PlanDraft(
            services=[PlannedService(service=s, agency_id=agencies.get(s)) for s in dict.fromkeys(self.services)],
            notes=self.notes,
        )


DRAFT_HINT = N_("Tick the services to agree with the person once they arrive.")


def draft_form(
    view: CaseView, _: forms.Translate, *, raw: forms.Raw | None = None, errors: forms.Errors | None = None
) -> forms.Form:
    """The draft's form: the reintegration stage's services (``STEP_SERVICES``) as boxes, with any
    other the draft holds already, ticked as saved (or as sent)."""
    saved = view.draft
    initial = {"services": [s.service.value for s in saved.services], "notes": saved.notes} if saved else {}
    form = forms.build(PlanDraftForm, _, prefix="draft-", raw=raw, initial=initial, errors=errors)
    services = form.find("services")
    if isinstance(services, forms.Field):
        offered = STEP_SERVICES[Step.reintegration_plan]
        kept = {s.service for s in saved.services} if saved else set()
        services.choices = [Choice(s.value, _(LABELS.get(s.value, s.value))) for s in Service if s in offered | kept]
        services.hint = _(DRAFT_HINT)
    return form


REASON_HINT = N_("Why the case should be managed there: the other office reads it before it answers.")


def transfer_form(
    case_id: str, _: forms.Translate, *, raw: forms.Raw | None = None, errors: forms.Errors | None = None
) -> forms.PostForm:
    """The form that offers the case to another country's office (``TransferRequest``, as
    ``POST /v1/cases/{id}/transfers`` takes it); ``raw``: as it was sent, shown open."""
    form = forms.build(TransferRequest, _, prefix="transfer-", raw=raw, errors=errors)
    reason = form.find("reason")
    if isinstance(reason, forms.Field):
        reason.hint = _(REASON_HINT)
    return forms.PostForm(f"{case_path(case_id)}/transfers", form, open=raw is not None)


def task_options(view: CaseView, _: forms.Translate, task: TaskPublic | None = None) -> dict[str, Options]:
    """A task form's choices: the services allowed now and the agencies offering each (to assign);
    the other agencies offering the task's service (to reassign)."""
    if task is None:
        services = view.allowed_services
        return {
            "service": Options(choices=[Choice(s, _(LABELS.get(s, s))) for s in services]),
            "agency_id": Options(groups=view.agency_groups(services, _), empty=_("The service's usual agency")),
        }
    others = [c for c in view.offering(task.service) if c.value != task.agency_id]
    return {"agency_id": Options(choices=others)}


def step_options(view: CaseView, step: Step, _: forms.Translate) -> dict[str, Options]:
    """A step form's choices of services and agencies, where its body names them."""
    services = STEP_SERVICES.get(step)
    if services is None:
        return {}
    values = [s.value for s in Service if s in services]
    return {
        "service": Options(choices=[Choice(s, _(LABELS.get(s, s))) for s in values]),
        "agency_id": Options(groups=view.agency_groups(values, _), empty=_("The service's usual agency")),
    }


def stage_bar(case: CasePublic) -> list[str]:
    """The journey's stages for this case: its pathway's (both while none is chosen)."""
    middle = {"voluntary_return": [Stage.return_], "residence": [Stage.residence]}.get(
        case.pathway or "", [Stage.return_, Stage.residence]
    )
    stages = [Stage.identification, Stage.protection, Stage.pathway, *middle, Stage.reintegration, Stage.closed]
    return [s.value for s in stages]


def may(web: Web, step: str) -> bool:
    return web.user.role in rules.STEPS[Step(step)].roles


def label_of(web: Web, value: str) -> str:
    return web._(LABELS.get(value, value))


def words(web: Web, key: str, value: Any) -> str:
    """A fact's value in words: dates in the person's language, values with their labels."""
    if isinstance(value, bool):
        return web._("Yes") if value else web._("No")
    if key == "below_threshold" and isinstance(value, list):  # dimensions, some named as services are
        return ", ".join(web._(SUSTAINABILITY_DIMENSIONS.get(str(v), str(v))) for v in value)
    if isinstance(value, list):
        return ", ".join(words(web, key, v) for v in value)
    if isinstance(value, int | float):
        return i18n.format_number(value, web.language, 2)
    if isinstance(value, str):
        if key.endswith(("_on", "_date", "_until")):
            try:
                return i18n.format_date(date.fromisoformat(value), web.language)
            except ValueError:
                return value
        if key.endswith("_at"):
            try:
                return i18n.format_datetime(datetime.fromisoformat(value), web.language)
            except ValueError:
                return value
        return label_of(web, value)
    return ""


def fact_name(web: Web, key: str) -> str:
    words_for = FACT_WORDS.get(key) or FIELD_LABELS.get(key) or FACTS.get(key)
    return web._(words_for) if words_for else key


def timeline(web: Web, case: CasePublic) -> list[dict[str, Any]]:
    """The timeline, newest first, each entry's facts in words."""
    entries = []
    for entry in reversed(case.timeline or []):
        hidden = HIDDEN_SUPERVISION_FACTS if entry.kind == "supervision" else HIDDEN_FACTS
        facts = [
            (fact_name(web, k), words(web, k, v))
            for k, v in entry.facts.items()
            if k not in hidden and v not in (None, "", [])
        ]
        entries.append({"entry": entry, "facts": facts})
    return entries


def case_facts(web: Web, case: CasePublic) -> list[tuple[str, str]]:
    return [
        (web._(name), words(web, key, case.facts[key]))
        for key, name in FACTS.items()
        if case.facts.get(key) not in (None, "", [], False)
    ]


def consent_facts(web: Web, case: CasePublic) -> list[tuple[str, str]]:
    consent = case.consent or {}
    return [(web._(name), words(web, key, consent.get(key))) for key, name in CONSENT.items() if key in consent]


def case_path(case_id: str) -> str:
    return f"/workspace/cases/{case_id}"


# --- Scores over time: the monitoring visits' sustainability scores, as a table and a line chart ----

# The chart's drawing, in the SVG's own units (it scales to the width it is given): the plot's box
# within it, room for the scores on the left, the visits' days below and half the last day's width right.
CHART_WIDTH, CHART_HEIGHT = 320, 180
PLOT_LEFT, PLOT_RIGHT, PLOT_TOP, PLOT_BOTTOM = 34, 288, 8, 150
SCORE_TICKS = (0.0, 0.25, 0.5, 0.75, 1.0)
DAYS_LABELLED = 4  # more visits than this: only the first and the last day are written below the chart
# The lines drawn, the overall score first (``chart-<key>`` is each line's CSS class).
SERIES: tuple[tuple[str, str], ...] = (
    ("overall", N_("Overall")),
    *((d.value, SUSTAINABILITY_DIMENSIONS[d.value]) for d in SustainabilityDimension),
)


@dataclass
class VisitScores:
    """One monitoring visit as its row in "Scores over time" shows it."""

    visited_on: date
    scores: dict[str, float]  # by dimension
    overall: float
    below: list[str]  # the dimensions below their thresholds, in words
    survey: bool  # scored from the survey's answers (else the scores were typed in)


@dataclass
class ScoresOverTime:
    visits: list[VisitScores]
    chart: dict[str, Any]
    dimensions: list[tuple[str, str]]  # (dimension, its words), in order


def scores_over_time(web: Web, case: CasePublic) -> ScoresOverTime | None:
    """The case's monitoring visits in order, each with its scores, and the chart of them; None
    before the first visit."""
    visits = []
    for visit in case.facts.get("monitoring_visits") or []:
        try:
            visited_on = date.fromisoformat(str(visit["visited_on"]))
            scores = {str(k): float(v) for k, v in dict(visit["scores"]).items()}
            overall = float(visit["weighted_score"])
        except (KeyError, TypeError, ValueError):
            continue
        below = [web._(SUSTAINABILITY_DIMENSIONS.get(d, d)) for d in visit.get("below_threshold") or []]
        visits.append(VisitScores(visited_on, scores, overall, below, bool(visit.get("survey"))))
    if not visits:
        return None
    dimensions = [(d.value, web._(SUSTAINABILITY_DIMENSIONS[d.value])) for d in SustainabilityDimension]
    return ScoresOverTime(visits=visits, chart=scores_chart(web, visits), dimensions=dimensions)


def scores_chart(web: Web, visits: list[VisitScores]) -> dict[str, Any]:
    """A line per series across the visits (evenly spaced, in order), scores 0..1 upwards."""

    def x(i: int) -> float:
        if len(visits) == 1:
            return (PLOT_LEFT + PLOT_RIGHT) / 2
        return round(PLOT_LEFT + i * (PLOT_RIGHT - PLOT_LEFT) / (len(visits) - 1), 1)

    def y(score: float) -> float:
        return round(PLOT_BOTTOM - max(0.0, min(1.0, score)) * (PLOT_BOTTOM - PLOT_TOP), 1)

    lines = []
    for key, words in SERIES:
        values = [(i, v.overall if key == "overall" else v.scores.get(key)) for i, v in enumerate(visits)]
        points = [(x(i), y(value)) for i, value in values if value is not None]
        if points:
            lines.append(
                {
                    "key": key,
                    "words": web._(words),
                    "points": " ".join(f"{px},{py}" for px, py in points),
                    "dots": points,
                }
            )
    labelled = {0, len(visits) - 1} if len(visits) > DAYS_LABELLED else set(range(len(visits)))
    days = [
        {"x": x(i), "text": dates.format_date(v.visited_on, format="short", locale=Locale.parse(web.language))}
        for i, v in enumerate(visits)
        if i in labelled
    ]
    ticks = [{"y": y(t), "text": i18n.format_number(t, web.language, 2)} for t in SCORE_TICKS]
    return {
        "width": CHART_WIDTH,
        "height": CHART_HEIGHT,
        "left": PLOT_LEFT,
        "right": PLOT_RIGHT,
        "days_y": PLOT_BOTTOM + 20,
        "lines": lines,
        "days": days,
        "ticks": ticks,
    }
