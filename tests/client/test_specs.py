"""Compile bodies from what a worker has: every kind, a guidance grammar object, Pydantic models,
dataclasses, ``Literal`` and ``Enum``; and ``grammar.parse(Model)`` giving the validated value back."""

from __future__ import annotations

import dataclasses
import enum
import json
from collections.abc import Iterator
from typing import Literal

import jsonschema
import numpy as np
import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from core import Tokenizer, allowed_tokens
from guidance_client import GuidanceClient, program_spec
from guidance_client.specs import KINDS
from tests.service.helpers import AppFactory


class Person(BaseModel):
    model_config = ConfigDict(extra="forbid")  # additionalProperties: false, so every walk ends

    name: str = Field(max_length=8)
    age: int = Field(ge=0, le=120)
    color: Literal["red", "green"]


@dataclasses.dataclass
class Point:
    x: int
    y: int


class Colour(enum.Enum):
    RED = "red"
    GREEN = "green"


class FakeGuidanceGrammar:
    """What the client needs of a guidance grammar object: its ``ll_grammar()``."""

    def ll_grammar(self) -> str:
        return '%llguidance {}\nstart: "n=" n\nn[capture]: /[0-9]{1,3}/\n'


def test_every_server_kind_is_a_keyword() -> None:
    from core.kinds import KINDS as SERVER_KINDS
    from core.spec import PROGRAM_KINDS

    assert set(KINDS) == set(PROGRAM_KINDS)
    assert {k: set(own) for k, own in KINDS.items()} == {k: set(kind.fields) for k, kind in SERVER_KINDS.items()}
    assert program_spec(gbnf='root ::= "a"') == {"gbnf": 'root ::= "a"'}
    assert program_spec(structured_outputs={"regex": "a"}, tokenizer="t") == {
        "structured_outputs": {"regex": "a"},
        "tokenizer": "t",
    }
    with pytest.raises(TypeError):
        program_spec(regexp="a")
    with pytest.raises(ValueError):
        program_spec(regex="a", gbnf="b")


def test_python_types_become_schemas_and_choices() -> None:
    assert program_spec(json_schema=Person)["json_schema"] == Person.model_json_schema()
    adapted = program_spec(json_schema=TypeAdapter(list[int]))["json_schema"]
    assert adapted == {"type": "array", "items": {"type": "integer"}}
    point = program_spec(json_schema=Point)["json_schema"]
    assert point["required"] == ["x", "y"] and point["properties"]["x"] == {"title": "X", "type": "integer"}
    assert program_spec(choice=Literal["a", "b"]) == {"choice": ["a", "b"]}
    assert program_spec(choice=Colour) == {"choice": ["red", "green"]}
    assert program_spec(grammar=FakeGuidanceGrammar())["grammar"].startswith("%llguidance {}")
    with pytest.raises(TypeError):
        program_spec(grammar=42)
    with pytest.raises(TypeError):
        program_spec(choice=Literal[1, 2])


@pytest.fixture()
def sclient(make_app: AppFactory) -> Iterator[GuidanceClient]:
    with TestClient(make_app()) as http:
        yield GuidanceClient(http=http)


def _walk(grammar: object, eos: int, rng: np.random.Generator) -> None:
    bitmask = np.zeros((1, grammar.mask_words), dtype=np.int32)  # type: ignore[attr-defined]
    for _ in range(300):
        grammar.fill_next_token_bitmask(bitmask, 0)  # type: ignore[attr-defined]
        allowed = allowed_tokens(bitmask[0], grammar.vocab_size)  # type: ignore[attr-defined]
        others = allowed[allowed != eos]
        token = (
            eos
            if eos in allowed and (others.size == 0 or rng.random() < 0.5)
            else int(others[rng.integers(others.size)])
        )
        assert grammar.accept_tokens([token])  # type: ignore[attr-defined]
        if grammar.is_terminated():  # type: ignore[attr-defined]
            return
    raise AssertionError("no EOS")


def test_a_pydantic_model_round_trips(sclient: GuidanceClient, default_tokenizer: Tokenizer) -> None:
    for seed in range(3):
        grammar = sclient.grammar(json_schema=Person)
        _walk(grammar, default_tokenizer.eos_token_id, np.random.default_rng(seed))
        person = grammar.parse(Person)
        assert isinstance(person, Person)
        jsonschema.validate(json.loads(grammar.text()), Person.model_json_schema())
        assert grammar.parse() == person.model_dump()
        assert grammar.parse(TypeAdapter(Person)) == person


def test_a_guidance_grammar_object_is_serialised_on_the_worker(
    sclient: GuidanceClient, default_tokenizer: Tokenizer
) -> None:
    grammar = sclient.grammar(grammar=FakeGuidanceGrammar())
    assert grammar.program.variables == ["n"]
    assert grammar.accept_tokens(default_tokenizer.encode("n=42") + [default_tokenizer.eos_token_id])
    assert grammar.get_variable_values() == {"n": "42"}


def test_an_enum_choice_parses_back(sclient: GuidanceClient, default_tokenizer: Tokenizer) -> None:
    grammar = sclient.grammar(choice=Colour)
    assert grammar.accept_tokens(default_tokenizer.encode("green") + [default_tokenizer.eos_token_id])
    assert grammar.text() == "green" and Colour(grammar.text()) is Colour.GREEN
