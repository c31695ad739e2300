"""The project's records in the words of HTCDS 2.0 where they need translating for the export
(``api/exports.py``): which service-plan type each partner service is, the incoming referral's date,
and the outgoing referral a transfer to another country's office is.

Pure functions of rows already read, so that the rules can be tested without a database and stay
in one place. (Where the project records an HTCDS picklist value as is, such as the exploitation
types or the case facts' ``vic_`` picklists, the export copies it and nothing here is needed.)
"""

from __future__ import annotations

from datetime import date
from typing import Any

from reintegration.db import TaskRecord, TransferRecord, aware
from workflows.model import Service, TaskOutcome, TaskStatus

SERVICE_PLAN_TYPES: dict[Service, str | None] = {
    Service.medical: "Health",
    Service.psychosocial: "Health",
    Service.legal: "Legal",
    Service.legal_assistance: "Legal",
    Service.job_orientation: "Livelihood",
    Service.education: "Education",
    Service.financial: "Financial",
    Service.housing: "SocialCare",
    Service.family: "SocialCare",
    Service.shelter: "SocialCare",
    Service.security_follow_up: "SocialCare",
    # Not assistance to the person but steps of the journey (protection by the police, the return's
    # preparation and reception): no service-plan entry.
    Service.police_protection: None,
    Service.origin_assessment: None,
    Service.travel_documents: None,
    Service.family_assessment: None,
    Service.reception: None,
}
"""Each partner service's HTCDS ``spl_Type`` (the service plan's picklist), or ``None`` for a service
that is not in the person's service plan. Every service is named, so that a new one must be placed:
medical and psychosocial care are Health; legal help of either kind Legal; job orientation
Livelihood; education Education; financial help Financial; housing, family, shelter and the security
follow-up SocialCare."""

OUTGOING_REASON = "MigrationOrChangeOfLocation"
"""HTCDS ``cas_ReasonForOutgoingReferral`` of a transfer: the person moved to another country."""


def service_plan_type(service: str) -> str | None:
    """The service's ``spl_Type``; ``None`` if it is not a service-plan entry (or is unknown)."""
    try:
        return SERVICE_PLAN_TYPES[Service(service)]
    except ValueError:
        return None


def service_plan(tasks: list[TaskRecord]) -> list[dict[str, str | None]]:
    """The case's service plan, one HTCDS entry per partner task of a service-plan type, in the order
    given: ``spl_Type``, ``spl_PlannedEndDate`` (the task's due date) and ``spl_ActualEndDate`` (the
    day, UTC, it was completed with outcome ``done``; empty while open or if it could not be done).
    A cancelled task was never delivered nor is it still planned: no entry."""
    entries: list[dict[str, str | None]] = []
    for task in tasks:
        kind = service_plan_type(task.service)
        if kind is None or task.status == TaskStatus.cancelled.value:
            continue
        done = task.status == TaskStatus.completed.value and task.outcome == TaskOutcome.done.value
        entries.append(
            {
                "spl_Type": kind,
                "spl_PlannedEndDate": task.due_on.isoformat(),
                "spl_ActualEndDate": aware(task.completed_at).date().isoformat()
                if done and task.completed_at
                else None,
            }
        )
    return entries


def incoming_referral_date(referred_on: date | None, referred_by: str | None, identified_on: str | None) -> str | None:
    """HTCDS ``cas_IncomingReferralDate``: the referral's date as the caseworker recorded it; else,
    when a referring organisation is recorded, the identification date (the day the referral reached
    the office at the latest); else none (the person came without a referral, or it is not known)."""
    if referred_on is not None:
        return referred_on.isoformat()
    if referred_by and identified_on:
        return identified_on
    return None


def outgoing_referral(transfer: TransferRecord | None) -> dict[str, Any]:
    """HTCDS ``cas_ReferredOrganisation``, ``cas_OutgoingReferralDate`` and
    ``cas_ReasonForOutgoingReferral`` of a case transferred to another country's office (its latest
    accepted transfer): that office, by its country's code (the system's offices are known by their
    country), the day the transfer was offered (UTC) and ``MigrationOrChangeOfLocation``. All empty
    for a case never transferred."""
    if transfer is None:
        return {
            "cas_ReferredOrganisation": None,
            "cas_OutgoingReferralDate": None,
            "cas_ReasonForOutgoingReferral": None,
        }
    return {
        "cas_ReferredOrganisation": transfer.to_country,
        "cas_OutgoingReferralDate": aware(transfer.requested_at).date().isoformat(),
        "cas_ReasonForOutgoingReferral": OUTGOING_REASON,
    }
