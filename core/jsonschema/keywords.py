"""JSON-schema keywords: which hold subschemas (and how), which constrain instances, and of what kind.

The tables are the one place the rewrites, the facts and the complements learn what a keyword
does; :func:`schema_children` walks the subschemas they name and :func:`type_kinds` reads ``type``.
"""

from __future__ import annotations

from collections.abc import Iterable
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
    "NUMBERS",
    "OPAQUE",
    "SCHEMA_KEYWORDS",
    "SINGLE",
    "TYPE_KINDS",
    "object_keys",
    "schema_children",
    "type_kinds",
    "type_value",
]

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


def schema_children(node: dict[str, Any], path: tuple[str, ...]) -> Iterable[tuple[Any, tuple[str, ...]]]:
    """The subschemas of ``node`` with their paths, as the schema keywords hold them."""
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


def object_keys(value: Any, limit: float = float("inf")) -> set[str] | None:
    """Every object key in ``value``; None when it nests deeper than ``limit`` (iterative: safe on
    hostile input)."""
    keys: set[str] = set()
    level, depth = [value], 1  # every value at this depth
    while level:
        if depth > limit:
            return None
        below: list[Any] = []
        for node in level:
            if isinstance(node, dict):
                keys.update(node)
                below.extend(node.values())
            elif isinstance(node, list):
                below.extend(node)
        level, depth = below, depth + 1
    return keys
