"""Cases: open, read, list, record steps, assign tasks, withdraw consent."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

import sqlalchemy
from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import TypeAdapter
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm import defer
from sqlmodel import Session, col, select
from sqlmodel.sql.expression import SelectOfScalar
from temporalio.client import (
    WithStartWorkflowOperation,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.service import RPCError

from api.access_log import bind_ids
from api.audit import Auditor, AuditorDep, Entry, auditor_for
from api.deps import (
    IDENTIFIER,
    CurrentUser,
    SessionDep,
    SettingsDep,
    keyring_of,
    read_in_thread,
    release_connection,
    require,
)
from api.errors import Conflict, Forbidden, PreconditionFailed, Unavailable, Unprocessable, responses
from api.journeys import Access, actor_of, case_in_scope, case_readable, case_row, utcnow
from api.languages import N_
from api.pagination import Cursor, Keyset, Limit, page
from api.pipeline import Pipeline, commands_for
from api.schemas import (
    CaseCreate,
    CaseOpenRequest,
    CasePublic,
    CaseSearch,
    CaseSummary,
    DuplicateCase,
    MatchElsewhere,
    OpenStep,
    Owner,
    Page,
    Person,
    PersonView,
    StallReasonView,
    TimelineEntry,
)
from api.tasks import OpenedTask, opened_task
from reintegration import commands, person_index
from reintegration.case_facts import age_band, keep_facts
from reintegration.crypto import FREE_TEXT_KEYS, Keyring
from reintegration.db import CaseRecord, PersonRecord, TaskRecord, TimelineRecord, aware
from reintegration.persons import load_person, store_person
from reintegration.settings import Settings
from reintegration.tokens import Claims
from workflows import ids, rules
from workflows.case import CaseRun, CaseWorkflow
from workflows.model import (
    OPEN_TASK_STATUS_VALUES,
    CaseOpening,
    Role,
    Stage,
)

router = APIRouter(prefix="/v1/cases", tags=["cases"])

CaseId = Annotated[
    str, Path(max_length=64, pattern=IDENTIFIER, description="The case's id, as returned when it was opened")
]
TaskId = Annotated[str, Path(max_length=64, pattern=IDENTIFIER)]

CASEWORK = (Role.caseworker, Role.supervisor)


def etag(case: CaseRecord) -> str:
    return f'W/"{case.version}"'


def etag_header(stored: dict[str, Any]) -> dict[str, str]:
    """The ETag of a case response replayed for a repeated Idempotency-Key."""
    return {"ETag": f'W/"{stored["version"]}"'}


def parse_etag(value: str) -> int:
    """The version in an ETag this API gave; a malformed one matches nothing (412)."""
    digits = value.strip().removeprefix("W/").strip('"')
    if not digits.isdigit() or len(digits) > 12:
        raise PreconditionFailed(N_("If-Match does not hold an ETag of this case"))
    return int(digits)


TIMELINE_SHOWN = tuple(
    col(c)
    for c in (
        TimelineRecord.at,
        TimelineRecord.kind,
        TimelineRecord.name,
        TimelineRecord.actor_sub,
        TimelineRecord.actor_role,
        TimelineRecord.task_id,
        TimelineRecord.facts,
        TimelineRecord.position,
    )
)

# A case view's statements, built once: building one (its clauses, then its cache key) cost as much
# CPU as running it (``make bench``: a command's answer).
_OPEN_TASKS = (
    select(TaskRecord)
    .where(
        col(TaskRecord.case_id) == sqlalchemy.bindparam("case_id"),
        col(TaskRecord.status).in_(sorted(OPEN_TASK_STATUS_VALUES)),
    )
    .order_by(col(TaskRecord.assigned_at))
)
_TIMELINE_ROWS = (
    sqlalchemy.select(*TIMELINE_SHOWN)
    .where(col(TimelineRecord.case_id) == sqlalchemy.bindparam("case_id"))
    .order_by(col(TimelineRecord.position))
)
# A closure, or a reopening (of a case closed, and perhaps erased, since the view built on).
_CLOSING_OR_REOPENING = frozenset({("stage", "closed"), ("case", "reopened")})
_TIMELINE_AFTER = _TIMELINE_ROWS.where(col(TimelineRecord.position) > sqlalchemy.bindparam("after"))


@dataclass(frozen=True)
class OpenedCase:
    """What a case's view holds for one version of the case, its free text opened: its open tasks,
    its facts and, when read, its timeline. Kept by the keyring beside the case's key (never longer
    than the key is at hand here), so a case looked at again unchanged is not read and decrypted
    again: a closed case's timeline is a hundred rows or more."""

    tasks: tuple[OpenedTask, ...]
    facts: dict[str, Any]
    timeline: tuple[TimelineEntry, ...] | None
    # The timeline's last row's position (its order), if it has one: where a later version's reads on.
    last_position: int | None = None
    # The timeline as the API sends it, made by the first read that sends it (``case_json``).
    timeline_json: dict[str, bytes] = field(default_factory=dict, compare=False, repr=False)


