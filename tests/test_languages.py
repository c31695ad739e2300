"""Every text of the workspace and of the API's problems exists in every language, and each
translation keeps its message's placeholders (a lost ``{step}`` would show a sentence with a hole; a
renamed one would fail at run time)."""

from __future__ import annotations

import re

import pytest
from babel.messages.pofile import read_po

from api.web import i18n

PLACEHOLDER = re.compile(r"\{[a-z_]+\}|%\([a-z_]+\)s")


@pytest.mark.parametrize("language", i18n.LANGUAGES[1:])
def test_every_message_of_the_code_is_translated(language: str) -> None:
    missing = i18n.check()[language]
    assert missing == [], f"{len(missing)} untranslated (run `make messages`, then translate): {missing[:10]}"


@pytest.mark.parametrize("language", i18n.LANGUAGES[1:])
def test_translations_keep_their_placeholders(language: str) -> None:
    path = i18n.LOCALE_DIR / language / "LC_MESSAGES" / "messages.po"
    with path.open("rb") as po:
        catalog = read_po(po, locale=language)
    wrong = []
    for message in catalog:
        if not message.id or not message.string:
            continue
        ids = message.id if isinstance(message.id, (list, tuple)) else [message.id]
        strings = message.string if isinstance(message.string, (list, tuple)) else [message.string]
        wanted = set().union(*(PLACEHOLDER.findall(i) for i in ids))
        for text in strings:
            if set(PLACEHOLDER.findall(text)) != wanted:
                wrong.append(ids[0])
    assert wrong == []


def test_a_page_is_shown_in_the_language_asked_for() -> None:
    assert i18n.gettext("es", "Sign in") != "Sign in" and i18n.gettext("fr", "Sign in") != "Sign in"
    assert i18n.gettext("en", "Sign in") == "Sign in"
    assert i18n.choose("es-MX,es;q=0.9") == "es" and i18n.choose("pt-BR") == "en"
