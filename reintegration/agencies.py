"""The agency registry: which agency offers which service where, and the default for a task."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlmodel import Session, select

from reintegration.crypto import Keyring
from reintegration.db import AgencyRecord
from workflows.rules import ORIGIN_SERVICES as ORIGIN
from workflows.rules.errors import N_

# Services delivered in the country of origin; every other service is delivered where the case is.
ORIGIN_SERVICES = frozenset(s.value for s in ORIGIN)


def webhook_secret_purpose(agency_id: str) -> str:
    """What an agency's sealed webhook secret is bound to: it decrypts for that agency only."""
    return f"webhook-secret:{agency_id}"


def webhook_challenge_purpose(agency_id: str) -> str:
    return f"webhook-challenge:{agency_id}"


class AgencyRefused(Exception):
    """The agency cannot take this task; the message says why in a caseworker's words."""


def service_country(service: str, *, owner_country: str, origin_country: str) -> str:
    return origin_country if service in ORIGIN_SERVICES else owner_country


def seed(session: Session, keyring: Keyring, agencies: list[dict[str, Any]]) -> int:
    """Register the development agencies when the registry is empty; returns how many."""
    if session.exec(select(AgencyRecord).limit(1)).first() is not None:
        return 0
    now = datetime.now(UTC)
    for agency in agencies:
        if agency.get("webhook_secret"):
            agency = {
                **agency,
                "webhook_secret": keyring.seal_system(
                    agency["webhook_secret"], purpose=webhook_secret_purpose(agency["agency_id"])
                ),
            }
        session.add(AgencyRecord(**agency, created_at=now, updated_at=now))
    session.commit()
    return len(agencies)


def refusal(session: Session, *, service: str, agency_id: str, country: str) -> str | None:
    """Why this agency cannot take a task of this service in this country, or None if it can."""
    agency = session.get(AgencyRecord, agency_id)
    if agency is None:
        return N_("unknown agency: {agency}").format(agency=agency_id)
    if not agency.active:
        return N_("{agency} is not taking tasks (inactive)").format(agency=agency_id)
    if service not in agency.services:
        return N_("{agency} does not offer {service}").format(agency=agency_id, service=service)
    if agency.country != country:
        return N_("{agency} works in {agency_country}; {service} is needed in {country}").format(
            agency=agency_id, agency_country=agency.country, service=service, country=country
        )
    return None


def resolve(
    session: Session, *, service: str, agency_id: str | None, country: str, default_agencies: dict[str, str]
) -> str:
    """The agency a task goes to: the one named, or the service's default; refused if it cannot serve."""
    if agency_id is None:
        agency_id = default_agencies.get(service)
        in_country = session.exec(
            select(AgencyRecord)
            .where(AgencyRecord.country == country, AgencyRecord.active)
            .order_by(AgencyRecord.agency_id)
        ).all()
        offering = [a.agency_id for a in in_country if service in a.services]
        if agency_id not in offering:
            if not offering:
                raise AgencyRefused(
                    N_("no agency offers {service} in {country}").format(service=service, country=country)
                )
            if len(offering) > 1:
                raise AgencyRefused(
                    N_("name the agency for the {service} task: one of {agencies}").format(
                        service=service, agencies=", ".join(offering)
                    )
                )
            agency_id = offering[0]
    refused = refusal(session, service=service, agency_id=agency_id, country=country)
    if refused:
        raise AgencyRefused(refused)
    return agency_id
