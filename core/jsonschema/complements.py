"""Exact complements of single keywords and of finite sets of values.

``not``, ``if`` and ``oneOf`` need the complement of a schema ("every value this schema refuses")
written as a schema llguidance supports. This module writes it keyword by keyword (a bound becomes
the opposite bound, ``required`` a forbidden property, a ``const`` the values around it); the
schema analysis combines the pieces and recurses through the applicators. None means "no exact
complement" (``multipleOf``, ``format``, most patterns, "a number that is not an integer").
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any, Protocol

from core.jsonschema.build import all_of, any_of
from core.jsonschema.regex import complement_pattern, complement_words
from core.jsonschema.values import count_value, is_number, kind_of, plain_number, unique_values
from core.limits import Limits

__all__ = [
    "Complementer",
    "array_differs",
    "complement_keyword",
    "complement_values",
    "object_differs",
]


class Complementer(Protocol):
    """What complements whole subschemas (following references): the schema analysis."""

    limits: Limits

    def complement(self, schema: Any, depth: int, hops: int = 0) -> Any:
        """An exact complement of ``schema``, or None."""


def complement_values(values: list[Any], max_depth: int, depth: int = 0) -> Any:
    """The complement of a finite set of values, or None (numbers llguidance cannot bound exactly).

    Arrays and objects are complemented member by member, down to ``max_depth`` levels.
    """
    if depth > max_depth:
        return None
    by_kind: dict[str, list[Any]] = {}
    for v in values:
        k = kind_of(v)
        by_kind.setdefault("number" if k in ("integer", "fraction") else k, []).append(v)
    pieces: list[Any] = []
    whole = [k for k in ("null", "boolean", "number", "string", "array", "object") if k not in by_kind]
    if whole:
        pieces.append({"type": whole[0] if len(whole) == 1 else whole})
    for kind, members in by_kind.items():
        if kind == "null":
            continue
        if kind == "boolean":
            rest = [b for b in (False, True) if all(m is not b for m in members)]
            if rest:
                pieces.append({"const": rest[0]})
        elif kind == "string":
            pieces.append({"type": "string", "pattern": complement_words(members)})
        elif kind == "number":
            cuts = sorted(unique_values(members), key=Fraction)
            if any(not plain_number(c) for c in cuts):
                return None
            pieces.append({"type": "number", "exclusiveMaximum": cuts[0]})
            for lo, hi in zip(cuts, cuts[1:]):
                pieces.append({"type": "number", "exclusiveMinimum": lo, "exclusiveMaximum": hi})
            pieces.append({"type": "number", "exclusiveMinimum": cuts[-1]})
        else:
            # arrays or objects: the kind minus each member, i.e. the intersection of "differs from m"
            differs = [(array_differs if kind == "array" else object_differs)(m, max_depth, depth + 1) for m in members]
            if any(d is None for d in differs):
                return None
            pieces.append(all_of([{"type": kind}, *differs]))
    return any_of(pieces)


def array_differs(value: list[Any], max_depth: int, depth: int) -> Any:
    """Arrays different from ``value``: another length, or another item at some position."""
    n = len(value)
    pieces: list[Any] = [{"type": "array", "maxItems": n - 1}] if n else []
    pieces.append({"type": "array", "minItems": n + 1})
    for i, item in enumerate(value):
        other = complement_values([item], max_depth, depth)
        if other is None:
            return None
        pieces.append({"type": "array", "minItems": i + 1, "prefixItems": [True] * i + [other]})
    return any_of(pieces)


def object_differs(value: dict[str, Any], max_depth: int, depth: int) -> Any:
    """Objects different from ``value``: a key missing, a key more, or another value for a key."""
    pieces: list[Any] = [{"type": "object", "properties": {k: False}} for k in value]
    pieces.append({"type": "object", "minProperties": len(value) + 1})
    for k, item in value.items():
        other = complement_values([item], max_depth, depth)
        if other is None:
            return None
        pieces.append({"type": "object", "required": [k], "properties": {k: other}})
    return any_of(pieces)


def complement_keyword(
    key: str, value: Any, s: dict[str, Any], kinds: frozenset[str], rw: Complementer, depth: int
) -> Any:
    """The complement of one keyword (false on the kinds it does not apply to), or None."""
    number_type = "number" if "fraction" in kinds else "integer"
    numeric = bool(kinds & {"integer", "fraction"})
    if key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        if not numeric:
            return False
        if not is_number(value) or (isinstance(value, float) and not math.isfinite(value)):
            return None
        flip = {
            "minimum": "exclusiveMaximum",
            "maximum": "exclusiveMinimum",
            "exclusiveMinimum": "maximum",
            "exclusiveMaximum": "minimum",
        }[key]
        return {"type": number_type, flip: value}
    if key == "multipleOf":
        return False if not numeric else None
    if key in ("minLength", "maxLength", "pattern", "format"):
        if "string" not in kinds:
            return False
        n = count_value(value)
        if key == "minLength" and n is not None:
            return False if n == 0 else {"type": "string", "maxLength": n - 1}
        if key == "maxLength" and n is not None:
            return {"type": "string", "minLength": n + 1}
        if key == "pattern" and isinstance(value, str):
            other = complement_pattern(value, rw.limits.max_rewrite_pattern_atoms)
            return None if other is None else {"type": "string", "pattern": other}
        return None
    if key in ("minItems", "maxItems", "uniqueItems", "items", "prefixItems", "additionalItems", "contains",
               "minContains", "maxContains", "unevaluatedItems"):  # fmt: skip
        if "array" not in kinds:
            return False
        n = count_value(value)
        if key == "minItems" and n is not None:
            return False if n == 0 else {"type": "array", "maxItems": n - 1}
        if key == "maxItems" and n is not None:
            return {"type": "array", "minItems": n + 1}
        if key == "uniqueItems" and value is False:
            return False
        if key == "prefixItems" and isinstance(value, list):
            pieces = []
            for i, p in enumerate(value):
                np_ = rw.complement(p, depth)
                if np_ is None:
                    return None
                if np_ is not False:
                    pieces.append({"type": "array", "minItems": i + 1, "prefixItems": [True] * i + [np_]})
            return any_of(pieces)
        if key == "items" and isinstance(value, (dict, bool)):
            if value is True or value == {}:
                return False
            if value is False:
                prefix = s.get("prefixItems")
                k = len(prefix) if isinstance(prefix, list) else 0
                return {"type": "array", "minItems": k + 1}
            return None
        if key in ("minContains", "maxContains") and "contains" not in s:
            return False
        return None
    if key in ("required", "properties", "minProperties", "maxProperties", "additionalProperties",
               "patternProperties", "propertyNames", "dependentRequired", "dependentSchemas", "dependencies",
               "unevaluatedProperties"):  # fmt: skip
        if "object" not in kinds:
            return False
        n = count_value(value)
        if key == "minProperties" and n is not None:
            return False if n == 0 else {"type": "object", "maxProperties": n - 1}
        if key == "maxProperties" and n is not None:
            return {"type": "object", "minProperties": n + 1}
        if key == "required" and isinstance(value, list) and all(isinstance(r, str) for r in value):
            return any_of([{"type": "object", "properties": {r: False}} for r in value])
        if key == "properties" and isinstance(value, dict):
            pieces = []
            for name, sub in value.items():
                ns = rw.complement(sub, depth)
                if ns is None:
                    return None
                if ns is not False:
                    pieces.append({"type": "object", "required": [name], "properties": {name: ns}})
            return any_of(pieces)
        if key == "additionalProperties":
            if value is True or value == {}:
                return False
            if value is False and not s.get("properties") and not s.get("patternProperties"):
                return {"type": "object", "minProperties": 1}
            return None
        if key == "patternProperties" and isinstance(value, dict) and all(v is True or v == {} for v in value.values()):
            return False
        if key in ("dependentRequired", "dependentSchemas", "dependencies") and isinstance(value, dict):
            pieces = []
            for name, dep in value.items():
                if isinstance(dep, list) and all(isinstance(d, str) for d in dep):
                    pieces.extend(
                        {"type": "object", "required": [name], "properties": {d: False}} for d in dep if d != name
                    )
                elif key != "dependentRequired":
                    nd = rw.complement(dep, depth)
                    if nd is None:
                        return None
                    if nd is not False:
                        pieces.append(all_of([{"type": "object", "required": [name]}, nd]))
                else:
                    return None
            return any_of(pieces)
        return None
    return None  # an assertion we do not complement ($id, propertyNames, ...)
