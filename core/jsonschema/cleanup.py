"""Passes that only tidy a node: ``format`` (see :mod:`core.jsonschema.formats`), counts written as
integral decimals, and keywords with no effect by the specification.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from core.jsonschema.context import RewriteContext
from core.jsonschema.formats import rewrite_format
from core.jsonschema.keywords import ASSERTIONS, COUNT_KEYS
from core.jsonschema.refs import Path, json_pointer
from core.jsonschema.values import count_value

__all__ = ["decimal_counts", "formats", "no_ops"]


def formats(ctx: RewriteContext, s: dict[str, Any], path: Path, depth: int) -> dict[str, Any]:
    """``format`` per the context's mode: kept, replaced by an exact equivalent, or removed as an annotation."""
    out, ignored = rewrite_format(s, ctx.formats)
    if ignored is not None:
        ctx.ignored.append(f"format {json.dumps(ignored, ensure_ascii=False)} at {json_pointer(path)}")
        ctx.note("format as annotation", path)
    elif out is not s:
        ctx.note(f"format {s['format']}", path)
    return out


def decimal_counts(ctx: RewriteContext, s: dict[str, Any], path: Path, depth: int) -> dict[str, Any]:
    """Counts written as integral decimals (``"minItems": 1.0``) as integers: llguidance refuses decimals."""
    for key in COUNT_KEYS:
        v = s.get(key)
        if isinstance(v, float) and math.isfinite(v) and v.is_integer() and v >= 0:
            s[key] = int(v)
            ctx.note(f"decimal-count {key}", path)
    return s


def no_ops(ctx: RewriteContext, s: dict[str, Any], path: Path, depth: int) -> dict[str, Any]:
    """Keywords with no effect by the specification, removed (``if`` alone, ``uniqueItems: false``...)."""
    if "if" in s and "then" not in s and "else" not in s:
        s = _drop(ctx, s, path, ["if"], "if without then/else")
    if "if" not in s and ("then" in s or "else" in s):
        s = _drop(ctx, s, path, ["then", "else"], "then/else without if")
    if "contains" not in s and ("minContains" in s or "maxContains" in s):
        s = _drop(ctx, s, path, ["minContains", "maxContains"], "min/maxContains without contains")
    if "contains" in s and "maxContains" not in s and count_value(s.get("minContains")) == 0:
        s = _drop(ctx, s, path, ["contains", "minContains"], "contains with minContains 0")
    unique = s.get("uniqueItems")
    max_items = count_value(s.get("maxItems"))
    if unique is False or (unique is True and max_items is not None and max_items <= 1):
        del s["uniqueItems"]
        ctx.note("no-op uniqueItems", path)
    names = s.get("propertyNames")
    if names is True or (isinstance(names, dict) and _any_string(names)):
        s = _drop(ctx, s, path, ["propertyNames"], "propertyNames every string satisfies")
    deps = s.get("dependentRequired")
    if isinstance(deps, dict) and deps and all(v == [] for v in deps.values()):
        del s["dependentRequired"]
        ctx.note("no-op dependentRequired", path)
    return s


def _drop(ctx: RewriteContext, s: dict[str, Any], path: Path, keys: Sequence[str], why: str) -> dict[str, Any]:
    present = [k for k in keys if k in s]
    if present and all(ctx.refs.movable(path, k) for k in present):
        for k in present:
            del s[k]
        ctx.note(f"no-op {why}", path)
    return s


def _any_string(schema: dict[str, Any]) -> bool:
    """True when every string satisfies ``schema`` (only type: string and annotations)."""
    for k, v in schema.items():
        if k not in ASSERTIONS:
            continue
        if k == "type" and (v == "string" or (isinstance(v, list) and "string" in v)):
            continue
        return False
    return True
