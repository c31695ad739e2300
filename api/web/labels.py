"""Words for the journey's values (roles, stages, steps, services, statuses, ...), marked for the
message catalogues so ``reintegration i18n update`` extracts them; pages show ``label(value)``."""

from __future__ import annotations


def N_(message: str) -> str:  # noqa: N802 - gettext's name for "mark for extraction, translate later"
    return message


LABELS: dict[str, str] = {
    # roles
    "caseworker": N_("Caseworker"),
    "partner": N_("Partner agency"),
    "supervisor": N_("Supervisor"),
    "admin": N_("Administrator"),
    # stages
    "identification": N_("Identification"),
    "protection": N_("Protection"),
    "pathway": N_("Pathway"),
    "return": N_("Voluntary return"),
    "residence": N_("Residence"),
    "reintegration": N_("Reintegration"),
    "closed": N_("Closed"),
    # case statuses
    "active": N_("Active"),
    "stalled": N_("Stalled"),
    # pathways
    "voluntary_return": N_("Voluntary return"),
    # steps
    "consent": N_("Consent"),
    "risk-assessment": N_("Risk assessment"),
    "safety-plan": N_("Safety plan"),
    "guardian": N_("Guardian"),
    "security-guarantee": N_("Security guarantee"),
    "travel-plan": N_("Travel plan"),
    "departure": N_("Departure"),
    "residence-application": N_("Residence application"),
    "residence-decision": N_("Residence decision"),
    "appeal": N_("Appeal"),
    "reintegration-plan": N_("Reintegration plan"),
    "monitoring": N_("Monitoring visit"),
    "closure": N_("Closure"),
    "approve-closure": N_("Approve closure"),
    "reject-closure": N_("Reject closure"),
    "withdraw-consent": N_("Withdraw consent"),
    # services
    "shelter": N_("Shelter"),
    "medical": N_("Medical care"),
    "police-protection": N_("Police protection"),
    "origin-assessment": N_("Origin assessment"),
    "travel-documents": N_("Travel documents"),
    "family-assessment": N_("Family assessment"),
    "reception": N_("Reception"),
    "legal-assistance": N_("Legal assistance"),
    "psychosocial": N_("Psychosocial support"),
    "legal": N_("Legal help"),
    "job-orientation": N_("Job orientation"),
    "education": N_("Education"),
    "housing": N_("Housing"),
    "financial": N_("Financial support"),
    "family": N_("Family support"),
    "security-follow-up": N_("Security follow-up"),
    # task statuses and outcomes
    "assigned": N_("Assigned"),
    "accepted": N_("Accepted"),
    "completed": N_("Completed"),
    "declined": N_("Declined"),
    "delivery_failed": N_("Not delivered"),
    "cancelled": N_("Cancelled"),
    "done": N_("Done"),
    "unable": N_("Unable"),
    "safe": N_("Safe"),
    "unsafe": N_("Unsafe"),
    # risk levels
    "low": N_("Low"),
    "medium": N_("Medium"),
    "high": N_("High"),
    # closure reasons
    "withdrew": N_("Withdrew"),
    "lost-contact": N_("Lost contact"),
    "transferred": N_("Transferred"),
    "other": N_("Other"),
    # whose turn
    "agency": N_("Agency"),
    # --- the partner's task page (api/web/partner.py): the person's fields an agency may be shown ---
    "first_name": N_("First name"),
    "second_name": N_("Family name"),
    "birthdate": N_("Date of birth"),
    "gender": N_("Gender"),
    "citizenship": N_("Citizenship"),
    "primary_language": N_("Primary language"),
    "identity_number": N_("Identity document number"),
    "mobile_phone": N_("Mobile phone"),
    "travel_date": N_("Travel date"),
    # --- the case pages (api/web/caseworker.py) ---
    "authority": N_("Authority"),
    "inactivity": N_("No activity"),
    "no activity": N_("No activity"),
    # timeline: kinds of entry, and what happened
    "step": N_("Step"),
    "task": N_("Task"),
    "stage": N_("Stage"),
    "case": N_("Case"),
    "supervision": N_("Supervision"),
    "opened": N_("Opened"),
    "reassigned": N_("Reassigned"),
    "handed-over": N_("Handed over"),
    "delivery-failed": N_("Not delivered"),
    "escalated": N_("Escalated"),
    "stall-cleared": N_("No longer stalled"),
    # residence decisions
    "granted": N_("Granted"),
    "rejected": N_("Rejected"),
    # HTCDS vic_TypeOfExploitation
    "ForcedLabour": N_("Forced labour"),
    "SexualExploitation": N_("Sexual exploitation"),
    "ChildLabour": N_("Child labour"),
    "ForcedMarriage": N_("Forced marriage"),
    "Servitude": N_("Servitude"),
    "ForcedMilitaryByNonStateActors": N_("Forced military service by non-state actors"),
    "OrganRemoval": N_("Organ removal"),
    "ForcedBegging": N_("Forced begging"),
    "ForcedAdoption": N_("Forced adoption"),
    "Surrogacy": N_("Surrogacy"),
    "Other": N_("Other"),
    # HTCDS vic_TraffickingStatus
    "PossibleVictimOfTrafficking": N_("Possible victim of trafficking"),
    "ActualVictimOfTrafficking": N_("Victim of trafficking"),
    "NotAVictimOfTrafficking": N_("Not a victim of trafficking"),
    # HTCDS org_Type
    "NGO": N_("Non-governmental organisation"),
    "LawEnforcement": N_("Law enforcement"),
    "HealthServiceOrganisation": N_("Health service"),
    "CentralGovernmentOrganisation": N_("Central government"),
    "LocalGovernmentOrganisation": N_("Local government"),
    "ImmigrationService": N_("Immigration service"),
    "LegalService": N_("Legal service"),
    "CorporateBusiness": N_("Business"),
    "SchoolOrCollege": N_("School or college"),
    # HTCDS prs_Gender
    "Feminine": N_("Female"),
    "Masculine": N_("Male"),
    "TransgenderFeminine": N_("Transgender female"),
    "TransgenderMasculine": N_("Transgender male"),
    "NonConforming": N_("Gender non-conforming"),
    "NonSpecifiedUnknown": N_("Not specified or unknown"),
}