def opened_case(
    session: Session, keyring: Keyring, case: CaseRecord, *, timeline: bool, before: OpenedCase | None = None
) -> OpenedCase:
    """The case's view opened for its version; the timeline read whole, or, given the view of an
    earlier version of the open case (``before``, with its timeline), only the rows written after
    it: its rows are written once, in the order of their position, and never rewritten while the
    case is open. The erasure rewrites a closed case's, so a closed case's view is never built on,
    nor is one across a closure or a reopening: the timeline is then read whole. A command's answer
    read the whole timeline again, a hundred rows or more by a journey's end."""
    tasks = session.execute(_OPEN_TASKS, {"case_id": case.case_id}).scalars().all()
    entries = None
    last = None
    if timeline:
        earlier: tuple[TimelineEntry, ...] = ()
        if before is not None and before.timeline and before.last_position is not None:
            earlier, last = before.timeline, before.last_position
        rows: Sequence[sqlalchemy.Row[Any]] = ()
        if last is not None:
            rows = session.execute(_TIMELINE_AFTER, {"case_id": case.case_id, "after": last}).all()
            if any((r.kind, r.name) in _CLOSING_OR_REOPENING for r in rows):
                earlier, last = (), None  # what came before may have been erased since: read it whole
        if last is None:
            rows = session.execute(_TIMELINE_ROWS, {"case_id": case.case_id}).all()
        entries = earlier + tuple(
            TimelineEntry(
                at=aware(r.at),
                kind=r.kind,
                name=r.name,
                actor_sub=r.actor_sub,
                actor_role=r.actor_role,
                task_id=r.task_id,
                facts=keyring.open_fields(case.case_id, r.facts, FREE_TEXT_KEYS),
            )
            for r in rows
        )
        if rows:
            last = rows[-1].position
        if case.status == "closed":
            last = None  # never built on: a closed case's erasure rewrites its rows
    return OpenedCase(
        tasks=tuple(opened_task(keyring, t) for t in tasks),
        facts=keyring.open_fields(
            case.case_id, {k: v for k, v in case.facts.items() if k != "consent"}, FREE_TEXT_KEYS
        ),
        timeline=entries,
        last_position=last,
    )


def _view_before(keyring: Keyring, case: CaseRecord) -> OpenedCase | None:
    """The view this process keeps of an earlier version of the open case, with its timeline: what
    ``opened_case`` reads on from. None for a closed case: its erasure rewrites the timeline's rows."""
    if case.status == "closed":
        return None
    kept = keyring.latest_opened(case.case_id, "case-view")
    if kept is None or kept[0] >= case.version:
        return None
    before: OpenedCase = kept[1]
    return before


