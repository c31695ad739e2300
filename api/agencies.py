"""Partner agencies: everyone reads the registry, admins write it."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query
from pydantic import BaseModel, Field, HttpUrl, SecretStr, model_validator
from sqlmodel import select

from api.audit import AuditorDep
from api.deps import IDENTIFIER, CurrentUser, SessionDep, SettingsDep, keyring_of, require
from reintegration.agencies import webhook_secret_purpose
from api.errors import Conflict, NotFound, Unprocessable, responses
from reintegration.db import AgencyRecord, aware
from workflows.model import CountryCode, Role, Service, Strict

router = APIRouter(prefix="/v1/agencies", tags=["agencies"])

ORG_TYPES = ("NGO", "LawEnforcement", "HealthServiceOrganisation", "CentralGovernmentOrganisation",
             "LocalGovernmentOrganisation", "ImmigrationService", "LegalService", "CorporateBusiness",
             "SchoolOrCollege")
OrgType = Annotated[str, Field(pattern="^(" + "|".join(ORG_TYPES) + ")$", description="HTCDS org_Type")]
AgencyId = Annotated[str, Path(max_length=100, pattern=IDENTIFIER)]


class _Webhook(Strict):
    @model_validator(mode="after")
    def _secret_with_url(self) -> Any:
        url, secret = getattr(self, "webhook_url", None), getattr(self, "webhook_secret", None)
        if url is not None and secret is None and "webhook_url" in self.model_fields_set:
            raise ValueError("a webhook address needs its shared secret (webhook_secret)")
        return self


class AgencyCreate(_Webhook):
    agency_id: str = Field(max_length=100, pattern=IDENTIFIER)
    name: str = Field(min_length=1, max_length=200)
    org_type: OrgType
    country: CountryCode
    services: list[Service] = Field(min_length=1, max_length=20)
    webhook_url: HttpUrl | None = None
    webhook_secret: SecretStr | None = Field(default=None, min_length=32, max_length=200,
                                             description="Shared HMAC secret, at least 32 characters; never shown")
    active: bool = True

    model_config = {"json_schema_extra": {"examples": [{
        "agency_id": "shelter-pt", "name": "Casa Abrigo Lisboa", "org_type": "NGO", "country": "PT",
        "services": ["shelter", "psychosocial"], "webhook_url": "https://shelter-pt.example.org/reintegration",
        "webhook_secret": "change-me-to-32-or-more-random-characters"}]}}


def _left_out(schema: dict[str, Any]) -> None:
    schema.pop("default", None)  # a field left out stays as it is; null is not one of its values


class AgencyUpdate(_Webhook):
    """Only the fields sent change. Only the webhook may be sent as null (removed); the others may not."""

    name: str = Field(default=None, min_length=1, max_length=200, json_schema_extra=_left_out)
    org_type: OrgType = Field(default=None, json_schema_extra=_left_out)
    country: CountryCode = Field(default=None, json_schema_extra=_left_out)
    services: list[Service] = Field(default=None, min_length=1, max_length=20, json_schema_extra=_left_out)
    webhook_url: HttpUrl | None = None
    webhook_secret: SecretStr | None = Field(default=None, min_length=32, max_length=200)
    active: bool = Field(default=None, json_schema_extra=_left_out)


class AgencyPublic(BaseModel):
    agency_id: str
    name: str
    org_type: str
    country: str
    services: list[str]
    active: bool
    webhook_configured: bool
    webhook_url: str | None = Field(default=None, description="Shown to admins only")
    created_at: datetime
    updated_at: datetime


def _require_tls(url: HttpUrl | None, settings: Any) -> None:
    """Tasks carry the person's data: outside development they travel over TLS only."""
    if url is not None and url.scheme != "https" and settings.environment != "development":
        raise Unprocessable("a webhook address must use https")


def public(agency: AgencyRecord, role: Role) -> AgencyPublic:
    return AgencyPublic(
        agency_id=agency.agency_id, name=agency.name, org_type=agency.org_type, country=agency.country,
        services=agency.services, active=agency.active, webhook_configured=agency.webhook_url is not None,
        webhook_url=agency.webhook_url if role == Role.admin else None,
        created_at=aware(agency.created_at), updated_at=aware(agency.updated_at),
    )


