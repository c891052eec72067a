"""``format``: the exact definitions agree with independent checkers; the rest is an annotation.

The patterns of :data:`core.jsonschema.formats.FORMAT_PATTERNS` are checked against other people's
implementations of the same RFCs on generated strings: ``rfc3986-validator`` (through
``jsonschema``'s format checker) for ``uri-reference`` and for IRIs on ASCII strings (where an IRI
is a URI), ``rfc3987-syntax`` for IRIs with non-ASCII characters, ``jsonpointer`` for the JSON
pointers, and the standard library's base64 codec for ``byte``. Then llguidance is checked to read
the patterns as Python does, and the modes and the compile answer are pinned.
"""

from __future__ import annotations

import binascii
import json
import re
from typing import Any

import jsonpointer  # type: ignore[import-untyped]
import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core import GrammarError, GuidanceBackend, SchemaError, Tokenizer
from core.jsonschema import rewrite_schema, rewrite_schema_report
from core.jsonschema.formats import FORMAT_PATTERNS, INTEGER_FORMATS, rewrite_format
from core.spec import spec_from_kwargs
from tests.core.helpers import accepts_text, is_base64

CHECKER = jsonschema.Draft202012Validator.FORMAT_CHECKER

# URI-ish characters: every delimiter and a few of each class, so the generated strings hit the
# grammar's edges (empty parts, "//", "::", "%4", "[v1.x]").
_URI_ALPHABET = "aZ09-._~!$&'()*+,;=:@/?#[]%vF "
_IRI_EXTRA = (
    "\u00e9\u4e2d\ufdd0"  # ucschar (é, 中) and a noncharacter (not ucschar); rfc3987-syntax misreads astral ucschar
)


def _matches(name: str, text: str) -> bool:
    return re.fullmatch(FORMAT_PATTERNS[name], text) is not None


uri_texts = st.text(alphabet=_URI_ALPHABET, max_size=24)
iri_texts = st.text(alphabet=_URI_ALPHABET.replace("[", "").replace("]", "") + _IRI_EXTRA, max_size=24)


@settings(max_examples=1000, deadline=None)
@given(
    text=st.one_of(
        uri_texts, st.sampled_from(["http://[::1]/a", "//[v1.x]:8/", "a:b", "1a:b", "%4", "%41", "//u@h:80/p?q#f"])
    )
)
def test_uri_reference_and_ascii_iris_agree_with_rfc3986(text: str) -> None:
    assert _matches("uri-reference", text) == CHECKER.conforms(text, "uri-reference"), text
    assert _matches("iri-reference", text) == CHECKER.conforms(text, "uri-reference"), text
    assert _matches("iri", text) == CHECKER.conforms(text, "uri"), text


@settings(max_examples=800, deadline=None)
@given(text=iri_texts)
def test_iris_agree_with_rfc3987(text: str) -> None:
    # no "[": rfc3987-syntax refuses IP literals in IRIs, which RFC 3987's ihost allows (and the
    # ASCII test above checks them against RFC 3986)
    assert _matches("iri", text) == CHECKER.conforms(text, "iri"), text
    assert _matches("iri-reference", text) == CHECKER.conforms(text, "iri-reference"), text


def test_iri_private_use_characters_only_in_the_query() -> None:
    # RFC 3987: iquery = *( ipchar / iprivate / "/" / "?" ); ifragment and paths have no iprivate
    assert _matches("iri", "http://a/?\ue000") and _matches("iri-reference", "?\U000f0000")
    assert not _matches("iri", "http://a/\ue000") and not _matches("iri", "http://a/#\ue000")
    # ucschar beyond the BMP: %x10000-1FFFD ... %xE1000-EFFFD, without the planes' last two points
    assert _matches("iri", "http://a/\U0001f600") and not _matches("iri", "http://a/\U0001fffe")


@settings(max_examples=800, deadline=None)
@given(text=st.one_of(st.text(alphabet="/~01a2#", max_size=12), st.from_regex(r"\A[0-9]{1,3}(#|(/[a~01]*)*)\Z")))
def test_json_pointers_agree_with_jsonpointer(text: str) -> None:
    assert _matches("json-pointer", text) == _pointer(text), text
    assert _matches("relative-json-pointer", text) == _relative_pointer(text), text


def _pointer(text: str) -> bool:
    try:
        jsonpointer.JsonPointer(text)
    except jsonpointer.JsonPointerException:
        return False
    return True


def _relative_pointer(text: str) -> bool:
    # jsonschema's own check refuses "100" (any digit after a 0): the number is read here instead
    digits = text[: len(text) - len(text.lstrip("0123456789"))]
    rest = text[len(digits) :]
    if not digits or (digits != "0" and digits.startswith("0")):
        return False
    return rest == "#" or _pointer(rest)