def case_public(
    session: Session, case: CaseRecord, settings: Settings, *, person: bool = False, timeline: bool = True
) -> CasePublic:
    now = utcnow()
    keyring = keyring_of(session)
    opened: OpenedCase | None = keyring.opened(case.case_id, "case-view", case.version)
    if opened is None or (timeline and opened.timeline is None):
        before = _view_before(keyring, case) if timeline else None
        opened = opened_case(session, keyring, case, timeline=timeline, before=before)
        keyring.keep_opened(case.case_id, "case-view", case.version, opened)
    steps = [
        OpenStep(
            step=i["name"],
            due_at=i["due_at"],
            turn=i["turn"],
            overdue=i["due_at"] is not None and datetime.fromisoformat(i["due_at"]) < now,
        )
        for i in case.open_items
        if i["kind"] == "step"
    ]
    person_data = None
    if person:
        stored = load_person(session, keyring, case_id=case.case_id)
        person_data = PersonView.model_validate(stored) if stored else None
    return CasePublic(
        case_id=case.case_id,
        reference=case.reference,
        version=case.version,
        stage=case.stage,
        status="stalled" if case.stalled else case.status,
        stalled_since=aware(case.stalled_since) if case.stalled_since else None,
        stall_reasons=[stall_reason(r, now) for r in case.stall_reasons],
        htcds_status=htcds_status(case),
        pathway=case.pathway,
        owner=Owner(country=case.owner_country, caseworker=case.owner_caseworker),
        origin_country=case.origin_country,
        destination_country=case.destination_country,
        is_minor=case.is_minor,
        opened_at=aware(case.opened_at),
        updated_at=aware(case.updated_at),
        closed_at=aware(case.closed_at) if case.closed_at else None,
        closure_reason=case.closure_reason,
        allowed_steps=case.allowed_steps,
        open_steps=steps,
        open_tasks=[t.public(now) for t in opened.tasks],
        consent=case.facts.get("consent"),
        facts=opened.facts,
        timeline=list(opened.timeline) if timeline and opened.timeline is not None else None,
        person=person_data,
    )


_TIMELINE = TypeAdapter(list[TimelineEntry])


def case_json(session: Session, public: CasePublic) -> bytes:
    """``public`` as the API sends it (as FastAPI would serialize it), its timeline's JSON made once
    per version of the case: the entries of the view the keyring keeps are frozen and shared, so the
    same entries make the same bytes. Serializing a closed case's hundred rows again was a tenth of
    each read's CPU (``make bench``)."""
    kept: OpenedCase | None = keyring_of(session).opened(public.case_id, "case-view", public.version)
    if (
        public.timeline is None
        or kept is None
        or kept.timeline is None
        or len(kept.timeline) != len(public.timeline)
        or any(a is not b for a, b in zip(kept.timeline, public.timeline, strict=True))
    ):
        return public.model_dump_json(by_alias=True).encode()
    timeline = kept.timeline_json.get("timeline")
    if timeline is None:  # two threads may both make it: the same bytes
        timeline = kept.timeline_json["timeline"] = _TIMELINE.dump_json(list(kept.timeline))
    head = public.model_dump_json(by_alias=True, exclude={"timeline"}).encode()
    return head[:-1] + b',"timeline":' + timeline + b"}"


def htcds_status(case: CaseRecord) -> str:
    """HTCDS ``cas_Status``."""
    if case.status == "closed":
        return "ClosedReferred" if case.closure_reason == "transferred" else "Closed"
    return "Active"


def stall_reason(reason: dict[str, Any], now: datetime) -> StallReasonView:
    due = datetime.fromisoformat(reason["due_at"])
    return StallReasonView(
        item=reason["key"],
        kind=reason["kind"],
        name=reason["name"],
        task_id=reason["task_id"],
        agency_id=reason["agency_id"],
        turn=reason["turn"],
        due_at=due,
        overdue_days=round(max((now - due).total_seconds(), 0) / 86400, 1),
    )


def _respond(response: Response, session: Session, case_id: str, settings: Settings) -> CasePublic:
    """The case as it is after a change, with its ETag: its row as plain values (``case_row``), its
    tasks loaded again (``expire_all``: the checks may have loaded them before the change)."""
    session.expire_all()
    case = case_row(session, case_id)
    assert case is not None
    response.headers["ETag"] = etag(case)
    return case_public(session, case, settings)


# --- Opening -------------------------------------------------------------------------------------


