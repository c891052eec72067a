"""The pass for ``unevaluatedProperties``/``unevaluatedItems`` whose evaluated set is known statically."""

from __future__ import annotations

from typing import Any

from core.jsonschema.context import RewriteContext
from core.jsonschema.refs import Path

__all__ = ["unevaluated"]


def unevaluated(ctx: RewriteContext, s: dict[str, Any], path: Path, depth: int) -> dict[str, Any]:
    """``unevaluatedProperties``/``unevaluatedItems`` whose evaluated set is known statically.

    When the node and its in-place applicators (``allOf``, ``$ref``, never ``not``) evaluate a
    fixed set of properties (names and patterns) or a fixed prefix of items, "unevaluated" is
    that set's complement: ``additionalProperties`` after listing those names with ``true``, or
    ``items`` after a ``prefixItems`` of that length. Branching applicators (``anyOf``,
    ``oneOf``, ``if``, ``dependentSchemas``, ``contains``) evaluate depending on the instance:
    left alone.
    """
    original = ctx.refs.at(path)
    if not isinstance(original, dict):
        return s
    if "unevaluatedProperties" in s and ctx.refs.movable(path, "unevaluatedProperties"):
        u = s["unevaluatedProperties"]
        seen = None if u is True or u == {} else _evaluated(ctx, original, "properties", depth, 0, top=True)
        if u is True or u == {} or seen == "all":
            del s["unevaluatedProperties"]
            ctx.note("no-op unevaluatedProperties", path)
        elif isinstance(seen, tuple):
            names, patterns = seen
            props = dict(s["properties"]) if isinstance(s.get("properties"), dict) else {}
            pattern_props = dict(s["patternProperties"]) if isinstance(s.get("patternProperties"), dict) else {}
            props.update({n: True for n in names if n not in props})
            pattern_props.update({p: True for p in patterns if p not in pattern_props})
            if props:
                s["properties"] = props
            if pattern_props:
                s["patternProperties"] = pattern_props
            s["additionalProperties"] = u
            del s["unevaluatedProperties"]
            ctx.note("unevaluatedProperties", path)
    if "unevaluatedItems" in s and ctx.refs.movable(path, "unevaluatedItems"):
        u = s["unevaluatedItems"]
        seen_items = None if u is True or u == {} else _evaluated(ctx, original, "items", depth, 0, top=True)
        if u is True or u == {} or seen_items == "all":
            del s["unevaluatedItems"]
            ctx.note("no-op unevaluatedItems", path)
        elif isinstance(seen_items, int):
            prefix = list(s["prefixItems"]) if isinstance(s.get("prefixItems"), list) else []
            prefix += [True] * (seen_items - len(prefix))
            if prefix:
                s["prefixItems"] = prefix
            s["items"] = u
            del s["unevaluatedItems"]
            ctx.note("unevaluatedItems", path)
    return s


def _evaluated(ctx: RewriteContext, node: Any, what: str, depth: int, hops: int, top: bool = False) -> Any:
    """What ``node`` and its in-place applicators evaluate, whatever the instance.

    For ``what="properties"``: ``(names, patterns)`` or ``"all"``; for ``"items"``: the prefix
    length or ``"all"``. None when it depends on the instance (or is not known).
    """
    if ctx.analysis.too_deep(depth, hops):
        return None
    if isinstance(node, bool):
        return ((), ()) if what == "properties" else 0
    if not isinstance(node, dict):
        return None
    dynamic = {"anyOf", "oneOf", "if", "then", "else", "dependentSchemas", "dependencies", "$dynamicRef",
               "$recursiveRef", "contains"}  # fmt: skip
    if what == "properties":
        dynamic.discard("contains")
    if any(k in node for k in dynamic):
        return None
    nested = "unevaluatedProperties" if what == "properties" else "unevaluatedItems"
    if not top and nested in node:
        return "all"
    names: list[str] = []
    patterns: list[str] = []
    prefix = 0
    if what == "properties":
        if "additionalProperties" in node:
            return "all"
        if isinstance(node.get("properties"), dict):
            names.extend(node["properties"])
        if isinstance(node.get("patternProperties"), dict):
            patterns.extend(node["patternProperties"])
    else:
        if "items" in node or "additionalItems" in node:
            return "all" if isinstance(node.get("items"), (dict, bool)) and "additionalItems" not in node else None
        if isinstance(node.get("prefixItems"), list):
            prefix = len(node["prefixItems"])
    members: list[tuple[Any, int]] = []
    if isinstance(node.get("allOf"), list):
        members.extend((m, hops) for m in node["allOf"])
    if "$ref" in node:
        target_path = ctx.refs.pointer_path(node["$ref"]) if isinstance(node["$ref"], str) else None
        target = None if target_path is None or not ctx.refs.structural else ctx.refs.at(target_path)
        if target is None:
            return None
        members.append((target, hops + 1))
    for member, member_hops in members:
        got = _evaluated(ctx, member, what, depth + 1, member_hops)
        if got is None or got == "all":
            return got
        if what == "properties":
            names.extend(got[0])
            patterns.extend(got[1])
        else:
            prefix = max(prefix, got)
    if what == "properties":
        return (tuple(dict.fromkeys(names)), tuple(dict.fromkeys(patterns)))
    return prefix
