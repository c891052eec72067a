"""The schema rewrites are exact: same valid instances as the original, checked with ``jsonschema``.

Random small schemas over the keywords the rewriter touches (and their neighbours), random small
instances; the original and the rewritten schema must agree on every instance. Targeted tests pin
each rewrite's shape, that input is never mutated, and that what cannot be rewritten exactly stays
in place for llguidance to refuse by name.
"""

from __future__ import annotations

import copy
import itertools
import json
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core import GuidanceBackend, Limits, SchemaError, Tokenizer
from core.jsonschema import rewrite_schema, rewrite_schema_report
from tests.core.helpers import is_base64

# -- instances: a small universe where the interesting edges live (1 vs 1.0 vs true, "" vs "a")
SCALARS = [
    None,
    True,
    False,
    0,
    1,
    1.0,
    2,
    2.5,
    -1,
    2**31,
    "",
    "a",
    "ab",
    "b",
    "aab",
    "a b",
    "x\u00e9",
    "a.b",
    "ba",
    "QQ==",
    "/a",
    "0",
]
KEYS = ["a", "b", "c", "ab"]

scalars = st.sampled_from(SCALARS)
instances = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(KEYS), inner, max_size=3),
    ),
    max_leaves=6,
)

# -- schemas
leaf_schemas = st.one_of(
    st.just(True),
    st.just(False),
    st.builds(lambda t: {"type": t},
              st.sampled_from(["null", "boolean", "integer", "number", "string", "array", "object"])),
    st.builds(lambda t: {"type": t},
              st.lists(st.sampled_from(["null", "string", "number", "object"]), min_size=1, max_size=3, unique=True)),
    st.builds(lambda v: {"const": v}, scalars),
    st.builds(lambda vs: {"enum": vs}, st.lists(scalars, min_size=1, max_size=3)),
    st.builds(lambda k, v: {k: v}, st.sampled_from(["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"]),
              st.sampled_from([0, 1, 1.5, 2])),
    st.builds(lambda k, v: {k: v},
              st.sampled_from(["minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties"]),
              st.sampled_from([0, 1, 2, 1.0, 2.0])),
    st.builds(lambda r: {"required": r}, st.lists(st.sampled_from(KEYS), min_size=1, max_size=2, unique=True)),
    st.builds(lambda d: {"dependentRequired": d},
              st.dictionaries(st.sampled_from(KEYS), st.lists(st.sampled_from(KEYS), max_size=2, unique=True),
                              min_size=1, max_size=2)),
    st.builds(lambda u, m: {"uniqueItems": u, "maxItems": m}, st.booleans(), st.sampled_from([1, 2, 3])),
    st.builds(lambda u, e: {"uniqueItems": u, "items": {"enum": e}}, st.booleans(),
              st.lists(scalars, min_size=1, max_size=3)),
    st.just({"uniqueItems": True, "items": {"type": "boolean"}}),
    st.just({"additionalProperties": False}),
    st.builds(lambda v: {"const": v}, instances),
    st.builds(lambda vs: {"enum": vs}, st.lists(instances, min_size=1, max_size=3)),
    st.builds(lambda cls, q: {"pattern": f"^[{cls}]{q}$"}, st.sampled_from(["a", "ab", "^a", "a-c", "\\sa"]),
              st.sampled_from(["+", "*", "{1}", "{0,1}", "{1,2}", "{2,}"])),
    st.builds(lambda p: {"pattern": p},
              st.sampled_from(["^a", "b$", "^a.b$", "a", "^ab", "^[ab]$", "^$", "^a\\.b", "\\sb$"])),
    st.builds(lambda f: {"format": f},
              st.sampled_from(["byte", "int32", "json-pointer", "relative-json-pointer", "path", "double", "email"])),
    st.just({"type": "object", "oneOf": [{"type": "string"}, {"type": "null"}]}),  # accepts nothing
    st.builds(lambda ks, r: {"properties": {k: True for k in ks}, "additionalProperties": False,
                             **({"required": ks[:1]} if r else {})},
              st.lists(st.sampled_from(KEYS), min_size=1, max_size=2, unique=True), st.booleans()),
    st.builds(lambda n: {"propertyNames": n}, st.sampled_from([
        False, {"const": "a"}, {"enum": ["a", "ab"]}, {"enum": ["a", "ab"], "maxLength": 1}, {"pattern": "^a"},
        {"maxLength": 1}, {"minLength": 2}, {"type": "string", "minLength": 1, "maxLength": 1}, {"$ref": "#/$defs/n"},
    ])),
)  # fmt: skip
leaf_or_ref = st.one_of(leaf_schemas, st.just({"$ref": "#/$defs/d"}), st.just({"$ref": "#/x-group/e"}))


