"""Programs of the real ``guidance`` library (0.3.x) served by the server, checked by guidance itself.

Each program is handed to the client as the guidance object (serialised on the worker with its
``ll_grammar()``); random walks draw every token from the masks the server answered, and the text
each walk ends with must be accepted by guidance's own matcher for the same program
(``Grammar.match``, over guidance's pinned llguidance, not the server's), with the same captured
values. ``guidance`` pins an llguidance the server cannot share a venv with: ``.ci/guidance`` builds
a venv for it and runs the server from the project's venv (``GUIDANCE_SERVER_PYTHON``). Without
``guidance`` installed this module skips.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

guidance = pytest.importorskip(
    "guidance", reason="the guidance library is not installed here: .ci/guidance runs these tests in its own venv"
)

from pydantic import BaseModel, ConfigDict, Field  # noqa: E402

from guidance_client import GuidanceClient  # noqa: E402
from tests.server import Server, running  # noqa: E402

EOS = 2  # the server's default tokenizer (tekken)
SEEDS = range(4)


class Person(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=6)
    age: int = Field(ge=0, le=99)


PERSON_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"city": {"enum": ["Paris", "Rome"]}, "n": {"type": "integer", "minimum": 0, "maximum": 9}},
    "required": ["city", "n"],
    "additionalProperties": False,
}


from guidance import capture, gen, one_or_more, select, zero_or_more  # noqa: E402
from guidance import json as gjson  # noqa: E402


@guidance(stateless=True)
def item(lm: Any) -> Any:
    return lm + "- " + gen("it", regex="[a-z]{1,4}", list_append=True) + "\n"


@guidance(stateless=True)
def items(lm: Any) -> Any:  # a function calling another
    return lm + "Items:\n" + one_or_more(item())


@guidance(stateless=True)
def answer(lm: Any, options: list[str]) -> Any:
    return lm + "A: " + select(options, name="answer")


# max_tokens counts the server's tokens; guidance's matcher reads bytes, one token per byte, so the
# same program judges such text by a byte count. It is matched without max_tokens instead, and the
# tokens the walk spent inside the slot are counted separately (_tokens_inside).
MAX_TOKENS = 4
UNBOUNDED = {"gen-stop-max-tokens": "Q: " + gen("q", stop="?") + "?\n" + answer(["yes", "no"])}

PROGRAMS: dict[str, Any] = {
    "gen-regex-select": "Name: "
    + gen("name", regex="[A-Z][a-z]{1,6}")
    + "\nColor: "
    + select(["red", "green", "blue"], name="color"),
    "gen-stop-max-tokens": "Q: " + gen("q", max_tokens=MAX_TOKENS, stop="?") + "?\n" + answer(["yes", "no"]),
    "json-schema": "Data: " + gjson(name="data", schema=PERSON_SCHEMA),
    "json-pydantic": gjson(name="person", schema=Person),
    "one-or-more-nested": items(),
    "zero-or-more": "Tags:" + zero_or_more(" #" + gen("tag", regex="[a-z]{1,3}", list_append=True)) + ".",
    "capture-nested": capture("Code " + gen("num", regex="[0-9]{3}") + "-" + select(["A", "B"], name="cls"), "code"),
}


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with running(python=os.environ.get("GUIDANCE_SERVER_PYTHON", sys.executable)) as s:
        yield s


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[GuidanceClient]:
    with GuidanceClient(server.url) as c:
        yield c


def _walk(grammar: Any, rng: np.random.Generator, max_steps: int = 200) -> None:
    """Draw every token from the served mask (EOS with probability 0.4 when allowed) until EOS."""
    from guidance_client.wire import allowed_tokens

    bitmask = np.zeros((1, grammar.mask_words), dtype=np.int32)
    for _ in range(max_steps):
        grammar.fill_next_token_bitmask(bitmask, 0)
        allowed = allowed_tokens(bitmask[0], grammar.vocab_size)
        others = allowed[allowed != EOS]
        if EOS in allowed and (others.size == 0 or rng.random() < 0.4):
            token = EOS
        else:
            token = int(others[rng.integers(others.size)])
        assert grammar.accept_tokens([token]), token
        if grammar.is_terminated():
            return
    raise AssertionError(f"no EOS within {max_steps} steps: {grammar.text()!r}")


def _same(served: dict[str, Any], theirs: dict[str, Any]) -> None:
    assert served == theirs, (served, theirs)


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_walks_over_served_masks_are_matched_by_guidance(client: GuidanceClient, name: str) -> None:
    program = PROGRAMS[name]
    for seed in SEEDS:
        grammar = client.grammar(grammar=program)  # the guidance object itself
        _walk(grammar, np.random.default_rng(seed))
        text = grammar.text()
        match = UNBOUNDED.get(name, program).match(text)  # guidance's own matcher, its own llguidance
        assert match is not None, f"guidance refuses what the server allowed: {text!r}"
        _same(grammar.get_variable_values(), dict(match.captures))
        if name in UNBOUNDED:
            start = text.index("Q: ") + 3
            assert _tokens_inside(client, grammar.tokens, start, start + len(match["q"])) <= MAX_TOKENS
        grammar.close()


def _tokens_inside(client: GuidanceClient, tokens: list[int], start: int, end: int) -> int:
    """How many of ``tokens`` decode to text overlapping characters ``start:end`` of their text."""
    count, at = 0, 0
    for k in range(1, len(tokens) + 1):
        upto = len(client.detokenize([t for t in tokens[:k] if t != EOS]))
        if upto > start and at < end and upto > at:
            count += 1
        at = upto
    return count


def test_the_llguidance_object_form_of_a_program(client: GuidanceClient) -> None:
    """As llguidance's API and older guidance versions write it: ``{"grammars": [{"lark_grammar": ...}]}``."""
    program = PROGRAMS["gen-regex-select"]
    grammar = client.grammar(llguidance={"grammars": [{"lark_grammar": program.ll_grammar()}]})
    assert grammar.program.variables == ["name", "color"]
    _walk(grammar, np.random.default_rng(0))
    match = program.match(grammar.text())
    assert match is not None
    _same(grammar.get_variable_values(), dict(match.captures))


def test_a_pydantic_program_parses_back(client: GuidanceClient) -> None:
    grammar = client.grammar(grammar=gjson(schema=Person))
    _walk(grammar, np.random.default_rng(1))
    assert isinstance(grammar.parse(Person), Person)


def test_served_variables_are_listed_at_compile(client: GuidanceClient) -> None:
    program = PROGRAMS["capture-nested"]
    info = client.compile(grammar=program)
    assert sorted(info.variables) == ["cls", "code", "num"]
