"""JSON values as the schema rewrites compare them: kinds, equality, counts and numbers.

JSON equality is not Python's: ``1 == 1.0`` but ``true != 1``; :func:`value_key` is the one
definition the facts, complements and rewrites share.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from fractions import Fraction
from typing import Any

__all__ = [
    "count_value",
    "is_number",
    "kind_of",
    "number_value",
    "plain_number",
    "unique_values",
    "value_key",
]


def is_number(v: Any) -> bool:
    """Whether ``v`` is a JSON number (not a boolean)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def kind_of(v: Any) -> str:
    """The kind of a JSON value; numbers are ``integer`` (integral, ``1.0`` too) or ``fraction``."""
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
    """``values`` without JSON-equal repeats, in order."""
    seen: set[Any] = set()
    out = []
    for v in values:
        k = value_key(v)
        if k not in seen:
            seen.add(k)
            out.append(v)
    return out


def count_value(v: Any) -> int | None:
    """A count keyword's value as an int (``2.0`` is 2); None when it is not a count."""
    if isinstance(v, bool) or not is_number(v):
        return None
    if isinstance(v, float) and not (math.isfinite(v) and v.is_integer()):
        return None
    return int(v) if v >= 0 else None


def number_value(v: Any) -> Fraction | None:
    """A finite JSON number as an exact fraction; None otherwise."""
    if not is_number(v) or (isinstance(v, float) and not math.isfinite(v)):
        return None
    return Fraction(v)


def plain_number(v: Any) -> bool:
    """A bound llguidance reads exactly: finite, written without an exponent, not too long."""
    if isinstance(v, float) and not math.isfinite(v):
        return False
    text = json.dumps(v)
    return "e" not in text.lower() and len(text) <= 24
