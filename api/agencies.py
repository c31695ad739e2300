"""Partner agencies: everyone reads the registry, admins write it."""

from __future__ import annotations

import functools
import hmac
import secrets
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Self

import anyio
from fastapi import APIRouter, Body, Path, Query, Request
from pydantic import MISSING, BaseModel, Field, HttpUrl, SecretStr, model_validator
from sqlmodel import Session, col, select
from temporalio.service import RPCError

from api.audit import AuditorDep
from api.deps import (
    IDENTIFIER,
    CurrentUser,
    SessionDep,
    SettingsDep,
    keyring_of,
    release_connection,
    require,
    temporal_client,
)
from api.errors import (
    Conflict,
    Forbidden,
    NotFound,
    Unavailable,
    Unprocessable,
    responses,
)
from api.languages import N_
from reintegration import webhooks
from reintegration.agencies import webhook_challenge_purpose, webhook_secret_purpose
from reintegration.db import AgencyRecord, aware
from reintegration.settings import Settings
from reintegration.tokens import Claims
from workflows import ids
from workflows.delivery import WebhookVerificationWorkflow
from workflows.model import (
    CountryCode,
    OrgType,
    Role,
    Service,
    Strict,
    WebhookVerificationRequest,
)

router = APIRouter(prefix="/v1/agencies", tags=["agencies"])

AgencyId = Annotated[str, Path(max_length=100, pattern=IDENTIFIER)]


class _Webhook(Strict):
    @model_validator(mode="after")
    def _secret_with_url(self) -> Self:
        url, secret = getattr(self, "webhook_url", None), getattr(self, "webhook_secret", None)
        if url is not None and secret is None and "webhook_url" in self.model_fields_set:
            raise ValueError("a webhook address needs its shared secret (webhook_secret)")
        return self


class AgencyCreate(_Webhook):
    agency_id: str = Field(max_length=100, pattern=IDENTIFIER)
    name: str = Field(min_length=1, max_length=200)
    org_type: OrgType = Field(description="HTCDS org_Type")
    country: CountryCode
    services: list[Service] = Field(min_length=1, max_length=20)
    webhook_url: HttpUrl | None = None
    webhook_secret: SecretStr | None = Field(
        default=None,
        min_length=32,
        max_length=200,
        description="Shared HMAC secret, at least 32 characters; never shown",
    )
    active: bool = True

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "agency_id": "shelter-pt",
                    "name": "Casa Abrigo Lisboa",
                    "org_type": "NGO",
                    "country": "PT",
                    "services": ["shelter", "psychosocial"],
                    "webhook_url": "https://shelter-pt.example.org/reintegration",
                    "webhook_secret": "change-me-to-32-or-more-random-characters",
                }
            ]
        }
    }


class AgencyUpdate(_Webhook):
    """Only the fields sent change. Only the webhook may be sent as null (removed); the others may not."""

    # A field left out is MISSING (it stays as it is): not a value that can be sent, so null is refused,
    # the schema has no default, and model_dump leaves the field out.
    name: str | MISSING = Field(default=MISSING, min_length=1, max_length=200)
    org_type: OrgType | MISSING = Field(default=MISSING, description="HTCDS org_Type")
    country: CountryCode | MISSING = MISSING
    services: list[Service] | MISSING = Field(default=MISSING, min_length=1, max_length=20)
    webhook_url: HttpUrl | None = None
    webhook_secret: SecretStr | None = Field(default=None, min_length=32, max_length=200)
    active: bool | MISSING = MISSING


class AgencyPublic(BaseModel):
    agency_id: str
    name: str
    org_type: str
    country: str
    services: list[str]
    active: bool
    webhook_configured: bool = Field(description="A confirmed webhook address receives the agency's tasks")
    webhook_url: str | None = Field(default=None, description="Shown to admins only")
    webhook_pending: bool = Field(default=False, description="A new address waits for the agency's confirmation")
    pending_webhook_url: str | None = Field(default=None, description="Shown to admins only")
    pending_webhook_host: str | None = Field(
        default=None,
        description="The host of the address waiting for confirmation: shown to admins and to the "
        "agency's own partners, who confirm it",
    )
    webhook_confirmed_at: datetime | None = None
    created_at: datetime
    updated_at: datetime


