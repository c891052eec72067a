"""The Sessions tab (a live session watched over its event stream) and partial values in the
step-through view, in headless Chromium against the real server on loopback.

``UPDATE_DOCS_SCREENSHOTS=1`` also writes ``docs/playground.png`` (the Sessions tab watching a
session whose second capture is being generated), the picture in the README and ``docs/playground.md``.
"""

from __future__ import annotations

import json
import os

import pytest

from tests.ui.cdp import Page
from tests.ui.conftest import ARTIFACTS, ROOT, http
from tests.ui.test_playground import _compile_template, _settle

TEMPLATE = "Name: {{gen 'name' regex='[A-Z][a-z]+'}}\nAge: {{gen 'age' regex='[0-9]{1,3}'}}"
TEXT = "Name: Adalbert\nAge: 36"


def _captures(p: Page) -> dict[str, tuple[str, str]]:
    rows = p.eval(
        "[...document.querySelectorAll('#watch-vars tr[data-name]')]"
        ".map(r => [r.dataset.name, r.className, r.cells[1].textContent])"
    )
    return {name: (cls, text) for name, cls, text in rows}


def test_a_live_session_is_listed_and_watched_as_its_captures_fill_in(page: Page, server_url: str) -> None:
    p = page
    status, opened = http("POST", f"{server_url}/sessions", {"template": TEMPLATE})
    assert status == 201
    sid = opened["session_id"]
    p.eval("location.hash = '#sessions'")
    row = f"#sessions-list tr[data-id={json.dumps(sid)}]"
    p.wait_for(f"document.querySelector({json.dumps(row)}) !== null")
    assert p.text(f"{row} td") == sid[:8]
    p.click(row)
    p.wait_for("Number(document.getElementById('watch').dataset.events) >= 1")  # the snapshot
    _, tokenized = http("POST", f"{server_url}/tokenize", {"text": TEXT})
    _, tokenizers = http("GET", f"{server_url}/tokenizers")
    eos = tokenizers["tokenizers"][0]["eos_token_ids"][0]
    seen: list[dict[str, tuple[str, str]]] = []
    for i, token in enumerate([*tokenized["tokens"], eos], start=2):
        assert http("POST", f"{server_url}/sessions/{sid}/accept", {"tokens": [token]})[0] == 200
        p.wait_for(f"Number(document.getElementById('watch').dataset.events) >= {i}")
        seen.append(_captures(p))
        if seen[-1].get("name", ("", ""))[0] == "partial":
            p.screenshot(ARTIFACTS / "sessions-watch.png")
        if seen[-1].get("age", ("", ""))[0] == "partial" and os.environ.get("UPDATE_DOCS_SCREENSHOTS"):
            p.screenshot(ROOT / "docs" / "playground.png", height=330)
    partial_names = [c["name"][1] for c in seen if c.get("name", ("", ""))[0] == "partial"]
    assert partial_names and all(n.startswith('"') and n.endswith("…") for n in partial_names)
    assert all("Adalbert".startswith(n[1:-2]) for n in partial_names), partial_names
    p.wait_for("document.getElementById('watch').dataset.ended === 'terminated'")
    assert p.text("#watch-text") == TEXT
    assert _captures(p) == {"name": ("complete", '"Adalbert"'), "age": ("complete", '"36"')}
    assert p.text("#watch-status") == "ended: terminated"


def test_the_step_through_view_shows_values_being_generated(page: Page) -> None:
    p = page
    _compile_template(p)
    p.click("#restart")
    _settle(p)
    for step in range(1, 6):
        p.click("#step")
        p.wait_for(
            f"document.querySelectorAll('#tokens .chip').length === {step} && !document.body.classList.contains('busy')"
        )
        if p.eval("document.querySelector('#vars tr.partial') !== null"):
            break
    else:
        pytest.fail("no value was shown while being generated")
    name = p.eval("document.querySelector('#vars tr[data-name=name]').cells[1].textContent")
    assert name.endswith("…") and "Ada".startswith(json.loads(name[:-1])), name
