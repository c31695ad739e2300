"""The workspace in a real browser: Chromium, axe-core on every page, a screenshot of each."""

from __future__ import annotations

import pytest

from tests.browser import PHONE, chromium, visit


@pytest.fixture(scope="module")
async def browser():
    async with chromium() as running:
        yield running


async def test_signing_in_in_spanish_at_phone_width(stack, browser):
    async with visit(browser, stack.base_url, "sign-in-es-phone", viewport=PHONE, language="es") as person:
        await person.goto("/")
        assert person.page.url.endswith("/workspace/sign-in?next=/workspace")
        assert await person.page.locator("html").get_attribute("lang") == "es"
        width = await person.page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"the page scrolls sideways at phone width ({width} px)"