def _extend(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.builds(lambda s: {"not": s}, inner),
        st.builds(lambda bs: {"oneOf": bs}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda bs: {"anyOf": bs}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda bs: {"allOf": bs}, st.lists(inner, min_size=1, max_size=2)),
        st.builds(lambda i, t, e: {"if": i, "then": t, "else": e}, inner, inner, inner),
        st.builds(lambda i, t: {"if": i, "then": t}, inner, inner),
        st.builds(lambda i, e: {"if": i, "else": e}, inner, inner),
        st.builds(lambda i: {"if": i}, inner),
        st.builds(lambda p: {"properties": p}, st.dictionaries(st.sampled_from(KEYS), inner, min_size=1, max_size=2)),
        st.builds(lambda p, r: {"properties": p, "required": r, "additionalProperties": False},
                  st.dictionaries(st.sampled_from(KEYS), inner, min_size=1, max_size=2),
                  st.lists(st.sampled_from(KEYS), max_size=1)),
        st.builds(lambda d: {"dependentSchemas": d},
                  st.dictionaries(st.sampled_from(KEYS), inner, min_size=1, max_size=2)),
        st.builds(lambda s: {"items": s}, inner),
        st.builds(lambda p, n: {"properties": p, "propertyNames": n},
                  st.dictionaries(st.sampled_from(KEYS), inner, max_size=2),
                  st.sampled_from([{"enum": ["a", "b"]}, {"maxLength": 1}, {"pattern": "b"}])),
        st.builds(lambda p, a, u: {"properties": p, "allOf": a, "unevaluatedProperties": u},
                  st.dictionaries(st.sampled_from(KEYS), inner, max_size=2),
                  st.lists(st.one_of(inner, st.builds(lambda q: {"properties": q},
                                                      st.dictionaries(st.sampled_from(KEYS), inner, max_size=2))),
                           min_size=1, max_size=2),
                  inner),
        st.builds(lambda a, u: {"allOf": a, "unevaluatedProperties": u},
                  st.lists(st.builds(lambda q: {"patternProperties": q},
                                     st.dictionaries(st.sampled_from(["^a", "b$"]), inner, max_size=1)),
                           min_size=1, max_size=2),
                  inner),
        st.builds(lambda ps, a, u: {"prefixItems": ps, "allOf": a, "unevaluatedItems": u},
                  st.lists(inner, min_size=1, max_size=2),
                  st.lists(st.builds(lambda q: {"prefixItems": q}, st.lists(inner, min_size=1, max_size=3)),
                           min_size=1, max_size=2),
                  inner),
        st.builds(lambda ps, s: {"prefixItems": ps, "items": s}, st.lists(inner, min_size=1, max_size=2), inner),
        st.builds(lambda p, r, a, lo, hi: {"properties": p, "required": r, "additionalProperties": a, **lo, **hi},
                  st.dictionaries(st.sampled_from(KEYS), inner, min_size=1, max_size=3),
                  st.lists(st.sampled_from(KEYS), max_size=1),
                  st.sampled_from([True, False, {"type": "integer"}]),
                  st.sampled_from([{}, {"minProperties": 1}, {"minProperties": 2}]),
                  st.sampled_from([{}, {"maxProperties": 1}, {"maxProperties": 2}])),
        st.builds(lambda a, b: {"oneOf": [{"type": "array", "items": a}, {"type": "array", "items": b}]}, inner, inner),
        st.builds(lambda a, b: {**a, **b} if isinstance(a, dict) and isinstance(b, dict) else a, inner, inner),
    )  # fmt: skip


