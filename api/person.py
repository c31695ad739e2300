"""The person's data as a resource of its own: read it (audited) with its ETag, and correct it
(``PATCH`` with ``If-Match``: a misspelt name, a birth date found later).

The person is kept in the vault only (``reintegration/persons.py``), never in a workflow, so a
correction is the API's own change: the vault row, the blind indexes (``person_index``) and the
``person.correct`` audit row, which names the fields that changed and never their values, in one
transaction. The vault row's version is the ETag (``"person-<n>"``), apart from the case's.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Header, Response
from pydantic import ConfigDict, Field, ValidationError, model_validator
from sqlalchemy import update
from sqlmodel import Session, col

from api.access_log import bind_ids
from api.audit import AuditorDep, Entry
from api.cases import CASEWORK, CaseId
from api.deps import SessionDep, keyring_of, require
from api.errors import Conflict, PreconditionFailed, PreconditionRequired, Unprocessable, responses
from api.journeys import case_in_scope
from api.languages import N_
from api.schemas import Person, PersonView
from reintegration import person_index
from reintegration.case_facts import GENDERS, age_band, identified_on, update_person_facts
from reintegration.db import PersonRecord
from reintegration.persons import opened_person, sealed_person
from reintegration.tokens import Claims
from workflows.model import CountryCode, Day, ShortText, Strict

router = APIRouter(prefix="/v1/cases", tags=["cases"])

PersonIfMatch = Annotated[
    str | None, Header(description='The person\'s ETag (`"person-<n>"`, from `GET /v1/cases/{id}/person`)')
]


class PersonCorrection(Strict):
    """The fields to correct, each with its right value (``null`` clears an optional one); the fields
    not sent stay as they are."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"second_name": "Ionescu", "birthdate": "1998-03-14"}]},
    )

    first_name: ShortText | None = None
    second_name: str | None = Field(default=None, max_length=200)
    birthdate: Day | None = None
    presumed_minor: bool | None = None
    gender: str | None = Field(default=None, pattern="^(" + "|".join(GENDERS) + ")$")
    citizenship: list[CountryCode] | None = Field(default=None, max_length=5)
    primary_language: str | None = Field(default=None, max_length=35)
    identity_number: str | None = Field(default=None, max_length=100)
    mobile_phone: str | None = Field(default=None, max_length=50)
    identification_place: str | None = Field(default=None, max_length=200)

    @model_validator(mode="after")
    def _something(self) -> PersonCorrection:
        if not self.model_fields_set:
            raise ValueError("name at least one field to correct")
        for required in ("first_name", "gender", "presumed_minor", "citizenship"):
            if required in self.model_fields_set and getattr(self, required) is None:
                raise ValueError(f"{required} cannot be cleared")
        return self


def person_etag(version: int) -> str:
    return f'"person-{version}"'


_PERSON_ETAG = re.compile(r'(?:W/)?"person-([0-9]{1,9})"', re.ASCII)


def _version_in(if_match: str) -> int:
    found = _PERSON_ETAG.fullmatch(if_match.strip())
    if found is None:
        raise PreconditionFailed(N_("If-Match does not hold an ETag of this person's data"))
    return int(found.group(1))


def _stored(session: Session, case_id: str) -> tuple[PersonRecord, dict[str, Any]]:
    """The vault row and the person it holds; ``409`` once it was erased (or never kept)."""
    record = session.get(PersonRecord, case_id)
    person = opened_person(keyring_of(session), record) if record is not None else None
    if record is None or person is None:
        raise Conflict(N_("the person's data of this case was erased"), allowed_steps=[])
    return record, person


@router.get(
    "/{case_id}/person",
    response_model=PersonView,
    summary="Read the person's data",
    description="Audited as `person.read`, before the data leaves; the ETag is the one a correction names.",
    responses=responses(401, 403, 404, 409, 503),
)
def read_person(
    case_id: CaseId,
    response: Response,
    user: Annotated[Claims, require(*CASEWORK)],
    session: SessionDep,
    auditor: AuditorDep,
) -> PersonView:
    case_in_scope(session, case_id, user)
    record, person = _stored(session, case_id)
    auditor.record("person.read", case_id=case_id, detail={"found": True})
    response.headers["ETag"] = person_etag(record.version)
    return PersonView.model_validate(person)


@router.patch(
    "/{case_id}/person",
    response_model=PersonView,
    summary="Correct the person's data",
    description=(
        "Changes only the fields sent (`null` clears an optional one). `If-Match` with the person's ETag is "
        "required (`428` without it, `412` when someone corrected it since). The audit trail names the fields "
        "that changed, never their values. The case's minor status, decided at opening, does not change."
    ),
    responses={**responses(401, 403, 404, 409, 412, 422, 503), 428: {"description": "If-Match is required"}},
)
def correct_person(
    case_id: CaseId,
    body: PersonCorrection,
    response: Response,
    user: Annotated[Claims, require(*CASEWORK)],
    session: SessionDep,
    auditor: AuditorDep,
    if_match: PersonIfMatch = None,
) -> PersonView:
    bind_ids(case_id=case_id)
    case = case_in_scope(session, case_id, user)
    if if_match is None:
        raise PreconditionRequired(N_("send If-Match with the person's ETag, which a read of the person's data gives"))
    expected = _version_in(if_match)
    record, person = _stored(session, case_id)
    if record.version != expected:
        raise PreconditionFailed(N_("the person's data changed since that ETag; read it again"))
    corrected = {**person, **body.model_dump(mode="json", include=body.model_fields_set)}
    try:
        checked = PersonView.model_validate(corrected)
        Person.model_validate({k: v for k, v in corrected.items() if k in Person.model_fields})
    except ValidationError:
        raise Unprocessable(N_("the corrected data is not valid")) from None
    if checked.birthdate is not None and checked.birthdate > date.today():
        raise Unprocessable(N_("the birth date is in the future"))
    changed = sorted(k for k in body.model_fields_set if person.get(k) != corrected.get(k))
    if not changed:  # nothing to write; the answer still shows the person's data: a reading of it
        auditor.record("person.read", case_id=case_id, detail={"found": True})
        response.headers["ETag"] = person_etag(record.version)
        return checked
    keyring = keyring_of(session)
    stored = checked.model_dump(mode="json")
    done = session.exec(
        update(PersonRecord)
        .where(col(PersonRecord.case_id) == case_id, col(PersonRecord.version) == expected)
        .values(payload=sealed_person(keyring, case_id, stored), version=expected + 1)
    )
    if done.rowcount != 1:  # corrected by someone else between the read and this write
        session.rollback()
        raise PreconditionFailed(N_("the person's data changed since that ETag; read it again"))
    person_index.index_person(session, keyring, case_id, stored)
    if {"gender", "birthdate"} & set(changed):  # the statistics' copy follows (reintegration/case_facts.py)
        day = identified_on(case)  # None if the read model lacks it: the age band then stays as it is
        band = age_band(checked.birthdate, day) if day else None
        update_person_facts(session, case_id, sex=checked.gender, band=band)
    auditor.stage([Entry("person.correct", case_id=case_id, status=200, detail={"fields": changed})])
    session.commit()
    response.headers["ETag"] = person_etag(expected + 1)
    return checked
