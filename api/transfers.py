"""Across borders: a case offered to another country's office, which accepts or refuses it with a
reason (as Primero's transfers), and the reintegration plan the receiving office drafts before the
person arrives.

- ``POST /v1/cases/{id}/transfers``: the office managing the case offers it to ``to_country``
  (optionally naming the caseworker there). One pending transfer per case; never to its own country.
- ``GET /v1/transfers`` (``direction=incoming|outgoing``), ``GET /v1/transfers/{id}``.
- ``POST /v1/transfers/{id}/accept``: a caseworker or supervisor of ``to_country`` takes the case:
  the case's workflow moves it (owner country and caseworker; its history stays with it).
- ``POST /v1/transfers/{id}/refuse``: the receiving office says no, with a reason.
- ``GET/PUT /v1/cases/{id}/plan-draft``: the reintegration plan drafted by the receiving caseworker
  (or the owning office) before arrival.

While a transfer is pending, the receiving office reads the case (``api.journeys.case_access``);
once accepted, the sending office keeps reading it and its timeline. The person's details cross only
with the person's consent to share them.

(No ``from __future__ import annotations`` here: ``commands_for`` reads the routes' real annotations.)
"""

import asyncio
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import structlog
from fastapi import APIRouter, Body, Path, Query, Response
from fastapi.responses import JSONResponse
from pydantic import Field
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from api.audit import AuditorDep, Entry
from api.cases import CaseId, _respond
from api.deps import IDENTIFIER, SessionDep, keyring_of, require
from api.errors import Conflict, Forbidden, NotFound, Unprocessable, responses
from api.journeys import Access, case_readable
from api.languages import N_
from api.pagination import Cursor, Keyset, Limit, page
from api.pipeline import Pipeline, commands_for
from api.schemas import CasePublic, Page
from api.users import known_owner
from reintegration import directory, inbox
from reintegration.db import CaseRecord, PlanDraftRecord, TransferRecord, aware
from reintegration.tokens import Claims
from workflows.model import CountryCode, ReassignOwner, Role, Service, Strict

log = structlog.get_logger("api")
router = APIRouter(tags=["transfers"])

STAFF = (Role.caseworker, Role.supervisor)
TransferId = Annotated[str, Path(max_length=64, pattern=r"^[0-9a-f-]{36}$")]
REASON_PURPOSE = "transfer-reason"
REFUSAL_PURPOSE = "transfer-refusal"
DRAFT_PURPOSE = "plan-draft"
TRANSFERS_ORDER = Keyset(col(TransferRecord.requested_at), col(TransferRecord.transfer_id), descending=True)


class TransferRequest(Strict):
    """Offer the case to another country's office."""

    to_country: CountryCode
    to_caseworker: str | None = Field(
        default=None, max_length=100, pattern=IDENTIFIER, description="A caseworker there, if one is agreed"
    )
    reason: str = Field(min_length=1, max_length=2000, description="Why the case should be managed there")


class TransferDecision(Strict):
    """The receiving office's acceptance: the caseworker who takes the case (the one the transfer
    named, else the accepting caseworker herself; a supervisor names one)."""

    caseworker: str | None = Field(default=None, max_length=100, pattern=IDENTIFIER)


class TransferRefusal(Strict):
    reason: str = Field(min_length=1, max_length=2000)


class TransferPublic(Strict):
    transfer_id: str
    case_id: str
    case_reference: str
    from_country: str
    from_caseworker: str | None
    to_country: str
    to_caseworker: str | None
    status: Literal["pending", "accepting", "accepted", "refused", "withdrawn"]
    reason: str
    refusal: str
    requested_by: str
    requested_at: datetime
    decided_by: str | None
    decided_at: datetime | None


class PlannedService(Strict):
    service: Service
    agency_id: str | None = Field(default=None, max_length=100, pattern=IDENTIFIER)


class PlanDraft(Strict):
    """The reintegration plan as drafted before arrival: the services foreseen, and notes."""

    services: list[PlannedService] = Field(default_factory=list, max_length=20)
    notes: str = Field(default="", max_length=4000)


