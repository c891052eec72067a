"""What a tools request may be, and what it is refused for (400s that say what is wrong)."""

from __future__ import annotations

from typing import Any

import pytest

from core import GuidanceBackend
from core.errors import GrammarError
from tests.core.tools.chat_templates import TOOLS
from tests.core.tools.conftest import backend_for


@pytest.fixture(scope="module")
def backend() -> GuidanceBackend:
    return backend_for("tekken")


@pytest.mark.parametrize(
    ("tools", "options", "words"),
    [
        (TOOLS, {}, "tool_format"),
        (TOOLS, {"tool_format": "gpt-9"}, "unknown tool_format"),
        (TOOLS, {"tool_format": "hermes", "tool_choice": "always"}, "tool_choice must be"),
        (TOOLS, {"tool_format": "hermes", "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "nope"),
        ([{"type": "retrieval"}], {"tool_format": "hermes"}, 'type "function"'),
        ([{"type": "function", "function": {"name": "a b"}}], {"tool_format": "hermes"}, "name"),
        ([*TOOLS, TOOLS[0]], {"tool_format": "hermes"}, "two tools are named"),
        ([], {"tool_format": "hermes"}, "tools is empty"),
        (TOOLS, {"tool_format": "hermes", "parallel_tool_calls": "yes"}, "parallel_tool_calls"),
    ],
)
def test_a_bad_tools_request_is_refused_with_its_reason(
    backend: GuidanceBackend, tools: Any, options: dict[str, Any], words: str
) -> None:
    with pytest.raises(GrammarError, match=words):
        backend._compile_kind("tools", tools, None, options)


def test_none_with_no_tools_is_plain_text(backend: GuidanceBackend) -> None:
    program = backend.compile_tools([], "hermes", tool_choice="none")
    state = program.create_state()
    assert state.accept_tokens(backend.tokenizer.encode("Hello") + [backend.tokenizer.eos_token_id])
    assert state.variables == {"content": "Hello", "tool_calls": []}


def test_a_bare_function_object_is_taken_too(backend: GuidanceBackend) -> None:
    bare = [{"name": "f", "parameters": {"type": "object", "properties": {"x": {"type": "integer"}}}}]
    program = backend.compile_tools(bare, "hermes", tool_choice="required")
    text = '<tool_call>\n{"name": "f", "arguments": {"x": 1}}\n</tool_call>'
    state = program.create_state()
    assert state.accept_tokens(backend.tokenizer.encode(text) + [backend.tokenizer.eos_token_id])
    assert state.variables["tool_calls"] == [{"name": "f", "arguments": {"x": 1}}]


def test_arguments_outside_the_schema_are_refused(backend: GuidanceBackend) -> None:
    program = backend.compile_tools(TOOLS, "hermes", tool_choice="required")
    text = '<tool_call>\n{"name": "get_weather", "arguments": {"days": 3}}'  # city is required
    assert not program.create_state().accept_tokens(backend.tokenizer.encode(text))


def test_partial_arguments_only_grow_while_a_call_is_written(backend: GuidanceBackend) -> None:
    program = backend.compile_tools(TOOLS, "qwen2.5")
    tok = backend.tokenizer
    call = '{"name": "get_weather", "arguments": {"city": "Saint-Rémy-de-Provence", "days": 3}}'
    text = f"Let me check.\n<tool_call>\n{call}\n</tool_call>"
    state = program.create_state()
    seen: list[Any] = []
    for token in tok.encode(text):
        assert state.accept_token(token)
        calls = state.partial_variables()["tool_calls"]["value"]
        if calls:
            seen.append(calls[0]["arguments"])
    final = "Saint-Rémy-de-Provence"
    assert any(0 < len(a.get("city", "")) < len(final) for a in seen)  # streamed while written
    assert seen[-1] == {"city": final, "days": 3}
    for before, after in zip(seen, seen[1:]):
        for key, value in before.items():
            assert key in after and str(after[key]).startswith(str(value))
    assert state.partial_variables()["content"] == {"value": "Let me check.", "complete": True}
