"""The message catalogues' translations, compiled once per process: the workspace's pages and the
API's problems (``api/web/i18n.py``) and the e-mails (``reintegration/mail.py``) read the same ones.
The catalogues live with the workspace (``api/web/locale``), which ``reintegration i18n update``
writes; they are read here by path, so no layer imports the web's to translate."""

from __future__ import annotations

import functools
import io
from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations

LOCALE_DIR = Path(__file__).resolve().parents[1] / "api" / "web" / "locale"
DEFAULT = "en"  # the source language


def po_path(language: str) -> Path:
    return LOCALE_DIR / language / "LC_MESSAGES" / "messages.po"


@functools.cache
def translations(language: str) -> NullTranslations:
    """The language's translations (none for English, the source), compiled once per process."""
    path = po_path(language)
    if language == DEFAULT or not path.exists():
        return NullTranslations()
    with path.open("rb") as po:
        catalog = read_po(po, locale=language)
    compiled = io.BytesIO()
    write_mo(compiled, catalog)
    compiled.seek(0)
    return Translations(fp=compiled)
