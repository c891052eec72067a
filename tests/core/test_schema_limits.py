"""The bounds of the schema rewrites are the ``max_rewrite_*`` fields of ``Limits``, and each one holds.

For every bound, one schema whose rewrite needs exactly that much: at the bound it is rewritten,
one below it the construct stays in place (the result is still exact, only less is rewritten),
checked against ``jsonschema`` on a few instances either way.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import jsonschema
import pytest

from core import GuidanceBackend, GuidanceError, Limits, Tokenizer
from core.jsonschema import rewrite_schema, rewrite_schema_report

INSTANCES: list[Any] = [
    None,
    True,
    0,
    1,
    2,
    5,
    10,
    11,
    2.5,
    -1,
    "",
    "a",
    "abc",
    "abd",
    "xyz",
    [],
    [1],
    [1, 2],
    [2, 1],
    [1, 1],
    [[[1]]],
    [[[2]]],
    {},
    {"a": 1},
    {"a": 1, "b": 2},
    {"c": 3},
]


def _nested_items(depth: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"minItems": 1.0}
    for _ in range(depth):
        schema = {"items": schema}
    return schema


# (field, the value the schema needs, the schema, a keyword that stays when the bound is one lower,
# other fields set for the case)
CASES: list[tuple[str, int, dict[str, Any], str, dict[str, int]]] = [
    # 1 + 3 + 6 + 6 arrays of distinct items from a domain of three
    (
        "max_rewrite_unique_arrays",
        16,
        {"type": "array", "uniqueItems": True, "items": {"enum": [1, 2, 3]}},
        "uniqueItems",
        {},
    ),
    # a closed object with three optional properties, at least one present: 3 + 3 + 1 sets
    (
        "max_rewrite_property_sets",
        7,
        {
            "type": "object",
            "properties": {"a": {}, "b": {}, "c": {}},
            "additionalProperties": False,
            "minProperties": 1,
        },
        "minProperties",
        {},
    ),
    (
        "max_rewrite_one_of_analysed",
        3,
        {"oneOf": [{"type": "string"}, {"type": "null"}, {"type": "integer"}]},
        "oneOf",
        {},
    ),
    # overlapping branches: each needs the complement of the other
    ("max_rewrite_one_of_complemented", 2, {"oneOf": [{"minimum": 0}, {"maximum": 10}]}, "oneOf", {}),
    # the inner oneOf stays (its branches overlap and may not be complemented), the not negates it
    (
        "max_rewrite_one_of_negated",
        3,
        {"not": {"oneOf": [{"minimum": 0}, {"maximum": 10}, {"const": 5}]}},
        "not",
        {"max_rewrite_one_of_complemented": 1},
    ),
    # not -> $ref a (one hop) -> $ref b (two hops)
    (
        "max_rewrite_ref_hops",
        2,
        {"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"type": "string"}}, "not": {"$ref": "#/$defs/a"}},
        "not",
        {},
    ),
    # the complement of the not, then of each anyOf member
    ("max_rewrite_work", 3, {"not": {"anyOf": [{"type": "string"}, {"type": "null"}]}}, "not", {}),
    ("max_rewrite_const_depth", 3, {"not": {"const": [[[1]]]}}, "not", {}),
    ("max_rewrite_pattern_atoms", 3, {"not": {"pattern": "^abc"}}, "not", {}),
]


def _contains_key(schema: Any, key: str) -> bool:
    if isinstance(schema, dict):
        return key in schema or any(_contains_key(v, key) for v in schema.values())
    if isinstance(schema, list):
        return any(_contains_key(v, key) for v in schema)
    return False


def _same_instances(a: dict[str, Any], b: dict[str, Any]) -> None:
    for instance in INSTANCES:
        assert jsonschema.Draft202012Validator(a).is_valid(instance) == jsonschema.Draft202012Validator(b).is_valid(
            instance
        ), instance


def test_the_defaults_are_the_bounds_the_rewriter_always_had() -> None:
    limits = Limits()
    assert (limits.max_rewrite_depth, limits.max_rewrite_ref_hops, limits.max_rewrite_work) == (100, 16, 100_000)
    assert (limits.max_rewrite_complement_chars, limits.max_rewrite_growth) == (200_000, 4)
    assert (limits.max_rewrite_const_depth, limits.max_rewrite_pattern_atoms) == (8, 100)
    assert (limits.max_rewrite_unique_arrays, limits.max_rewrite_property_sets) == (256, 256)
    assert (limits.max_rewrite_one_of_analysed, limits.max_rewrite_one_of_complemented) == (64, 12)
    assert limits.max_rewrite_one_of_negated == 4


@pytest.mark.parametrize(("name", "needed", "schema", "kept", "others"), CASES, ids=[c[0] for c in CASES])
def test_each_bound_holds_at_its_value(
    name: str, needed: int, schema: dict[str, Any], kept: str, others: dict[str, int]
) -> None:
    at_bound = rewrite_schema(schema, limits=replace(Limits(), **others, **{name: needed}))
    below = rewrite_schema(schema, limits=replace(Limits(), **others, **{name: needed - 1}))
    assert not _contains_key(at_bound, kept), at_bound
    assert _contains_key(below, kept), below
    _same_instances(schema, at_bound)
    _same_instances(schema, below)


def test_the_depth_bound_leaves_deeper_parts_as_written() -> None:
    schema = _nested_items(4)  # the decimal count sits at depth 4
    deep = rewrite_schema_report(schema, limits=replace(Limits(), max_rewrite_depth=4))[1]
    assert "decimal-count" in " ".join(deep.notes)
    shallow, report = rewrite_schema_report(schema, limits=replace(Limits(), max_rewrite_depth=3))
    assert shallow == schema and not report.notes


def test_the_complement_size_bound_keeps_a_large_complement_out() -> None:
    schema = {"not": {"enum": ["abc", "abd", "xyz"]}}
    assert "not" not in rewrite_schema(schema)
    assert rewrite_schema(schema, limits=replace(Limits(), max_rewrite_complement_chars=20)) == schema


def test_the_growth_bound_rewrites_only_formats_past_it() -> None:
    schema = {"type": "array", "uniqueItems": True, "items": {"enum": [1, 2, 3]},
              "properties": {"p": {"format": "path"}}}  # fmt: skip
    grown, report = rewrite_schema_report(schema, "assert")
    assert "uniqueItems" not in grown and not report.notes[0].startswith("too large")
    tight = replace(Limits(), max_rewrite_growth=1, max_rewrite_complement_chars=1)
    kept, report = rewrite_schema_report(schema, "assert", limits=tight)
    assert report.notes[0] == "too large to rewrite: #"
    assert kept["uniqueItems"] is True and "format" not in kept["properties"]["p"]
    assert report.ignored == ['format "path" at #/properties/p']


def test_the_compiler_passes_its_limits_to_the_rewrites(tiny_tokenizer: Tokenizer) -> None:
    schema = {"type": "array", "uniqueItems": True, "items": {"enum": [1, 2, 3]}}
    GuidanceBackend(tiny_tokenizer).compile_json_schema(schema)
    strict = GuidanceBackend(tiny_tokenizer, limits=replace(Limits(), max_rewrite_unique_arrays=15))
    with pytest.raises(GuidanceError, match="uniqueItems"):
        strict.compile_json_schema(schema)
