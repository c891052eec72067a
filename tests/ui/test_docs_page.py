"""The API description pages (``/docs``, ``/redoc``) render in headless Chromium from this server's
files alone, so they work on a machine without a network. ReDoc's footer shows its maker's logo
from their site, the one request that leaves the origin; the page does not wait for it."""

from __future__ import annotations

import pytest

from tests.ui.cdp import Browser, Page
from tests.ui.conftest import ARTIFACTS


def _requested_urls(page: Page) -> list[str]:
    return [
        e["params"]["request"]["url"]
        for e in page.browser.events
        if e.get("sessionId") == page.session and e.get("method") == "Network.requestWillBeSent"
    ]


@pytest.mark.parametrize(
    ("path", "rendered"),
    [
        # Swagger UI: one block per operation; ReDoc: one menu entry per operation.
        ("/docs", "document.querySelectorAll('.opblock').length"),
        ("/redoc", "document.querySelectorAll('[data-item-id*=\"/operation/\"]').length"),
    ],
)
def test_api_description_renders_every_operation_from_this_origin(
    browser: Browser, server_url: str, path: str, rendered: str
) -> None:
    p = browser.new_page(1280, 860)
    p.send("Network.enable")
    try:
        p.goto(server_url + path)
        count = p.wait_for(f"{rendered} >= 10 && {rendered}", timeout=30)
        p.screenshot(ARTIFACTS / f"api{path.replace('/', '-')}.png")
        urls = _requested_urls(p)
        assert count >= 10
        foreign = [u for u in urls if not u.startswith((server_url, "data:", "blob:"))]
        assert foreign == ([] if path == "/docs" else foreign[:1]), foreign
        assert all(u.endswith("/logo-mini.svg") for u in foreign), foreign
        assert any(u.endswith("/openapi.json") for u in urls), urls
        assert p.errors() == []
    finally:
        p.send("Page.close")
