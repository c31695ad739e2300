"""Words for the journey's values (roles, stages, steps, services, statuses, ...), marked for the
message catalogues so ``reintegration i18n update`` extracts them; pages show ``label(value)``."""

from __future__ import annotations

from workflows.rules.errors import N_ as N_  # the one marker (the pages import it from here)

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
    # kinds of documents
    "consent-form": N_("Consent form"),
    "identity-document": N_("Identity or travel document"),
    "medical-report": N_("Medical report"),
    "legal-document": N_("Legal document"),
    # relations of linked cases
    "family-members": N_("Family members"),
    "same-situation": N_("Co-victims of one trafficking situation"),
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
    # transfers to another country's office
    "pending": N_("Waiting for an answer"),
    "refused": N_("Refused"),
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

# --- The sustainability survey (the monitoring step; issue 17): its dimensions and its questions by
# their ids, apart from LABELS since some ids are services' too ("housing", "education",
# "psychosocial"); each question's words at either end of its scale of 1 (the worst) to 5 (the best).
SUSTAINABILITY_DIMENSIONS: dict[str, str] = {
    "economic": N_("Economic"),
    "social": N_("Social"),
    "psychosocial": N_("Psychosocial"),
}
SURVEY_QUESTIONS: dict[str, str] = {
    "economic_satisfaction": N_("Satisfaction with their current economic situation"),
    "food_security": N_("How often the household had to reduce food"),
    "ability_to_borrow": N_("Could borrow money if needed"),
    "debt_to_spending": N_("Debt repayments are small next to spending"),
    "employment": N_("Working or in training, or has a regular income"),
    "housing": N_("Access to housing, and its standard"),
    "education": N_("School-age children in the household attend school"),
    "justice": N_("Access to justice and law enforcement"),
    "documentation": N_("Holds identity documents"),
    "public_services": N_("Access to health care and drinking water"),
    "social_participation": N_("Takes part in community activities"),
    "support_network": N_("Has people to rely on"),
    "discrimination": N_("Does not experience discrimination"),
    "wellbeing": N_("Rarely shows signs of distress"),
    "physical_safety": N_("Feels physically safe where they live"),
}
_QUALITY = (N_("very poor"), N_("very good"))
_EXTENT = (N_("not at all"), N_("fully"))
SURVEY_ANCHORS: dict[str, tuple[str, str]] = {
    "economic_satisfaction": (N_("very low"), N_("very high")),
    "food_security": (N_("very often"), N_("never")),
    "ability_to_borrow": _EXTENT,
    "debt_to_spending": _EXTENT,
    "employment": _EXTENT,
    "housing": _QUALITY,
    "education": _EXTENT,
    "justice": _QUALITY,
    "documentation": _EXTENT,
    "public_services": _QUALITY,
    "social_participation": _EXTENT,
    "support_network": _EXTENT,
    "discrimination": _EXTENT,
    "wellbeing": _EXTENT,
    "physical_safety": _EXTENT,
}