@settings(max_examples=1000, deadline=None)
@given(
    text=st.one_of(
        st.text(alphabet="QUJD+/=a", max_size=12),
        st.binary(max_size=9).map(lambda b: binascii.b2a_base64(b, newline=False).decode()),
    )
)
def test_byte_is_strict_base64(text: str) -> None:
    assert _matches("byte", text) == is_base64(text), text


def test_int32_is_an_integer_in_range() -> None:
    low, high = INTEGER_FORMATS["int32"]
    checker = jsonschema.FormatChecker()
    checker.checks("int32")(
        lambda v: not isinstance(v, (int, float)) or isinstance(v, bool) or (float(v).is_integer() and low <= v <= high)
    )
    for schema in (
        {"format": "int32"},
        {"type": "integer", "format": "int32"},
        {"type": ["number", "string"], "format": "int32"},
    ):
        original = jsonschema.Draft202012Validator(schema, format_checker=checker)
        rewritten = jsonschema.Draft202012Validator(rewrite_schema(schema))
        for value in (0, 1.0, 1.5, low, high, low - 1, high + 1, "x", None, [1], 2**40):
            assert original.is_valid(value) == rewritten.is_valid(value), (schema, value)


def test_modes() -> None:
    # assert: llguidance's formats and the inexact ones of the vocabulary stay; the rest goes
    assert rewrite_format({"format": "email"}, "assert") == ({"format": "email"}, None)
    assert rewrite_format({"format": "regex"}, "assert") == ({"format": "regex"}, None)
    assert rewrite_format({"format": "path", "minLength": 1}, "assert") == ({"minLength": 1}, "path")
    assert rewrite_format({"format": "double", "type": "number"}, "assert") == ({"type": "number"}, "double")
    assert rewrite_format({"format": "int32", "type": "integer"}, "assert")[0] == {
        "type": "integer", "allOf": [{"minimum": -(2**31), "maximum": 2**31 - 1}],
    }  # fmt: skip
    out, _ = rewrite_format({"format": "byte", "pattern": "^Q"}, "assert")
    assert out == {"pattern": "^Q", "allOf": [{"pattern": FORMAT_PATTERNS["byte"]}]}
    # annotate: every format goes
    for name in ("email", "regex", "byte", "path"):
        assert rewrite_format({"format": name}, "annotate") == ({}, name)
    assert rewrite_format({"format": 3}, "annotate") == ({"format": 3}, None)  # malformed: llguidance's to refuse


def test_ignored_formats_are_reported_by_pointer() -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"format": "path"}, "b": {"$ref": "#/$defs/b"}, "c": {"format": "uuid"}},
        "$defs": {"b": {"type": "string", "format": "topic"}},
    }
    out, report = rewrite_schema_report(schema)
    assert report.ignored == ['format "path" at #/properties/a', 'format "topic" at #/$defs/b']
    assert "format" not in out["properties"]["a"] and out["properties"]["c"] == {"format": "uuid"}
    _, annotated = rewrite_schema_report(schema, "annotate")
    assert len(annotated.ignored) == 3


@pytest.mark.parametrize(
    ("name", "good", "bad"),
    [
        ("byte", ["", "QQ==", "QUJD", "QUI="], ["Q", "QQ=", "QUJD=", "Q===", "QU JD"]),
        ("uri-reference", ["", "a/b?c#d", "http://[::1]:80/x", "../x", "%41"], ["a b", "%4", "1a:b", "[x]"]),
        ("iri", ["http://\u00e9.fr/\u4e2d?q", "urn:x"], ["\u00e9", "http://a b"]),
        ("json-pointer", ["", "/a~0/b~1"], ["a", "/a~2"]),
        ("relative-json-pointer", ["0", "2#", "1/a"], ["01", "-1", "#"]),
    ],
)
def test_llguidance_reads_the_patterns_as_python_does(
    tiny_backend: GuidanceBackend, tiny_tokenizer: Tokenizer, name: str, good: list[str], bad: list[str]
) -> None:
    program = tiny_backend.compile_json_schema({"type": "string", "format": name})
    for text, expected in [*((g, True) for g in good), *((b, False) for b in bad)]:
        assert _matches(name, text) is expected, text  # the examples themselves are right
        tokens = tiny_tokenizer.encode(json.dumps(text, ensure_ascii=False))
        assert accepts_text(program.create_state(), tokens) is expected, (name, text)


def test_backend_option_and_errors(tiny_backend: GuidanceBackend) -> None:
    schema: dict[str, Any] = {"type": "string", "format": "regex"}
    with pytest.raises(SchemaError, match="annotate"):
        tiny_backend.compile_json_schema(schema)
    program, _ = tiny_backend.compile(spec_from_kwargs("json_schema", schema, None, {"formats": "annotate"}))
    assert program.ignored == ('format "regex" at #',)
    with pytest.raises(GrammarError, match="formats"):
        tiny_backend.compile(spec_from_kwargs("json_schema", schema, None, {"formats": "strict"}))
    assert tiny_backend.compile_json_schema({"format": "path"}).ignored == ('format "path" at #',)
