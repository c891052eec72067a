"""The pass for ``uniqueItems: true`` over a small finite item domain: an ``enum`` of the arrays."""

from __future__ import annotations

import itertools
import math
from typing import Any

from core.jsonschema.build import add_constraints, any_of
from core.jsonschema.context import RewriteContext
from core.jsonschema.keywords import KINDS, type_kinds, type_value
from core.jsonschema.refs import Path
from core.jsonschema.values import count_value, kind_of, unique_values

__all__ = ["unique_items"]


def unique_items(ctx: RewriteContext, s: dict[str, Any], path: Path, depth: int) -> dict[str, Any]:
    """``uniqueItems: true`` over a finite item domain: an ``enum`` of the arrays of distinct items."""
    if s.get("uniqueItems") is not True or "prefixItems" in s or "contains" in s:
        return s
    items = s.get("items", True)
    if not isinstance(items, (dict, bool)):
        return s
    facts = ctx.analysis.facts(items, depth)
    if facts is None:
        return s
    if facts.values is not None:
        domain = [v for v in facts.values if kind_of(v) in facts.kinds]
    elif facts.kinds <= {"null", "boolean"}:
        domain = ([None] if "null" in facts.kinds else []) + ([False, True] if "boolean" in facts.kinds else [])
    else:
        return s
    domain = unique_values(domain)
    lo = count_value(s.get("minItems")) or 0
    hi = count_value(s.get("maxItems"))
    hi = len(domain) if hi is None else min(hi, len(domain))
    total = sum(math.perm(len(domain), m) for m in range(lo, hi + 1))
    if total > ctx.limits.max_rewrite_unique_arrays:
        return s
    arrays = [list(p) for m in range(lo, hi + 1) for p in itertools.permutations(domain, m)]
    del s["uniqueItems"]
    ctx.note("uniqueItems over a finite domain", path)
    kinds = type_kinds(s.get("type")) or KINDS
    others = type_value(kinds - {"array"}) if kinds - {"array"} else None
    piece = any_of([{"type": others} if others else False, {"enum": arrays} if arrays else False])
    return add_constraints(s, [piece])