# --- The case's anonymous facts (issue 17; api/web/case_facts.py): the victim's HTCDS picklists in
# short words, added to LABELS (their values are no other field's); brand names not listed show as
# they are (Facebook, WhatsApp, ...). "Other" and "Education" are in LABELS already.
VICTIM_LABELS: dict[str, str] = {
    # vic_MethodOfRecruitment
    "AtAPlaceOfBusiness": N_("At a place of business"),
    "AtAnEducationalInstitution": N_("At a school or college"),
    "AtWork": N_("At work"),
    "ThroughOnlineSocialNetworks": N_("Online social networks"),
    "ThroughAnOnlineAdvertisement": N_("Online advertisement"),
    "ThroughATelevisionAdvert": N_("Television advertisement"),
    "ThroughANewspaperAdvert": N_("Newspaper advertisement"),
    "ThroughFamilyOrFamilyEvents": N_("Family or family events"),
    "ThroughFriendsOrSocialEvents": N_("Friends or social events"),
    # vic_RecruitmentWebsitesAndApps
    "FacebookMessenger": N_("Facebook Messenger"),
    "SnapChat": N_("Snapchat"),
    # vic_MethodsOfControl
    "PhysicalThreats": N_("Threats of violence"),
    "ThreatsLawEnforcement": N_("Threatens to report to the authorities"),
    "ThreatensChildrenFamily": N_("Threatens children or family"),
    "DebtBondage": N_("Debt bondage"),
    "FalsePromises": N_("False promises"),
    "PhysicalAbuse": N_("Physical abuse"),
    "SexualAbuse": N_("Sexual abuse"),
    "TakesEarnings": N_("Takes earnings"),
    "RestrictsFinancialAccess": N_("Restricts access to money"),
    "RestrictsMedicalCare": N_("Restricts medical care"),
    "WithholdsNecessities": N_("Withholds necessities"),
    "PsychologicalAbuse": N_("Psychological abuse"),
    "PsychoactiveSubstance": N_("Psychoactive substances"),
    "ExcessiveWorkingHours": N_("Excessive working hours"),
    "WithholdsDocuments": N_("Withholds documents"),
    # vic_TypeOfSexExploitation
    "Prostitution": N_("Prostitution"),
    "Pornography": N_("Pornography"),
    "RemoteInteractiveServices": N_("Remote interactive services"),
    "PrivateSexualServices": N_("Private sexual services"),
    # vic_ForcedLabourIndustry (ISIC sections)
    "A_AgricultureForestryAndFishing": N_("Agriculture, forestry and fishing"),
    "B_MiningAndQuarrying": N_("Mining and quarrying"),
    "C_Manufacturing": N_("Manufacturing"),
    "D_ElectricityGasSteamAndAirConditioningSupply": N_("Electricity, gas, steam and air conditioning"),
    "E_WaterSupplySewerageWasteManagement": N_("Water supply, sewerage and waste management"),
    "F_Construction": N_("Construction"),
    "G_WholesaleAndRetailTradeRepairOfMotorVehicles": N_("Wholesale and retail trade, repair of vehicles"),
    "H_TransportationAndStorage": N_("Transportation and storage"),
    "I_AccommodationAndFoodServiceActivities": N_("Accommodation and food services"),
    "J_InformationAndCommunication": N_("Information and communication"),
    "K_FinancialAndInsuranceActivities": N_("Financial and insurance activities"),
    "L_RealEstateActivities": N_("Real estate activities"),
    "M_ProfessionalScientificAndTechnicalActivities": N_("Professional, scientific and technical activities"),
    "N_AdministrativeAndSupportServiceActivities": N_("Administrative and support services"),
    "O_PublicAdministrationAndDefence": N_("Public administration and defence"),
    "P_Education": N_("Education"),
    "Q_HumanHealthAndSocialWorkActivities": N_("Human health and social work"),
    "R_ArtsEntertainmentAndRecreation": N_("Arts, entertainment and recreation"),
    "S_OtherServiceActivities": N_("Other service activities"),
    "T_ActivitiesOfHouseholdsAsEmployers": N_("Households as employers (domestic work)"),
    "U_ActivitiesOfExtraterritorialOrganizations": N_("Extraterritorial organisations"),
    # vic_RelationshipToTrafficker
    "Familial": N_("Family member"),
    "Acquainted": N_("Acquaintance"),
    "Unaquainted": N_("Stranger"),
}
LABELS.update(VICTIM_LABELS)
# The facts' fields, by their names in ``VictimFacts`` (its form: the intake's optional section and
# the case facts' own page), and the age bands of ``reintegration.case_facts.AgeBand``.
VICTIM_FIELDS: dict[str, str] = {
    "recruitment_methods": N_("Methods of recruitment"),
    "recruitment_websites": N_("Websites and apps used to recruit"),
    "control_methods": N_("Methods of control"),
    "sex_exploitation_types": N_("Type of sexual exploitation"),
    "forced_labour_industry": N_("Industry of the forced labour"),
    "relationship_to_trafficker": N_("Relationship to the trafficker"),
    "referred_on": N_("Date of the referral"),
}
AGE_BANDS: dict[str, str] = {
    "0-11": N_("0–11 years"),
    "12-17": N_("12–17 years"),
    "18-24": N_("18–24 years"),
    "25-34": N_("25–34 years"),
    "35-49": N_("35–49 years"),
    "50+": N_("50 years or older"),
    "unknown": N_("Not known"),
}

# --- The indicators (api/web/reports.py): a group's values that are none of the values above, by
# group (the "none yet" of a pathway or a service); the age bands are AGE_BANDS, the other values
# LABELS' own (sex, exploitation types, pathways, services, stages) or a country's name.
REPORT_GROUP_VALUES: dict[str, dict[str, str]] = {
    "age_band": AGE_BANDS,
    "pathway": {"none": N_("No pathway decided yet")},
    "service": {"none": N_("No service delivered")},
    "exploitation_type": {"unknown": N_("Type not recorded")},
}
