"""Passes over the logical applicators by exact complements: ``if``/``then``/``else``, ``not``, and a
``$ref`` to a schema that accepts nothing.
"""

from __future__ import annotations

from typing import Any

from core.jsonschema.build import add_constraints, all_of, any_of, is_false, too_big
from core.jsonschema.context import RewriteContext
from core.jsonschema.order import order_skeleton
from core.jsonschema.refs import Path

__all__ = ["conditional", "false_ref", "negation"]


def conditional(ctx: RewriteContext, s: dict[str, Any], path: Path, depth: int) -> dict[str, Any]:
    """``if``/``then``/``else`` as ``anyOf: [{allOf: [I, T]}, {allOf: [not I, E]}]``."""
    if "if" not in s or not all(ctx.refs.movable(path, k) for k in ("if", "then", "else")):
        return s
    cond, then, other = s["if"], s.get("then", True), s.get("else", True)
    if "then" not in s:
        piece = any_of([cond, other])
    else:
        negated = ctx.analysis.complement(cond, depth)
        if negated is None:
            return s
        piece = any_of([all_of([cond, then]), all_of([negated, other])]) if "else" in s else any_of([negated, then])
    # the names ``if`` mentions first, in every branch (core.jsonschema.order)
    piece = all_of([order_skeleton(ctx, [cond], depth), piece])
    if too_big(piece, ctx.limits.max_rewrite_complement_chars):
        return s
    for k in ("if", "then", "else"):
        s.pop(k, None)
    ctx.note("if/then/else", path)
    return add_constraints(s, [piece])


def negation(ctx: RewriteContext, s: dict[str, Any], path: Path, depth: int) -> dict[str, Any]:
    """``not: A`` as the exact complement of ``A``."""
    if "not" not in s or not ctx.refs.movable(path, "not"):
        return s
    negated = ctx.analysis.complement(s["not"], depth)
    if negated is None or too_big(negated, ctx.limits.max_rewrite_complement_chars):
        return s
    negated = all_of([order_skeleton(ctx, [s["not"]], depth), negated])  # core.jsonschema.order
    del s["not"]
    ctx.note("not", path)
    return add_constraints(s, [negated])


def false_ref(ctx: RewriteContext, s: dict[str, Any], path: Path, depth: int) -> Any:
    """A ``$ref`` to a schema that is ``false`` or provably accepts nothing (no kind of value is
    left, e.g. ``type: object`` with a ``oneOf`` of strings): the node is ``false``. llguidance
    refuses the whole schema on a referenced unsatisfiable schema, even where it only forbids
    an optional property."""
    if "$ref" not in s or not path or not all(ctx.refs.movable(path, k) for k in s):
        return s
    resolved = ctx.analysis.resolve(s["$ref"], depth)
    if resolved is None:
        return s
    if not is_false(resolved[1]):
        facts = ctx.analysis.facts(resolved[1], depth + 1)
        if facts is None or facts.kinds:
            return s
    ctx.note("$ref to false", path)
    return False


# -- local rewrites (each takes and returns a fresh dict it may modify)