schema_bodies = st.recursive(leaf_or_ref, _extend, max_leaves=5)
schemas = st.builds(
    lambda body, d, e: (
        {**body, "$defs": {"d": d, "n": {"maxLength": 1}}, "x-group": {"e": e}}
        if isinstance(body, dict)
        else {"allOf": [body], "$defs": {"d": d, "n": {"maxLength": 1}}, "x-group": {"e": e}}
    ),
    schema_bodies,
    st.one_of(leaf_schemas, st.builds(lambda s: {"not": s}, leaf_schemas)),
    leaf_schemas,  # under a keyword JSON Schema does not define: a $ref may still point there
)

# Formats asserted as the rewriter's assert mode has it: jsonschema's checkers, plus OpenAPI's
# byte (base64) and int32, written here independently of core.jsonschema.formats.
FORMATS = jsonschema.FormatChecker()
FORMATS.checks("byte")(lambda v: not isinstance(v, str) or is_base64(v))
FORMATS.checks("int32")(
    lambda v: (
        not isinstance(v, (int, float)) or isinstance(v, bool) or (float(v).is_integer() and -(2**31) <= v < 2**31)
    )
)


def _validator(schema: Any) -> Any:
    return jsonschema.Draft202012Validator(schema, format_checker=FORMATS)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schema=schemas, values=st.lists(instances, min_size=10, max_size=25))
def test_rewrite_accepts_exactly_what_the_original_accepts(schema: dict[str, Any], values: list[Any]) -> None:
    before = copy.deepcopy(schema)
    rewritten = rewrite_schema(schema)
    assert schema == before, "the input was modified"
    jsonschema.Draft202012Validator.check_schema(rewritten)
    original, new = _validator(schema), _validator(rewritten)
    for value in [*values, *SCALARS, [], {}, [1, 1], [True, False], {"a": 1, "b": 2}]:
        assert original.is_valid(value) == new.is_valid(value), (json.dumps(schema), json.dumps(rewritten), value)


# -- the shapes of the rewrites


def test_integral_decimal_counts_become_integers() -> None:
    out = rewrite_schema({"type": "array", "minItems": 1.0, "maxItems": 2.0, "items": {"maxLength": 3.0}})
    assert out == {"type": "array", "minItems": 1, "maxItems": 2, "items": {"maxLength": 3}}
    assert type(out["minItems"]) is int
    assert rewrite_schema({"minItems": 1.5}) == {"minItems": 1.5}  # not a count: llguidance refuses it


def test_disjoint_one_of_becomes_any_of_in_place() -> None:
    schema = {
        "type": "object",
        "oneOf": [
            {"properties": {"kind": {"const": "a"}, "x": {"type": "integer"}}, "required": ["kind"]},
            {"properties": {"kind": {"const": "b"}, "y": {"type": "string"}}, "required": ["kind"]},
        ],
        "properties": {"kind": {"type": "string"}},
    }
    out = rewrite_schema(schema)
    assert list(out) == ["type", "anyOf", "properties"]  # same position: llguidance's property order
    # each branch, then the names only the other branch lists (one place for them in either branch)
    assert out["anyOf"] == [{"allOf": [schema["oneOf"][0], {"properties": {"y": True}}]},
                            {"allOf": [schema["oneOf"][1], {"properties": {"x": True}}]}]  # fmt: skip


def test_one_of_over_refs_without_a_type_is_guarded_to_the_kind_that_discriminates() -> None:
    schema = {
        "oneOf": [{"$ref": "#/$defs/a"}, {"$ref": "#/$defs/b"}],
        "$defs": {
            "a": {"required": ["name"], "properties": {"name": {"enum": ["a"]}}},
            "b": {"required": ["name"], "properties": {"name": {"enum": ["b"]}}},
        },
    }
    out, report = rewrite_schema_report(schema)
    assert out["anyOf"] == schema["oneOf"]
    assert out["allOf"] == [{"type": "object"}]  # any non-object matches both branches
    assert "oneOf kinds every branch accepts" in report.kinds()