@router.post(
    "",
    status_code=201,
    response_model=CasePublic,
    summary="Open a case",
    responses=responses(401, 403, 409, 422, 503),
)
async def open_case(
    body: CaseOpenRequest,
    response: Response,
    p: Annotated[Pipeline, commands_for(Role.caseworker)],
) -> CasePublic | JSONResponse:
    """Open a case: the person's data goes to the vault, the journey's workflow starts. A person who
    may have a case already (the same identity number, name and birth date, family name and birth
    date: ``reintegration.person_index``) is answered ``409`` with those cases in the caller's scope
    and the offices elsewhere, unless ``confirm_new`` says to open it anyway."""
    _check_opening_scope(p.user, body)  # a repeat of the request is held to it as the first one is

    def replay(stored: dict[str, Any]) -> dict[str, Any]:
        case_in_scope(p.session, stored["case_id"], p.user)  # 404 once the case left the caller's countries
        return stored

    overridden: dict[str, int] = {}  # the possible duplicates it was opened over, counted

    async def run(case_id: str) -> CasePublic:
        bind_ids(case_id=case_id)
        return await _open_case(p, case_id, body, response, overridden)

    return await p.once(
        path="/v1/cases",
        request=body.model_dump(mode="json"),
        run=run,
        audit=lambda answer: [
            Entry(
                "case.open",
                case_id=answer.get("case_id"),
                detail={"possible_duplicates": overridden} if overridden else {},
            )
        ],
        status_code=201,
        headers=etag_header,
        replay=replay,
    )


def _check_opening_scope(user: Claims, body: CaseCreate) -> None:
    country = body.identification.country
    if not user.sees_country(country):
        raise Unprocessable(N_("you do not work in {country}"), params={"country": country})


async def _open_case(
    p: Pipeline, case_id: str, body: CaseOpenRequest, response: Response, overridden: dict[str, int]
) -> CasePublic:
    _check_opening_scope(p.user, body)
    existing = await p.db(p.session.get, CaseRecord, case_id)
    if existing is not None:  # a claim abandoned by a crash after the case was opened
        response.headers["ETag"] = etag(existing)
        return await p.db(case_public, p.session, existing, p.settings)
    opening = _opening(case_id, body, p.user, p.settings)
    found = await p.db(possible_duplicates, p.session, p.user, p.settings, body.person, case_id)
    if found.any:
        if not body.confirm_new:
            await p.db(p.auditor.record, "case.duplicate-check", status=409, detail=found.counts)
            raise PossibleDuplicates(found)
        overridden.update(found.counts)  # said in the case.open row
    await p.db(_keep_person, p.session, case_id, body)
    start = WithStartWorkflowOperation(
        CaseWorkflow.run,
        CaseRun(opening=opening),
        id=ids.workflow_id(case_id),
        task_queue=p.settings.temporal_task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )
    await p.db(release_connection, p.session)  # no connection held while Temporal answers
    try:
        # temporalio types an update declared by name on an async method as returning its coroutine: awaited,
        # this is the update's CommandResult (not needed: the update returns once the case is in the read model).
        await p.client.execute_update_with_start_workflow(  # type: ignore[unused-coroutine]  # typing only, above
            CaseWorkflow.opened, start_workflow_operation=start, rpc_timeout=commands.UPDATE_TIMEOUT
        )
    except (RPCError, WorkflowUpdateRPCTimeoutOrCancelledError):
        raise Unavailable(N_("Temporal is unavailable; retry with the same Idempotency-Key")) from None
    response.status_code = 201
    return await p.db(_respond, response, p.session, case_id, p.settings)


