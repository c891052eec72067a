"""JSON-schema keywords and JSON values, as the schema rewrites read them.

The tables say which keywords hold subschemas (and how), which constrain instances and which kinds
of value each constrains; the helpers compare JSON values (``1 == 1.0``, ``true != 1``), build
``anyOf``/``allOf`` without trivial members, and bound the size of what the rewrites produce.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from fractions import Fraction
from typing import Any

__all__ = [
    "ANNOTATIONS",
    "ASSERTIONS",
    "CONSTRAINS",
    "COUNT_KEYS",
    "DATA_KEYWORDS",
    "IDENTIFIERS",
    "KINDS",
    "LISTS",
    "MAPS",
    "MAX_COMPLEMENT_CHARS",
    "MAX_DEPTH",
    "NUMBERS",
    "OPAQUE",
    "REF_HOPS",
    "SCHEMA_KEYWORDS",
    "SINGLE",
    "TYPE_KINDS",
    "all_of",
    "any_of",
    "count_value",
    "is_false",
    "is_number",
    "json_pointer",
    "kind_of",
    "number_value",
    "plain_number",
    "schema_children",
    "serialised_size",
    "too_big",
    "type_kinds",
    "type_value",
    "unique_values",
    "value_key",
]

#: Deepest schema nesting the rewriter descends into (deeper parts are left as they are).
MAX_DEPTH = 100


#: Largest complement (serialised characters) the rewriter inserts for one keyword.
MAX_COMPLEMENT_CHARS = 200_000


REF_HOPS = 16


COUNT_KEYS = (
    "minItems",
    "maxItems",
    "minLength",
    "maxLength",
    "minProperties",
    "maxProperties",
    "minContains",
    "maxContains",
)


SINGLE = (
    "additionalItems",
    "additionalProperties",
    "not",
    "if",
    "then",
    "else",
    "contains",
    "propertyNames",
    "unevaluatedItems",
    "unevaluatedProperties",
    "contentSchema",
)


MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")


LISTS = ("allOf", "anyOf", "oneOf", "prefixItems")


IDENTIFIERS = ("$anchor", "$dynamicAnchor", "$dynamicRef", "$recursiveRef", "$recursiveAnchor")


# Keywords that constrain instances (in any draft llguidance reads). A complement must account for
# every one of them; other keys are annotations or unknown, which both JSON Schema and llguidance
# ignore.
ASSERTIONS = frozenset(
    {
        "type", "enum", "const", "multipleOf", "maximum", "exclusiveMaximum", "minimum",
        "exclusiveMinimum", "maxLength", "minLength", "pattern", "format", "maxItems", "minItems",
        "uniqueItems", "maxContains", "minContains", "contains", "items", "prefixItems",
        "additionalItems", "unevaluatedItems", "maxProperties", "minProperties", "required",
        "properties", "patternProperties", "additionalProperties", "propertyNames",
        "dependentRequired", "dependentSchemas", "dependencies", "unevaluatedProperties", "allOf",
        "anyOf", "oneOf", "not", "if", "then", "else", "$ref", "$dynamicRef", "$recursiveRef",
        "$id", "id", "$anchor", "$dynamicAnchor", "$recursiveAnchor", "$schema", "$vocabulary",
    }
)  # fmt: skip


# The kinds each keyword constrains (a schema without them accepts every value of those kinds).
NUMBERS = frozenset({"integer", "fraction"})


CONSTRAINS: dict[str, frozenset[str]] = {
    **dict.fromkeys(("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"), NUMBERS),
    **dict.fromkeys(("minLength", "maxLength", "pattern", "format"), frozenset({"string"})),
    **dict.fromkeys(
        ("items", "prefixItems", "additionalItems", "minItems", "maxItems", "uniqueItems", "contains", "minContains",
         "maxContains", "unevaluatedItems"),
        frozenset({"array"}),
    ),
    **dict.fromkeys(
        ("required", "properties", "patternProperties", "additionalProperties", "minProperties", "maxProperties",
         "propertyNames", "dependentRequired", "dependentSchemas", "dependencies", "unevaluatedProperties"),
        frozenset({"object"}),
    ),
}  # fmt: skip


# Keywords whose effect the facts do not model at all.
OPAQUE = frozenset({"not", "if", "then", "else", "$dynamicRef", "$recursiveRef"})


# JSON value kinds; numbers split into integral and fractional values so that "integer" is a set.
KINDS = frozenset({"null", "boolean", "integer", "fraction", "string", "array", "object"})


TYPE_KINDS: dict[str, frozenset[str]] = {
    "null": frozenset({"null"}),
    "boolean": frozenset({"boolean"}),
    "integer": frozenset({"integer"}),
    "number": frozenset({"integer", "fraction"}),
    "string": frozenset({"string"}),
    "array": frozenset({"array"}),
    "object": frozenset({"object"}),
}


def serialised_size(schema: Any) -> int:
    return len(json.dumps(schema, ensure_ascii=False, default=str))


def json_pointer(path: Sequence[str]) -> str:
    return "#" + "".join("/" + p.replace("~", "~0").replace("/", "~1") for p in path)


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def kind_of(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "integer" if math.isfinite(v) and v.is_integer() else "fraction"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object"


def value_key(v: Any) -> Any:
    """A hashable key equal for JSON-equal values (1 == 1.0; true != 1)."""
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return (type(v).__name__, v)
    if isinstance(v, (int, float)):
        return ("num", Fraction(v) if math.isfinite(v) else v)
    if isinstance(v, list):
        return ("arr", tuple(value_key(x) for x in v))
    if isinstance(v, dict):
        return ("obj", frozenset((k, value_key(x)) for k, x in v.items()))
    return ("other", repr(v))


def unique_values(values: Iterable[Any]) -> list[Any]:
    seen: set[Any] = set()
    out = []
    for v in values:
        k = value_key(v)
        if k not in seen:
            seen.add(k)
            out.append(v)
    return out


def type_kinds(t: Any) -> frozenset[str] | None:
    """Kinds allowed by a ``type`` value; None when it is malformed (leave it to llguidance)."""
    if t is None:
        return KINDS
    names = [t] if isinstance(t, str) else t
    if not isinstance(names, list) or not all(isinstance(n, str) and n in TYPE_KINDS for n in names):
        return None
    out: frozenset[str] = frozenset()
    for n in names:
        out |= TYPE_KINDS[n]
    return out


def type_value(kinds: Iterable[str]) -> str | list[str] | None:
    """A ``type`` value for a set of kinds; None for non-integral numbers without the integers."""
    kinds = set(kinds)
    names: list[str] = []
    for name in ("null", "boolean", "string", "array", "object"):
        if name in kinds:
            names.append(name)
    if "integer" in kinds and "fraction" in kinds:
        names.append("number")
    elif "fraction" in kinds:
        return None
    elif "integer" in kinds:
        names.append("integer")
    return names[0] if len(names) == 1 else names


def any_of(pieces: Sequence[Any]) -> Any:
    kept = []
    for p in pieces:
        if p is True or p == {}:
            return True
        if p is not False:
            kept.append(p)
    if not kept:
        return False
    return kept[0] if len(kept) == 1 else {"anyOf": kept}


def all_of(pieces: Sequence[Any]) -> Any:
    kept = []
    for p in pieces:
        if p is False:
            return False
        if p is not True and p != {}:
            kept.append(p)
    if not kept:
        return True
    return kept[0] if len(kept) == 1 else {"allOf": kept}


def count_value(v: Any) -> int | None:
    if isinstance(v, bool) or not is_number(v):
        return None
    if isinstance(v, float) and not (math.isfinite(v) and v.is_integer()):
        return None
    return int(v) if v >= 0 else None


def number_value(v: Any) -> Fraction | None:
    if not is_number(v) or (isinstance(v, float) and not math.isfinite(v)):
        return None
    return Fraction(v)


def schema_children(node: dict[str, Any], path: tuple[str, ...]) -> Iterable[tuple[Any, tuple[str, ...]]]:
    for key, value in node.items():
        if key in SINGLE or (key == "items" and isinstance(value, dict)):
            yield value, path + (key,)
        elif key in MAPS and isinstance(value, dict):
            for k, v in value.items():
                yield v, path + (key, k)
        elif (key in LISTS or key == "items") and isinstance(value, list):
            for i, v in enumerate(value):
                yield v, path + (key, str(i))
        elif key == "dependencies" and isinstance(value, dict):
            for k, v in value.items():
                if isinstance(v, dict):
                    yield v, path + (key, k)


# Keywords whose values are data, never schemas.
DATA_KEYWORDS = frozenset({"default", "examples", "example", "x-guidance", "enum", "const", "$comment"})
# Keywords that are not assertions but whose values are walked already: data, or schemas reached
# through :func:`schema_children` (``$defs``...). A walk of the other keywords must skip them, or
# nested ``$defs`` would be visited twice per level.
SCHEMA_KEYWORDS = DATA_KEYWORDS | frozenset(SINGLE) | frozenset(MAPS) | frozenset(LISTS)


ANNOTATIONS = frozenset(
    {"title", "description", "default", "examples", "$comment", "deprecated", "readOnly", "writeOnly",
     "markdownDescription"}
)  # fmt: skip


def is_false(schema: Any) -> bool:
    if schema is False:
        return True
    members = schema.get("allOf") if isinstance(schema, dict) else None
    return isinstance(members, list) and any(m is False for m in members)


def too_big(schema: Any, limit: int = MAX_COMPLEMENT_CHARS) -> bool:
    """Whether ``schema`` serialises to more than about ``limit`` characters.

    Counted by walking it with an early stop: rewritten schemas share subschemas, and their
    serialisation can be far larger than the objects in memory.
    """
    size = 0
    stack: list[Any] = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            size += 2 + sum(len(k) + 4 for k in node)
            stack.extend(node.values())
        elif isinstance(node, list):
            size += 2 + len(node)
            stack.extend(node)
        elif isinstance(node, str):
            size += len(node) + 2
        else:
            size += 5
        if size > limit:
            return True
    return False


def plain_number(v: Any) -> bool:
    """A bound llguidance reads exactly: finite, written without an exponent, not too long."""
    if isinstance(v, float) and not math.isfinite(v):
        return False
    text = json.dumps(v)
    return "e" not in text.lower() and len(text) <= 24
