"""Schemas built from pieces: ``anyOf``/``allOf`` without trivial members, and their size.

Rewrites combine complements and constraints into new schemas; these helpers keep the result as
small as the pieces allow (``true`` and ``false`` absorb or vanish) and measure it, so that no
rewrite inserts more than the caller's bound.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

__all__ = ["add_constraints", "all_of", "any_of", "is_false", "serialised_size", "too_big"]


def serialised_size(schema: Any) -> int:
    """Length of ``schema`` serialised as JSON, in characters."""
    return len(json.dumps(schema, ensure_ascii=False, default=str))


def any_of(pieces: Sequence[Any]) -> Any:
    """``anyOf`` of ``pieces``: ``true`` if one is ``true``, ``false`` if none is left, else one piece or ``anyOf``."""
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
    """``allOf`` of ``pieces``: ``false`` if one is ``false``, ``true`` if none is left, else one piece or ``allOf``."""
    kept = []
    for p in pieces:
        if p is False:
            return False
        if p is not True and p != {}:
            kept.append(p)
    if not kept:
        return True
    return kept[0] if len(kept) == 1 else {"allOf": kept}


def is_false(schema: Any) -> bool:
    """Whether ``schema`` is ``false`` or an ``allOf`` holding ``false`` (accepts nothing)."""
    if schema is False:
        return True
    members = schema.get("allOf") if isinstance(schema, dict) else None
    return isinstance(members, list) and any(m is False for m in members)


def too_big(schema: Any, limit: int) -> bool:
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


# Keywords whose position in a node orders the object keys llguidance lets through (core.jsonschema.order).
_ORDERING = frozenset({"properties", "additionalProperties", "required", "$ref", "allOf", "anyOf", "oneOf"})


def add_constraints(s: dict[str, Any], pieces: Sequence[Any]) -> dict[str, Any]:
    """``s`` with ``pieces`` added after its own keywords (trivial pieces left out); ``s`` is modified.

    The pieces go to the end of ``s``'s ``allOf``, where that is after every keyword that orders
    object keys; otherwise into a one-branch ``anyOf`` at the end (the same constraint), so that the
    names they list come after the node's own (the key order of ``docs/conformance.md``).
    """
    pieces = [p for p in pieces if p is not True and p != {}]
    if not pieces:
        return s
    existing = s.get("allOf")
    if not isinstance(existing, list):
        s.pop("allOf", None)
        s["allOf"] = list(pieces)
        return s
    after = list(s)[list(s).index("allOf") + 1 :]
    if "anyOf" in s or not _ORDERING.intersection(after):
        s["allOf"] = list(existing) + list(pieces)
    else:
        s["anyOf"] = [all_of(pieces)]
    return s
