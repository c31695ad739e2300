"""Linked cases: family members, co-victims of one trafficking situation.

A link relates two cases both in the caller's scope; each case's list shows only the linked cases in
the reader's scope (a link to a case of another country is not shown, nor counted). A link holds
ids and a relation, never why; it is recorded in both cases' audit trails, and removed with either
case's personal data.
"""

from __future__ import annotations

import enum
from dataclasses import replace
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import case as when
from sqlalchemy import delete, or_
from sqlmodel import Session, col, select

from api.access_log import bind_ids
from api.audit import AuditorDep, Entry
from api.cases import CASEWORK, CaseId
from api.deps import IDENTIFIER, SessionDep, require
from api.errors import Conflict, NotFound, Unprocessable, responses
from api.journeys import case_in_scope
from api.languages import N_
from api.pagination import Cursor, Keyset, Limit, page
from api.pipeline import Pipeline, commands_for
from api.schemas import Page
from reintegration.db import CaseLinkRecord, CaseRecord, aware
from reintegration.tokens import Claims
from workflows.model import Strict

router = APIRouter(prefix="/v1/cases", tags=["cases"])

LINKS_ORDER = Keyset(col(CaseLinkRecord.created_at), col(CaseLinkRecord.link_id), descending=True)
LinkId = Annotated[str, Path(max_length=64, pattern=IDENTIFIER)]


class Relation(enum.StrEnum):
    family = "family-members"  # members of one family
    same_situation = "same-situation"  # co-victims of one trafficking situation
    other = "other"


class LinkCreate(Strict):
    """The case to link to, by its id or its reference (one of the two), and how they are related."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"reference": "ES-2026-1A2B3C", "relation": "same-situation"}]},
    )

    case_id: str | None = Field(default=None, max_length=64, pattern=IDENTIFIER)
    reference: str | None = Field(default=None, min_length=1, max_length=32, pattern=r"^[A-Za-z0-9-]+$")
    relation: Relation

    @model_validator(mode="after")
    def _one(self) -> LinkCreate:
        if (self.case_id is None) == (self.reference is None):
            raise ValueError("name the case to link to by case_id or by reference, not both")
        return self


class LinkByReference(Strict):
    """The workspace's form: the case to link to by its reference."""

    model_config = ConfigDict(extra="forbid")

    reference: str = Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9-]+$")
    relation: Relation

    def request(self) -> LinkCreate:
        return LinkCreate(reference=self.reference, relation=self.relation)


class LinkedCase(BaseModel):
    """A case linked to this one: what to recognise it by, and how they are related."""

    link_id: str
    case_id: str
    reference: str
    stage: str
    status: str
    owner_country: str
    relation: Relation
    created_at: datetime
    created_by: str


def _other(link: CaseLinkRecord, case_id: str) -> str:
    return link.case_b if link.case_a == case_id else link.case_a


def _linked(link: CaseLinkRecord, other: CaseRecord) -> LinkedCase:
    return LinkedCase(
        link_id=link.link_id,
        case_id=other.case_id,
        reference=other.reference,
        stage=other.stage,
        status="stalled" if other.stalled else other.status,
        owner_country=other.owner_country,
        relation=Relation(link.relation),
        created_at=aware(link.created_at),
        created_by=link.created_by,
    )


def _target(session: Session, user: Claims, body: LinkCreate) -> CaseRecord:
    """The case named in the body, if the caller may see it; the same answer whether it does not exist
    or lies outside the caller's countries."""
    if body.case_id is not None:
        other = session.get(CaseRecord, body.case_id)
    else:
        other = session.exec(select(CaseRecord).where(col(CaseRecord.reference) == str(body.reference).upper())).first()
    if other is None or not user.sees_country(other.owner_country):
        raise Unprocessable(N_("there is no such case in your countries to link to"))
    return other


def _entries(link: CaseLinkRecord, action: str) -> list[Entry]:
    """One row in each case's trail."""
    return [
        Entry(
            action, case_id=mine, detail={"link_id": link.link_id, "linked_case_id": theirs, "relation": link.relation}
        )
        for mine, theirs in ((link.case_a, link.case_b), (link.case_b, link.case_a))
    ]