def test_one_of_closed_objects_sharing_only_the_empty_object() -> None:
    schema = {
        "oneOf": [
            {"properties": {"a": {"type": "integer"}}, "additionalProperties": False},
            {"properties": {"b": {"type": "string", "pattern": "^x"}}, "additionalProperties": False},
        ]
    }
    out = rewrite_schema(schema)
    assert "oneOf" not in out and "not" not in json.dumps(out)
    original, new = _validator(schema), _validator(out)
    for value in ({}, {"a": 1}, {"b": "xy"}, {"b": "y"}, {"a": 1, "b": "x"}, 5, "s", None, [], {"c": 1}):
        assert original.is_valid(value) == new.is_valid(value), value


def test_complements_of_object_and_array_constants_and_class_patterns() -> None:
    schema = {
        "not": {"enum": [[1, {"a": [True]}], {"k": None}, "x"]},
        "properties": {"p": {"not": {"pattern": "^[a-c]{1,2}$"}}},
    }
    out = rewrite_schema(schema)
    assert "not" not in json.dumps(out)
    original, new = _validator(schema), _validator(out)
    for value in (
        [1, {"a": [True]}],
        [1, {"a": [False]}],
        [1],
        [1, {"a": [True]}, 2],
        {"k": None},
        {"k": 0},
        {"k": None, "j": 1},
        {},
        "x",
        "y",
        {"p": "ab"},
        {"p": "abc"},
        {"p": ""},
        {"p": "ad"},
        {"p": 1},
    ):
        assert original.is_valid(value) == new.is_valid(value), value


def test_overlapping_one_of_uses_complements() -> None:
    out = rewrite_schema({"type": "number", "oneOf": [{"maximum": 2}, {"maximum": 5}]})
    assert "oneOf" not in out
    v = _validator(out)
    assert [v.is_valid(x) for x in (1, 2, 2.5, 5, 6)] == [False, False, True, True, False]


def test_dependent_required_keeps_the_properties_order() -> None:
    out = rewrite_schema({"properties": {"a": {}, "b": {}, "c": {}}, "dependentRequired": {"c": ["a"]}})
    assert out["allOf"] == [{"anyOf": [{"properties": {"c": False}}, {"required": ["a", "c"]}]}]


def test_if_then_else_on_a_discriminator() -> None:
    schema = {
        "type": "object",
        "if": {"properties": {"kind": {"const": "circle"}}, "required": ["kind"]},
        "then": {"required": ["radius"]},
        "else": {"required": ["width"]},
    }
    out = rewrite_schema(schema)
    assert not {"if", "then", "else"} & set(out)
    v = _validator(out)
    assert v.is_valid({"kind": "circle", "radius": 1})
    assert not v.is_valid({"kind": "circle", "width": 1})
    assert v.is_valid({"kind": "square", "width": 1})
    assert v.is_valid({"kind": "circles", "width": None})


def test_unique_items_over_an_enum_is_enumerated() -> None:
    out = rewrite_schema({"type": "array", "uniqueItems": True, "items": {"enum": ["x", "y"]}})
    assert "uniqueItems" not in out
    assert out["allOf"] == [{"enum": [[], ["x"], ["y"], ["x", "y"], ["y", "x"]]}]


def test_what_has_no_exact_rewrite_stays_for_llguidance_to_refuse() -> None:
    for schema in (
        {"not": {"type": "integer"}},  # "a number that is not an integer" has no llguidance form
        {"not": {"pattern": "a+b"}},  # a quantifier: no complement written
        {"not": {"pattern": "ab"}},  # two atoms anywhere: no complement written
        {"type": "array", "uniqueItems": True, "items": {"type": "string"}},
        {"oneOf": [{"type": "integer"}, {"minimum": 2}]},
        {"contains": {"const": 1}},
    ):
        assert rewrite_schema(schema) == schema