@router.get("", response_model=list[AgencyPublic], summary="List partner agencies", responses=responses(401, 422))
def list_agencies(
    user: CurrentUser,
    session: SessionDep,
    country: Annotated[str | None, Query(pattern="^[A-Z]{2}$")] = None,
    service: Service | None = None,
) -> list[AgencyPublic]:
    query = select(AgencyRecord).order_by(AgencyRecord.agency_id)
    if country:
        query = query.where(AgencyRecord.country == country)
    rows = session.exec(query).all()
    return [public(a, user.role) for a in rows if service is None or service.value in a.services]


@router.get("/{agency_id}", response_model=AgencyPublic, summary="Read a partner agency",
            responses=responses(401, 404, 422))
def read_agency(agency_id: AgencyId, user: CurrentUser, session: SessionDep) -> AgencyPublic:
    agency = session.get(AgencyRecord, agency_id)
    if agency is None:
        raise NotFound("no such agency")
    return public(agency, user.role)


@router.post("", status_code=201, response_model=AgencyPublic, summary="Register a partner agency",
             responses=responses(401, 403, 409, 422))
def create_agency(
    body: AgencyCreate, user: Annotated[Any, require(Role.admin)], session: SessionDep, settings: SettingsDep,
    auditor: AuditorDep,
) -> AgencyPublic:
    _require_tls(body.webhook_url, settings)
    if session.get(AgencyRecord, body.agency_id) is not None:
        raise Conflict("an agency with this id exists; change it with PATCH")
    now = datetime.now(timezone.utc)
    agency = AgencyRecord(
        agency_id=body.agency_id, name=body.name, org_type=body.org_type, country=body.country,
        services=[s.value for s in body.services], active=body.active,
        webhook_url=str(body.webhook_url) if body.webhook_url else None,
        webhook_secret=keyring_of(session).seal_system(
            body.webhook_secret.get_secret_value(), purpose=webhook_secret_purpose(body.agency_id))
        if body.webhook_secret else None,
        created_at=now, updated_at=now,
    )
    session.add(agency)
    session.commit()
    session.refresh(agency)
    auditor.record("agency.create", status=201, detail={"agency_id": agency.agency_id})
    return public(agency, user.role)


@router.patch("/{agency_id}", response_model=AgencyPublic, summary="Change a partner agency",
              responses=responses(401, 403, 404, 422))
def update_agency(
    agency_id: AgencyId,
    body: Annotated[AgencyUpdate, Body(openapi_examples={"services": {"value": {"services": ["shelter", "housing"]}}})],
    user: Annotated[Any, require(Role.admin)],
    session: SessionDep,
    settings: SettingsDep,
    auditor: AuditorDep,
) -> AgencyPublic:
    _require_tls(body.webhook_url, settings)
    agency = session.get(AgencyRecord, agency_id)
    if agency is None:
        raise NotFound("no such agency")
    changes = body.model_dump(exclude_unset=True)
    if "webhook_url" in changes and changes["webhook_url"] is None:
        changes["webhook_secret"] = None
    for field, value in changes.items():
        if field == "webhook_secret" and value is not None:
            value = keyring_of(session).seal_system(
                body.webhook_secret.get_secret_value(), purpose=webhook_secret_purpose(agency_id))  # type: ignore[union-attr]
        elif field == "webhook_url" and value is not None:
            value = str(value)
        elif field == "services":
            value = [s.value if isinstance(s, Service) else s for s in value]
        setattr(agency, field, value)
    if agency.webhook_url and not agency.webhook_secret:
        raise Unprocessable("a webhook address needs its shared secret (webhook_secret)")
    agency.updated_at = datetime.now(timezone.utc)
    session.add(agency)
    session.commit()
    session.refresh(agency)
    auditor.record("agency.update", detail={"agency_id": agency_id, "fields": sorted(changes)})
    return public(agency, user.role)
