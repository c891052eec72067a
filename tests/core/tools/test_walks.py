"""Random walks sampled only from served masks, read by the families' own formats.

Each walk's text is parsed by the test's parser of the family's format (``chat_templates``, written
from the template, not from core's grammar), every call's arguments are validated against its
tool's schema with ``jsonschema``, the choice holds (``none`` never calls, a named choice calls
that function, ``required`` calls), and the variables core reports equal what the parser read.
"""

from __future__ import annotations

from typing import Any

import jsonschema
import numpy as np
import pytest

from core.bitmask import allowed_tokens
from core.session import GuidanceState
from core.tools import TOOL_FORMATS
from tests.core.tools.chat_templates import PARSERS
from tests.core.tools.conftest import backend_for

WALK_TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "search",
            "parameters": {
                "type": "object",
                "properties": {
                    "query": {"type": "string", "maxLength": 12},
                    "limit": {"type": "integer", "minimum": 1, "maximum": 50},
                    "exact": {"type": "boolean"},
                },
                "required": ["query"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "set_mode",
            "parameters": {
                "type": "object",
                "properties": {
                    "mode": {"enum": ["fast", "slow"]},
                    "ratio": {"type": "number"},
                    "tags": {"type": "array", "items": {"type": "string", "maxLength": 6}, "maxItems": 2},
                },
                "required": ["mode", "ratio"],
            },
        },
    },
    {"type": "function", "function": {"name": "ping", "parameters": {"type": "object", "properties": {}}}},
]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in WALK_TOOLS}
CHOICES: list[Any] = ["none", "auto", "required", {"type": "function", "function": {"name": "set_mode"}}]
_CLOSERS = ('"', "}", "]", ">", "<", "|", "\n", ",", "0", "1", "t", "f", '<|"|>')


def _walk(state: GuidanceState, rng: np.random.Generator, closers: set[int], steps: int = 600) -> str:
    """Tokens drawn from the served masks until EOS; past a few steps, closing tokens are favoured."""
    program = state.program
    eos = program.eos_token_id
    mask = np.zeros((1, program.mask_words), dtype=np.int32)
    for step in range(steps):
        state.fill_bitmask(mask, 0)
        allowed = allowed_tokens(mask[0], program.vocab_size)
        if eos in allowed and (allowed.size == 1 or rng.random() < (0.15 if step < 30 else 0.9)):
            token = eos
        else:
            pool = allowed[allowed != eos]
            if step >= 30:
                near = np.array([t for t in pool if int(t) in closers or state.program.tokenizer.is_special(int(t))])
                if near.size and rng.random() < 0.9:
                    pool = near
            token = int(pool[rng.integers(pool.size)])
        assert state.accept_token(token), f"a token of the mask was refused after {state.text()!r}"
        if state.is_terminated():
            return state.program.tokenizer.decode(state.tokens[:-1])
    raise AssertionError(f"no end within {steps} steps: {state.text()!r}")


def _walks(family: str, choice: Any, walks: int, seed: int) -> None:
    backend = backend_for("tekken")
    tok = backend.tokenizer
    closers = {ids[0] for c in _CLOSERS if len(ids := tok.encode(c)) == 1}
    program = backend.compile_tools(WALK_TOOLS, family, tool_choice=choice)
    rng = np.random.default_rng(seed + sum(map(ord, family + str(choice))))
    for _ in range(walks):
        state = program.create_state()
        text = _walk(state, rng, closers)
        content, calls = PARSERS[family](text, SCHEMAS)
        for call in calls:
            jsonschema.validate(call["arguments"], SCHEMAS[call["name"]])
        if choice == "none":
            assert calls == []
        elif choice == "required":
            assert len(calls) >= 1
        elif isinstance(choice, dict):
            assert [c["name"] for c in calls] == ["set_mode"]
        if not TOOL_FORMATS[family].parallel:
            assert len(calls) <= 1
        variables = state.variables
        assert variables["tool_calls"] == calls, text
        assert variables["content"] == content.strip(), text


@pytest.mark.parametrize("choice", CHOICES, ids=["none", "auto", "required", "named"])
@pytest.mark.parametrize("family", list(TOOL_FORMATS))
def test_random_walks_parse_validate_and_keep_the_choice(family: str, choice: Any) -> None:
    _walks(family, choice, walks=1, seed=0)


@pytest.mark.slow
@pytest.mark.parametrize("choice", CHOICES, ids=["none", "auto", "required", "named"])
@pytest.mark.parametrize("family", list(TOOL_FORMATS))
def test_many_random_walks_parse_validate_and_keep_the_choice(family: str, choice: Any) -> None:
    _walks(family, choice, walks=20, seed=1)
