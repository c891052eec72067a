"""No rewrite refuses a valid instance: the over-constraint oracle of ``bench.overconstraint``.

Valid instances are drawn from the *original* schema with hypothesis-jsonschema (fixed seed,
bounded count), confirmed with ``jsonschema``, written as the grammar expects (compact, keys in the
order of ``bench.key_order``) and fed token by token to the compiled program, EOS after. A refusal
that raw llguidance does not share is a rewrite that over-constrains. CI runs the schemas below
and a fixed slice of the corpora; the full sweep is ``-m slow`` (figures in docs/conformance.md).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from bench.overconstraint import Oracle, Sweep, corpus_schemas, grammar_text, refusal_point, sweep
from core import GuidanceBackend, Tokenizer
from core.jsonschema import rewrite_schema_report

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
S = {"type": "string"}

# The shapes each rewrite produces, written as real schemas write them.
OWN_SCHEMAS: list[tuple[str, Any]] = [
    ("counts beside optional properties, closed", {
        "type": "object", "properties": {k: S for k in "abcdefg"}, "required": ["a", "b"], "minProperties": 2,
        "additionalProperties": False}),
    ("counts beside optional properties, open", {
        "type": "object", "properties": {"a": S, "b": S, "c": {"type": "integer"}}, "minProperties": 2,
        "maxProperties": 3}),
    ("if/then in items, then adds properties", {
        "type": "array", "items": {
            "type": "object", "properties": {"kind": {"enum": ["x", "y"]}, "name": S}, "required": ["kind"],
            "if": {"properties": {"kind": {"const": "x"}}},
            "then": {"properties": {"bindings": {"type": "array", "items": S}, "category": S},
                     "anyOf": [{"required": ["bindings"]}, {"required": ["category"]}]}}}),
    ("if/then in items, nothing beside", {
        "type": "array", "items": {
            "type": "object", "if": {"properties": {"kind": {"const": "x"}}, "required": ["kind"]},
            "then": {"properties": {"bindings": {"type": "array", "items": S}, "category": S},
                     "anyOf": [{"required": ["bindings"]}, {"required": ["category"]}]}}}),
    ("if/then/else with required", {
        "type": "object", "properties": {"kind": {"enum": ["circle", "square"]}, "size": {"type": "number"}},
        "required": ["kind"], "if": {"properties": {"kind": {"const": "circle"}}, "required": ["kind"]},
        "then": {"properties": {"radius": {"type": "number", "minimum": 0}}, "required": ["radius"]},
        "else": {"properties": {"width": {"type": "integer"}}, "required": ["width"]}}),
    ("if written before properties", {
        "if": {"properties": {"t": {"const": 1}}, "required": ["t"]}, "then": {"properties": {"u": S}},
        "properties": {"t": {"type": "integer"}, "v": S}, "type": "object"}),
    ("dependentRequired and dependentSchemas", {
        "type": "object", "properties": {"card": S, "billing": S, "name": S},
        "dependentRequired": {"card": ["billing"]},
        "dependentSchemas": {"name": {"properties": {"nick": {"maxLength": 3}}}}}),
    ("not of a constant property", {
        "type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
        "not": {"properties": {"b": {"const": 1}}, "required": ["b"]}}),
    ("oneOf over a discriminator", {
        "oneOf": [{"type": "object", "properties": {"t": {"const": "a"}, "x": S}, "required": ["t"]},
                  {"type": "object", "properties": {"t": {"const": "b"}, "y": {"type": "integer"}},
                   "required": ["t"]}]}),
    ("oneOf that needs complements", {
        "type": "object", "oneOf": [{"properties": {"a": {"const": 1}}, "required": ["a"]},
                                    {"properties": {"b": {"const": 1}}, "required": ["b"]}]}),
    ("oneOf of types", {"oneOf": [{"type": "string", "maxLength": 4}, {"type": "integer"}, {"type": "null"}]}),
    ("propertyNames", {"type": "object", "propertyNames": {"enum": ["a", "b", "c"]}, "properties": {"a": S}}),
    ("uniqueItems over an enum", {"type": "array", "uniqueItems": True, "items": {"enum": ["x", "y", "z"]}}),
    ("unevaluatedProperties", {"type": "object", "properties": {"a": S}, "allOf": [{"properties": {"b": S}}],
                               "unevaluatedProperties": False}),
    ("formats", {"type": "object", "properties": {"n": {"type": "integer", "format": "int32"},
                                                  "p": {"type": "string", "format": "json-pointer"},
                                                  "d": {"type": "string", "format": "path"}}}),
]  # fmt: skip


@pytest.fixture(scope="module")
def oracle(tekken: Tokenizer) -> Oracle:
    return Oracle(tekken)


def _fail(result: Sweep) -> str:
    return "\n".join(f"{r.source} [{', '.join(r.kinds)}] raw {r.raw}: {r.text!r} refused after "
                     f"{r.accepted_prefix[-60:]!r}" for r in result.rewrite_refusals()[:10])  # fmt: skip


def test_every_own_schema_is_rewritten() -> None:
    for name, schema in OWN_SCHEMAS:
        assert rewrite_schema_report(schema)[1].changed, name


def test_own_schemas_refuse_no_valid_instance(oracle: Oracle) -> None:
    result = sweep(OWN_SCHEMAS, 15, seed=0, oracle=oracle)
    assert not result.skipped, result.skipped
    assert result.tried == len(OWN_SCHEMAS)
    assert not result.rewrite_refusals(), _fail(result)


def test_min_properties_beside_two_required_and_five_optional_accepts_every_subset(
    tekken_backend: GuidanceBackend,
) -> None:
    schema = OWN_SCHEMAS[0][1]
    program = tekken_backend.compile_json_schema(schema)
    optional = "cdefg"
    for n in range(len(optional) + 1):
        for present in itertools.combinations(optional, n):
            value = {k: "v" for k in "ab" + "".join(present)}
            text = grammar_text(schema, value)
            assert refusal_point(program, tekken_backend.tokenizer, text) is None, text


def test_then_properties_in_items_are_accepted(tekken_backend: GuidanceBackend) -> None:
    schema = OWN_SCHEMAS[2][1]
    program = tekken_backend.compile_json_schema(schema)
    value = [{"kind": "x", "name": "n", "bindings": ["b"], "category": "c", "extra": 1},
             {"kind": "y", "category": "c", "bindings": 1}, {"kind": "x", "category": "c"}]  # fmt: skip
    text = grammar_text(schema, value)
    assert refusal_point(program, tekken_backend.tokenizer, text) is None, text


@pytest.mark.skipif(not (DATA / "jsonschemabench").is_dir(), reason=f"corpora not found at {DATA}")
def test_corpus_slice_refuses_no_valid_instance(oracle: Oracle) -> None:
    # every 9th file of each corpus, 4 instances a schema drawn within 2 s: the CI slice (the full
    # sweep is slow)
    result = sweep(corpus_schemas(DATA, stride=9), 4, seed=0, oracle=oracle, seconds=2.0)
    assert result.tried >= 20
    assert not result.rewrite_refusals(), _fail(result)


@pytest.mark.slow
@pytest.mark.skipif(not (DATA / "jsonschemabench").is_dir(), reason=f"corpora not found at {DATA}")
def test_full_sweep_refuses_no_valid_instance(oracle: Oracle) -> None:
    result = sweep(corpus_schemas(DATA), 20, seed=0, oracle=oracle)
    assert not result.rewrite_refusals(), _fail(result)