def _link(p: Pipeline, case_id: str, body: LinkCreate, link_id: str) -> tuple[LinkedCase, bool]:
    """The link (new, or the one the pair has already with this relation) and whether it is new."""
    session = p.session
    case_in_scope(session, case_id, p.user)
    other = _target(session, p.user, body)
    if other.case_id == case_id:
        raise Unprocessable(N_("a case cannot be linked to itself"))
    a, b = sorted((case_id, other.case_id))
    existing = session.exec(
        select(CaseLinkRecord).where(col(CaseLinkRecord.case_a) == a, col(CaseLinkRecord.case_b) == b)
    ).first()
    if existing is not None:
        if existing.relation != body.relation.value:
            raise Conflict(
                N_("the cases are linked already, as {relation}: remove that link first"),
                params={"relation": existing.relation},
                allowed_steps=[],
            )
        return _linked(existing, other), False
    link = CaseLinkRecord(
        link_id=link_id,
        case_a=a,
        case_b=b,
        relation=body.relation.value,
        created_by=p.user.sub,
        created_at=datetime.now(UTC),
    )
    session.add(link)
    session.flush()
    p.auditor.stage([replace(e, status=201) for e in _entries(link, "case.link")])
    session.commit()
    return _linked(link, other), True


@router.post(
    "/{case_id}/links",
    status_code=201,
    response_model=LinkedCase,
    summary="Link another case to this one",
    description=(
        "Both cases in your scope. `201` with the linked case; `200` if they are linked already with this "
        "relation; `409` if with another; `422` for the case itself or one you cannot see."
    ),
    responses={**responses(401, 403, 404, 409, 422, 503), 200: {"description": "Linked already", "model": LinkedCase}},
)
async def link_case(
    case_id: CaseId, body: LinkCreate, response: Response, p: Annotated[Pipeline, commands_for(*CASEWORK)]
) -> LinkedCase | JSONResponse:
    bind_ids(case_id=case_id)

    def replay(stored: dict[str, Any]) -> dict[str, Any]:
        case_in_scope(p.session, case_id, p.user)
        return stored

    async def run(link_id: str) -> LinkedCase:
        linked, new = await p.db(_link, p, case_id, body, link_id)
        if not new:
            response.status_code = 200
        return linked

    return await p.once(
        path=f"/v1/cases/{case_id}/links",
        request=body.model_dump(mode="json"),
        run=run,
        audit=lambda answer: [Entry("case.link", case_id=case_id, detail={"link_id": answer.get("link_id")})],
        status_code=201,
        case_id=case_id,
        replay=replay,
        audited_in_run=True,
    )


@router.get(
    "/{case_id}/links",
    response_model=Page[LinkedCase],
    summary="The cases linked to this one",
    description="Only the linked cases in your scope; newest link first.",
    responses=responses(401, 403, 404, 422, 503),
)
def list_links(
    case_id: CaseId,
    user: Annotated[Claims, require(*CASEWORK)],
    session: SessionDep,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[LinkedCase]:
    case_in_scope(session, case_id, user)
    other = when((col(CaseLinkRecord.case_a) == case_id, col(CaseLinkRecord.case_b)), else_=col(CaseLinkRecord.case_a))
    visible = select(col(CaseRecord.case_id))
    if user.country_scope is not None:
        visible = visible.where(col(CaseRecord.owner_country).in_(user.country_scope))
    query = select(CaseLinkRecord).where(
        or_(col(CaseLinkRecord.case_a) == case_id, col(CaseLinkRecord.case_b) == case_id), other.in_(visible)
    )
    rows, following = page(session, query, LINKS_ORDER, limit=limit, cursor=cursor)
    others = {
        c.case_id: c
        for c in session.exec(select(CaseRecord).where(col(CaseRecord.case_id).in_([_other(r, case_id) for r in rows])))
    }
    return Page(items=[_linked(r, others[_other(r, case_id)]) for r in rows], next_cursor=following)


@router.delete(
    "/{case_id}/links/{link_id}",
    status_code=204,
    summary="Remove a link",
    description="Both cases in your scope; the link is gone from both. Removing it again: `404`.",
    responses=responses(401, 403, 404, 503),
)
def unlink_case(
    case_id: CaseId,
    link_id: LinkId,
    user: Annotated[Claims, require(*CASEWORK)],
    session: SessionDep,
    auditor: AuditorDep,
) -> Response:
    case_in_scope(session, case_id, user)
    link = session.get(CaseLinkRecord, link_id)
    if link is None or case_id not in (link.case_a, link.case_b):
        raise NotFound(N_("no such link on this case"))
    other = session.get(CaseRecord, _other(link, case_id))
    if other is None or not user.sees_country(other.owner_country):
        raise NotFound(N_("no such link on this case"))
    session.execute(delete(CaseLinkRecord).where(col(CaseLinkRecord.link_id) == link_id))
    auditor.stage([replace(e, status=204) for e in _entries(link, "case.unlink")])
    session.commit()
    return Response(status_code=204)


def forget_links(session: Session, case_id: str) -> None:
    """Remove the case's links (its erasure), in the caller's transaction."""
    session.execute(
        delete(CaseLinkRecord).where(or_(col(CaseLinkRecord.case_a) == case_id, col(CaseLinkRecord.case_b) == case_id))
    )
