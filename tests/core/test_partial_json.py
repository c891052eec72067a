"""Partial JSON: what a prefix of a JSON text shows so far, and which of its parts are final."""

from __future__ import annotations

from core.partial_json import parse_partial_json


def test_partial_json_parsing() -> None:
    assert parse_partial_json('{"name": "Ad') == ({"name": "Ad"}, [])
    assert parse_partial_json('{"a":[1,2') == ({"a": [1]}, ["/a/0"])
    assert parse_partial_json('{"a":"x\\u00e') == ({"a": "x"}, [])
    assert parse_partial_json('{"a":tr') == ({}, [])
    assert parse_partial_json('{"a/b":{"c":null}}') == ({"a/b": {"c": None}}, ["", "/a~1b", "/a~1b/c"])
    assert parse_partial_json('{\n  "a": [\n    1,\n    "x') == ({"a": [1, "x"]}, ["/a/0"])  # whitespace=N
    assert parse_partial_json('"\\ud83d\\ude00!"') == ("\U0001f600!", [""])
    assert parse_partial_json("12") == (None, [])
    assert parse_partial_json("") == (None, [])
