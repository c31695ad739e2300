"""The OpenAPI document: every body has a realistic example that works, every error is documented."""

from __future__ import annotations

from typing import Any

from tests.conftest import Stack

METHODS = ("get", "post", "patch", "put", "delete")


def body_examples(operation: dict[str, Any], schemas: dict[str, Any]) -> list[Any]:
    content = operation["requestBody"]["content"]["application/json"]
    examples = [e["value"] for e in content.get("examples", {}).values()]
    ref = content["schema"].get("$ref", "")
    if ref:
        examples += schemas[ref.split("/")[-1]].get("examples", [])
    return examples


async def test_every_request_body_has_a_valid_example_and_every_error_is_documented(stack: Stack):
    document = (await stack.http.get("/openapi.json")).json()
    schemas = document["components"]["schemas"]
    assert "Problem" in schemas
    assert document["components"]["securitySchemes"]["HTTPBearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "A JWT from `reintegration token` (or the OIDC provider)",
    }
    operations = 0
    for path, item in document["paths"].items():
        for method in METHODS:
            if method not in item:
                continue
            operations += 1
            operation = item[method]
            codes = set(operation["responses"])
            if path.startswith("/v1/"):
                assert {"401"} <= codes, (method, path)
            # Every operation but the probes takes the bearer token, and says so (``document_bearer``).
            expected = None if path in ("/health", "/ready") else [{"HTTPBearer": []}]
            assert operation.get("security") == expected, (method, path)
            if "requestBody" in operation:
                content = operation["requestBody"]["content"]
                if "application/json" in content:
                    assert body_examples(operation, schemas), (method, path)
                else:  # a document's upload: the body is the document itself
                    assert content["application/octet-stream"]["schema"]["format"] == "binary", (method, path)
                    assert {"413", "415"} <= codes, (method, path)
                assert "422" in codes, (method, path)
            if "{case_id}" in path or "{task_id}" in path:
                assert "404" in codes, (method, path)
            if "/steps/" in path:
                assert {"409", "412"} <= codes, (method, path)
    assert operations >= 30


async def test_the_examples_work_as_they_stand(stack: Stack):
    document = (await stack.http.get("/openapi.json")).json()
    schemas = document["components"]["schemas"]
    cw = stack.auth("caseworker", "cw-docs", countries=["ES"])
    [example] = body_examples(document["paths"]["/v1/cases"]["post"], schemas)
    r = await stack.http.post("/v1/cases", json=example, headers=cw)
    assert r.status_code == 201, r.text
    case_id = r.json()["case_id"]
    # Each step's example is a valid body: where the step is allowed now it is recorded, otherwise
    # the answer is 409 (state), never 422 (body).
    for path, item in document["paths"].items():
        if "/steps/" not in path:
            continue
        for example in body_examples(item["post"], schemas):
            headers = stack.auth("supervisor", "sup-docs") if "closure" in path else cw
            r = await stack.http.post(path.replace("{case_id}", case_id), json=example, headers=headers)
            assert r.status_code in (200, 409), (path, r.text)


def test_no_route_is_shadowed_by_one_tried_before_it() -> None:
    """FastAPI tries the routes in the order the routers are included (``api.main``, the most read
    first): each route's own paths must reach it, whatever order the routers are in. Every route and
    mount is a candidate; a path parameter takes a value its converter accepts."""
    import re

    from fastapi.routing import APIRoute

    from api.main import app

    samples = {
        "str": "a-{}",
        "int": "7",
        "float": "1.5",
        "uuid": "00000000-0000-4000-8000-00000000000{}",
        "path": "a-{}/b",
    }

    def in_order(routes: list[Any]) -> list[Any]:
        found: list[Any] = []
        for route in routes:
            inner = getattr(route, "original_router", None)
            if inner is not None:  # an included router, tried where it was included
                found += in_order(inner.routes)
            elif hasattr(route, "path_regex"):
                found.append(route)
        return found

    def sample(path: str) -> str:
        return re.sub(
            r"\{(\w+)(?::(\w+))?\}", lambda m: samples[m.group(2) or "str"].format(len(m.group(1)) % 10), path
        )

    routes = in_order(app.router.routes)
    api_routes = [r for r in routes if isinstance(r, APIRoute)]
    assert len(api_routes) > 50 and any(r.path == "/v1/supervision/summary" for r in api_routes)
    for route in api_routes:
        path = sample(route.path)
        assert route.path_regex.match(path), route.path
        for method in route.methods:
            first = next(
                r for r in routes if r.path_regex.match(path) and method in (getattr(r, "methods", None) or {method})
            )
            assert first is route, f"{method} {route.path} is reached by {getattr(first, 'path', first)} first"
