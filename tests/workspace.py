"""A person using the workspace over HTTP: signed in through the development sign-in page, sending
forms with the page's CSRF token, as a browser would (without running one)."""

from __future__ import annotations

import re
from typing import Any

import httpx

from tests.conftest import Stack

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


class Person:
    """An httpx client with a workspace session cookie."""

    def __init__(self, stack: Stack, *, language: str = "en") -> None:
        self.http = httpx.AsyncClient(
            base_url=stack.base_url, timeout=60, follow_redirects=False, headers={"Accept-Language": language}
        )

    async def sign_in(self, role: str, sub: str, *, countries: str = "", agency: str = "", name: str = "") -> Person:
        r = await self.http.post(
            "/workspace/sign-in",
            data={"role": role, "sub": sub, "countries": countries, "agency": agency, "name": name},
        )
        assert r.status_code == 303, r.text
        return self

    async def page(self, path: str, expect: int = 200) -> str:
        r = await self.http.get(path)
        assert r.status_code == expect, (r.status_code, r.headers.get("location"), r.text[:500])
        return r.text

    async def submit(self, path: str, data: dict[str, Any], *, page: str | None = None) -> httpx.Response:
        """Post a form with the CSRF token of ``page`` (or of the form's own page, ``path``)."""
        html = await self.page(page or path)
        token = csrf_token(html)
        return await self.http.post(path, data={**data, "csrf_token": token})

    async def aclose(self) -> None:
        await self.http.aclose()


def csrf_token(html: str) -> str:
    found = _CSRF.search(html)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)
