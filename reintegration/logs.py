"""Structured JSON logs that carry ids and never personal data."""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import ClassVar, TextIO

import structlog
from structlog.typing import EventDict, WrappedLogger

# Keys that may hold the person's data (or a credential); redacted at any depth of every log event,
# whatever logged them. Compared in lower case: the API's names (api/schemas.py Person and
# Identification), HTCDS's prs_ names, free text, and common synonyms.
PERSONAL_KEYS = frozenset(
    {
        "person",
        "first_name",
        "second_name",
        "given_name",
        "family_name",
        "name",
        "full_name",
        "birthdate",
        "birth_date",
        "date_of_birth",
        "gender",
        "citizenship",
        "primary_language",
        "identity_number",
        "mobile_phone",
        "phone",
        "email",
        "address",
        "place",
        "identification_place",
        "prs_firstname",
        "prs_secondname",
        "prs_birthdate",
        "prs_gender",
        "prs_citizenship",
        "prs_primarylanguage",
        "prs_identitynumber",
        "prs_mobilephone",
        "notes",
        "outcome_notes",
        "decline_reason",
        "authorization",
        "token",
        "password",
        "secret",
        "webhook_secret",
    }
)
REDACTED = "[redacted]"


def _redacted(value: object) -> object:
    """A copy of ``value`` with personal keys redacted in every nested dict (never changed in place)."""
    if isinstance(value, dict):
        return {
            k: REDACTED if isinstance(k, str) and k.lower() in PERSONAL_KEYS else _redacted(v) for k, v in value.items()
        }
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_redacted(v) for v in value]
    return value


def _drop_personal_fields(_logger: WrappedLogger, _method: str, event: EventDict) -> EventDict:
    for key, value in event.items():
        if key.lower() in PERSONAL_KEYS:
            event[key] = REDACTED
        elif isinstance(value, (dict, list, tuple, set, frozenset)):
            event[key] = _redacted(value)
    return event


class _Stderr:
    """Standard error as it is when a line is written, plus any taps (tests read every log line)."""

    taps: ClassVar[list[TextIO]] = []

    def write(self, text: str) -> int:
        for tap in self.taps:
            tap.write(text)
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


@contextmanager
def tap() -> Iterator[io.StringIO]:
    """Everything logged while inside, as written: structlog's lines and the standard library's."""
    sink = io.StringIO()
    handler = logging.StreamHandler(sink)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    logging.getLogger().addHandler(handler)
    _Stderr.taps.append(sink)
    try:
        yield sink
    finally:
        _Stderr.taps.remove(sink)
        logging.getLogger().removeHandler(handler)


def configure_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(format="%(message)s", stream=sys.stderr, level=level)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request, with full URLs
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _drop_personal_fields,
            structlog.processors.dict_tracebacks,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        # structlog annotates `file` as TextIO but only prints to it (write and flush).
        logger_factory=structlog.PrintLoggerFactory(file=_Stderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )
