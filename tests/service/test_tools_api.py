"""Tools, structural tags and reasoning over HTTP, against a real server process: OpenAI's tools
request and vLLM's structural tag compile as their users write them, and a call's partial
arguments arrive over Server-Sent Events while it is being written."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.server import start, stop
from tests.service.test_events import Events

WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
# An OpenAI chat-completions request's own fields, unchanged.
OPENAI_TOOLS = {
    "tools": [
        {"type": "function", "function": {"name": "get_weather", "description": "Weather", "parameters": WEATHER}}
    ],
    "tool_choice": "auto",
    "parallel_tool_calls": True,
}
# vLLM's documented structural tag, unchanged.
VLLM_TAG = {
    "type": "structural_tag",
    "structures": [{"begin": "<function=get_weather>", "schema": WEATHER, "end": "</function>"}],
    "triggers": ["<function="],
}


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    running = start()
    try:
        with httpx.Client(base_url=running.url, timeout=30) as c:
            yield c
    finally:
        status, err = stop(running)
        assert "Traceback" not in err, err[-2000:]


def _tokens(http: httpx.Client, text: str) -> list[int]:
    return list(http.post("/tokenize", json={"text": text, "special": True}).json()["tokens"])


def _accept(http: httpx.Client, sid: str, tokens: list[int]) -> dict[str, Any]:
    resp = http.post(f"/sessions/{sid}/accept", json={"tokens": tokens})
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def test_an_openai_tools_request_compiles_unchanged(http: httpx.Client) -> None:
    resp = http.post("/compile", json={**OPENAI_TOOLS, "tool_format": "mistral", "open_session": True})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert set(body["variables"]) == {"content", "tool_calls"}
    text = '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Oslo"}}]'
    state = _accept(http, body["session_id"], [*_tokens(http, text), 2])
    assert state["terminated"]
    assert state["variables"]["tool_calls"] == [{"name": "get_weather", "arguments": {"city": "Oslo"}}]


def test_a_vllm_structural_tag_compiles_unchanged(http: httpx.Client) -> None:
    resp = http.post("/compile", json={"structural_tag": VLLM_TAG, "open_session": True})
    assert resp.status_code == 200, resp.text
    text = 'Sure. <function=get_weather>{"city":"Oslo"}</function>'
    assert _accept(http, resp.json()["session_id"], [*_tokens(http, text), 2])["terminated"]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"structural_tag": {"type": "structural_tag", "format": {"type": "dispatch", "rules": []}}}, 400),
        ({"tools": OPENAI_TOOLS["tools"], "tool_format": "nope"}, 400),
        ({"regex": "a", "tool_format": "hermes"}, 422),
        ({"regex": "a", "reasoning": "hermes"}, 400),
    ],
)
def test_refusals_are_problems(http: httpx.Client, body: dict[str, Any], status: int) -> None:
    resp = http.post("/compile", json=body)
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")


def test_reasoning_on_a_compile_body(http: httpx.Client) -> None:
    resp = http.post(
        "/compile", json={"choice": ["yes", "no"], "reasoning": {"start": "<t>", "end": "</t>"}, "open_session": True}
    )
    assert resp.status_code == 200, resp.text
    assert "reasoning" in resp.json()["variables"]
    state = _accept(http, resp.json()["session_id"], [*_tokens(http, "<t>hmm</t>yes"), 2])
    assert state["variables"]["reasoning"] == "hmm"


def test_partial_arguments_arrive_over_sse_while_the_call_is_written(http: httpx.Client) -> None:
    resp = http.post("/sessions", json={**OPENAI_TOOLS, "tool_format": "hermes"})
    assert resp.status_code == 201, resp.text
    sid = resp.json()["session_id"]
    text = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Saint-Rémy-de-Provence"}}\n</tool_call>'
    seen: list[dict[str, Any]] = []
    with http.stream("GET", f"/sessions/{sid}/events") as stream:
        events = Events(stream)
        assert events.next()[1] == "snapshot"
        for token in _tokens(http, text):
            _accept(http, sid, [token])
            _, name, event = events.next()
            assert name == "accept"
            calls = event["variables"].get("tool_calls")
            if calls and calls["value"]:
                seen.append(calls["value"][0]["arguments"])
    cities = [a.get("city", "") for a in seen]
    assert any(0 < len(c) < len("Saint-Rémy-de-Provence") for c in cities)  # while being written
    assert seen[-1] == {"city": "Saint-Rémy-de-Provence"}