def _opening(case_id: str, body: CaseCreate, user: Claims, settings: Settings) -> CaseOpening:
    """The workflow's input: the case's facts, never the person's identity (that goes to the vault)."""
    country = body.identification.country
    person = body.person
    if person.birthdate is not None:
        if person.birthdate > body.identification.identified_on:
            raise Unprocessable(N_("the birth date is after the identification date"))
        is_minor = rules.age_on(person.birthdate, body.identification.identified_on) < settings.journey.minor_age
    else:
        is_minor = person.presumed_minor
    return CaseOpening(
        case_id=case_id,
        reference=f"{country}-{body.identification.identified_on.year}-{uuid.uuid4().hex[:6].upper()}",
        owner_country=country,
        owner_caseworker=user.sub,
        origin_country=body.origin_country,
        identified_on=body.identification.identified_on,
        is_minor=is_minor,
        exploitation_types=body.identification.exploitation_types,
        trafficking_status=body.identification.trafficking_status,
        referred_by=body.identification.referred_by,
        initial_consent=body.consent,
        opened_by=actor_of(user),
        config=settings.journey,
    )


def _keep_person(session: Session, case_id: str, body: CaseCreate) -> None:
    """The person's data into the vault, sealed with the case's key, and its blind indexes (once: a
    retry finds it there)."""
    if session.get(PersonRecord, case_id) is None:
        record = body.person.model_dump(mode="json")
        record["identification_place"] = body.identification.place
        store_person(session, keyring_of(session), case_id=case_id, person=record)
        person_index.index_person(session, keyring_of(session), case_id, record)
        # The statistics' anonymous copy, outside the vault: it survives an erasure.
        band = age_band(body.person.birthdate, body.identification.identified_on)
        keep_facts(session, case_id, sex=body.person.gender, band=band, victim=body.victim)
        session.commit()


@dataclass(frozen=True)
class Duplicates:
    """The cases that may be of the same person: in the caller's scope, and the other countries."""

    in_scope: list[DuplicateCase]
    elsewhere: list[MatchElsewhere]

    @property
    def any(self) -> bool:
        return bool(self.in_scope or self.elsewhere)

    @property
    def counts(self) -> dict[str, int]:
        """What the audit trail says of them: how many, never which."""
        return {"in_scope": len(self.in_scope), "elsewhere": len(self.elsewhere)}


class PossibleDuplicates(Conflict):
    """Not kept for the Idempotency-Key: it names cases (held to the caller's scope only as it is
    made), and a repeat is asked again of the cases as they are then."""

    title = N_("Possible duplicate")
    stored = False

    def __init__(self, found: Duplicates) -> None:
        super().__init__(
            N_(
                "this person may have a case already: open the case listed, or ask the office named; "
                "send again with confirm_new to open a new case anyway"
            ),
            allowed_steps=[],
            duplicates=[d.model_dump() for d in found.in_scope],
            elsewhere=[m.model_dump() for m in found.elsewhere],
        )


def possible_duplicates(session: Session, user: Claims, settings: Settings, person: Person, case_id: str) -> Duplicates:
    """The opened cases whose person shares an indexed form with this one (``person_index``)."""
    lookup = person_index.lookup(keyring_of(session), person_index.duplicate_candidates(person.model_dump(mode="json")))
    ids = person_index.matching_cases(session, lookup, exclude=[case_id])
    if not ids:
        return Duplicates([], [])
    rows = session.exec(
        select(CaseRecord).where(col(CaseRecord.case_id).in_(sorted(ids))).order_by(col(CaseRecord.opened_at).desc())
    ).all()
    in_scope = [
        DuplicateCase(case_id=c.case_id, reference=c.reference, stage=c.stage, owner_country=c.owner_country)
        for c in rows
        if user.sees_country(c.owner_country)
    ]
    countries = sorted({c.owner_country for c in rows if not user.sees_country(c.owner_country)})
    elsewhere = [
        MatchElsewhere(
            country=country,
            contact=settings.office_contacts.get(country) or f"the supervisors in {country}",
        )
        for country in countries
    ]
    return Duplicates(in_scope, elsewhere)


# --- Search --------------------------------------------------------------------------------------