class WebhookConfirmation(Strict):
    challenge: str = Field(
        min_length=16,
        max_length=200,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="The challenge of the signed `webhook.verification` request the new address got",
    )
    host: str = Field(
        min_length=1,
        max_length=253,
        pattern=r"^[A-Za-z0-9.:\[\]-]+$",
        description="The host of the new address, as the agency knows its own system: a partner "
        "confirms an address it recognises, not a code someone gave it",
    )


def _check_address(url: HttpUrl | None, settings: Settings) -> None:
    """Tasks carry the person's data: outside development they travel over TLS only, and never to a
    loopback, private, link-local or metadata address (checked again at each delivery)."""
    if url is None:
        return
    if url.scheme != "https" and settings.environment != "development":
        raise Unprocessable(N_("a webhook address must use https"))
    if settings.webhook_guard_on:
        try:
            anyio.from_thread.run(webhooks.check_url, str(url), settings.webhook_private_networks)
        except webhooks.UnsafeAddress as exc:
            raise Unprocessable(str(exc)) from None


def public(agency: AgencyRecord, user: Claims) -> AgencyPublic:
    admin = user.role == Role.admin
    own = user.role == Role.partner and user.agency == agency.agency_id
    return AgencyPublic(
        agency_id=agency.agency_id,
        name=agency.name,
        org_type=agency.org_type,
        country=agency.country,
        services=agency.services,
        active=agency.active,
        webhook_configured=agency.webhook_url is not None,
        webhook_url=agency.webhook_url if admin else None,
        webhook_pending=agency.pending_webhook_url is not None,
        pending_webhook_url=agency.pending_webhook_url if admin else None,
        pending_webhook_host=webhooks.host_of(agency.pending_webhook_url)
        if agency.pending_webhook_url and (admin or own)
        else None,
        webhook_confirmed_at=aware(agency.webhook_confirmed_at) if agency.webhook_confirmed_at else None,
        created_at=aware(agency.created_at),
        updated_at=aware(agency.updated_at),
    )


def _request_confirmation(session: Session, agency: AgencyRecord, url: str, secret: str) -> WebhookVerificationRequest:
    """Keep the new address and secret aside with a fresh challenge; what the verification workflow needs."""
    keyring = keyring_of(session)
    verification_id = uuid.uuid4().hex
    agency.pending_webhook_url = url
    agency.pending_webhook_secret = keyring.seal_system(secret, purpose=webhook_secret_purpose(agency.agency_id))
    agency.webhook_challenge = keyring.seal_system(
        secrets.token_urlsafe(32), purpose=webhook_challenge_purpose(agency.agency_id)
    )
    agency.webhook_verification_id = verification_id
    agency.webhook_requested_at = datetime.now(UTC)
    return WebhookVerificationRequest(agency_id=agency.agency_id, verification_id=verification_id)


def _forget_pending(agency: AgencyRecord) -> None:
    """No address waits for confirmation any more (confirmed, removed, or its verification unsent)."""
    agency.pending_webhook_url = agency.pending_webhook_secret = agency.webhook_challenge = None
    agency.webhook_verification_id = agency.webhook_requested_at = None


def _send_verification(
    http_request: Request,
    session: Session,
    settings: Settings,
    agency: AgencyRecord,
    request: WebhookVerificationRequest,
) -> None:
    """Start the verification workflow. Without Temporal, nothing stays pending (the confirmed
    address, if any, goes on): 503, and the admin sets the address again."""
    request = request.model_copy(
        update={
            "timeout_seconds": settings.delivery_timeout_seconds,
            "retry_initial_seconds": settings.delivery_retry_initial_seconds,
            "retry_max_seconds": settings.delivery_retry_max_seconds,
            "expires_in_seconds": settings.webhook_verification_hours * 3600,
        }
    )
    release_connection(session)
    try:
        client = temporal_client(http_request)
        anyio.from_thread.run(
            functools.partial(
                client.start_workflow,
                WebhookVerificationWorkflow.run,
                request,
                id=ids.webhook_verification_id(request.agency_id, request.verification_id),
                task_queue=settings.temporal_task_queue,
            )
        )
    except (RPCError, Unavailable):
        session.refresh(agency)
        if agency.webhook_verification_id == request.verification_id:
            _forget_pending(agency)
            session.add(agency)
            session.commit()
        raise Unavailable(
            N_(
                "the webhook address could not be sent its verification (Temporal is unavailable); "
                "everything else was saved: set the address again with PATCH in a moment"
            )
        ) from None


