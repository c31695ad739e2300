"""The monitoring step's page: IOM's Reintegration Sustainability Survey as a form, its 15 questions
in a fieldset per dimension, each answered 1 (the worst situation) to 5 (the best) or "not
applicable", and sent as the step's body with its ``survey`` (``MonitoringBody``); the workspace
takes the survey only, never the three scores typed in.

The form's model (``SURVEY_FORM``) groups the questions by dimension, so that ``forms.build`` draws
a fieldset per dimension and ``forms.check`` puts an error beside its question; a dimension with too
few answers (``rules.reintegration.short_dimensions``, the rule the workflow applies again) is said
beside its fieldset before anything is sent."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, create_model

from api.web import forms
from api.web.labels import N_, SURVEY_ANCHORS, SURVEY_QUESTIONS, SUSTAINABILITY_DIMENSIONS
from workflows.model import (
    SURVEY_INDICATORS,
    SURVEY_MIN_ANSWERS,
    Day,
    Notes,
    Strict,
    SurveyAnswer,
    SurveyIndicator,
    SustainabilityDimension,
    indicators_of,
)
from workflows.rules.reintegration import MonitoringBody, SurveyAnswers, short_dimensions

SCALE = range(1, 6)
DIMENSION_HINT = N_("1 is the worst situation, 5 the best. At least %(minimum)s of these questions answered.")
TOO_FEW = N_("Answer at least %(minimum)s of these questions (1 to 5).")
NOT_APPLICABLE = N_("Not applicable")


def _dimension_model(dimension: SustainabilityDimension) -> type[BaseModel]:
    """A dimension's questions, each an answer or none (not applicable)."""
    fields: dict[str, Any] = {i.value: (SurveyAnswer | None, None) for i in indicators_of(dimension)}
    return create_model(f"Survey{dimension.value.capitalize()}", __base__=Strict, **fields)


def _form_model() -> type[BaseModel]:
    dimensions: dict[str, Any] = {d.value: (_dimension_model(d), ...) for d in SustainabilityDimension}
    return create_model("MonitoringSurveyForm", __base__=Strict, visited_on=(Day, ...), **dimensions, notes=(Notes, ""))


# The monitoring step's form: the visit's day, the survey's questions by dimension, notes.
SURVEY_FORM = _form_model()


def _scale(indicator: SurveyIndicator, _: forms.Translate) -> forms.Options:
    low, high = SURVEY_ANCHORS[indicator.value]
    words = {SCALE[0]: _(low), SCALE[-1]: _(high)}
    choices = [forms.Choice(str(n), str(n), words.get(n, "")) for n in SCALE]
    return forms.Options(choices=choices, empty=_(NOT_APPLICABLE), widget="radios")


def build(_: forms.Translate, *, raw: forms.Raw | None = None, errors: forms.Errors | None = None) -> forms.Form:
    """The survey's form: a fieldset per dimension, a row of radio buttons per question."""
    options = {i.value: _scale(i, _) for i in SurveyIndicator}
    form = forms.build(SURVEY_FORM, _, raw=raw, options=options, errors=errors)
    for item in form.walk():
        key = item.name.rsplit(".", 1)[-1]
        if isinstance(item, forms.Fieldset) and key in SUSTAINABILITY_DIMENSIONS:
            item.legend = _(SUSTAINABILITY_DIMENSIONS[key])
            item.hint = _(DIMENSION_HINT) % {"minimum": SURVEY_MIN_ANSWERS}
        elif isinstance(item, forms.Field) and key in SURVEY_QUESTIONS:
            item.label = _(SURVEY_QUESTIONS[key])
            item.within = _(SUSTAINABILITY_DIMENSIONS[item.name.split(".", 1)[0]])
    return form


def _answers(raw: forms.Raw) -> dict[SurveyIndicator, int | None]:
    """The answers as posted, each "1" to "5" or none (anything else is an error ``forms.check`` says
    beside its question)."""
    given = {str(n): n for n in SCALE}
    return {i: given.get(str(raw.get(f"{d.value}.{i.value}", ""))) for i, d in SURVEY_INDICATORS.items()}


def check(_: forms.Translate, raw: forms.Raw) -> tuple[MonitoringBody | None, forms.Errors]:
    """The posted survey as the step's body; or None, and what is wrong beside its field or dimension
    (a dimension with too few answers too when something else is wrong, so that one sending says all)."""
    sent, errors = forms.check(SURVEY_FORM, _, raw)
    short = short_dimensions(_answers(raw))
    if short:
        too_few = [(d.value, _(TOO_FEW) % {"minimum": SURVEY_MIN_ANSWERS}) for d in short]
        return None, forms.Errors([*errors.found, *too_few])
    if sent is None:
        return None, errors
    values = sent.model_dump()
    answers = SurveyAnswers.model_validate({k: v for d in SustainabilityDimension for k, v in values[d.value].items()})
    return MonitoringBody(visited_on=values["visited_on"], survey=answers, notes=values["notes"]), forms.Errors()
