"""The ``oneOf`` pass: ``anyOf`` where the branches are provably disjoint, complements elsewhere."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from core.jsonschema.build import add_constraints, all_of, any_of, too_big
from core.jsonschema.context import RewriteContext
from core.jsonschema.facts import Facts, disjoint_schemas, overlap
from core.jsonschema.keywords import KINDS, type_value
from core.jsonschema.order import order_skeleton
from core.jsonschema.refs import Path

__all__ = ["one_of"]


def one_of(ctx: RewriteContext, s: dict[str, Any], path: Path, depth: int) -> dict[str, Any]:
    """``oneOf`` as ``anyOf``, with complements added where two branches may overlap."""
    branches = s.get("oneOf")
    if not isinstance(branches, list) or not branches or not ctx.refs.movable(path, "oneOf"):
        return s
    if len(branches) > ctx.limits.max_rewrite_one_of_analysed:
        return s
    base = {k: v for k, v in s.items() if k != "oneOf"}
    facts = [ctx.analysis.facts({"allOf": [base, b]}, depth) for b in branches]
    n = len(branches)
    # Kinds that two branches accept whole: no value of such a kind is in exactly one branch.
    excluded: frozenset[str] = frozenset()
    guard: Any = True
    if n > 1 and all(f is not None for f in facts):
        known = [f for f in facts if f is not None]
        excluded = frozenset(k for k in KINDS if sum(k in f.full for f in known) >= 2)
        if excluded:
            allowed = KINDS - excluded
            t = type_value(allowed) if allowed else None
            if allowed and t is None:
                excluded = frozenset()  # the guard would need "non-integral numbers"
            else:
                guard = {"type": t} if allowed else False
                facts = [replace(f, kinds=f.kinds - excluded, full=f.full - excluded) for f in known]

    # For each ordered pair (i, j) that may overlap: what branch i must add to exclude branch j.
    exclusions: dict[tuple[int, int], Any] = {}
    complements: dict[int, Any] = {}
    for i in range(n):
        for j in range(n):
            fi, fj = facts[i], facts[j]
            if i == j:
                continue
            if fi is not None and fj is not None:
                kinds = overlap(fi, fj, ctx.analysis, depth)
                if not kinds:
                    continue
                nonempty = _only_empty_shared(ctx, kinds, fi, fj, branches[j], depth)
                if nonempty is not None:
                    exclusions[(i, j)] = nonempty
                    continue
            if n > ctx.limits.max_rewrite_one_of_complemented:
                return s
            if j not in complements:
                c = ctx.analysis.complement(branches[j], depth)
                if c is None:
                    return s
                complements[j] = c
            exclusions[(i, j)] = complements[j]
    # each branch then lists the names the others mention, in one place (core.jsonschema.order)
    rewritten: list[Any] = [
        all_of(
            [branches[i], order_skeleton(ctx, branches[:i] + branches[i + 1 :], depth, beside=branches[i])]
            + [exclusions[(i, j)] for j in range(n) if (i, j) in exclusions]
        )
        for i in range(n)
    ]
    if not exclusions:
        ctx.note("oneOf disjoint", path)
    else:
        if too_big(rewritten, ctx.limits.max_rewrite_complement_chars):
            return s
        ctx.note("oneOf by complements", path)
    if excluded:
        ctx.note("oneOf kinds every branch accepts", path)
    if "anyOf" not in s:
        s = {("anyOf" if k == "oneOf" else k): (rewritten if k == "oneOf" else v) for k, v in s.items()}
        return add_constraints(s, [guard])
    if "allOf" not in s:  # in place: the branches list their names where the oneOf stood
        s = {("allOf" if k == "oneOf" else k): ([{"anyOf": rewritten}] if k == "oneOf" else v) for k, v in s.items()}
        return add_constraints(s, [guard])
    del s["oneOf"]
    return add_constraints(s, [{"anyOf": rewritten}, guard])


def _only_empty_shared(ctx: RewriteContext, kinds: frozenset[str], fi: Facts, fj: Facts, other: Any, depth: int) -> Any:
    """What excludes branch ``other`` from branch ``fi`` when the two can share only ``{}``/``[]``.

    Two closed objects (``additionalProperties: false``, no ``patternProperties``) with no
    property name in common share at most the empty object; two arrays whose every item
    (``items``, no ``prefixItems``) must satisfy disjoint schemas share at most the empty array.
    When ``other`` accepts that empty value, branch ``fi`` must not be empty (hold one of its own
    properties, or an item); when it does not, nothing is needed. Each piece constrains only its
    kind. None: not this case.
    """
    pieces: list[Any] = []
    for kind in sorted(kinds):
        if kind == "object":
            if not (fi.closed and fj.closed) or set(fi.props) & set(fj.props):
                return None
            not_empty: Any = any_of([{"required": [name]} for name in fi.props])
        elif kind == "array":
            if fi.prefix or fj.prefix or not fi.item or not fj.item:
                return None
            if not disjoint_schemas(fi.item, fj.item, ctx.analysis, depth):
                return None
            not_empty = {"minItems": 1}
        else:
            return None
        empty = ctx.analysis.accepts_empty(other, kind, depth)
        if empty is None:
            return None
        if empty:
            pieces.append(not_empty)
    return all_of(pieces)
