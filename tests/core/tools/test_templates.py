"""Each family's own chat template is the oracle: an assistant turn it renders with one call and
with two parallel calls is accepted token by token (every token in the served mask), on tekken and
on the family's real vocabulary, and reads back as the calls rendered."""

from __future__ import annotations

from typing import Any

import pytest

from core.tools import TOOL_FORMATS
from tests.core.helpers import accepts_text
from tests.core.tools.chat_templates import CALLS, PARSERS, SCHEMAS, THINKS, TOOLS, VOCABULARY, assistant_turn
from tests.core.tools.conftest import backend_for, template_path

CASES = [
    pytest.param(family, n, vocab, id=f"{family}-{n}call-{vocab}")
    for family, fmt in TOOL_FORMATS.items()
    for n in ((1, 2) if fmt.parallel else (1,))
    for vocab in dict.fromkeys(("tekken", VOCABULARY[family]))
]


def _turn(family: str, n: int, vocab: str) -> tuple[Any, str, str | None]:
    fmt = TOOL_FORMATS[family]
    backend = backend_for(vocab)
    tok = backend.tokenizer
    eos_text = tok.decode([tok.eos_token_id])
    turn = assistant_turn(template_path(fmt.template), CALLS[:n], eos_text)
    for end in (fmt.end_of_turn, eos_text):
        if end and end in turn:
            turn = turn[: turn.index(end)]
    reasoning = None
    think = THINKS.get(family)
    if think and turn.startswith(think):
        reasoning = family
    return backend, turn, reasoning


@pytest.mark.parametrize(("family", "n", "vocab"), CASES)
def test_rendered_turn_is_accepted_token_by_token(family: str, n: int, vocab: str) -> None:
    backend, turn, reasoning = _turn(family, n, vocab)
    tok = backend.tokenizer
    body = turn[len(THINKS[family]) :] if reasoning else turn
    assert PARSERS[family](body, SCHEMAS)[1] == CALLS[:n]  # the oracle reads the template's own text
    for choice in ("auto", "required"):
        program = backend.compile_tools(TOOLS, family, tool_choice=choice, reasoning=reasoning)
        state = program.create_state()
        assert accepts_text(state, tok.tokenize(turn, special=True)), f"{choice}: refused {turn!r}"
        variables = state.variables
        assert variables["tool_calls"] == CALLS[:n]
        assert variables["content"] == ""


@pytest.mark.parametrize("family", [f for f, fmt in TOOL_FORMATS.items() if fmt.parallel])
def test_parallel_calls_off_refuses_a_second_call(family: str) -> None:
    backend, turn, reasoning = _turn(family, 2, "tekken")
    program = backend.compile_tools(TOOLS, family, parallel_tool_calls=False, reasoning=reasoning)
    assert not accepts_text(program.create_state(), backend.tokenizer.tokenize(turn, special=True))


def test_a_marker_the_vocabulary_has_as_a_special_token_is_matched_as_that_token() -> None:
    backend = backend_for("tekken")
    tok = backend.tokenizer
    program = backend.compile_tools(TOOLS, "mistral", tool_choice="required")
    control = tok.tokenize("[TOOL_CALLS]", special=True)
    assert len(control) == 1 and tok.is_special(control[0])
    assert program.create_state().get_allowed_tokens() == control
    spelt = tok.encode("[TOOL_CALLS]")  # the same text as ordinary tokens
    assert not program.create_state().accept_tokens(spelt[:1])
