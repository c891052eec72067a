"""Reasoning on any kind: a think block of free text first, captured as ``reasoning``."""

from __future__ import annotations

import pytest

from core import GuidanceBackend
from core.errors import GrammarError


def test_a_think_block_comes_before_a_json_schema(tekken_backend: GuidanceBackend) -> None:
    tok = tekken_backend.tokenizer
    block = {"start": "<t>", "end": "</t>"}
    program = tekken_backend._compile_kind("json_schema", {"type": "integer"}, reasoning=block)
    state = program.create_state()
    assert state.accept_tokens(tok.encode("<t>let me think {about} it</t>\n42") + [tok.eos_token_id])
    assert state.variables == {"reasoning": "let me think {about} it"}
    assert not program.create_state().accept_tokens(tok.encode("42"))  # the block is required


def test_a_family_block_opened_by_the_prompt_starts_at_once(tekken_backend: GuidanceBackend) -> None:
    tok = tekken_backend.tokenizer
    program = tekken_backend._compile_kind("regex", "[a-z]+", reasoning="deepseek-r1")
    state = program.create_state()
    assert state.accept_tokens(tok.encode("hmm</think>\n\nabc") + [tok.eos_token_id])
    assert state.variables["reasoning"] == "hmm"


def test_reasoning_text_streams_and_then_the_template_values(tekken_backend: GuidanceBackend) -> None:
    tok = tekken_backend.tokenizer
    program = tekken_backend._compile_kind("template", "Name: {{gen 'n' regex='[A-Z][a-z]+'}}.", reasoning="qwen3")
    state = program.create_state()
    assert state.accept_tokens(tok.encode("<think>The user wants"))
    assert state.partial_variables()["reasoning"] == {"value": "The user wants", "complete": False}
    assert state.accept_tokens(tok.encode(" a name</think>\n\nName: Ad"))
    partial = state.partial_variables()
    assert partial["reasoning"]["complete"] and partial["n"] == {"value": "Ad", "complete": False}


def test_max_tokens_bounds_the_block(tekken_backend: GuidanceBackend) -> None:
    tok = tekken_backend.tokenizer
    block = {"start": "<t>", "end": "</t>", "max_tokens": 3}
    program = tekken_backend._compile_kind("choice", ["yes"], reasoning=block)
    words = tok.encode(" a b c d e f")
    assert not program.create_state().accept_tokens(tok.encode("<t>") + words)


@pytest.mark.parametrize("value", ["hermes", {"start": "<t>"}, {"start": "<t>", "end": "</t>", "max_tokens": 0}, 3])
def test_a_bad_reasoning_value_is_refused(tekken_backend: GuidanceBackend, value: object) -> None:
    with pytest.raises(GrammarError):
        tekken_backend._compile_kind("regex", "a", reasoning=value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kind", "source", "text", "values"),
    [
        ("gbnf", 'root ::= "n=" [0-9]+', "n=42", {}),
        ("llguidance", {"grammars": [{"lark_grammar": 'start: "n=" n\nn[capture]: /[0-9]+/'}]}, "n=42", {"n": "42"}),
        ("response_format", {"type": "json_object"}, '{"a":1}', {}),
        ("structured_outputs", {"choice": ["yes", "no"]}, "no", {}),
        (
            "structured_outputs",
            {"structural_tag": '{"type": "structural_tag", "format": {"type": "const_string", "value": "ok"}}'},
            "ok",
            {},
        ),
        ("ebnf", 'start: "n=" /[0-9]+/', "n=42", {}),
    ],
)
def test_a_think_block_comes_before_another_engines_form(
    tekken_backend: GuidanceBackend, kind: str, source: object, text: str, values: dict[str, str]
) -> None:
    tok = tekken_backend.tokenizer
    block = {"start": "<t>", "end": "</t>"}
    program = tekken_backend._compile_kind(kind, source, reasoning=block)  # type: ignore[arg-type]
    state = program.create_state()
    assert state.accept_tokens(tok.encode("<t>first, think</t>" + text) + [tok.eos_token_id])
    assert state.variables == {"reasoning": "first, think", **values}
    assert not program.create_state().accept_tokens(tok.encode(text) + [tok.eos_token_id])  # the block is required