@router.post(
    "/search",
    response_model=Page[CaseSummary],
    summary="Find cases in scope by reference, name or identity number",
    description=(
        "A search by name or identity number compares keyed hashes of their normalised forms (never a "
        "name in clear; see `reintegration/person_index.py`): the whole name, in any order, with accents, "
        "case and spacing ignored. A POST, so that no name goes into a URL. Only cases in your scope; each "
        "search is audited (`case.search`: what it was by and how many it found, never what was sought)."
    ),
    responses=responses(401, 403, 422, 503),
)
def search_cases(
    body: CaseSearch,
    user: Annotated[Claims, require(*CASEWORK)],
    session: SessionDep,
    auditor: AuditorDep,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[CaseSummary]:
    query = cases_query(user)
    if body.reference is not None:
        query = query.where(col(CaseRecord.reference) == body.reference.upper())
    else:
        candidates = person_index.search_candidates(
            name=body.name, birthdate=body.birthdate, identity_number=body.identity_number
        )
        if not candidates:
            raise Unprocessable(N_("the name or number has no letters or digits to search by"))
        ids = person_index.matching_cases(session, person_index.lookup(keyring_of(session), candidates))
        query = query.where(col(CaseRecord.case_id).in_(sorted(ids)))
    rows, next_cursor = page(session, query, CASES_ORDER, limit=limit, cursor=cursor)
    auditor.record("case.search", detail={"by": body.by(), "results": len(rows)})
    return Page[CaseSummary](items=[case_summary(case) for case in rows], next_cursor=next_cursor)


# --- Reading -------------------------------------------------------------------------------------


@router.get("/{case_id}", response_model=CasePublic, summary="Read a case", responses=responses(401, 403, 404, 503))
async def read_case(
    case_id: CaseId,
    request: Request,
    response: Response,
    user: CurrentUser,
    session: SessionDep,
    include: Annotated[
        str | None, Query(pattern="^person$", description="`person` to include the person's data")
    ] = None,
) -> Response:
    # The settings and the auditor from the request, not as dependencies: the most read route.
    settings, auditor = request.app.state.settings, auditor_for(request, session, user)

    def read() -> Response:
        public = read_case_now(session, case_id, user, settings, auditor, response, person=include == "person")
        # Sent as it is (FastAPI neither checks nor serializes it again), with the ETag set above.
        etag_of = {"ETag": response.headers["ETag"]}
        return Response(case_json(session, public), media_type="application/json", headers=etag_of)

    return await read_in_thread(session, read)


def shares_person(facts: dict[str, Any]) -> bool:
    """Whether the person consented to their data being shared (and has not withdrawn consent): what
    lets an office other than the one managing the case read the person's details."""
    return bool((facts.get("consent") or {}).get("data_sharing")) and not facts.get("consent_withdrawn_on")


def read_case_now(
    session: Session,
    case_id: str,
    user: Claims,
    settings: Settings,
    auditor: Auditor,
    response: Response,
    *,
    person: bool = False,
) -> CasePublic:
    """``GET /v1/cases/{id}`` in the calling thread (the workspace's pages call it too): the scope,
    the ETag and, with ``person``, the ``person.read`` audit row before the data leaves. The office
    about to take the case, and the one that had it, read it too (``case_access``); the person's
    details only if the person consented to sharing their data (403 otherwise)."""
    case, access = case_readable(session, case_id, user, read_only=True)
    if person and access != Access.owner and not shares_person(case.facts or {}):
        raise Forbidden(N_("the person's details stay with the office managing the case: no consent to share them"))
    response.headers["ETag"] = etag(case)
    public = case_public(session, case, settings, person=person)
    public.access = access.value
    if access != Access.owner:
        # Another office reads the case's tasks as facts: what the managing office and its partners
        # wrote on them (notes, outcomes, reasons for declining) stays with them.
        for task in public.open_tasks:
            task.notes = task.outcome_notes = task.decline_reason = ""
    if person:  # audited before the data leaves; no row, no data
        auditor.record("person.read", case_id=case_id, detail={"found": public.person is not None})
    return public


# Newest first.
CASES_ORDER = Keyset(col(CaseRecord.opened_at), col(CaseRecord.case_id), descending=True)


@router.get("", response_model=Page[CaseSummary], summary="List cases in scope", responses=responses(401, 403, 422))
async def list_cases(
    user: Annotated[Claims, require(*CASEWORK)],
    session: SessionDep,
    settings: SettingsDep,
    stage: Stage | None = None,
    status: Annotated[str | None, Query(pattern="^(active|stalled|closed)$")] = None,
    pathway: Annotated[str | None, Query(pattern="^(voluntary_return|residence)$")] = None,
    country: Annotated[str | None, Query(pattern="^[A-Z]{2}$")] = None,
    agency: Annotated[str | None, Query(max_length=100, pattern=IDENTIFIER)] = None,
    caseworker: Annotated[str | None, Query(max_length=200, pattern=IDENTIFIER)] = None,
    overdue_since: Annotated[datetime | None, Query(description="Cases with an item due before this time")] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[CaseSummary]:
    query = cases_query(
        user,
        stage=stage,
        status=status,
        pathway=pathway,
        country=country,
        agency=agency,
        caseworker=caseworker,
        overdue_since=overdue_since,
    )

    def read() -> Page[CaseSummary]:
        rows, next_cursor = page(session, query, CASES_ORDER, limit=limit, cursor=cursor)
        return Page[CaseSummary](items=[case_summary(case) for case in rows], next_cursor=next_cursor)

    return await read_in_thread(session, read)


# What a list of cases does not read (``case_summary``); loaded only if something asks for it.
SUMMARY_ONLY = tuple(
    defer(sa_inspect(CaseRecord).attrs[name].class_attribute)
    for name in ("facts", "open_items", "stall_reasons", "allowed_steps", "agencies")
)


def cases_query(
    user: Claims,
    *,
    stage: Stage | None = None,
    status: str | None = None,
    pathway: str | None = None,
    country: str | None = None,
    agency: str | None = None,
    caseworker: str | None = None,
    overdue_since: datetime | None = None,
) -> SelectOfScalar[CaseRecord]:
    """The cases in the caller's scope that pass the filters (the list's query, for the API and the
    workspace alike; each pages it in its own order). Its rows are for ``case_summary``: the JSON
    columns that a summary does not show are not loaded (decoding them was a fifth of a page's CPU)."""
    query = select(CaseRecord).options(*SUMMARY_ONLY)
    if user.country_scope is not None:
        query = query.where(col(CaseRecord.owner_country).in_(user.country_scope))
    if stage:
        query = query.where(col(CaseRecord.stage) == stage.value)
    if status == "stalled":
        query = query.where(col(CaseRecord.stalled))
    elif status == "active":
        query = query.where(col(CaseRecord.status) == "active", ~col(CaseRecord.stalled))
    elif status == "closed":
        query = query.where(col(CaseRecord.status) == "closed")
    if pathway:
        query = query.where(col(CaseRecord.pathway) == pathway)
    if country:
        query = query.where(col(CaseRecord.owner_country) == country)
    if caseworker:
        query = query.where(col(CaseRecord.owner_caseworker) == caseworker)
    if agency:  # a set computed once from the agency's index, not a probe per case
        query = query.where(
            col(CaseRecord.case_id).in_(select(col(TaskRecord.case_id)).where(col(TaskRecord.agency_id) == agency))
        )
    if overdue_since:
        try:
            cutoff = aware(overdue_since).astimezone(UTC)  # stored times are UTC
        except OverflowError:  # e.g. 0001-01-01T00:00:00+14:00, which has no time in UTC
            raise Unprocessable(N_("overdue_since is out of range")) from None
        query = query.where(col(CaseRecord.status) == "active", col(CaseRecord.next_due_at) < cutoff)
    return query


def case_summary(case: CaseRecord) -> CaseSummary:
    return CaseSummary(
        case_id=case.case_id,
        reference=case.reference,
        stage=case.stage,
        status="stalled" if case.stalled else case.status,
        pathway=case.pathway,
        owner=Owner(country=case.owner_country, caseworker=case.owner_caseworker),
        opened_at=aware(case.opened_at),
        updated_at=aware(case.updated_at),
        next_due_at=aware(case.next_due_at) if case.next_due_at else None,
    )
