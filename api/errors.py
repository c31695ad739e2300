"""Problem details (RFC 9457) for every error, mapped once, by type.

Hierarchy:
    ApiProblem                 an error with an HTTP status, a title and safe details
      Unauthorized    401      no token, or a bad one
      Forbidden       403      a role that may never do this
      NotFound        404      no such thing, or outside the caller's scope
      Conflict        409      not allowed in the current state (with ``allowed_steps``)
      PreconditionFailed 412   a stale ``If-Match``
      PreconditionRequired 428 no ``If-Match`` where a change needs one (the person's data)
      PayloadTooLarge 413      a body over ``max_body_bytes`` (sent by ``api.limits``)
      UnsupportedMediaType 415 a document whose content is not of a type taken
      Unprocessable   422      a body that fails validation
      TooManyRequests 429      over the caller's rate limit (with ``Retry-After``)
      Unavailable     503      a dependency is down (with ``Retry-After``)

Never a stack trace and never a submitted value in a response: values may be personal data.

Titles and details are English sentences marked for the message catalogues (``N_``); a detail with
values is a template with named placeholders (``params``). They are answered in the language the
request asks for (``Accept-Language``; see ``api.languages``), with ``Content-Language``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import InterfaceError, OperationalError, PendingRollbackError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from api import languages
from api.languages import N_
from reintegration.vault import VaultUnavailable

log = structlog.get_logger("api")

PROBLEM_JSON = "application/problem+json"


class ApiProblem(Exception):
    status = 500
    title = N_("Internal error")
    # Kept as the answer to the request's Idempotency-Key (a refusal of a command is final); False:
    # the key is released, and a repeat is answered anew (``api.cases.PossibleDuplicates``).
    stored = True

    def __init__(
        self,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        params: Mapping[str, object] | None = None,
        **extra: Any,
    ) -> None:
        """``detail``: an English sentence; with ``params``, a template whose ``{name}``s they fill
        (so the sentence translates whole, its values put in their place)."""
        self.template = detail
        self.params = {name: str(value) for name, value in (params or {}).items()}
        self.detail = languages.fill(detail, self.params) if self.params else detail
        super().__init__(self.detail)
        self.headers = headers or {}
        self.extra = extra

    def translated(self, language: str) -> tuple[str, str]:
        """The title and the detail in ``language`` (English where the catalogue lacks them)."""
        return languages.text(language, self.title), languages.detail(language, self.template, self.params)


class Unauthorized(ApiProblem):
    status, title = 401, N_("Unauthorized")

    def __init__(self, detail: str = N_("a valid bearer token is required")) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(ApiProblem):
    status, title = 403, N_("Forbidden")


class NotFound(ApiProblem):
    status, title = 404, N_("Not found")


class Conflict(ApiProblem):
    status, title = 409, N_("Not allowed now")


class PreconditionFailed(ApiProblem):
    status, title = 412, N_("Precondition failed")


class PreconditionRequired(ApiProblem):
    status, title = 428, N_("Precondition required")


class PayloadTooLarge(ApiProblem):
    status, title = 413, N_("Payload too large")

    def __init__(self, max_bytes: int) -> None:
        super().__init__(
            N_("the request body is over the limit of {max_bytes} bytes"),
            params={"max_bytes": max_bytes},
            headers={"Connection": "close"},
        )


class UnsupportedMediaType(ApiProblem):
    status, title = 415, N_("Unsupported media type")


class Unprocessable(ApiProblem):
    status, title = 422, N_("Invalid request")


class TooManyRequests(ApiProblem):
    status, title = 429, N_("Too many requests")

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            N_("over the rate limit; retry in {retry_after} s"),
            params={"retry_after": retry_after},
            headers={"Retry-After": str(retry_after)},
        )


class Unavailable(ApiProblem):
    status, title = 503, N_("Service unavailable")

    def __init__(self, detail: str, retry_after: int = 5, *, params: Mapping[str, object] | None = None) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after)}, params=params)


# The framework's own details (Starlette's, for a route or a method that does not exist).
FRAMEWORK_DETAILS = (N_("Not Found"), N_("Method Not Allowed"))


def problem(
    status: int,
    title: str,
    detail: str,
    headers: dict[str, str] | None = None,
    *,
    language: str = "en",
    **extra: Any,
) -> JSONResponse:
    """The problem response; ``title`` and ``detail`` already in ``language`` (said in
    ``Content-Language``)."""
    body = {
        "type": f"https://reintegration.example/problems/{status}",
        "title": title,
        "status": status,
        "detail": detail,
        **extra,
    }
    said = {**(headers or {}), "Content-Language": language, "Vary": "Accept-Language"}
    return JSONResponse(body, status_code=status, headers=said, media_type=PROBLEM_JSON)


def answer(request: Request, exc: ApiProblem) -> JSONResponse:
    """The problem response for ``exc``, in the language the request asks for."""
    language = languages.asked(request)
    title, detail = exc.translated(language)
    return problem(exc.status, title, detail, exc.headers, language=language, **exc.extra)


def _said(
    request: Request, status: int, title: str, detail: str, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    language = languages.asked(request)
    return problem(
        status,
        languages.text(language, title),
        languages.detail(language, detail),
        headers,
        language=language,
        **extra,
    )


def install(app: FastAPI, *, charge_unverified: Callable[[Request], None]) -> None:
    """Register the one mapping from exception types to problem responses; ``charge_unverified``
    charges a request refused before its token was checked (``api.limits.charge_unverified``)."""

    @app.exception_handler(ApiProblem)
    async def _api_problem(request: Request, exc: ApiProblem) -> JSONResponse:
        return answer(request, exc)

    def _unverified_over_limit(request: Request) -> JSONResponse | None:
        """Refused before its token was checked: charge it (see api/limits.py); 429 when over."""
        try:
            charge_unverified(request)
        except ApiProblem as exc:
            return answer(request, exc)
        return None

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        if (refused := _unverified_over_limit(request)) is not None:
            return refused
        errors = [
            {"loc": [str(p) for p in e.get("loc", ())], "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        return _said(request, 422, N_("Invalid request"), N_("the request failed validation"), errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if (refused := _unverified_over_limit(request)) is not None:
            return refused
        if exc.status_code == 400:
            # The framework's one 400: a body it cannot even decode (not UTF-8). The contract has no
            # 400; a body that fails validation is 422.
            return _said(
                request,
                422,
                N_("Invalid request"),
                N_("the request failed validation"),
                errors=[{"loc": ["body"], "msg": "the body is not UTF-8 JSON", "type": "json_invalid"}],
            )
        titles = {404: N_("Not found"), 405: N_("Method not allowed"), 413: N_("Payload too large")}
        given: object = exc.detail  # a str to Starlette; FastAPI's HTTPException (a subclass) takes any value
        detail = given if isinstance(given, str) else N_("request refused")
        return _said(
            request, exc.status_code, titles.get(exc.status_code, N_("Error")), detail, dict(exc.headers or {})
        )

    @app.exception_handler(OperationalError)
    @app.exception_handler(InterfaceError)
    @app.exception_handler(PoolTimeout)  # every connection of the pool busy: as unavailable, for now
    # A session used again after the database failed under it in the same request (its transaction
    # could not even be rolled back while the database was away): the same outage, said as such.
    @app.exception_handler(PendingRollbackError)
    async def _database_down(request: Request, exc: Exception) -> JSONResponse:
        log.warning("database unavailable", error=type(exc).__name__)
        return _said(request, 503, N_("Service unavailable"), N_("the database is unavailable"), {"Retry-After": "5"})

    # The key-encryption key in Vault's transit engine, unreachable or sealed: a data key not in
    # memory cannot be unwrapped until it answers again. Nothing is wrong with the case.
    @app.exception_handler(VaultUnavailable)
    async def _vault_down(request: Request, exc: Exception) -> JSONResponse:
        log.warning("key-encryption key unavailable", error=type(exc).__name__)
        return _said(
            request, 503, N_("Service unavailable"), N_("the key service is unavailable"), {"Retry-After": "5"}
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unexpected error", error=type(exc).__name__)
        return _said(request, 500, N_("Internal error"), N_("an unexpected error occurred; it has been logged"))


def document(schema: dict[str, Any]) -> dict[str, Any]:
    """Document every ``422`` as the problem it is, in place of FastAPI's default (``HTTPValidationError``)."""
    for item in schema.get("paths", {}).values():
        for operation in item.values():
            if isinstance(operation, dict) and "422" in operation.get("responses", {}):
                operation["responses"]["422"] = responses(422)[422]
    for unused in ("HTTPValidationError", "ValidationError"):
        schema.get("components", {}).get("schemas", {}).pop(unused, None)
    return schema


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI documentation of the problem responses an endpoint can give."""
    described = {
        401: "No token, or a bad one",
        403: "The caller's role may never do this",
        404: "No such resource, or outside the caller's scope",
        409: "Not allowed in the case's current state",
        412: "The case moved on since the ETag given in If-Match",
        413: "The body is over the size limit",
        415: "A document of a type not taken (PDF, JPEG and PNG are), told by its content",
        422: "The body or parameters fail validation",
        429: "Over the caller's rate limit; see Retry-After",
        503: "A dependency (database, Temporal) is unavailable; see Retry-After",
    }
    retry_after = {
        "Retry-After": {
            "description": "Seconds to wait before trying again",
            "schema": {"type": "integer", "minimum": 1},
        }
    }
    return {
        s: {
            "description": described[s],
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
            **({"headers": retry_after} if s in (429, 503) else {}),
        }
        for s in statuses
    }