def test_refused_keywords_are_named_in_the_error(tiny_tokenizer: Tokenizer) -> None:
    backend = GuidanceBackend(tiny_tokenizer)
    with pytest.raises(SchemaError, match="not"):
        backend.compile_json_schema({"not": {"type": "integer"}})
    with pytest.raises(SchemaError, match="uniqueItems"):
        backend.compile_json_schema({"type": "array", "uniqueItems": True, "items": {"type": "string"}})
    with pytest.raises(SchemaError, match="oneOf"):
        backend.compile_json_schema({"oneOf": [{"type": "integer"}, {"minimum": 2}]})


def test_rewritten_schemas_compile(tiny_tokenizer: Tokenizer) -> None:
    backend = GuidanceBackend(tiny_tokenizer)
    for schema in (
        {"minItems": 1.0},
        {"not": {"type": "null"}},
        {"dependentRequired": {"a": ["b"]}},
        {"if": {"properties": {"k": {"const": "x"}}}, "then": {"required": ["a"]}, "else": {"required": ["b"]}},
        {"type": "object", "properties": {"a": {"not": {"enum": ["x", "y"]}}}},
        {"properties": {"a": {"$ref": "#/$defs/no"}}, "$defs": {"no": {"not": {}}}},
    ):
        backend.compile_json_schema(schema)


def test_references_into_a_rewritten_keyword_keep_it_in_place() -> None:
    schema = {"oneOf": [{"type": "string"}, {"type": "null"}], "properties": {"a": {"$ref": "#/oneOf/0"}}}
    assert rewrite_schema(schema) == schema


def test_embedded_resources_with_references_turn_structural_rewrites_off_but_fragment_ids_do_not() -> None:
    embedded = {
        "$defs": {"a": {"$id": "other.json", "items": {"$ref": "#/$defs/b"}}, "b": {"type": "string"}},
        "oneOf": [{"type": "string"}, {"type": "null"}],
    }
    assert rewrite_schema(embedded) == embedded  # "#/..." inside other.json would point elsewhere
    plain = {"$defs": {"a": {"$id": "other.json", "type": "string"}}, "oneOf": [{"type": "string"}, {"type": "null"}]}
    assert "oneOf" not in rewrite_schema(plain)  # nothing in other.json is resolved against it
    labelled = {"properties": {"a": {"id": "#/properties/a"}}, "dependencies": {"a": ["b"]}}
    assert "dependencies" not in rewrite_schema(labelled)


def test_depth_is_bounded() -> None:
    schema: dict[str, Any] = {"minItems": 1.0}
    for _ in range(Limits().max_rewrite_depth + 50):
        schema = {"items": schema}
    rewrite_schema(schema)  # no RecursionError; the deepest part is left as it is


def test_boolean_complement_is_not_swallowed() -> None:
    assert rewrite_schema({"not": True}) == {"allOf": [False]}
    assert rewrite_schema({"not": False}) == {}


def test_hostile_schemas_are_rewritten_without_growing() -> None:
    # Wide alternatives and long $ref chains are where a rewrite could multiply its input (its
    # cost follows its output); none of these needs a change, so none may grow.
    wide = {"oneOf": [{"required": [f"k{i}"], "properties": {f"k{i}": {"minimum": i}}} for i in range(2000)]}
    deep_refs = {"$defs": {f"d{i}": {"oneOf": [{"$ref": f"#/$defs/d{i + 1}"}, {"type": "null"}]} for i in range(300)}}
    for schema in (wide, deep_refs):
        assert rewrite_schema(schema) == schema


