"""A real browser for the workspace's tests: Debian's Chromium (``/usr/bin/chromium``, installed by
``make browser``; Playwright never downloads one) driven by Playwright, with axe-core's accessibility
check and a screenshot of every page it visits under ``test-output/screenshots/``."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from axe_playwright_python.async_playwright import Axe
from playwright.async_api import Browser, Page, async_playwright

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).resolve().parents[1] / "test-output" / "screenshots"
PHONE = {"width": 360, "height": 740}
DESKTOP = {"width": 1280, "height": 900}
BLOCKING = ("serious", "critical")


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            await browser.close()


class Visit:
    """One person in the browser: every page they reach is checked by axe and photographed."""

    def __init__(self, page: Page, base_url: str, name: str) -> None:
        self.page, self.base_url, self.name = page, base_url, name
        self.shots = 0
        self.violations: list[dict[str, Any]] = []

    async def goto(self, path: str) -> None:
        await self.page.goto(self.base_url + path)
        await self.check()

    async def check(self, label: str | None = None) -> None:
        """axe on the page as it is (no serious or critical violation may pass), then its screenshot."""
        await self.page.wait_for_load_state("load")
        results = await Axe().run(self.page)
        blocking = [v for v in results.response["violations"] if v.get("impact") in BLOCKING]
        self.violations += [{"page": self.page.url, "id": v["id"], "impact": v["impact"]} for v in blocking]
        self.shots += 1
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        slug = re.sub(r"[^a-z0-9]+", "-", (label or self.page.url.removeprefix(self.base_url)).lower()).strip("-")
        await self.page.screenshot(
            path=SCREENSHOTS / f"{self.name}-{self.shots:02d}-{slug or 'root'}.png", full_page=True
        )
        assert not blocking, [f"{v['id']} ({v['impact']}): {v['help']}" for v in blocking]

    async def sign_in(self, role: str, sub: str, *, countries: str = "", agency: str = "") -> None:
        await self.goto("/workspace/sign-in")
        await self.page.get_by_label(re.compile("^(Role|Rol|Rôle)$")).select_option(role)
        await self.page.locator("#sub").fill(sub)
        await self.page.locator("#countries").fill(countries)
        if agency:
            await self.page.locator("#agency").select_option(agency)
        await self.page.locator("form[action='/workspace/sign-in'] button[type=submit]").click()
        await self.page.wait_for_load_state("load")
        await self.check()


@asynccontextmanager
async def visit(
    browser: Browser, base_url: str, name: str, *, viewport: dict[str, int] = DESKTOP, language: str = "en"
) -> AsyncIterator[Visit]:
    context = await browser.new_context(
        viewport=viewport, locale=language, extra_http_headers={"Accept-Language": language}
    )
    try:
        yield Visit(await context.new_page(), base_url, name)
    finally:
        await context.close()
