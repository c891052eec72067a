"""The page on a server with API keys: it asks for a key, keeps it in the tab, sends it."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.server import start, stop
from tests.ui.cdp import Browser, BrowserError, Page
from tests.ui.conftest import ARTIFACTS, http

KEY = "page-key-0123456789abcdefghij"


@pytest.fixture(scope="module")
def keyed_url() -> Iterator[str]:
    """A server with one API key (``/metrics`` open, as by default: the status tab reads it)."""
    running = start(env={"GUIDANCE_SERVER_API_KEYS": KEY})
    try:
        yield running.url
    finally:
        _, err = stop(running)
    assert "Traceback" not in err, err[-2000:]
    assert KEY not in err


def _wait_across_reload(p: Page, expression: str, timeout: float = 20) -> None:
    """Poll ``expression`` while the page may be reloading (its context then goes away)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if p.eval(expression):
                return
        except BrowserError:
            pass  # the old document is gone, the new one not yet there
        time.sleep(0.05)
    raise BrowserError(f"timed out waiting for {expression!r}")


def _use_key(p: Page, key: str) -> None:
    p.fill("#api-key", key)
    p.click("#api-key-use")


def test_the_page_asks_for_a_key_keeps_it_in_the_tab_and_sends_it(browser: Browser, keyed_url: str) -> None:
    p = browser.new_page(1280, 860)
    try:
        p.goto(f"{keyed_url}/ui")
        p.wait_for("document.body.dataset.ready === 'true'", timeout=20)
        # no key: every API call answered 401, and the page says what to do
        p.wait_for("document.getElementById('key-box').classList.contains('needed')")
        p.wait_for("document.getElementById('server-info').textContent.includes('needs an API key')")
        assert "unauthorized" in p.text("#verdict")

        _use_key(p, "wrong-key-0123456789abcdefghij")
        _wait_across_reload(
            p,
            "document.body.dataset.ready === 'true'"
            " && document.getElementById('server-info').textContent.includes('does not accept this API key')",
        )

        _use_key(p, KEY)
        _wait_across_reload(
            p,
            "document.body.dataset.ready === 'true'"
            " && !document.getElementById('key-box').classList.contains('needed')"
            " && document.getElementById('compile-info').textContent.includes('captures')",
        )
        assert p.eval("document.getElementById('api-key').value") == KEY
        assert p.eval("sessionStorage.getItem('guidance-api-key')") == KEY
        assert KEY not in p.eval("JSON.stringify(Object.assign({}, localStorage))")
        assert KEY not in p.eval("document.cookie")
        assert "session" in p.text("#server-info")
        p.screenshot(ARTIFACTS / "playground-api-key.png")

        # the session the page opened is the key's: readable with it, refused without it
        p.click("#restart")
        sid = p.wait_for("window.guidancePlayground.session")
        assert isinstance(sid, str)
        status, _ = http("GET", f"{keyed_url}/sessions/{sid}")
        assert status == 401
        request = f"fetch('sessions/{sid}', {{headers: {{Authorization: 'Bearer {KEY}'}}}}).then(r => r.status)"
        assert p.eval(request) == 200

        # the status tab's scrapes (stats needs the key) work
        p.eval("location.hash = '#status'")
        p.wait_for("Number(document.getElementById('status').dataset.scrapes || 0) >= 1")
        assert p.errors() == [], p.errors()
    finally:
        p.send("Page.close")