def test_the_document_scan_visits_each_schema_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # $defs are walked as schemas, and unknown keywords as places a $ref may point into: a keyword
    # must not be walked both ways, or nested $defs cost 2^depth
    import core.jsonschema.refs as refs

    schema: dict[str, Any] = {"$ref": "#/x-group/a"}
    for _ in range(14):
        schema = {"$defs": {"d": schema}, "x-group": {"a": {"type": "null"}}}
    visits = 0
    children = refs.schema_children

    def counting(node: dict[str, Any], path: tuple[str, ...]) -> Any:
        nonlocal visits
        visits += 1
        return children(node, path)

    monkeypatch.setattr(refs, "schema_children", counting)
    refs.References(schema, Limits().max_rewrite_depth)
    assert visits <= 3 * 15  # a level: the node, its x-group container, a (2^14 when walked twice)


def test_property_counts_of_a_closed_object_count_its_required_properties_too() -> None:
    # two required and five optional properties, minProperties 2: every subset of the optional
    # ones is allowed (the upper bound is the object's size, not the number of optional ones)
    names = "abcdefg"
    schema = {"type": "object", "properties": {k: {"type": "string"} for k in names}, "required": ["a", "b"],
              "minProperties": 2, "additionalProperties": False}  # fmt: skip
    original, new = _validator(schema), _validator(rewrite_schema(schema))
    for n in range(6):
        for present in itertools.combinations(names[2:], n):
            value = {k: "v" for k in "ab" + "".join(present)}
            assert original.is_valid(value) and new.is_valid(value), value
    bounded = {**schema, "maxProperties": 4}
    original, new = _validator(bounded), _validator(rewrite_schema(bounded))
    for n in range(6):
        for present in itertools.combinations(names[2:], n):
            value = {k: "v" for k in "ab" + "".join(present)}
            assert original.is_valid(value) == new.is_valid(value) == (n <= 2), value


@pytest.mark.parametrize(
    ("schema", "text"),
    [
        # if/then with no properties beside: "kind" (from if) comes first in either branch
        ({"type": "object", "if": {"properties": {"kind": {"const": "x"}}, "required": ["kind"]},
          "then": {"properties": {"bindings": {"type": "array"}, "category": {"type": "string"}},
                   "anyOf": [{"required": ["bindings"]}, {"required": ["category"]}]}},
         ['{"kind":"x","bindings":[]}', '{"kind":"y","bindings":1}', '{"bindings":[],"category":""}']),
        # not: the names it mentions, in one place whichever complement branch holds
        ({"type": "object", "not": {"properties": {"a": {"const": 1}, "b": {"const": 1}}, "required": ["a", "b"]}},
         ['{"a":2,"b":1}', '{"a":1,"b":2}', '{"a":1}', '{"a":1,"b":2,"c":3}']),
        # oneOf with complements: the branch, then the names the other branch mentions
        ({"type": "object", "oneOf": [{"properties": {"a": {"const": 1}}, "required": ["a"]},
                                      {"properties": {"b": {"const": 1}}, "required": ["b"]}]},
         ['{"a":1,"b":2}', '{"b":1,"a":2}', '{"a":1}']),
    ],
)  # fmt: skip
def test_rewritten_branches_list_the_names_in_one_order(
    tiny_tokenizer: Tokenizer, schema: Any, text: list[str]
) -> None:
    from tests.core.helpers import accepts_text

    program = GuidanceBackend(tiny_tokenizer).compile_json_schema(schema)
    for t in text:
        assert _validator(schema).is_valid(json.loads(t)), t
        assert accepts_text(program.create_state(), tiny_tokenizer.encode(t)), t


def test_property_names_are_not_listed_under_an_enclosing_unevaluated_properties() -> None:
    # Listing propertyNames' names in ``properties`` marks them evaluated: an enclosing
    # unevaluatedProperties would then let through what the original refuses.
    schema = {
        "allOf": [{"propertyNames": {"enum": ["a", "b"]}}, {"dependentSchemas": {"a": True}}],
        "unevaluatedProperties": False,
    }
    rewritten = rewrite_schema(schema)
    for instance in ({"a": 1, "b": 2}, {"a": 1}, {}):
        assert _validator(rewritten).is_valid(instance) == _validator(schema).is_valid(instance), instance
