"""Languages of the workspace (and of the API's problems): message catalogues in gettext's format,
one ``messages.po`` per language under ``api/web/locale``, extracted from the code and the
templates by ``reintegration i18n update`` (``make messages``). English is the source language.

The language is the one the person chose (a cookie set by the language switch), or else the best
match of the browser's ``Accept-Language``. Dates and numbers are formatted with Babel for it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import date, datetime
from pathlib import Path

from babel import Locale, dates, numbers
from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po, write_po

from reintegration import catalogues

LOCALE_DIR = catalogues.LOCALE_DIR
DEFAULT = catalogues.DEFAULT
translations = catalogues.translations  # compiled once per process, shared with the e-mails
LANGUAGES = ("en", "es", "fr")  # the source language first
LANGUAGE_NAMES = {"en": "English", "es": "Español", "fr": "Français"}
COOKIE = "lang"
_ACCEPT = re.compile(r"^\s*([A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*|\*)\s*(?:;\s*q\s*=\s*([01](?:\.\d{0,3})?))?\s*$")
# Where messages are found (a folder of the repository, the files in it, how each is read).
SOURCES = Path(__file__).resolve().parents[2]
JINJA = "jinja2.ext:babel_extract"
METHODS = [
    ("api", "**.py", "python"),
    ("reintegration", "**.py", "python"),
    ("workflows", "**.py", "python"),
    ("api/web/templates", "**.html", JINJA),
]
KEYWORDS = {"_": None, "gettext": None, "ngettext": (1, 2), "N_": None}
JINJA_OPTIONS = {"extensions": "jinja2.ext.i18n", "trimmed": "true"}


def _po_path(language: str) -> Path:
    return catalogues.po_path(language)


def gettext(language: str, message: str) -> str:
    return translations(language).gettext(message)


def choose(header: str | None, cookie: str | None = None) -> str:
    """The person's choice if it is one of ours, else the best of ``Accept-Language``, else English."""
    if cookie in LANGUAGES:
        return cookie
    ranked: list[tuple[float, int, str]] = []
    for position, part in enumerate((header or "").split(",")[:20]):
        match = _ACCEPT.match(part)
        if not match:
            continue
        tag, quality = match.group(1), float(match.group(2) or 1)
        if quality > 0 and tag != "*":
            ranked.append((-quality, position, tag.lower().split("-")[0]))
    for _, _, language in sorted(ranked):
        if language in LANGUAGES:
            return language
    return DEFAULT


def format_date(value: date | datetime | None, language: str) -> str:
    if value is None:
        return ""
    day = value.date() if isinstance(value, datetime) else value
    return dates.format_date(day, format="medium", locale=Locale.parse(language))


def format_datetime(value: datetime | None, language: str) -> str:
    """A moment in UTC, with its zone said, in the language's medium format."""
    if value is None:
        return ""
    return dates.format_datetime(value, format="medium", tzinfo=dates.UTC, locale=Locale.parse(language)) + " UTC"


def format_number(value: float | int, language: str, digits: int = 1) -> str:
    return numbers.format_decimal(round(value, digits), locale=Locale.parse(language))


# --- Keeping the catalogues ----------------------------------------------------------------------


def extract() -> Catalog:
    """Every message of the code and the templates, as a template catalogue."""
    catalog = Catalog(project="reintegration-orchestrator", charset="utf-8")
    for folder, pattern, method in METHODS:
        found = extract_from_dir(
            SOURCES / folder,
            method_map=[(pattern, method)],
            keywords=KEYWORDS,
            options_map={pattern: JINJA_OPTIONS} if method == JINJA else None,
        )
        for filename, lineno, message, comments, context in found:
            catalog.add(message, locations=[(f"{folder}/{filename}", lineno)], auto_comments=comments, context=context)
    return catalog


def update() -> dict[str, list[str]]:
    """Write ``messages.pot`` and bring every language's ``messages.po`` up to it; the messages each
    language still lacks a translation for."""
    template = extract()
    LOCALE_DIR.mkdir(parents=True, exist_ok=True)
    with (LOCALE_DIR / "messages.pot").open("wb") as pot:
        write_po(pot, template, omit_header=True, sort_output=True, width=120)
    missing: dict[str, list[str]] = {}
    for language in LANGUAGES[1:]:
        path = _po_path(language)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            with path.open("rb") as po:
                catalog = read_po(po, locale=language)
        else:
            catalog = Catalog(locale=language, charset="utf-8")
        catalog.update(template, no_fuzzy_matching=True)
        with path.open("wb") as po:
            write_po(po, catalog, omit_header=True, sort_output=True, width=120, ignore_obsolete=True)
        missing[language] = untranslated(catalog)
    return missing


def untranslated(catalog: Iterable) -> list[str]:  # type: ignore[type-arg]
    return [str(m.id) for m in catalog if m.id and (not m.string or m.fuzzy)]


def check() -> dict[str, list[str]]:
    """The messages of the code each language lacks (or holds only a fuzzy guess for)."""
    template = extract()
    missing: dict[str, list[str]] = {}
    for language in LANGUAGES[1:]:
        path = _po_path(language)
        translated: set[str] = set()
        if path.exists():
            with path.open("rb") as po:
                translated = {str(m.id) for m in read_po(po, locale=language) if m.id and m.string and not m.fuzzy}
        missing[language] = sorted(str(m.id) for m in template if m.id and str(m.id) not in translated)
    return missing
