"""The words of the forms built from the models (``api/web/forms.py``): each field's label and
hint by its name in the models, the legends of repeated fieldsets, and pydantic's errors in words.
English, the source language, marked for the catalogues."""

from __future__ import annotations

from api.web.labels import N_

COUNTRY = "^[A-Z]{2}$"

# The words for each field, by its name in the models (English, the source language).
FIELD_LABELS: dict[str, str] = {
    # the person (CaseCreate.person)
    "person": N_("The person"),
    "first_name": N_("First name"),
    "second_name": N_("Family name"),
    "birthdate": N_("Birth date"),
    "presumed_minor": N_("Presumed to be a minor"),
    "gender": N_("Gender"),
    "citizenship": N_("Citizenship"),
    "primary_language": N_("Primary language"),
    "identity_number": N_("Identity document number"),
    "mobile_phone": N_("Mobile phone"),
    "identification_place": N_("Place of identification"),
    # identification
    "identification": N_("Identification"),
    "identified_on": N_("Identified on"),
    "country": N_("Country of identification"),
    "place": N_("Place of identification"),
    "referred_by": N_("Referred by"),
    "exploitation_types": N_("Types of exploitation"),
    "trafficking_status": N_("Trafficking status"),
    "origin_country": N_("Country of origin"),
    # consent
    "consent": N_("Consent"),
    "assistance": N_("Consents to assistance"),
    "data_sharing": N_("Consents to sharing the data a service needs with partner agencies"),
    "given_on": N_("Consent given on"),
    "withdrawn_on": N_("Consent withdrawn on"),
    # protection
    "level": N_("Risk level"),
    "threats": N_("Threats found"),
    "assessed_on": N_("Assessed on"),
    "measures": N_("Measures"),
    "measure": N_("Measure"),
    "agreed_on": N_("Agreed on"),
    "guardian_type": N_("Kind of guardian"),
    "authority_reference": N_("Authority's reference"),
    "appointed_on": N_("Appointed on"),
    "confirmed_on": N_("Confirmed on"),
    # pathway and its stages
    "pathway": N_("Pathway"),
    "decided_on": N_("Decided on"),
    "reason": N_("Reason"),
    "travel_date": N_("Travel date"),
    "route": N_("Route"),
    "escort": N_("With an escort"),
    "receiving_caseworker": N_("Receiving caseworker"),
    "departed_on": N_("Departed on"),
    "filed_on": N_("Filed on"),
    "permit_type": N_("Kind of permit"),
    "decision": N_("Decision"),
    "valid_until": N_("Valid until"),
    # reintegration
    "services": N_("Services"),
    "visited_on": N_("Visited on"),
    "economic": N_("Economic"),
    "social": N_("Social"),
    "psychosocial": N_("Psychosocial"),
    # tasks
    "service": N_("Service"),
    "agency_id": N_("Agency"),
    "due_date": N_("Due date"),
    "notes": N_("Notes"),
    "outcome": N_("Outcome"),
    "assessment": N_("Assessment of return"),
    "arrived_on": N_("Arrived on"),
    "caseworker": N_("Caseworker"),
    # case notes
    "text": N_("Note"),
    # transfers to another country's office
    "to_country": N_("Country of the office to take the case"),
    "to_caseworker": N_("Caseworker there"),
    # reopening
    "stage": N_("Stage to start again in"),
    # linked cases
    "reference": N_("Case reference"),
    "relation": N_("How the cases are related"),
}

# The legend of each repeated fieldset, numbered.
ITEM_LEGENDS: dict[str, str] = {
    "measures": N_("Measure %(number)s"),
    "services": N_("Service %(number)s"),
}

FIELD_HINTS: dict[str, str] = {
    "birthdate": N_("Leave empty if it is not known."),
    "presumed_minor": N_("When the birth date is not known: treat the person as a minor until shown otherwise."),
    "citizenship": N_("Two-letter country codes, one per line, e.g. RO."),
    "primary_language": N_("A language code, e.g. ro."),
    "country": N_("Two-letter code, e.g. ES: the case is managed in this country."),
    "origin_country": N_("Two-letter code, e.g. RO."),
    "exploitation_types": N_("Tick every type that applies."),
    "threats": N_("One per line."),
    "measures": N_("Fill in one fieldset per measure; empty ones are ignored."),
    "services": N_("Fill in one fieldset per service; empty ones are ignored."),
    "receiving_caseworker": N_("The user id of the caseworker in the country of origin who takes the case on arrival."),
    "valid_until": N_("For a permit granted."),
    "economic": N_("A score from 0 to 1."),
    "social": N_("A score from 0 to 1."),
    "psychosocial": N_("A score from 0 to 1."),
    "consent": N_("If the person has already given informed consent; otherwise record it later, as a step."),
    "caseworker": N_("The user id of the caseworker."),
    "text": N_("What happened, in your words. Kept confidential with the case; every reading is recorded."),
    "to_country": N_("Two-letter code, e.g. PT."),
}
# Hints for a field that may be left empty only.
OPTIONAL_HINTS: dict[str, str] = {
    "agency_id": N_("Leave empty for the service's usual agency."),
    "due_date": N_("Leave empty for the usual time."),
    "to_caseworker": N_("The user id of a caseworker there, if one is agreed; leave empty to let that office choose."),
}

# Pydantic's error types, in words.
MESSAGES: dict[str, str] = {
    "missing": N_("Fill this in."),
    "string_too_short": N_("Fill this in."),
    "string_too_long": N_("Use at most %(max_length)s characters."),
    "too_short": N_("Give at least %(min_length)s."),
    "too_long": N_("Give at most %(max_length)s."),
    "date_parsing": N_("Give a date."),
    "date_type": N_("Give a date."),
    "date_from_datetime_parsing": N_("Give a date."),
    "date_from_datetime_inexact": N_("Give a date."),
    "greater_than_equal": N_("Give at least %(ge)s."),
    "less_than_equal": N_("Give at most %(le)s."),
    "greater_than": N_("Give more than %(gt)s."),
    "less_than": N_("Give less than %(lt)s."),
    "float_parsing": N_("Give a number."),
    "float_type": N_("Give a number."),
    "int_parsing": N_("Give a whole number."),
    "int_type": N_("Give a whole number."),
    "finite_number": N_("Give a number."),
    "enum": N_("Choose one of the options."),
    "literal_error": N_("Choose one of the options."),
    "bool_parsing": N_("Tick the box or leave it empty."),
    "value_error": N_("Something here holds characters that are not allowed (control characters)."),
}
PATTERN_MESSAGES: dict[str, str] = {
    COUNTRY: N_("Give a two-letter country code, e.g. ES."),
}
IDENTIFIER_MESSAGE = N_("Use only letters, digits and . _ @ : - (no spaces).")
OTHER_MESSAGE = N_("This value is not valid.")
