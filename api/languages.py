"""The API's problems in the language the request asks for (``Accept-Language``), from the same
message catalogues as the workspace's pages (``api/web/i18n.py``); English, the source, otherwise.

A problem's ``title`` is one of a fixed set, and its ``detail`` an English sentence marked for the
catalogues where it is written (with ``N_``, defined once in ``workflows.rules.errors``, where the
journey's refusals use it, and re-exported here). A sentence with values is written as a template
with named placeholders (``"you do not work in {country}"``): ``ApiProblem`` keeps the template and its values, so the
template is what is translated. The journey's refusals reach the API already composed
(``"risk-assessment is not allowed now: the risk assessment comes first"``); they are matched
against the catalogue's templates to find the values, and a value that is itself a message of the
catalogue (the reason) is translated too. A text the catalogue does not know stays English.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping

from babel.messages.pofile import read_po
from fastapi import Request

from api.web import i18n
from workflows.rules.errors import N_ as N_  # the one marker, re-exported for the API's modules

PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
MAX_DEPTH = 2  # a value of a template may be a template's sentence itself (a reason), not deeper


def fill(template: str, values: Mapping[str, str]) -> str:
    """The template with its ``{name}``s replaced (only names: no attribute or index lookups)."""
    return PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), template)


def asked(request: Request) -> str:
    """The language the request asks for (``Accept-Language``), if the catalogues have it; else English."""
    return i18n.choose(request.headers.get("accept-language"))


def text(language: str, message: str) -> str:
    """A fixed message (a title, a detail) in ``language``; as is when the catalogue lacks it."""
    return message if language == i18n.DEFAULT else i18n.gettext(language, message)


def detail(language: str, template: str, values: Mapping[str, str] | None = None) -> str:
    """A problem's detail in ``language``: the template filled with its values, or a composed
    sentence (a journey's refusal) taken apart by the catalogue's templates; English as is."""
    if values:
        english = fill(template, values)
        if language == i18n.DEFAULT:
            return english
        return _filled(language, template, {k: _sentence(language, v, 1) for k, v in values.items()}) or english
    return _sentence(language, template, 0)


def _sentence(language: str, sentence: str, depth: int) -> str:
    if language == i18n.DEFAULT:
        return sentence
    translated = i18n.gettext(language, sentence)
    if translated != sentence or depth >= MAX_DEPTH:
        return translated
    for pattern, template in _templates(language):
        match = pattern.fullmatch(sentence)
        if match:
            values = {k: _sentence(language, v, depth + 1) for k, v in match.groupdict().items()}
            filled = _filled(language, template, values)
            if filled is not None:
                return filled
    return sentence


def _filled(language: str, template: str, values: Mapping[str, str]) -> str | None:
    """The translated template with the values, or None if the translation lacks it or names a
    placeholder the English does not have (a translator's slip shows English, not a brace)."""
    translated = i18n.gettext(language, template)
    if translated == template and language != i18n.DEFAULT:
        return None
    if not set(PLACEHOLDER.findall(translated)) <= set(values):
        return None
    return fill(translated, values)


@functools.cache
def _templates(language: str) -> tuple[tuple[re.Pattern[str], str], ...]:
    """The translated messages of ``language``'s catalogue that have placeholders, each as a pattern
    that finds the values in the English sentence; the most specific (most fixed words) first."""
    path = i18n.LOCALE_DIR / language / "LC_MESSAGES" / "messages.po"
    if language == i18n.DEFAULT or not path.exists():
        return ()
    with path.open("rb") as po:
        catalog = read_po(po, locale=language)
    found = [
        (_pattern(message.id), message.id)
        for message in catalog
        if isinstance(message.id, str) and message.string and not message.fuzzy and PLACEHOLDER.search(message.id)
    ]
    found.sort(key=lambda item: -len(PLACEHOLDER.sub("", item[1])))
    return tuple(found)


def _pattern(template: str) -> re.Pattern[str]:
    parts: list[str] = []
    seen: set[str] = set()
    position = 0
    for match in PLACEHOLDER.finditer(template):
        parts.append(re.escape(template[position : match.start()]))
        name = match.group(1)
        parts.append(f"(?P={name})" if name in seen else f"(?P<{name}>.+?)")
        seen.add(name)
        position = match.end()
    parts.append(re.escape(template[position:]))
    return re.compile("".join(parts), re.DOTALL)
