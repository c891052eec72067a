"""The page at /ui, driven in headless Chromium against the real server on loopback.

Screenshots go to ``test-artifacts/`` (git-ignored); ``docs/playground.png`` comes from
``test_sessions.py``.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.ui.cdp import Page
from tests.ui.conftest import ARTIFACTS, http

TEMPLATE = (
    "Name: {{gen 'name' regex='[A-Z][a-z]+'}}\n"
    "Age: {{gen 'age' regex='[0-9]{1,3}'}}\n"
    "Fruit: {{select 'fruit' options=fruits}}"
)
VARIABLES = '{"fruits": ["apple", "banana", "cherry"]}'
TEXT = "Name: Ada\nAge: 36\nFruit: banana"


def _settle(p: Page) -> None:
    """Wait until the page has no request in flight."""
    p.wait_for("!document.body.classList.contains('busy')")


def _chips(p: Page, selector: str) -> list[str]:
    return list(p.eval(f"[...document.querySelectorAll({json.dumps(selector)})].map(e => e.textContent)"))


def _variables(p: Page) -> dict[str, str]:
    rows = p.eval("[...document.querySelectorAll('#vars tr')].map(r => [r.dataset.name, r.cells[1].textContent])")
    return {name: value for name, value in rows}


def _compile_template(p: Page) -> None:
    p.click("#kinds button[data-kind='template']")
    if p.eval("document.getElementById('live').checked"):
        p.click("#live")  # step by hand: no check while typing
    p.fill("#source", TEMPLATE)
    p.fill("#variables", VARIABLES)
    p.fill("#text", TEXT)
    p.click("#compile")
    p.wait_for("document.getElementById('compile-info').textContent.includes('captures: name, age, fruit')")
    _settle(p)


def test_compile_a_template_step_through_a_text_and_see_the_variables(page: Page) -> None:
    p = page
    _compile_template(p)
    p.click("#restart")
    p.wait_for("document.querySelectorAll('#tokens .chip').length === 0 && !document.body.classList.contains('busy')")
    # At the start the template's literal text is forced.
    assert _chips(p, "#forced-tokens .chip") == ["Name", ":"]
    assert p.text("#allowed-count").startswith("1 of 131,072 tokens allowed")
    assert _variables(p) == {"name": "…", "age": "…", "fruit": "…"}

    seen_partial = False
    for step in range(1, 40):
        p.click("#step")
        p.wait_for(
            f"document.querySelectorAll('#tokens .chip').length === {step} && !document.body.classList.contains('busy')"
        )
        accepted = p.text("#text-view .accepted")
        values = _variables(p)
        if values["name"] == '"Ada"' and values["age"] == "…":
            seen_partial = True  # the variables fill in as the text goes on
        if accepted == "Name: Ada\nAge: 36\nFruit:":
            # The select's options are what is allowed next: a picture worth keeping.
            sample = _chips(p, "#allowed-sample .chip")
            assert "␣banana" in sample and "␣apple" in sample, sample
            assert values == {"name": '"Ada"', "age": '"36"', "fruit": "…"}
            p.eval("document.activeElement.blur()")
            time.sleep(1.6)  # let the "new value" highlight fade
            p.screenshot(ARTIFACTS / "playground.png")
        if "Accepted:" in p.text("#verdict") and "EOS accepted" in p.text("#verdict"):
            break
    else:
        pytest.fail(f"stepping never finished: {p.text('#verdict')}")
    assert seen_partial
    assert _variables(p) == {"name": '"Ada"', "age": '"36"', "fruit": '"banana"'}
    assert p.text("#text-view .accepted") == TEXT
    assert p.text("#text-view .eos") == "EOS"
    assert _chips(p, "#tokens .chip")[-1] == "EOS"
    assert "(terminated: EOS only)" in p.text("#allowed-count")
    p.screenshot(ARTIFACTS / "playground-done.png")


def test_a_rejected_text_shows_where_and_why(page: Page) -> None:
    p = page
    _compile_template(p)
    p.fill("#text", "Name: Ada\nAge: 1234\nFruit: banana")
    p.click("#check")
    p.wait_for("document.getElementById('verdict').classList.contains('bad')")
    verdict = p.text("#verdict")
    assert verdict.startswith('Rejected at line 2, column 9 (character 18): token "4" (id 1052)'), verdict
    assert "allows 1 token here" in verdict
    assert p.text("#text-view .rejected") == "4"
    assert _chips(p, "#tokens .chip.rejected") == ["4"]
    assert _variables(p)["age"] == '"123"'
    # A token refused for its tail: the first refused character is named, in its token.
    p.fill("#text", "Name: ada\nAge: 36\nFruit: banana")
    p.click("#check")
    p.wait_for("document.getElementById('verdict').textContent.includes('ada')")
    verdict = p.text("#verdict")
    expected = 'Rejected at line 1, column 7 (character 6): "a" in token " ada" (id 36140) from column 6'
    assert verdict.startswith(expected), verdict
    assert (p.text("#text-view .rejected-head"), p.text("#text-view .rejected")) == (" ", "ada")
    p.screenshot(ARTIFACTS / "playground-rejected.png")
    # Undo, then type a good age: "check as I type" takes it from there.
    p.click("#live")
    p.fill("#text", TEXT)
    p.wait_for("document.getElementById('verdict').classList.contains('ok')")
    assert p.text("#verdict").startswith("Accepted: the text is complete")
    p.screenshot(ARTIFACTS / "playground-rejected-then-fixed.png")


def test_a_template_error_is_shown_at_its_line_and_column(page: Page) -> None:
    p = page
    p.click("#kinds button[data-kind='template']")
    p.fill("#source", "Name: {{gen 'name'}}\nAge: {{gen 'age' regex=}}")
    p.click("#compile")
    p.wait_for("!document.getElementById('compile-error').hidden")
    where = p.text("#compile-error-where")
    assert where.startswith("line 2, column 24\nAge: {{gen 'age' regex=}}\n" + " " * 23 + "^"), where
    assert p.text("#compile-error-title") == "Invalid template (template-invalid)"
    assert p.text("#gutter .err") == "2"
    assert p.eval("document.getElementById('step').disabled")
    p.screenshot(ARTIFACTS / "playground-error.png")


@pytest.mark.parametrize("kind", ["json_schema", "regex", "grammar", "choice"])
def test_every_kind_compiles_its_example_and_accepts_its_text(page: Page, kind: str) -> None:
    p = page
    p.click(f"#kinds button[data-kind='{kind}']")
    p.click("#example")
    p.wait_for("document.getElementById('verdict').classList.contains('ok')")
    assert p.text("#verdict").startswith("Accepted")


def test_status_tab_refreshes_the_figures_and_plots_mask_latency(page: Page, server_url: str) -> None:
    p = page
    p.eval("location.hash = '#status'")
    p.wait_for("Number(document.getElementById('status').dataset.scrapes || 0) >= 1")
    status, compiled = http("POST", f"{server_url}/compile", {"regex": "[a-z]{1,8}", "open_session": True})
    assert status == 200
    mask = f"{server_url}/sessions/{compiled['session_id']}/mask"
    deadline = time.monotonic() + 15
    while not p.eval("document.querySelectorAll('#latency-plot circle.line-mean').length >= 2"):
        for _ in range(20):
            assert http("GET", mask)[0] == 200
        time.sleep(0.3)
        assert time.monotonic() < deadline, "no latency line was plotted"
    cards = p.eval(
        "Object.fromEntries([...document.querySelectorAll('.card')].map(c => [c.dataset.card, "
        "Object.fromEntries([...c.querySelectorAll('dd')].map(d => [d.dataset.figure, d.textContent]))]))"
    )
    assert set(cards) == {"Program cache", "Compiles", "Sessions", "Masks", "Tokens"}
    assert int(cards["Program cache"]["entries"].split(" / ")[0]) >= 1
    assert int(cards["Sessions"]["active"].split(" / ")[0]) >= 1
    assert cards["Masks"]["mean"].endswith("µs")
    assert p.eval("document.querySelector('#latency-plot path.line') !== null")
    p.screenshot(ARTIFACTS / "status.png")