@router.get("", response_model=list[AgencyPublic], summary="List partner agencies", responses=responses(401, 422))
def list_agencies(
    user: CurrentUser,
    session: SessionDep,
    country: Annotated[str | None, Query(pattern="^[A-Z]{2}$")] = None,
    service: Service | None = None,
) -> list[AgencyPublic]:
    query = select(AgencyRecord).order_by(col(AgencyRecord.agency_id))
    if country:
        query = query.where(col(AgencyRecord.country) == country)
    rows = session.exec(query).all()
    return [public(a, user) for a in rows if service is None or service.value in a.services]


@router.get(
    "/{agency_id}", response_model=AgencyPublic, summary="Read a partner agency", responses=responses(401, 404, 422)
)
def read_agency(agency_id: AgencyId, user: CurrentUser, session: SessionDep) -> AgencyPublic:
    agency = session.get(AgencyRecord, agency_id)
    if agency is None:
        raise NotFound(N_("no such agency"))
    return public(agency, user)


@router.post(
    "",
    status_code=201,
    response_model=AgencyPublic,
    summary="Register a partner agency",
    responses=responses(401, 403, 409, 422, 503),
)
def create_agency(
    body: AgencyCreate,
    user: Annotated[Claims, require(Role.admin)],
    session: SessionDep,
    settings: SettingsDep,
    auditor: AuditorDep,
    request: Request,
) -> AgencyPublic:
    """A webhook address given here receives the agency's tasks once a partner of the agency confirms
    it (see `POST /v1/agencies/{agency_id}/webhook/confirm`)."""
    _check_address(body.webhook_url, settings)
    if session.get(AgencyRecord, body.agency_id) is not None:
        raise Conflict(N_("an agency with this id exists; change it with PATCH"))
    now = datetime.now(UTC)
    agency = AgencyRecord(
        agency_id=body.agency_id,
        name=body.name,
        org_type=body.org_type.value,
        country=body.country,
        services=[s.value for s in body.services],
        active=body.active,
        created_at=now,
        updated_at=now,
    )
    verification = None
    if body.webhook_url is not None and body.webhook_secret is not None:
        verification = _request_confirmation(
            session, agency, str(body.webhook_url), body.webhook_secret.get_secret_value()
        )
    session.add(agency)
    session.commit()
    session.refresh(agency)
    detail: dict[str, Any] = {"agency_id": agency.agency_id}
    if verification:
        detail["pending_webhook_host"] = webhooks.host_of(agency.pending_webhook_url or "")
    auditor.record("agency.create", status=201, detail=detail)
    if verification:
        _send_verification(request, session, settings, agency, verification)
        session.refresh(agency)
    return public(agency, user)