class PlanDraftPublic(PlanDraft):
    version: int
    updated_by: str
    updated_at: datetime


def transfer_public(session: Session, row: TransferRecord, viewer: Claims | None = None) -> TransferPublic:
    """The transfer as ``viewer`` may see it: an office that was offered the case and did not take
    it keeps the fact of the offer, not its reasons (free text about the person)."""
    keyring = keyring_of(session)
    hidden = viewer is not None and not viewer.sees_country(row.from_country) and row.status in ("refused", "withdrawn")

    def opened(value: str, purpose: str) -> str:
        try:
            return keyring.open(row.case_id, value, purpose=purpose) if value else ""
        except Exception:  # the case's key was destroyed (erasure): the text is gone with it
            return ""

    return TransferPublic(
        transfer_id=row.transfer_id,
        case_id=row.case_id,
        case_reference=row.case_reference,
        from_country=row.from_country,
        from_caseworker=row.from_caseworker,
        to_country=row.to_country,
        to_caseworker=row.to_caseworker,
        status=row.status,  # type: ignore[arg-type]
        reason="" if hidden else opened(row.reason, REASON_PURPOSE),
        refusal="" if hidden else opened(row.refusal, REFUSAL_PURPOSE),
        requested_by=row.requested_by,
        requested_at=aware(row.requested_at),
        decided_by=row.decided_by,
        decided_at=aware(row.decided_at) if row.decided_at else None,
    )


def _visible(row: TransferRecord | None, user: Claims) -> TransferRecord:
    if row is None or not (user.sees_country(row.from_country) or user.sees_country(row.to_country)):
        raise NotFound(N_("no such transfer"))
    return row


def _claim(session: Session, transfer_id: str, sub: str) -> str:
    """Claim the pending transfer for this acceptance ("accepting"), so no refusal or other acceptance
    can answer it meanwhile; "accepted" if this caller's own acceptance went through already."""
    found = session.get(TransferRecord, transfer_id)
    assert found is not None
    if found.status == "accepted" and found.decided_by == sub:
        return "accepted"
    if found.status == "accepting" and found.decided_by == sub:
        return "accepting"  # this caller's attempt that did not finish: it goes on
    claimed = session.execute(
        update(TransferRecord)
        .where(col(TransferRecord.transfer_id) == transfer_id, col(TransferRecord.status) == "pending")
        .values(status="accepting", decided_by=sub)
    ).rowcount  # type: ignore[attr-defined]
    session.commit()
    if not claimed:
        raise Conflict(N_("the transfer is {status} already"), allowed_steps=[], params={"status": found.status})
    return "accepting"


def _unclaim(session: Session, transfer_id: str, sub: str) -> None:
    """The acceptance failed (the journey refused it, Temporal away): the offer is pending again."""
    session.rollback()
    session.execute(
        update(TransferRecord)
        .where(
            col(TransferRecord.transfer_id) == transfer_id,
            col(TransferRecord.status) == "accepting",
            col(TransferRecord.decided_by) == sub,
        )
        .values(status="pending", decided_by=None)
    )
    session.commit()


# --- Offering a case ---------------------------------------------------------------------------


