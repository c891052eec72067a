"""Structural tags as vLLM and xgrammar users write them: both forms compile unchanged, text and
tags are accepted as xgrammar's documentation describes, unsupported formats are refused by name."""

from __future__ import annotations

from typing import Any

import pytest

from core import GuidanceBackend
from core.errors import GrammarError
from core.structural_tag import UNSUPPORTED_FORMATS
from tests.core.helpers import accepts_text

WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
# vLLM's documented older form (structures + triggers)
LEGACY = {
    "type": "structural_tag",
    "structures": [{"begin": "<function=get_weather>", "schema": WEATHER, "end": "</function>"}],
    "triggers": ["<function="],
}


def _tag(inner: dict[str, Any]) -> dict[str, Any]:
    return {"type": "structural_tag", "format": inner}


TRIGGERED = _tag(
    {
        "type": "triggered_tags",
        "triggers": ["<function="],
        "tags": [
            {
                "type": "tag",
                "begin": "<function=get_weather>",
                "end": "</function>",
                "content": {"type": "json_schema", "json_schema": WEATHER},
            }
        ],
    }
)


def _accepts(backend: GuidanceBackend, tag: Any, text: str) -> bool:
    program = backend.compile_structural_tag(tag)
    return accepts_text(program.create_state(), backend.tokenizer.encode(text))


@pytest.mark.parametrize("tag", [LEGACY, TRIGGERED], ids=["structures-triggers", "format"])
@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("No call needed.", True),
        ('I will call. <function=get_weather>{"city":"Paris"}</function> Done.', True),
        ('<function=get_weather>{"city":"Paris"}</function><function=get_weather>{"city":"Rome"}</function>', True),
        ('<function=get_weather>{"town":"Paris"}</function>', False),
        ("<function=get_time>{}</function>", False),
    ],
)
def test_both_forms_accept_text_and_tags(tekken_backend: GuidanceBackend, tag: Any, text: str, ok: bool) -> None:
    assert _accepts(tekken_backend, tag, text) is ok


def test_the_json_text_of_a_tag_compiles_too(tekken_backend: GuidanceBackend) -> None:
    import json

    assert _accepts(tekken_backend, json.dumps(LEGACY), 'x<function=get_weather>{"city":"A"}</function>')


@pytest.mark.parametrize(
    ("fmt", "good", "bad"),
    [
        ({"type": "const_string", "value": "hi"}, "hi", "ho"),
        ({"type": "regex", "pattern": "[0-9]{3}"}, "123", "12a"),
        ({"type": "grammar", "grammar": 'root ::= "yes" | "no"'}, "no", "maybe"),
        (
            {
                "type": "sequence",
                "elements": [
                    {"type": "const_string", "value": "A: "},
                    {"type": "json_schema", "json_schema": {"type": "integer"}},
                ],
            },
            "A: 12",
            "A: x",
        ),
        (
            {
                "type": "or",
                "elements": [{"type": "const_string", "value": "a"}, {"type": "const_string", "value": "b"}],
            },
            "b",
            "c",
        ),
        ({"type": "repeat", "min": 2, "max": 3, "content": {"type": "const_string", "value": "x"}}, "xxx", "x"),
        (
            {"type": "tag", "begin": "<think>", "content": {"type": "any_text"}, "end": "</think>"},
            "<think>a </b> c</think>",
            "<think>a</think>b",
        ),
        (
            {"type": "tag", "begin": "<r>", "content": {"type": "any_text", "excludes": ["bad"]}, "end": "</r>"},
            "<r>good</r>",
            "<r>so bad</r>",
        ),
        (
            {"type": "sequence", "elements": [{"type": "any_text"}, {"type": "const_string", "value": "END"}]},
            "some text END",
            "some text",
        ),
        (
            {
                "type": "tags_with_separator",
                "separator": ",",
                "at_least_one": True,
                "tags": [
                    {"type": "tag", "begin": "<a>", "content": {"type": "const_string", "value": "1"}, "end": "</a>"}
                ],
            },
            "<a>1</a>,<a>1</a>",
            "",
        ),
    ],
)
def test_formats_match_as_documented(tekken_backend: GuidanceBackend, fmt: dict[str, Any], good: str, bad: str) -> None:
    assert _accepts(tekken_backend, _tag(fmt), good)
    assert not _accepts(tekken_backend, _tag(fmt), bad)


@pytest.mark.parametrize(
    ("flags", "text", "ok"),
    [
        ({"at_least_one": True}, "text first", False),
        ({"at_least_one": True}, '<function=get_weather>{"city":"A"}</function> then text', True),
        (
            {"stop_after_first": True},
            '<function=get_weather>{"city":"A"}</function><function=get_weather>{"city":"B"}</function>',
            False,
        ),
        ({"stop_after_first": True}, 'a <function=get_weather>{"city":"A"}</function>', True),
        ({"excludes": ["STOP"]}, "no STOP here", False),
    ],
)
def test_triggered_tags_flags(tekken_backend: GuidanceBackend, flags: dict[str, Any], text: str, ok: bool) -> None:
    tag = _tag({**TRIGGERED["format"], **flags})
    assert _accepts(tekken_backend, tag, text) is ok


@pytest.mark.parametrize("kind", UNSUPPORTED_FORMATS)
def test_an_unsupported_format_is_refused_by_name(tekken_backend: GuidanceBackend, kind: str) -> None:
    with pytest.raises(GrammarError, match=f"{kind!r} is not supported"):
        tekken_backend.compile_structural_tag(_tag({"type": kind}))


@pytest.mark.parametrize(
    "fmt",
    [
        {"type": "json_schema", "json_schema": {}, "style": "qwen_xml"},
        {"type": "any_text", "max_chars": 4},
        {"type": "tag", "begin": {"type": "token", "token": "<s>"}, "content": {"type": "any_text"}, "end": "x"},
        {"type": "nonsense"},
    ],
)
def test_unsupported_options_are_refused_with_their_name(tekken_backend: GuidanceBackend, fmt: dict[str, Any]) -> None:
    with pytest.raises(GrammarError):
        tekken_backend.compile_structural_tag(_tag(fmt))


def test_a_special_token_trigger_is_matched_as_the_token(tekken_backend: GuidanceBackend) -> None:
    tok = tekken_backend.tokenizer
    tag = _tag(
        {
            "type": "triggered_tags",
            "triggers": ["[TOOL_CALLS]"],
            "at_least_one": True,
            "tags": [
                {
                    "type": "tag",
                    "begin": "[TOOL_CALLS]",
                    "end": "",
                    "content": {"type": "json_schema", "json_schema": WEATHER},
                },
            ],
        }
    )
    program = tekken_backend.compile_structural_tag(tag)
    assert program.create_state().get_allowed_tokens() == tok.tokenize("[TOOL_CALLS]", special=True)
