"""Fixtures for the page tests: the real server on a loopback port, and headless Chromium."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.server import start, stop
from tests.ui.cdp import Browser, Page, chromium_path, launch

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"


def http(method: str, url: str, body: Any = None, timeout: float = 10) -> tuple[int, Any]:
    """A JSON request (standard library only); returns (status, decoded body)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            raw, status, ctype = resp.read(), resp.status, resp.headers.get("content-type", "")
    except urllib.error.HTTPError as e:
        raw, status, ctype = e.read(), e.code, e.headers.get("content-type", "")
    return status, json.loads(raw) if "json" in ctype and raw else raw


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    """``python -m service`` on a free loopback port, ready (``/readyz`` 200)."""
    running = start()
    try:
        yield running.url
    finally:
        _, err = stop(running)
    assert "Traceback" not in err, err[-2000:]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Chromium (Debian's ``chromium`` package), or a skip saying how to get it."""
    executable = chromium_path()
    if executable is None:
        pytest.skip(
            "no /usr/bin/chromium: install Debian's chromium package (apt-get install -y chromium) "
            "to run the page tests"
        )
    with launch(executable) as b:
        yield b


@pytest.fixture()
def page(browser: Browser, server_url: str) -> Iterator[Page]:
    """The page, loaded and ready, in a fresh tab; no JavaScript error may happen on it."""
    p = browser.new_page(1280, 860)
    p.goto(f"{server_url}/ui")
    p.wait_for("document.body.dataset.ready === 'true'", timeout=20)
    yield p
    errors = p.errors()
    p.send("Page.close")
    assert errors == [], errors