@router.post(
    "/v1/cases/{case_id}/transfers",
    status_code=201,
    response_model=TransferPublic,
    summary="Offer the case to another country's office",
    description=(
        "The receiving office reads the case while the transfer is pending, and accepts or refuses it. "
        "409 while another transfer of the case is pending, or when the case is closed; 422 to the case's own "
        "country, or naming someone who is not a caseworker there."
    ),
    responses=responses(401, 403, 404, 409, 422, 503),
)
async def request_transfer(
    case_id: CaseId,
    body: Annotated[
        TransferRequest,
        Body(
            openapi_examples={
                "to PT": {"value": {"to_country": "PT", "reason": "The person moved to Porto to live with family"}}
            }
        ),
    ],
    p: Annotated[Pipeline, commands_for(*STAFF)],
) -> TransferPublic | JSONResponse:
    case = await p.case(case_id)

    async def run(transfer_id: str) -> TransferPublic:
        def create() -> tuple[TransferPublic, list[Any]]:
            found = p.session.get(TransferRecord, transfer_id)
            if found is not None:  # a retry of this very request, its answer lost
                return transfer_public(p.session, found), []
            if case.status == "closed":
                raise Conflict(N_("the case is closed"), allowed_steps=[])
            if body.to_country == case.owner_country:
                raise Unprocessable(
                    N_("the case is already managed in {country}: reassign it there instead"),
                    params={"country": body.to_country},
                )
            if body.to_caseworker is not None:
                known_owner(p.session, body.to_caseworker, body.to_country)
            pending = p.session.exec(
                select(TransferRecord.transfer_id).where(
                    col(TransferRecord.case_id) == case_id, col(TransferRecord.status) == "pending"
                )
            ).first()
            if pending is not None:
                raise Conflict(N_("a transfer of this case is pending already"), allowed_steps=[])
            now = datetime.now(UTC)
            row = TransferRecord(
                transfer_id=transfer_id,
                case_id=case_id,
                case_reference=case.reference,
                from_country=case.owner_country,
                from_caseworker=case.owner_caseworker,
                to_country=body.to_country,
                to_caseworker=body.to_caseworker,
                reason=keyring_of(p.session).seal(case_id, body.reason, purpose=REASON_PURPOSE),
                requested_by=p.user.sub,
                requested_at=now,
            )
            p.session.add(row)
            try:
                p.session.flush()  # the one pending transfer of a case: a second at the same moment fails here
            except IntegrityError:
                p.session.rollback()
                raise Conflict(N_("a transfer of this case is pending already"), allowed_steps=[]) from None
            users = (
                list(directory.active_users(p.session, [body.to_caseworker]).values())
                if body.to_caseworker
                else directory.supervisors_of(p.session, body.to_country)
            )
            mails = inbox.notify(
                p.session,
                event_id=f"transfer-{transfer_id}",
                case_id=case_id,
                case_reference=case.reference,
                kind="case.transfer-requested",
                users=[u for u in users if u.user_id != p.user.sub],
                facts={"from_country": case.owner_country, "to_country": body.to_country, "stage": case.stage},
                at=now,
                mail=p.settings.smtp_host is not None,
            )
            p.session.commit()
            p.session.refresh(row)
            return transfer_public(p.session, row), mails

        answer, mails = await p.db(create)
        await inbox.start_mails(p.client, p.settings, mails)
        return answer

    return await p.once(
        path=f"/v1/cases/{case_id}/transfers",
        request=body.model_dump(mode="json"),
        run=run,
        audit=lambda answer: [
            Entry(
                "case.transfer",
                case_id=case_id,
                detail={"transfer_id": answer.get("transfer_id"), "to_country": body.to_country},
            )
        ],
        status_code=201,
        case_id=case_id,
    )


# --- Reading transfers -------------------------------------------------------------------------


