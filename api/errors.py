"""Problem details (RFC 9457) for every error, mapped once, by type.

Hierarchy:
    ApiProblem                 an error with an HTTP status, a title and safe details
      Unauthorized    401      no token, or a bad one
      Forbidden       403      a role that may never do this
      NotFound        404      no such thing, or outside the caller's scope
      Conflict        409      not allowed in the current state (with ``allowed_steps``)
      PreconditionFailed 412   a stale ``If-Match``
      PayloadTooLarge 413      a body over ``max_body_bytes`` (sent by ``api.limits``)
      Unprocessable   422      a body that fails validation
      TooManyRequests 429      over the caller's rate limit (with ``Retry-After``)
      Unavailable     503      a dependency is down (with ``Retry-After``)

Never a stack trace and never a submitted value in a response: values may be personal data.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

log = structlog.get_logger("api")

PROBLEM_JSON = "application/problem+json"


class ApiProblem(Exception):
    status = 500
    title = "Internal error"

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra


class Unauthorized(ApiProblem):
    status, title = 401, "Unauthorized"

    def __init__(self, detail: str = "a valid bearer token is required") -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(ApiProblem):
    status, title = 403, "Forbidden"


class NotFound(ApiProblem):
    status, title = 404, "Not found"


class Conflict(ApiProblem):
    status, title = 409, "Not allowed now"


class PreconditionFailed(ApiProblem):
    status, title = 412, "Precondition failed"


class PayloadTooLarge(ApiProblem):
    status, title = 413, "Payload too large"

    def __init__(self, max_bytes: int) -> None:
        super().__init__(f"the request body is over the limit of {max_bytes} bytes", headers={"Connection": "close"})


class Unprocessable(ApiProblem):
    status, title = 422, "Invalid request"


class TooManyRequests(ApiProblem):
    status, title = 429, "Too many requests"

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"over the rate limit; retry in {retry_after} s", headers={"Retry-After": str(retry_after)})


class Unavailable(ApiProblem):
    status, title = 503, "Service unavailable"

    def __init__(self, detail: str, retry_after: int = 5) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after)})


def problem(status: int, title: str, detail: str, headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    body = {
        "type": f"https://reintegration.example/problems/{status}",
        "title": title,
        "status": status,
        "detail": detail,
        **extra,
    }
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_JSON)


def install(app: FastAPI, *, charge_unverified: Callable[[Request], None]) -> None:
    """Register the one mapping from exception types to problem responses; ``charge_unverified``
    charges a request refused before its token was checked (``api.limits.charge_unverified``)."""

    @app.exception_handler(ApiProblem)
    async def _api_problem(_: Request, exc: ApiProblem) -> JSONResponse:
        return problem(exc.status, exc.title, exc.detail, exc.headers, **exc.extra)

    def _unverified_over_limit(request: Request) -> JSONResponse | None:
        """Refused before its token was checked: charge it (see api/limits.py); 429 when over."""
        try:
            charge_unverified(request)
        except ApiProblem as exc:
            return problem(exc.status, exc.title, exc.detail, exc.headers, **exc.extra)
        return None

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        if (refused := _unverified_over_limit(request)) is not None:
            return refused
        errors = [
            {"loc": [str(p) for p in e.get("loc", ())], "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        return problem(422, "Invalid request", "the request failed validation", errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if (refused := _unverified_over_limit(request)) is not None:
            return refused
        if exc.status_code == 400:
            # The framework's one 400: a body it cannot even decode (not UTF-8). The contract has no
            # 400; a body that fails validation is 422.
            return problem(
                422,
                "Invalid request",
                "the request failed validation",
                errors=[{"loc": ["body"], "msg": "the body is not UTF-8 JSON", "type": "json_invalid"}],
            )
        titles = {404: "Not found", 405: "Method not allowed", 413: "Payload too large"}
        given: object = exc.detail  # a str to Starlette; FastAPI's HTTPException (a subclass) takes any value
        detail = given if isinstance(given, str) else "request refused"
        return problem(exc.status_code, titles.get(exc.status_code, "Error"), detail, dict(exc.headers or {}))

    @app.exception_handler(OperationalError)
    @app.exception_handler(InterfaceError)
    @app.exception_handler(PoolTimeout)  # every connection of the pool busy: as unavailable, for now
    async def _database_down(_: Request, exc: Exception) -> JSONResponse:
        log.warning("database unavailable", error=type(exc).__name__)
        return problem(503, "Service unavailable", "the database is unavailable", {"Retry-After": "5"})

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.error("unexpected error", error=type(exc).__name__)
        return problem(500, "Internal error", "an unexpected error occurred; it has been logged")


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
