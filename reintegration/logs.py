"""Structured JSON logs that carry ids and never personal data."""

from __future__ import annotations

import io
import json
import logging
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, ClassVar, TextIO

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


def _exception_by_type(_logger: WrappedLogger, _method: str, event: EventDict) -> EventDict:
    """An exception as its types and frames only: its message can quote a value (a validation error
    quotes the input), and its frames' locals hold whatever the code had at hand, the person too."""
    exc_info = event.pop("exc_info", None)
    if exc_info is True:
        exc_info = sys.exc_info()
    elif isinstance(exc_info, BaseException):
        exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
    if isinstance(exc_info, tuple) and exc_info[0] is not None:
        chain: list[dict[str, object]] = []
        error: BaseException | None = exc_info[1]
        while error is not None and len(chain) < 5:
            frames = traceback.extract_tb(error.__traceback__)[-10:]
            chain.append(
                {
                    "type": f"{type(error).__module__}.{type(error).__qualname__}",
                    "frames": [f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in frames],
                }
            )
            error = error.__cause__ or error.__context__
        event["exception"] = chain
    event.pop("stack_info", None)
    return event


def _first_line_only(_logger: WrappedLogger, _method: str, event: EventDict) -> EventDict:
    """A standard library record's message up to its first line break: what follows is a dump that
    can quote values (asyncio's "Task exception was never retrieved" adds the task's repr, the
    exception's message with it). The first line says what happened; ids travel as fields."""
    message = event.get("event")
    if isinstance(message, str) and "\n" in message:
        event["event"] = message.split("\n", 1)[0]
    # What another handler's formatter left on the record (the whole message again, its time): not
    # extras of the caller's, and the whole message is what the line above keeps out.
    for derived in ("message", "asctime", "exc_text"):
        event.pop(derived, None)
    return event


class _CurrentStderr:
    """Standard error as it is when a line is written (pytest swaps it per test)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


class RequestLog:
    """What the request being served adds to each line logged while it is (``api.access_log``): the
    fields bound to it as it goes (its id and method, then its caller, the case it concerns) and,
    once the router has matched it, ``routed``: its route's template and the ids in its path, asked
    for only when a line is logged, so that a request that logs nothing but its access line pays for
    nothing else. One object per request in one context variable, where structlog's context would
    take a variable per field and a walk over the whole context to clear them."""

    __slots__ = ("bound", "routed")

    def __init__(self, bound: dict[str, Any], routed: Callable[[], dict[str, str]] | None = None) -> None:
        self.bound, self.routed = bound, routed


current_request: ContextVar[RequestLog | None] = ContextVar("current_request", default=None)


def bind_request(**fields: Any) -> None:
    """Add ``fields`` to every line logged for the request being served from here on, also from a
    thread that serves it in a copy of its context (anyio's, ``asyncio.to_thread``'s); outside a
    request, to structlog's context. The fields are replaced, never changed in place: a line being
    logged in another thread reads the ones before or the ones after."""
    request = current_request.get()
    if request is None:
        structlog.contextvars.bind_contextvars(**fields)
    else:
        request.bound = {**request.bound, **fields}


def _add_request_fields(_logger: WrappedLogger, _method: str, event: EventDict) -> EventDict:
    """The request's fields after the line's own (those win), before structlog's context: a request's
    own id is never one its context held before it started."""
    request = current_request.get()
    if request is not None:
        for key, value in request.bound.items():
            event.setdefault(key, value)
        if request.routed is not None:
            for key, value in request.routed().items():
                event.setdefault(key, value)
    return event


class _TimeStamp:
    """The time of the line, as ISO 8601 in UTC to the microsecond (``2026-12-08T03:18:05.365768Z``):
    the date and time of the second made once per second (0.5 µs a line; structlog's ``TimeStamper``,
    a ``datetime`` made and formatted per line, 1.3 µs; every request writes at least one line)."""

    def __init__(self) -> None:
        self._second: tuple[int, str] = (-1, "")  # replaced whole: a thread reads one pair or the other

    def __call__(self, _logger: WrappedLogger, _method: str, event: EventDict) -> EventDict:
        second, micro = divmod(time.time_ns() // 1000, 1_000_000)
        kept = self._second
        if kept[0] != second:
            kept = self._second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
        event["timestamp"] = f"{kept[1]}.{micro:06d}Z"
        return event


def _fallback(value: object) -> object:
    """What JSON has no form for, as structlog's renderer writes it: its ``__structlog__()`` or repr."""
    try:
        return value.__structlog__()  # type: ignore[attr-defined]
    except AttributeError:
        return repr(value)


# One encoder for every line: ``json.dumps`` with a ``default`` makes an encoder per call (structlog's
# ``JSONRenderer``: 3.4 µs for an access line, 2.4 µs with this; the same text).
_encode = json.JSONEncoder(default=_fallback).encode


def _render(_logger: WrappedLogger, _method: str, event: EventDict) -> str:
    return _encode(event)


# Every line the process writes, structlog's own and the standard library's (uvicorn, Temporal's
# SDK, SQLAlchemy, httpx), goes through these: one JSON object a line, personal keys redacted,
# exceptions by type.
_SHARED: list[structlog.typing.Processor] = [
    _add_request_fields,
    structlog.contextvars.merge_contextvars,
    structlog.processors.add_log_level,
    _TimeStamp(),
    _exception_by_type,  # first: the redaction would copy the exception's tuple into a list
    _drop_personal_fields,
]


class _StdlibJson(logging.StreamHandler):  # type: ignore[type-arg]
    """The root logger's one handler: the standard library's records as structlog's JSON lines."""


def configure_logging(level: int = logging.INFO) -> None:
    """Structured JSON on standard error for structlog and the standard library alike (uvicorn runs
    with ``log_config=None`` so its loggers reach the root logger; see ``reintegration.cli``)."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _StdlibJson)]:
        root.removeHandler(handler)
    handler = _StdlibJson(_CurrentStderr())
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.stdlib.add_logger_name,
                structlog.stdlib.ExtraAdder(),
                _first_line_only,
                *_SHARED,
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                _render,
            ],
        )
    )
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request, with full URLs
    # uvicorn's access log prints paths and query strings (a search's words): never on. The API
    # logs one line per request itself (api/access_log.py), with the route's template.
    logging.getLogger("uvicorn.access").disabled = True
    for name in ("uvicorn", "uvicorn.error"):
        # Through the root's handler, whoever configured them before (uvicorn's own log_config).
        named = logging.getLogger(name)
        named.handlers.clear()
        named.propagate = True
    structlog.configure(
        processors=[*_SHARED, _render],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        # structlog annotates `file` as TextIO but only prints to it (write and flush).
        logger_factory=structlog.PrintLoggerFactory(file=_Stderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )
