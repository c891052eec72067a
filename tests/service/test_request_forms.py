"""Other engines' request forms through ``POST /compile``, on the engines' own documented examples.

Each example is compiled as its engine's users write it; random walks over the served masks (every
token drawn from the mask the server answered) end in texts judged by oracles that are not our
grammar: ``re``, ``json`` + ``jsonschema``, a list of choices.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable
from typing import Any

import httpx
import jsonschema
import pytest

from core import Tokenizer
from tests.service.forms_walk import walk
from tests.service.helpers import assert_problem

SEEDS = range(3)

# OpenAI's structured-outputs guide: the step-by-step math tutor (Chat Completions, strict mode).
MATH_REASONING: dict[str, Any] = {
    "type": "object",
    "properties": {
        "steps": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"explanation": {"type": "string"}, "output": {"type": "string"}},
                "required": ["explanation", "output"],
                "additionalProperties": False,
            },
        },
        "final_answer": {"type": "string"},
    },
    "required": ["steps", "final_answer"],
    "additionalProperties": False,
}
# OpenAI's Responses API example: a calendar event, `text.format` with the members flat.
CALENDAR_EVENT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "date": {"type": "string"},
        "participants": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["name", "date", "participants"],
    "additionalProperties": False,
}
# vLLM's structured-outputs guide: CarDescription.model_json_schema() (Pydantic's output).
CAR_DESCRIPTION: dict[str, Any] = {
    "$defs": {"CarType": {"enum": ["sedan", "SUV", "Truck", "Coupe"], "title": "CarType", "type": "string"}},
    "properties": {
        "brand": {"title": "Brand", "type": "string"},
        "model": {"title": "Model", "type": "string"},
        "car_type": {"$ref": "#/$defs/CarType"},
    },
    "required": ["brand", "model", "car_type"],
    "title": "CarDescription",
    "type": "object",
}
# vLLM's guide: the simplified SQL grammar (GBNF), exactly as indented there.
SIMPLIFIED_SQL = """
        root ::= select_statement

        select_statement ::= "SELECT " column " from " table " where " condition

        column ::= "col_1 " | "col_2 "

        table ::= "table_1 " | "table_2 "

        condition ::= column "= " number

        number ::= "1 " | "2 "
    """
SQL_ORACLE = r"SELECT (col_1 |col_2 ) from (table_1 |table_2 ) where (col_1 |col_2 )= (1 |2 )"
# SGLang's structured-outputs guide: the capital's name and population, its EBNF and its regex.
CAPITAL_INFO: dict[str, Any] = {
    "type": "object",
    "properties": {"name": {"type": "string", "pattern": "^[\\w]+$"}, "population": {"type": "integer"}},
    "required": ["name", "population"],
}
CAPITALS_EBNF = """root ::= city | description
city ::= "London" | "Paris" | "Berlin" | "Rome"
description ::= city " is " status
status ::= "the capital of " country
country ::= "England" | "France" | "Germany" | "Italy"
"""
CAPITALS_ORACLE = r"(London|Paris|Berlin|Rome)( is the capital of (England|France|Germany|Italy))?"


def _json(schema: dict[str, Any]) -> Callable[[str], None]:
    def check(text: str) -> None:
        jsonschema.validate(json.loads(text), schema)
        outside_strings = re.sub(r'"(?:[^"\\]|\\.)*"', '""', text)
        assert not re.search(r"\s", outside_strings), f"compact JSON: {text!r}"

    return check


def _word(c: str) -> bool:
    """A character of ``\\w`` as Rust's regex (UTS #18) has it: wider than Python's (marks included)."""
    return c.isalnum() or c == "_" or unicodedata.category(c) in ("Mn", "Mc", "Me", "Nd", "Pc") or c in "\u200c\u200d"


def _email(text: str) -> None:
    m = re.fullmatch(r"([^@.\n]+)@([^@.\n]+)\.com\n", text)
    assert m is not None and all(_word(c) for c in m[1] + m[2]), text


def _regex(pattern: str) -> Callable[[str], None]:
    def check(text: str) -> None:
        assert re.fullmatch(pattern, text) is not None, text

    return check


def _one_of(options: list[str]) -> Callable[[str], None]:
    def check(text: str) -> None:
        assert text in options, text

    return check


def _any_object(text: str) -> None:
    assert isinstance(json.loads(text), dict), text


def _any_text(text: str) -> None:
    assert isinstance(text, str)


EXAMPLES: dict[str, tuple[dict[str, Any], Callable[[str], None]]] = {
    "openai-math-reasoning": (
        {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "math_reasoning", "schema": MATH_REASONING, "strict": True},
            }
        },
        _json(MATH_REASONING),
    ),
    "openai-responses-calendar": (
        {
            "response_format": {
                "type": "json_schema",
                "name": "calendar_event",
                "schema": CALENDAR_EVENT,
                "strict": True,
            }
        },
        _json(CALENDAR_EVENT),
    ),
    "openai-json-mode": ({"response_format": {"type": "json_object"}}, _any_object),
    "openai-text": ({"response_format": {"type": "text"}}, _any_text),
    "vllm-choice": ({"structured_outputs": {"choice": ["positive", "negative"]}}, _one_of(["positive", "negative"])),
    "vllm-choices-as-documented": (
        {"structured_outputs": {"choices": ["positive", "negative"]}},
        _one_of(["positive", "negative"]),
    ),
    "vllm-regex": ({"structured_outputs": {"regex": r"\w+@\w+\.com\n"}}, _email),
    "vllm-response-format-car": (
        {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "car-description", "schema": CAR_DESCRIPTION},
            }
        },
        _json(CAR_DESCRIPTION),
    ),
    "vllm-json-car": ({"structured_outputs": {"json": CAR_DESCRIPTION}}, _json(CAR_DESCRIPTION)),
    "vllm-grammar-sql": ({"structured_outputs": {"grammar": SIMPLIFIED_SQL}}, _regex(SQL_ORACLE)),
    "vllm-json-object": ({"structured_outputs": {"json_object": True}}, _any_object),
    "sglang-json-schema-text": ({"json_schema": json.dumps(CAPITAL_INFO)}, _json(CAPITAL_INFO)),
    "sglang-regex": ({"regex": "(France|England)"}, _regex("(France|England)")),
    "sglang-ebnf": ({"ebnf": CAPITALS_EBNF}, _regex(CAPITALS_ORACLE)),
    "llamacpp-gbnf": ({"gbnf": SIMPLIFIED_SQL}, _regex(SQL_ORACLE)),
    "llguidance-object": (
        {
            "llguidance": {
                "grammars": [
                    {"lark_grammar": 'start: "City: " CITY "\\nData: " @capital\nCITY: /[A-Z][a-z]+/'},
                    {
                        "name": "capital",
                        "json_schema": {
                            **CAPITAL_INFO,
                            "additionalProperties": False,
                            "x-guidance": {"whitespace_flexible": False},
                        },
                    },
                ]
            }
        },
        lambda text: _capital_data(text),
    ),
}


def _capital_data(text: str) -> None:
    m = re.fullmatch(r"City: [A-Z][a-z]+\nData: (.*)", text, re.DOTALL)
    assert m is not None, text
    jsonschema.validate(json.loads(m[1]), {**CAPITAL_INFO, "additionalProperties": False})


@pytest.mark.parametrize("name", sorted(EXAMPLES))
async def test_documented_example_walks_satisfy_an_independent_oracle(
    client: httpx.AsyncClient, default_tokenizer: Tokenizer, name: str
) -> None:
    body, oracle = EXAMPLES[name]
    finished = 0
    for seed in SEEDS:
        result = await walk(client, body, default_tokenizer, seed)
        if result.terminated:
            oracle(result.text)
            finished += 1
    assert finished >= 2, f"{name}: only {finished} of {len(SEEDS)} walks reached EOS"


async def test_structured_outputs_whitespace_pattern_and_closed_objects(
    client: httpx.AsyncClient, default_tokenizer: Tokenizer
) -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "boolean"}},
        "required": ["a", "b"],
    }
    body = {"structured_outputs": {"json": schema, "disable_additional_properties": True, "whitespace_pattern": "[ ]?"}}
    for seed in SEEDS:
        result = await walk(client, body, default_tokenizer, seed)
        assert result.terminated
        value = json.loads(result.text)
        jsonschema.validate(value, {**schema, "additionalProperties": False})
        assert "\n" not in result.text and "  " not in result.text


async def test_forms_share_programs_with_nothing_else(client: httpx.AsyncClient) -> None:
    a = (await client.post("/compile", json={"regex": "(France|England)"})).json()["program_id"]
    b = (await client.post("/compile", json={"structured_outputs": {"regex": "(France|England)"}})).json()
    assert b["program_id"] != a  # the form is part of the program's identity


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        ({"response_format": {"type": "json_schema", "json_schema": {"schema": {}}}}, "/json_schema/name"),
        ({"response_format": {"type": "xml"}}, "/type"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "strict": "yes"}}},
            "/json_schema/strict",
        ),
        ({"structured_outputs": {"json": {}, "regex": "a"}}, ""),
        ({"structured_outputs": {"jsn": {}}}, "/jsn"),
        ({"structured_outputs": {"regex": "a", "whitespace_pattern": " "}}, "/whitespace_pattern"),
        ({"structured_outputs": {"json_object": False}}, "/json_object"),
        ({"structured_outputs": {"structural_tag": 42}}, "/structural_tag"),
        ({"llguidance": {"grammars": [{"lark_grammar": "start: /a/", "nodes": []}]}}, "/grammars/0/nodes"),
        ({"llguidance": {"grammars": []}}, ""),
    ],
)
async def test_a_malformed_form_names_its_fault(client: httpx.AsyncClient, body: dict[str, Any], pointer: str) -> None:
    problem = assert_problem(await client.post("/compile", json=body), 400, "form-invalid")
    assert problem["pointer"] == pointer


# vLLM's structured-outputs guide: a structural tag in the older form, as JSON text (vLLM's field is a string).
WEATHER: dict[str, Any] = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
WEATHER_TAG: dict[str, Any] = {
    "type": "structural_tag",
    "structures": [{"begin": "<function=get_weather>", "schema": WEATHER, "end": "</function>"}],
    "triggers": ["<function="],
}
# The newer form: one call first (at_least_one), nothing after it (stop_after_first).
ONE_CALL_TAG: dict[str, Any] = {
    "type": "structural_tag",
    "format": {
        "type": "triggered_tags",
        "triggers": ["<function="],
        "at_least_one": True,
        "stop_after_first": True,
        "tags": [
            {
                "type": "tag",
                "begin": "<function=get_weather>",
                "end": "</function>",
                "content": {"type": "json_schema", "json_schema": WEATHER},
            }
        ],
    },
}


def _weather_calls(text: str) -> int:
    """The calls in ``text``, each read with ``json`` and judged by ``jsonschema``; no trigger outside them."""
    begin, end, decoder = "<function=get_weather>", "</function>", json.JSONDecoder()
    calls, at = 0, 0
    while (start := text.find("<function=", at)) >= 0:
        assert text.startswith(begin, start), text
        value, stop = decoder.raw_decode(text, start + len(begin))
        jsonschema.validate(value, WEATHER)
        assert text.startswith(end, stop), text
        calls, at = calls + 1, stop + len(end)
    return calls


@pytest.mark.parametrize(
    ("tag", "calls"),
    [(json.dumps(WEATHER_TAG), None), (ONE_CALL_TAG, 1)],
    ids=["structures-triggers-text", "format-one-call"],
)
async def test_a_structured_outputs_structural_tag_compiles_and_its_walks_validate(
    client: httpx.AsyncClient, default_tokenizer: Tokenizer, tag: Any, calls: int | None
) -> None:
    body = {"structured_outputs": {"structural_tag": tag}}
    finished = 0
    for seed in SEEDS:
        result = await walk(client, body, default_tokenizer, seed)
        if result.terminated:
            found = _weather_calls(result.text)
            assert calls is None or found == calls, result.text
            finished += 1
    assert finished >= 2, f"only {finished} of {len(SEEDS)} walks reached EOS"


async def test_a_structured_outputs_structural_tag_accepts_a_call_and_refuses_a_wrong_one(
    client: httpx.AsyncClient, default_tokenizer: Tokenizer
) -> None:
    body = {"structured_outputs": {"structural_tag": json.dumps(WEATHER_TAG)}, "open_session": True}
    eos = default_tokenizer.eos_token_id
    good = default_tokenizer.encode('Sure. <function=get_weather>{"city":"Oslo"}</function>') + [eos]
    sid = (await client.post("/compile", json=body)).json()["session_id"]
    assert (await client.post(f"/sessions/{sid}/accept", json={"tokens": good})).json()["terminated"]
    bad = default_tokenizer.encode('<function=get_weather>{"town":"Oslo"}</function>') + [eos]
    sid = (await client.post("/compile", json=body)).json()["session_id"]
    assert_problem(await client.post(f"/sessions/{sid}/accept", json={"tokens": bad}), 409, "token-rejected")
    empty = json.dumps({"type": "structural_tag", "structures": [], "triggers": []})
    problem = assert_problem(
        await client.post("/compile", json={"structured_outputs": {"structural_tag": empty}}), 400, "grammar-invalid"
    )
    assert "structures must be a non-empty list" in problem["detail"]


async def test_json_options_apply_to_json_forms_only(client: httpx.AsyncClient) -> None:
    ok = await client.post("/compile", json={"response_format": {"type": "json_object"}, "options": {"whitespace": 2}})
    assert ok.status_code == 200
    assert_problem(
        await client.post("/compile", json={"structured_outputs": {"regex": "a"}, "options": {"whitespace": 2}}),
        400,
        "form-invalid",
    )
    assert_problem(
        await client.post("/compile", json={"gbnf": 'root ::= "a"', "options": {"whitespace": 2}}),
        400,
        "grammar-invalid",
    )


async def test_a_body_sent_without_json_content_type_says_so(client: httpx.AsyncClient) -> None:
    body = json.dumps({"regex": "a"})
    problem = assert_problem(
        await client.post("/compile", content=body, headers={"content-type": "text/plain"}), 422, "content-type-invalid"
    )
    assert "content-type: application/json" in problem["detail"] and "text/plain" in problem["detail"]
    form = await client.post("/compile", data={"regex": "a"})  # an HTML form's encoding
    assert assert_problem(form, 422, "content-type-invalid")["detail"].endswith("application/x-www-form-urlencoded")
