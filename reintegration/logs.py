"""Structured JSON logs that carry ids and never personal data."""

from __future__ import annotations

import logging
import sys

import structlog

# Keys that may hold the person's data; dropped from every log event whatever logged them.
PERSONAL_KEYS = frozenset(
    {"person", "given_name", "family_name", "name", "birth_date", "address", "phone", "email",
     "identity_number", "notes"}
)


def _drop_personal_fields(_logger: object, _method: str, event: dict) -> dict:
    for key in PERSONAL_KEYS & event.keys():
        event[key] = "[redacted]"
    return event


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
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
