"""A program as the ``guidance`` library writes it (``ll_grammar()``: llguidance's Lark, ``%llguidance
{}``, ``name[capture]`` rules) compiles as a ``grammar``; its captures are the program's variables,
``list_append`` ones as lists. The text below is what guidance 0.3.1 writes for
``"Name: " + gen("name", regex="[A-Z][a-z]{1,8}", stop="\\n") + ... + one_or_more(item())``; the real
library is exercised in its own venv (``tests/guidance``, ``.ci/guidance``)."""

from __future__ import annotations

import numpy as np

from core import GuidanceBackend, GuidanceGrammar
from core.lark_text import lark_capture_names
from tests.core.helpers import random_walk

GUIDANCE_LARK = """%llguidance {}

start: "Name: " name "\\nColor: " color "\\n" one_or_more
name[capture, stop="\\n"]: NAME
NAME: /[A-Z][a-z]{1,8}/
color[capture]: COLOR

COLOR: "red"
     | "green"

one_or_more: item+
item: "- " it "\\n"
it[capture="__LIST_APPEND:it"]: IT
IT: /[a-z]{1,4}/
"""


def test_capture_names_are_read_from_the_rules() -> None:
    assert lark_capture_names(GUIDANCE_LARK) == ["name", "color", "__LIST_APPEND:it"]
    assert lark_capture_names('x[stop="a,capture"]: /a/\ny[lazy, capture="z"]: /b/') == ["z"]


def test_a_guidance_program_compiles_with_its_captures(tekken_backend: GuidanceBackend) -> None:
    program = tekken_backend.compile_grammar(GUIDANCE_LARK)
    assert [n for n in program.layout.scope] == ["name", "color", "it"]
    grammar = GuidanceGrammar(program, tekken_backend.tokenizer)
    tok = tekken_backend.tokenizer
    assert grammar.accept_tokens(tok.encode("Name: Ada\nColor: red\n- ab\n- cd\n"))
    assert grammar.accept_tokens([tok.eos_token_id]) and grammar.is_terminated()
    assert grammar.get_variable_values() == {"name": "Ada", "color": "red", "it": ["ab", "cd"]}


def test_random_walks_keep_every_list_item(tekken_backend: GuidanceBackend) -> None:
    import re

    program = tekken_backend.compile_grammar(GUIDANCE_LARK)
    for seed in range(3):
        text, variables, _ = random_walk(program.create_state(), np.random.default_rng(seed))
        m = re.fullmatch(r"Name: ([A-Z][a-z]+)\nColor: (red|green)\n((?:- [a-z]+\n)+)", text)
        assert m is not None, text
        assert variables == {"name": m[1], "color": m[2], "it": re.findall(r"- ([a-z]+)\n", m[3])}
