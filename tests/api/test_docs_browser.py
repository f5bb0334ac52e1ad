"""The API documentation pages render in a real browser under the portal's CSP, with no
violation that matters: Debian's chromium driven by Playwright."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

CHROMIUM = Path("/usr/bin/chromium")
# ReDoc's sidebar credits Redocly with a logo from its CDN: blocked, and nothing is lost.
TOLERATED = ("cdn.redoc.ly", "favicon.ico", "status of 404")


@pytest.mark.parametrize(
    ("path", "rendered"),
    [("/api/docs/", ".opblock-tag"), ("/api/redoc/", "[role=search]")],
)
def test_it_renders_the_documentation_without_csp_violations(
    live_server: Any, path: str, rendered: str
) -> None:
    if not CHROMIUM.exists():
        pytest.fail("Browser tests need Debian's chromium (apt-get install chromium).")
    from playwright.sync_api import sync_playwright

    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--headless=new", "--no-sandbox"]
        )
        try:
            page = browser.new_page()
            page.on("console", lambda message: problems.append(message.text))
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.goto(live_server.url + path)
            page.wait_for_selector(rendered, timeout=20_000)
            # The operations came from the schema (ReDoc lists them in a collapsed menu).
            page.get_by_text("Admit a patient to a bed (administrators)").first.wait_for(
                state="attached", timeout=20_000
            )
        finally:
            browser.close()
    assert [p for p in problems if not any(t in p for t in TOLERATED)] == []
