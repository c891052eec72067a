"""Key order through the rewrites: the names a replaced keyword mentions, listed where it stood.

llguidance fixes the order of the object keys it knows (the names of ``properties``, merged through
``allOf``/``$ref``/``anyOf`` in order of appearance; then ``required`` names; other keys after, in any
order). A rewrite that turns ``if``, ``not`` or ``oneOf`` into ``anyOf`` branches would otherwise
list a subschema's names in some branches only, and so in different places depending on the
branch: a valid object written in one order would be refused. Each of those rewrites therefore
adds, before its branches, an order skeleton: ``{"properties": {name: true, ...}}`` over every name
the replaced subschemas mention (:func:`mentioned_names`). ``true`` constrains nothing, so the
rewrite stays exact; the names it lists come at one place whatever the branch. The order this
gives is documented in ``docs/conformance.md`` ("Key order").
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from core.jsonschema.context import RewriteContext

__all__ = ["listed_names", "mentioned_names", "order_skeleton"]

# The in-place keywords whose ``properties`` a complement or a branch of the rewrites may list.
_LISTS = ("allOf", "anyOf", "oneOf")
_SINGLE = ("not", "if", "then", "else")


def mentioned_names(ctx: RewriteContext, schemas: list[Any], depth: int) -> list[str]:
    """Every name listed in ``properties`` by ``schemas`` in place (applicators and local references
    followed), in document order."""
    out: dict[str, None] = {}
    for schema in schemas:
        out.update(dict.fromkeys(_names(ctx, schema, depth, 0, set())))
    return list(out)


def _names(ctx: RewriteContext, schema: Any, depth: int, hops: int, seen: set[int]) -> Iterator[str]:
    if not isinstance(schema, dict) or id(schema) in seen or ctx.analysis.too_deep(depth, hops):
        return
    seen.add(id(schema))
    for key, sub in schema.items():
        if key == "properties" and isinstance(sub, dict):
            yield from sub
        elif key == "$ref":
            resolved = ctx.analysis.resolve(sub, depth)
            if resolved is not None:
                yield from _names(ctx, resolved[1], depth + 1, hops + 1, seen)
        elif key in _LISTS and isinstance(sub, list):
            for branch in sub:
                yield from _names(ctx, branch, depth + 1, hops, seen)
        elif key in _SINGLE:
            yield from _names(ctx, sub, depth + 1, hops, seen)
        elif key in ("dependentSchemas", "dependencies") and isinstance(sub, dict):
            for dep in sub.values():
                yield from _names(ctx, dep, depth + 1, hops, seen)


def listed_names(ctx: RewriteContext, schema: Any, depth: int, hops: int = 0) -> set[str]:
    """The names ``schema`` lists whatever the instance: its ``properties``, through ``allOf``/``$ref``."""
    if not isinstance(schema, dict) or ctx.analysis.too_deep(depth, hops):
        return set()
    out = set(schema["properties"]) if isinstance(schema.get("properties"), dict) else set()
    for member in schema["allOf"] if isinstance(schema.get("allOf"), list) else []:
        out |= listed_names(ctx, member, depth + 1, hops)
    if "$ref" in schema:
        resolved = ctx.analysis.resolve(schema["$ref"], depth)
        if resolved is not None:
            out |= listed_names(ctx, resolved[1], depth + 1, hops + 1)
    return out


def order_skeleton(ctx: RewriteContext, schemas: list[Any], depth: int, beside: Any = None) -> Any:
    """``{"properties": {name: true...}}`` over the names ``schemas`` mention, or ``true`` if none.

    Names that ``beside`` (the schema the skeleton is combined with) lists whatever the instance
    already have their place, and are left out.
    """
    placed = listed_names(ctx, beside, depth) if beside is not None else set()
    names = [n for n in mentioned_names(ctx, schemas, depth) if n not in placed]
    return {"properties": dict.fromkeys(names, True)} if names else True
