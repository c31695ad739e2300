"""The API's problems in the language the request asks for (``Accept-Language``), from the same
catalogues as the workspace's pages; English, exactly as before, when no language (or one the
catalogues lack) is asked for.

The Spanish catalogue holds, besides whatever translators add, the translations these tests rely on:
the titles "Not found" and "Not allowed now", the detail "no such case", the journey's template
"{step} is not allowed now: {reason}" and its reason "the risk assessment comes first". The tests
compare with what the catalogue says, so a better wording there keeps them true.
"""

from __future__ import annotations

import uuid

from api import languages
from api.errors import ApiProblem
from api.web import i18n
from tests.journey import Journey, case_body, day

ES = {"Accept-Language": "es-ES,es;q=0.9,en;q=0.5"}


def es(message: str) -> str:
    translated = i18n.gettext("es", message)
    assert translated != message, f"the Spanish catalogue lacks {message!r}"
    return translated


async def test_a_404_in_spanish(stack):
    auth = stack.auth("caseworker", "cw-es-1", countries=["ES"])
    missing = f"/v1/cases/{uuid.uuid4()}"
    r = await stack.http.get(missing, headers={**auth, **ES})
    assert r.status_code == 404 and r.headers["content-language"] == "es"
    assert r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert (problem["title"], problem["detail"]) == (es("Not found"), es("no such case"))
    assert problem["status"] == 404 and problem["type"].endswith("/404")
    # The same request without a language: English, exactly as the API has always answered.
    r = await stack.http.get(missing, headers=auth)
    assert r.json() == {
        "type": "https://reintegration.example/problems/404",
        "title": "Not found",
        "status": 404,
        "detail": "no such case",
    }
    assert r.headers["content-language"] == "en"
    # A language the catalogues do not have, or nonsense: English.
    for asked in ("de-DE", "xx;q=1, *;q=0.5", ";;;"):
        r = await stack.http.get(missing, headers={**auth, "Accept-Language": asked})
        assert (r.json()["title"], r.headers["content-language"]) == ("Not found", "en"), asked


async def test_a_refused_step_in_spanish_keeps_its_values(stack):
    journey = Journey(stack)
    await journey.open()
    path = f"/v1/cases/{journey.case_id}/steps/security-guarantee"
    body = {"confirmed_on": day(0)}
    r = await stack.http.post(path, json=body, headers={**journey.cw, **ES})
    assert r.status_code == 409 and r.headers["content-language"] == "es"
    problem = r.json()
    assert problem["title"] == es("Not allowed now")
    # The workflow's English sentence, taken apart by the catalogue's template: the step stays the
    # API's identifier, the reason is translated.
    reason = es("the risk assessment comes first")
    assert problem["detail"] == es("{step} is not allowed now: {reason}").format(
        step="security-guarantee", reason=reason
    )
    assert "risk-assessment" in problem["allowed_steps"]  # the values beside the words are the same
    english = await stack.http.post(path, json=body, headers=journey.cw)
    assert english.status_code == 409
    assert english.json() == {
        **problem,
        "title": "Not allowed now",
        "detail": "security-guarantee is not allowed now: the risk assessment comes first",
    }
    assert (await journey.get())["stage"] == "protection"  # refused in either language: nothing changed


async def test_a_detail_with_values_is_translated_as_a_whole(stack):
    journey = Journey(stack)
    r = await stack.http.post("/v1/cases", json=case_body(country="PT"), headers={**journey.cw, **ES})
    assert r.status_code == 422
    assert r.json()["detail"] == es("you do not work in {country}").format(country="PT") != "you do not work in PT"
    assert r.json()["title"] == i18n.gettext("es", "Invalid request")


def test_templates_translate_whole_and_a_slip_in_a_translation_shows_english():
    problem = ApiProblem(languages.N_("you do not work in {country}"), params={"country": "PT"})
    assert problem.detail == "you do not work in PT" and str(problem) == "you do not work in PT"
    assert problem.translated("en") == ("Internal error", "you do not work in PT")
    # A composed sentence whose reason the catalogue does not know: the frame translated, the
    # reason left in English rather than lost.
    sentence = "guardian is not allowed now: a reason nobody wrote"
    frame = es("{step} is not allowed now: {reason}")
    assert languages.detail("es", sentence) == frame.format(step="guardian", reason="a reason nobody wrote")
    known = "guardian is not allowed now: a guardian is appointed only for a minor"
    assert languages.detail("es", known) == frame.format(
        step="guardian", reason=es("a guardian is appointed only for a minor")
    )
    assert languages.detail("es", "a sentence nobody wrote") == "a sentence nobody wrote"
    # Only names are filled: no attribute or index lookups through a (mis)translated template.
    assert languages.fill("{a.__class__} {b[0]} {c}", {"c": "x"}) == "{a.__class__} {b[0]} x"


def test_every_problem_title_and_the_journeys_refusals_are_in_the_catalogue():
    template = {str(m.id) for m in i18n.extract() if m.id}
    titles = {cls.title for cls in _subclasses(ApiProblem)} | {ApiProblem.title}
    assert titles <= template, titles - template
    for refusal in (
        "{step} is not allowed now: {reason}",
        "the risk assessment comes first",
        "allowed in the {wanted} stage, and the case is in {stage}",
        "a task that is {status} cannot be {done}",
        "no such case",
        "you do not work in {country}",
        "{agency} does not offer {service}",
        "Temporal is unavailable",
    ):
        assert refusal in template, refusal


def _subclasses(cls: type) -> set[type]:
    found = set(cls.__subclasses__())
    for sub in list(found):
        found |= _subclasses(sub)
    return found
