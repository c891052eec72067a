"""Masks checked against independent oracles (Python's ``re``, ``jsonschema``).

Two directions for every constraint:
(a) sampling random tokens only from the masks until EOS always yields text the oracle accepts,
    with the captured variables equal to the oracle's groups;
(b) the tokens of a text the oracle accepts are each allowed by the mask, and EOS at the end.
Fast runs use a tiny synthetic vocabulary and the real tekken vocabulary with a few seeds; the
``slow`` mark runs many more seeds on tekken.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jsonschema
import numpy as np
import pytest

from core import CompiledGuidanceProgram, GuidanceBackend, Tokenizer
from tests.core.helpers import accepts_text, random_walk

PERSON_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 8},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "tags": {"type": "array", "items": {"enum": ["a", "b", "c d"]}, "maxItems": 3},
        "ok": {"type": "boolean"},
    },
    "required": ["name", "age", "tags", "ok"],
    "additionalProperties": False,
}

_STRINGS = re.compile(r'"(?:\\.|[^"\\])*"')


def is_compact(text: str) -> bool:
    """No whitespace outside JSON strings."""
    return not re.search(r"\s", _STRINGS.sub('""', text))


@dataclass
class Case:
    """One constraint and its independent oracle."""

    id: str
    compile: Callable[[GuidanceBackend], CompiledGuidanceProgram]
    check: Callable[[str, dict[str, Any]], None]
    examples: list[tuple[str, dict[str, Any]]]


def check_person(text: str, variables: dict[str, Any]) -> None:
    m = re.fullmatch(r"Name: (?P<name>[A-Z][a-z]{1,8})\nAge: (?P<age>[0-9]{1,3})", text)
    assert m, text
    assert variables == m.groupdict()


def check_greeting(text: str, variables: dict[str, Any]) -> None:
    m = re.fullmatch(re.escape("Hi [there] {{x}}, ") + "(?P<who>Ada|Bob|Bobby)!", text)
    assert m, text
    assert variables == m.groupdict()


def check_answer(text: str, variables: dict[str, Any]) -> None:
    m = re.fullmatch(r"Answer: (?P<ans>yes|no, because (?P<why>[a-z ]{1,12})\.)", text)
    assert m, text
    expected = {k: v for k, v in m.groupdict().items() if v is not None}
    assert variables == expected


def check_json_slot(text: str, variables: dict[str, Any]) -> None:
    assert text.startswith("Data: "), text
    body = text[len("Data: ") :]
    jsonschema.validate(json.loads(body), PERSON_SCHEMA)
    assert is_compact(body), body
    assert variables == {"data": body}


def check_repeat(text: str, variables: dict[str, Any]) -> None:
    m = re.fullmatch(r"List:( [a-z]{1,5}=[0-9])(,( [a-z]{1,5}=[0-9])){0,3}\.", text)
    assert m, text
    items = text[len("List:") : -1].split(",")
    assert variables == {
        "items": items,
        "item": [i.strip().split("=")[0] for i in items],
        "n": [i.split("=")[1] for i in items],
    }


def check_expr(text: str, variables: dict[str, Any]) -> None:
    m = re.fullmatch(r"Expr: (?P<e>[0-9]{1,3}([+-][0-9]{1,3})*);", text)
    assert m, text
    assert variables == {"e": m.group("e")}


def check_phone(text: str, variables: dict[str, Any]) -> None:
    assert re.fullmatch(r"\([0-9]{3}\) [0-9]{3}-[0-9]{4}", text), text
    assert variables == {}


def check_choice(text: str, variables: dict[str, Any]) -> None:
    assert text in ("Paris", "Paris, France", "Berlin"), text


def check_schema(text: str, variables: dict[str, Any]) -> None:
    jsonschema.validate(json.loads(text), PERSON_SCHEMA)
    assert is_compact(text), text


def check_lark(text: str, variables: dict[str, Any]) -> None:
    item = r"(?:[xy]|\([xy]( [xy]){0,2}\))"
    assert re.fullmatch(rf"\({item}( {item}){{0,3}}\)", text), text


CASES = [
    Case(
        "gen-regex",
        lambda b: b.compile_template(
            "Name: {{gen 'name' regex='[A-Z][a-z]{1,8}'}}\nAge: {{gen 'age' regex='[0-9]{1,3}'}}"
        ),
        check_person,
        [("Name: Ada\nAge: 36", {"name": "Ada", "age": "36"}), ("Name: Zoe\nAge: 7", {"name": "Zoe", "age": "7"})],
    ),
    Case(
        "select-interpolation",
        lambda b: b.compile_template(
            "{{greeting}}, {{select 'who' options=names}}!",
            {"greeting": "Hi [there] {{x}}", "names": ["Ada", "Bob", "Bobby"]},
        ),
        check_greeting,
        [("Hi [there] {{x}}, Bobby!", {"who": "Bobby"}), ("Hi [there] {{x}}, Bob!", {"who": "Bob"})],
    ),
    Case(
        "block-select-with-stop",
        lambda b: b.compile_template(
            "Answer: {{#select 'ans'}}yes{{or}}no, because {{gen 'why' regex='[a-z ]{1,12}' stop='.'}}{{/select}}"
        ),
        check_answer,
        [
            ("Answer: yes", {"ans": "yes"}),
            ("Answer: no, because it is late.", {"ans": "no, because it is late.", "why": "it is late"}),
        ],
    ),
    Case(
        "json-slot",
        lambda b: b.compile_template("Data: {{json 'data' schema=s}}", {"s": PERSON_SCHEMA}),
        check_json_slot,
        [
            ('Data: {"name":"Ada","age":36,"tags":["a","c d"],"ok":true}', {}),
            ('Data: {"name":"","age":0,"tags":[],"ok":false}', {}),
        ],
    ),
    Case(
        "repeat",
        lambda b: b.compile_template(
            "List:{{#repeat 'items' min=1 max=4 sep=','}} {{gen 'item' regex='[a-z]{1,5}'}}={{gen 'n' regex='[0-9]'}}"
            "{{/repeat}}."
        ),
        check_repeat,
        [
            (
                "List: ab=1, ab=2, abc=3.",
                {"items": [" ab=1", " ab=2", " abc=3"], "item": ["ab", "ab", "abc"], "n": ["1", "2", "3"]},
            ),
            ("List: x=0.", {"items": [" x=0"], "item": ["x"], "n": ["0"]}),
        ],
    ),
    Case(
        "grammar-slot",
        lambda b: b.compile_template(
            "Expr: {{grammar 'e' lark=g}};", {"g": 'start: TERM (("+" | "-") TERM)*\nTERM: /[0-9]{1,3}/\n'}
        ),
        check_expr,
        [("Expr: 1+22-333;", {"e": "1+22-333"}), ("Expr: 7;", {"e": "7"})],
    ),
    Case("regex", lambda b: b.compile_regex(r"\([0-9]{3}\) [0-9]{3}-[0-9]{4}"), check_phone, [("(555) 123-4567", {})]),
    Case(
        "choice",
        lambda b: b.compile_choice(["Paris", "Paris, France", "Berlin"]),
        check_choice,
        [("Paris", {}), ("Paris, France", {}), ("Berlin", {})],
    ),
    Case(
        "json-schema",
        lambda b: b.compile_json_schema(PERSON_SCHEMA),
        check_schema,
        [('{"name":"Zoé","age":120,"tags":["b"],"ok":true}', {})],
    ),
    Case(
        "lark",
        lambda b: b.compile_grammar(
            'start: "(" item (" " item){0,3} ")"\nitem: LEAF | "(" LEAF (" " LEAF){0,2} ")"\nLEAF: "x" | "y"\n'
        ),
        check_lark,
        [("(x (y x) y)", {}), ("((x))", {})],
    ),
]


@pytest.fixture(params=["tiny", "tekken"])
def backend(request: pytest.FixtureRequest, tiny_tokenizer: Tokenizer) -> GuidanceBackend:
    if request.param == "tiny":
        return GuidanceBackend(tiny_tokenizer)
    backend: GuidanceBackend = request.getfixturevalue("tekken_backend")
    return backend


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_random_walks_from_masks_satisfy_the_oracle(case: Case, backend: GuidanceBackend) -> None:
    program = case.compile(backend)
    seeds = range(12) if backend.tokenizer.name == "tiny" else range(3)
    for seed in seeds:
        text, variables, _ = random_walk(program.create_state(), np.random.default_rng(seed))
        case.check(text, variables)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_valid_texts_are_allowed_token_by_token(case: Case, backend: GuidanceBackend) -> None:
    program = case.compile(backend)
    for text, expected in case.examples:
        case.check(text, expected if expected or case.id != "json-slot" else {"data": text[len("Data: ") :]})
        state = program.create_state()
        assert accepts_text(state, backend.tokenizer.encode(text)), text
        assert state.text() == text
        if expected:
            assert state.variables == expected


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_many_random_walks_on_tekken(case: Case, tekken_backend: GuidanceBackend) -> None:
    program = case.compile(tekken_backend)
    for seed in range(40):
        text, variables, _ = random_walk(program.create_state(), np.random.default_rng(1000 + seed))
        case.check(text, variables)
