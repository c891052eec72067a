"""Errors a user can act on: regex columns in the user's pattern, GBNF lines, JSON-schema pointers,
and a word when a grammar is written in the other dialect."""

from __future__ import annotations

from typing import Any

import pytest

from core import GuidanceBackend, Limits
from core.compiler import compile_gbnf, compile_json_schema, compile_lark, compile_regex
from core.errors import GrammarError, SchemaError
from core.gbnf import looks_like_gbnf, looks_like_lark

LIMITS = Limits()


@pytest.mark.parametrize(
    ("pattern", "column", "reason"),
    [
        ("[a-z", 1, "unclosed character class"),
        ("ab(c", 3, "unclosed group"),
        ("a{3,2}", 2, "repetition count"),
        ("(?<=a)b", 1, "look-around"),
        ("a/b(", 4, "unclosed group"),  # '/' is escaped in the wrapper: the column is the user's
        ("a\nb(", 4, "unclosed group"),
    ],
)
def test_a_regex_error_points_into_the_users_pattern(pattern: str, column: int, reason: str) -> None:
    with pytest.raises(GrammarError) as info:
        compile_regex(pattern, None, LIMITS)
    e = info.value
    assert e.extra["column"] == column
    assert reason in e.detail and f"column {column}" in e.detail
    assert "start:" not in e.detail and "1(8)" not in e.detail  # nothing of the internal wrapper


def test_a_template_regex_error_names_the_pattern_not_the_wrapper(tiny_backend: GuidanceBackend) -> None:
    from core.errors import TemplateError

    with pytest.raises(TemplateError) as info:
        tiny_backend.compile_template("x {{gen 'a' regex='[a-'}}")
    assert "start:" not in info.value.detail and "unclosed character class" in info.value.detail
    assert info.value.line == 1


@pytest.mark.parametrize(
    ("gbnf", "line", "column", "words"),
    [
        ('root ::= "a" (\n', 2, 1, "Expected ')'"),
        ('root ::= item\nitem ::= "x" | other\n', 2, 16, "'other'"),
        ('item ::= "x"\n', None, None, "no `root` rule"),
        ('root ::= answer\n\nanswer ::= "a" [z-a]\n', 3, None, "rule 'answer' (line 3)"),
    ],
)
def test_a_gbnf_error_points_at_the_users_line(gbnf: str, line: int | None, column: int | None, words: str) -> None:
    with pytest.raises(GrammarError) as info:
        compile_gbnf(gbnf, None, LIMITS)
    e = info.value
    assert words in e.detail, e.detail
    assert e.extra.get("line") == line
    assert e.extra.get("column") == column
    assert "%llguidance" not in e.detail


def test_lark_text_sent_as_gbnf_says_so() -> None:
    with pytest.raises(GrammarError) as info:
        compile_gbnf('start: "yes" | "no"\n', None, LIMITS)
    assert "looks like a Lark grammar" in info.value.detail and "`grammar`" in info.value.detail


def test_gbnf_text_sent_as_lark_says_so() -> None:
    """The issue's case: a GBNF grammar as `grammar` got "Expected token '_', found '='" alone."""
    with pytest.raises(GrammarError) as info:
        compile_lark('root ::= "yes" | "no"\n', None, LIMITS)
    assert "looks like a GBNF grammar" in info.value.detail and "`gbnf`" in info.value.detail


def test_the_dialects_are_told_apart() -> None:
    gbnf, lark = 'root ::= "a" b\nb ::= [0-9]+', '%llguidance {}\nstart: "a" b\nb: /[0-9]+/'
    assert looks_like_gbnf(gbnf) and not looks_like_lark(gbnf)
    assert looks_like_lark(lark) and not looks_like_gbnf(lark)
    assert looks_like_lark('start: "a"') and not looks_like_gbnf('start: "a"')


@pytest.mark.parametrize(
    ("schema", "pointer"),
    [
        ({"type": "object", "properties": {"a": {"type": "strin"}}}, "/properties/a/type"),
        ({"properties": {"a": {"minLength": 1.5}}, "minLength": 2}, "/properties/a/minLength"),
        ({"properties": {"a": {"pattern": "(?<=x)"}}}, "/properties/a/pattern"),
        ({"properties": {"a": {"$ref": "#/defs/nope"}}}, "/properties/a/$ref"),
        ({"properties": {"b/c": {"required": "x"}}}, "/properties/b~1c/required"),
        ({"items": [{"type": "integer"}, {"uniqueItems": True, "type": "array"}]}, "/items/1/uniqueItems"),
    ],
)
def test_a_json_schema_error_names_its_json_pointer(schema: dict[str, Any], pointer: str) -> None:
    with pytest.raises(SchemaError) as info:
        compile_json_schema(schema, None, LIMITS)
    assert info.value.extra["pointer"] == pointer
    assert f"#{pointer}" in info.value.detail