@router.get(
    "/v1/transfers",
    response_model=Page[TransferPublic],
    summary="Transfers to or from the caller's countries, newest first",
    responses=responses(401, 403, 422, 503),
)
def list_transfers(
    user: Annotated[Claims, require(*STAFF)],
    session: SessionDep,
    direction: Annotated[Literal["incoming", "outgoing"], Query()] = "incoming",
    status: Annotated[Literal["pending", "accepted", "refused"] | None, Query()] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[TransferPublic]:
    column = col(TransferRecord.to_country) if direction == "incoming" else col(TransferRecord.from_country)
    query = select(TransferRecord)
    scope = user.country_scope
    if scope is not None:
        query = query.where(column.in_(scope))
    if status is not None:
        query = query.where(col(TransferRecord.status) == status)
    rows, following = page(session, query, TRANSFERS_ORDER, limit=limit, cursor=cursor)
    return Page(items=[transfer_public(session, r, user) for r in rows], next_cursor=following)


@router.get(
    "/v1/transfers/{transfer_id}",
    response_model=TransferPublic,
    summary="One transfer",
    responses=responses(401, 403, 404, 422, 503),
)
def get_transfer(
    transfer_id: TransferId, user: Annotated[Claims, require(*STAFF)], session: SessionDep
) -> TransferPublic:
    return transfer_public(session, _visible(session.get(TransferRecord, transfer_id), user), user)


# --- The receiving office's answer -------------------------------------------------------------


def _transfer_fields(session: Session, transfer_id: str, user: Claims) -> tuple[str, str, str, str | None]:
    """The case, the receiving and the sending country, and the caseworker named, of a transfer the
    caller may see (404 otherwise)."""
    row = _visible(session.get(TransferRecord, transfer_id), user)
    return row.case_id, row.to_country, row.from_country, row.to_caseworker


@router.post(
    "/v1/transfers/{transfer_id}/accept",
    response_model=CasePublic,
    summary="Take the case: the receiving office accepts the transfer",
    description="The case as it is after it, now managed in the transfer's country.",
    responses=responses(401, 403, 404, 409, 422, 503),
)
async def accept_transfer(
    transfer_id: TransferId,
    body: Annotated[TransferDecision, Body(openapi_examples={"accept": {"value": {"caseworker": "cw-pt-1"}}})],
    response: Response,
    p: Annotated[Pipeline, commands_for(*STAFF)],
) -> CasePublic | JSONResponse:
    # Its fields as plain values: the session's objects expire as its transactions end below, and
    # reading one on the event loop would load it there.
    case_id, to_country, from_country, to_caseworker = await p.db(_transfer_fields, p.session, transfer_id, p.user)
    if not p.user.sees_country(to_country):
        raise Forbidden(N_("the receiving office answers a transfer"))
    taker = body.caseworker or to_caseworker or (p.user.sub if p.user.role == Role.caseworker else None)
    if taker is None:
        raise Unprocessable(N_("name the caseworker who takes the case"))

    async def run(_: str) -> CasePublic:
        await p.db(known_owner, p.session, taker, to_country)  # before anything changes
        if await p.db(_claim, p.session, transfer_id, p.user.sub) == "accepted":
            return await p.db(_respond, response, p.session, case_id, p.settings)  # a retry of mine
        case = await p.db(p.session.get, CaseRecord, case_id)
        try:
            # Moved already: an acceptance whose record a crash interrupted; only the record is left to do.
            if case is None or case.owner_country != to_country:
                command = ReassignOwner(caseworker=taker, country=to_country, from_country=from_country, actor=p.actor)
                await p.send(case_id, "reassign_owner", command)
        except BaseException:
            await asyncio.shield(p.db(_unclaim, p.session, transfer_id, p.user.sub))
            raise

        def decided() -> CasePublic:
            # The projection of the journey's ``transferred`` event records it too; whichever is first.
            p.session.execute(
                update(TransferRecord)
                .where(
                    col(TransferRecord.transfer_id) == transfer_id,
                    col(TransferRecord.status).in_(("pending", "accepting")),
                )
                .values(status="accepted", decided_by=p.user.sub, decided_at=datetime.now(UTC), to_caseworker=taker)
            )
            p.session.commit()
            return _respond(response, p.session, case_id, p.settings)

        return await p.db(decided)

    return await p.once(
        path=f"/v1/transfers/{transfer_id}/accept",
        request=body.model_dump(mode="json"),
        run=run,
        audit=lambda _: [
            Entry("case.transfer-accept", case_id=case_id, detail={"transfer_id": transfer_id, "caseworker": taker})
        ],
        case_id=case_id,
    )


@router.post(
    "/v1/transfers/{transfer_id}/refuse",
    response_model=TransferPublic,
    summary="Refuse the case, with a reason",
    responses=responses(401, 403, 404, 409, 422, 503),
)
async def refuse_transfer(
    transfer_id: TransferId,
    body: Annotated[
        TransferRefusal, Body(openapi_examples={"refuse": {"value": {"reason": "No reintegration partner there yet"}}})
    ],
    p: Annotated[Pipeline, commands_for(*STAFF)],
) -> TransferPublic | JSONResponse:
    row = await p.db(lambda: _visible(p.session.get(TransferRecord, transfer_id), p.user))
    if not p.user.sees_country(row.to_country):
        raise Forbidden(N_("the receiving office answers a transfer"))

    async def run(_: str) -> TransferPublic:
        def refuse() -> tuple[TransferPublic, list[Any]]:
            found = p.session.get(TransferRecord, transfer_id)
            assert found is not None
            if found.status == "refused" and found.decided_by == p.user.sub:
                return transfer_public(p.session, found), []  # a retry of mine, its answer lost
            if found.status != "pending":
                raise Conflict(
                    N_("the transfer is {status} already"), allowed_steps=[], params={"status": found.status}
                )
            now = datetime.now(UTC)
            refused = p.session.execute(
                update(TransferRecord)
                .where(col(TransferRecord.transfer_id) == transfer_id, col(TransferRecord.status) == "pending")
                .values(
                    status="refused",
                    decided_by=p.user.sub,
                    decided_at=now,
                    refusal=keyring_of(p.session).seal(found.case_id, body.reason, purpose=REFUSAL_PURPOSE),
                )
            ).rowcount  # type: ignore[attr-defined]
            if not refused:  # an acceptance claimed it meanwhile
                p.session.rollback()
                raise Conflict(N_("the transfer is {status} already"), allowed_steps=[], params={"status": "accepting"})
            users = list(directory.active_users(p.session, [found.requested_by]).values())
            mails = inbox.notify(
                p.session,
                event_id=f"transfer-refused-{transfer_id}",
                case_id=found.case_id,
                case_reference=found.case_reference,
                kind="case.transfer-refused",
                users=[u for u in users if u.user_id != p.user.sub],
                facts={"from_country": found.from_country, "to_country": found.to_country},
                at=now,
                mail=p.settings.smtp_host is not None,
            )
            p.session.commit()
            p.session.refresh(found)
            return transfer_public(p.session, found), mails  # the answer to the refusal: what was refused

        answer, mails = await p.db(refuse)
        await inbox.start_mails(p.client, p.settings, mails)
        return answer

    return await p.once(
        path=f"/v1/transfers/{transfer_id}/refuse",
        request=body.model_dump(mode="json"),
        run=run,
        audit=lambda _: [Entry("case.transfer-refuse", case_id=row.case_id, detail={"transfer_id": transfer_id})],
        case_id=row.case_id,
    )


@router.post(
    "/v1/transfers/{transfer_id}/withdraw",
    response_model=TransferPublic,
    summary="Withdraw an offer the receiving office has not answered",
    responses=responses(401, 403, 404, 409, 422, 503),
)
async def withdraw_transfer(transfer_id: TransferId, p: Annotated[Pipeline, commands_for(*STAFF)]) -> TransferPublic:
    row = await p.db(lambda: _visible(p.session.get(TransferRecord, transfer_id), p.user))
    if not p.user.sees_country(row.from_country):
        raise Forbidden(N_("the offering office withdraws a transfer"))

    def withdraw() -> TransferPublic:
        withdrawn = p.session.execute(
            update(TransferRecord)
            .where(col(TransferRecord.transfer_id) == transfer_id, col(TransferRecord.status) == "pending")
            .values(status="withdrawn", decided_by=p.user.sub, decided_at=datetime.now(UTC))
        ).rowcount  # type: ignore[attr-defined]
        found = p.session.get(TransferRecord, transfer_id)
        assert found is not None
        if not withdrawn and not (found.status == "withdrawn" and found.decided_by == p.user.sub):
            p.session.rollback()
            raise Conflict(N_("the transfer is {status} already"), allowed_steps=[], params={"status": found.status})
        p.auditor.stage([Entry("case.transfer-withdraw", case_id=found.case_id, detail={"transfer_id": transfer_id})])
        p.session.commit()
        p.session.refresh(found)
        return transfer_public(p.session, found, p.user)

    return await p.db(withdraw)


# --- The plan drafted before arrival -----------------------------------------------------------


def _drafting(session: Session, case_id: str, user: Claims, *, write: bool) -> CaseRecord:
    """The case if the caller may draft its plan (the owning office, or the receiving caseworker the
    travel plan names) or, not to ``write``, read the draft (an office offered the case too)."""
    case, access = case_readable(session, case_id, user)
    if access == Access.sending:
        raise Forbidden(N_("the office that handed the case over reads it only"))
    if write and access == Access.offered:
        raise Forbidden(N_("the office offered the case drafts its plan once it takes it"))
    return case


def draft_public(session: Session, row: PlanDraftRecord) -> PlanDraftPublic:
    notes = keyring_of(session).open(row.case_id, row.notes, purpose=DRAFT_PURPOSE) if row.notes else ""
    return PlanDraftPublic(
        services=[PlannedService.model_validate(s) for s in row.services],
        notes=notes,
        version=row.version,
        updated_by=row.updated_by,
        updated_at=aware(row.updated_at),
    )


@router.get(
    "/v1/cases/{case_id}/plan-draft",
    response_model=PlanDraftPublic,
    summary="The reintegration plan drafted before arrival",
    responses=responses(401, 403, 404, 503),
)
def get_plan_draft(
    case_id: CaseId, user: Annotated[Claims, require(*STAFF)], session: SessionDep, auditor: AuditorDep
) -> PlanDraftPublic:
    _drafting(session, case_id, user, write=False)
    row = session.get(PlanDraftRecord, case_id)
    if row is None:
        raise NotFound(N_("no plan is drafted yet"))
    auditor.record("plan.read", case_id=case_id, detail={"version": row.version})  # its notes are free text
    return draft_public(session, row)


@router.put(
    "/v1/cases/{case_id}/plan-draft",
    response_model=PlanDraftPublic,
    summary="Draft the reintegration plan before arrival",
    description=(
        "The receiving caseworker the travel plan names (or the office managing the case) drafts the services "
        "to agree with the person; the plan itself is the `reintegration-plan` step after arrival."
    ),
    responses=responses(401, 403, 404, 409, 422, 503),
)
def put_plan_draft(
    case_id: CaseId,
    body: Annotated[
        PlanDraft,
        Body(
            openapi_examples={
                "draft": {
                    "value": {
                        "services": [{"service": "medical"}, {"service": "job-orientation"}],
                        "notes": "Vocational training in Bucharest; family visit first",
                    }
                }
            }
        ),
    ],
    user: Annotated[Claims, require(*STAFF)],
    session: SessionDep,
    auditor: AuditorDep,
) -> PlanDraftPublic:
    case = _drafting(session, case_id, user, write=True)
    if case.status == "closed" or case.stage not in ("identification", "protection", "pathway", "return", "residence"):
        raise Conflict(N_("the reintegration plan is drafted before it is agreed"), allowed_steps=case.allowed_steps)
    row = session.get(PlanDraftRecord, case_id)
    notes = keyring_of(session).seal(case_id, body.notes, purpose=DRAFT_PURPOSE)
    services = [s.model_dump(mode="json") for s in body.services]
    now = datetime.now(UTC)
    if row is None:
        row = PlanDraftRecord(case_id=case_id, services=services, notes=notes, updated_by=user.sub, updated_at=now)
        session.add(row)
    else:
        row.services, row.notes, row.updated_by, row.updated_at = services, notes, user.sub, now
        row.version += 1
    # The draft and its audit row together, or neither.
    auditor.stage([Entry("plan.draft", case_id=case_id, detail={"services": len(services), "version": row.version})])
    try:
        session.commit()
    except IntegrityError:  # drafted by someone else at the same moment
        session.rollback()
        raise Conflict(N_("the draft changed meanwhile: read it again"), allowed_steps=[]) from None
    session.refresh(row)
    return draft_public(session, row)