@router.patch(
    "/{agency_id}",
    response_model=AgencyPublic,
    summary="Change a partner agency",
    responses=responses(401, 403, 404, 422, 503),
)
def update_agency(
    agency_id: AgencyId,
    body: Annotated[AgencyUpdate, Body(openapi_examples={"services": {"value": {"services": ["shelter", "housing"]}}})],
    user: Annotated[Claims, require(Role.admin)],
    session: SessionDep,
    settings: SettingsDep,
    auditor: AuditorDep,
    request: Request,
) -> AgencyPublic:
    """Only the fields sent change. A new webhook address or secret is not used until a partner of the
    agency confirms it; the confirmed address keeps receiving the tasks meanwhile and is told of the
    change. `webhook_url: null` stops deliveries at once."""
    _check_address(body.webhook_url, settings)
    agency = session.get(AgencyRecord, agency_id)
    if agency is None:
        raise NotFound(N_("no such agency"))
    changes = body.model_dump(exclude_unset=True)
    webhook = {k: changes.pop(k) for k in ("webhook_url", "webhook_secret") if k in changes}
    for field, value in changes.items():
        if field == "services":
            value = [s.value if isinstance(s, Service) else s for s in value]
        elif field == "org_type" and value is not None:
            value = OrgType(value).value
        setattr(agency, field, value)
    verification = None
    detail: dict[str, Any] = {"agency_id": agency_id, "fields": sorted([*changes, *webhook])}
    if "webhook_url" in webhook and webhook["webhook_url"] is None:
        # Removing is safe at once: nothing goes anywhere.
        agency.webhook_url = agency.webhook_secret = None
        _forget_pending(agency)
    elif webhook:
        url = (
            str(body.webhook_url) if body.webhook_url is not None else agency.pending_webhook_url or agency.webhook_url
        )
        if url is None:
            raise Unprocessable(N_("a webhook secret needs its webhook address (webhook_url)"))
        if body.webhook_secret is None:
            raise Unprocessable(N_("a webhook address needs its shared secret (webhook_secret)"))
        verification = _request_confirmation(session, agency, url, body.webhook_secret.get_secret_value())
        detail["pending_webhook_host"] = webhooks.host_of(url)
        if agency.webhook_url:
            detail["webhook_host"] = webhooks.host_of(agency.webhook_url)
    agency.updated_at = datetime.now(UTC)
    session.add(agency)
    session.commit()
    session.refresh(agency)
    auditor.record("agency.update", detail=detail)
    if verification:
        _send_verification(request, session, settings, agency, verification)
        session.refresh(agency)
    return public(agency, user)


@router.post(
    "/{agency_id}/webhook/confirm",
    response_model=AgencyPublic,
    summary="Confirm a new webhook address (the agency's partner)",
    description="Gives back the challenge of the signed `webhook.verification` request that the new "
    "address received; from then on the agency's tasks go there.",
    responses=responses(401, 403, 404, 409, 422),
)
def confirm_webhook(
    agency_id: AgencyId,
    body: Annotated[
        WebhookConfirmation,
        Body(
            openapi_examples={
                "confirm": {
                    "value": {
                        "challenge": "q3Zr8WcJ0m5cXvE4kY1bLwN7tHs2uA9dF6gP0oIeRxM",
                        "host": "hooks.shelter-es.example.org",
                    }
                }
            }
        ),
    ],
    user: Annotated[Claims, require(Role.partner)],
    session: SessionDep,
    settings: SettingsDep,
    auditor: AuditorDep,
) -> AgencyPublic:
    agency = session.get(AgencyRecord, agency_id)
    if agency is None:
        raise NotFound(N_("no such agency"))
    if user.agency != agency_id:
        raise Forbidden(N_("a partner confirms its own agency's webhook only"))
    if agency.pending_webhook_url is None or agency.webhook_challenge is None or agency.webhook_requested_at is None:
        raise Conflict(N_("no webhook address is waiting for confirmation"))
    if datetime.now(UTC) - aware(agency.webhook_requested_at) > timedelta(hours=settings.webhook_verification_hours):
        raise Conflict(N_("the confirmation came too late; ask an admin to set the address again"))
    keyring = keyring_of(session)
    expected = keyring.open_system(agency.webhook_challenge, purpose=webhook_challenge_purpose(agency_id))
    if body.host.lower().strip("[]") != webhooks.host_of(agency.pending_webhook_url).strip("[]"):
        auditor.record("agency.webhook-confirm", status=422, detail={"agency_id": agency_id, "matched": False})
        raise Unprocessable(
            N_("that is not the host of the address waiting for confirmation; see pending_webhook_host")
        )
    if not hmac.compare_digest(expected.encode(), body.challenge.encode()):
        auditor.record("agency.webhook-confirm", status=422, detail={"agency_id": agency_id, "matched": False})
        raise Unprocessable(N_("the challenge does not match the one sent to the new address"))
    host = webhooks.host_of(agency.pending_webhook_url)
    agency.webhook_url, agency.webhook_secret = agency.pending_webhook_url, agency.pending_webhook_secret
    _forget_pending(agency)
    agency.webhook_confirmed_at = agency.updated_at = datetime.now(UTC)
    session.add(agency)
    session.commit()
    session.refresh(agency)
    auditor.record("agency.webhook-confirm", detail={"agency_id": agency_id, "webhook_host": host})
    return public(agency, user)
