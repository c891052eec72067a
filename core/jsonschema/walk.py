"""The walk of a schema document: every subschema rewritten bottom-up, each location once.

Children are rewritten before their parent, so every pass sees rewritten subschemas; a location a
``$ref`` points to is rewritten once (memoised by its path) and a reference that leads back to a
location being rewritten (a cycle) is not followed. Each node then goes through the passes, in
the order of :data:`_PASSES`; a pass none of whose keywords the document uses is left out (a pass
only ever adds keywords no pass acts on, so what a document uses decides once which passes can
act anywhere in it), and a subschema with none of those keywords at or below it is handed back as
it is, unwalked.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Set
from typing import Any

from core.jsonschema.analysis import Analysis
from core.jsonschema.cleanup import decimal_counts, formats, no_ops
from core.jsonschema.context import RewriteContext
from core.jsonschema.formats import FormatMode
from core.jsonschema.items import unique_items
from core.jsonschema.keywords import COUNT_KEYS, LISTS, MAPS, SINGLE, object_keys
from core.jsonschema.logic import conditional, false_ref, negation
from core.jsonschema.one_of import one_of
from core.jsonschema.properties import dependencies, property_counts, property_names
from core.jsonschema.refs import Path, References
from core.jsonschema.unevaluated import unevaluated
from core.limits import Limits

__all__ = ["PASS_KEYWORDS", "new_context", "rewrite_node"]

Pass = Callable[[RewriteContext, dict[str, Any], Path, int], Any]

# Each pass, in the order it runs, with the keywords without which it leaves every node as it is.
_PASSES: tuple[tuple[Pass, frozenset[str]], ...] = (
    (formats, frozenset({"format"})),
    (decimal_counts, frozenset(COUNT_KEYS)),
    (no_ops, frozenset({"if", "then", "else", "contains", "minContains", "maxContains", "uniqueItems",
                        "propertyNames", "dependentRequired"})),
    (property_counts, frozenset({"minProperties", "maxProperties"})),
    # before the passes that turn not/if/oneOf/dependentSchemas into allOf entries, which would
    # read as evaluating properties
    (unevaluated, frozenset({"unevaluatedProperties", "unevaluatedItems"})),
    (property_names, frozenset({"propertyNames"})),
    (unique_items, frozenset({"uniqueItems"})),
    (dependencies, frozenset({"dependentRequired", "dependentSchemas", "dependencies"})),
    (conditional, frozenset({"if"})),
    (negation, frozenset({"not"})),
    (one_of, frozenset({"oneOf"})),
    (false_ref, frozenset({"$ref"})),  # last: on the result, and it may give ``false``
)  # fmt: skip

#: Every keyword some pass acts on: a document using none of them is not changed by the rewrites.
PASS_KEYWORDS: frozenset[str] = frozenset().union(*(keys for _, keys in _PASSES))


def new_context(
    root: Mapping[str, Any], limits: Limits, mode: FormatMode, formats_only: bool, keywords: Set[str] | None = None
) -> RewriteContext:
    """A context for rewriting ``root``, whose analysis reads referenced schemas rewritten.

    ``keywords``: every object key in ``root``, when the caller has them (the passes that act on
    none of them are left out); None: every pass runs.
    """
    refs = References(root, limits.max_rewrite_depth)

    def read(node: Any, path: Path, depth: int) -> Any:
        return None if path in ctx.active else rewrite_node(ctx, node, path, depth)

    chosen = _PASSES[:1] if formats_only else _PASSES
    chosen = tuple((p, keys) for p, keys in chosen if keywords is None or not keys.isdisjoint(keywords))
    triggers = frozenset().union(*(keys for _, keys in chosen))
    passes = tuple(p for p, _ in chosen)
    live = _live(root, triggers)
    unevaluated = "unevaluatedProperties" in (keywords if keywords is not None else object_keys(root) or ())
    ctx = RewriteContext(
        refs,
        Analysis(refs, limits, read),
        limits,
        mode,
        formats_only,
        passes=passes,
        live=live,
        unevaluated=unevaluated,
    )
    return ctx


def _live(root: Any, triggers: frozenset[str]) -> set[int]:
    """The ids of the objects and lists of ``root`` with a key in ``triggers`` at or below them.

    No pass acts on a node outside them, or below it: the walk hands such a node back as it is.
    """
    containers: list[Any] = []
    stack: list[Any] = [root]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            containers.append(node)
            stack.extend(node.values())
        elif isinstance(node, list):
            containers.append(node)
            stack.extend(node)
    live: set[int] = set()
    for node in reversed(containers):  # every container comes after its parent: children first
        if isinstance(node, dict):
            if not triggers.isdisjoint(node) or any(id(v) in live for v in node.values()):
                live.add(id(node))
        elif any(id(v) in live for v in node):
            live.add(id(node))
    return live


def rewrite_node(ctx: RewriteContext, node: Any, path: Path, depth: int) -> Any:
    """The node at ``path`` rewritten (children first); nodes deeper than the bound stay as they are."""
    if not isinstance(node, dict) or depth > ctx.limits.max_rewrite_depth or id(node) not in ctx.live:
        return node
    if path in ctx.memo:
        return ctx.memo[path]
    ctx.active.add(path)
    try:
        out: dict[str, Any] = {}
        for key, value in node.items():
            out[key] = _child(ctx, key, value, path, depth)
        rewritten = _passes(ctx, out, path, depth)
    finally:
        ctx.active.discard(path)
    ctx.memo[path] = rewritten
    return rewritten


def _passes(ctx: RewriteContext, s: dict[str, Any], path: Path, depth: int) -> Any:
    """The context's passes over one node whose children are rewritten: each takes and returns a
    fresh dict (the last may give ``false``)."""
    out: Any = s
    for step in ctx.passes:
        out = step(ctx, out, path, depth)
    return out


def _child(ctx: RewriteContext, key: str, value: Any, path: Path, depth: int) -> Any:
    if key in SINGLE or (key == "items" and isinstance(value, dict)):
        return rewrite_node(ctx, value, path + (key,), depth + 1)
    if key in MAPS and isinstance(value, dict):
        return {k: rewrite_node(ctx, v, path + (key, k), depth + 1) for k, v in value.items()}
    if (key in LISTS or key == "items") and isinstance(value, list):
        return [rewrite_node(ctx, v, path + (key, str(i)), depth + 1) for i, v in enumerate(value)]
    if key == "dependencies" and isinstance(value, dict):
        return {
            k: rewrite_node(ctx, v, path + (key, k), depth + 1) if isinstance(v, dict) else v for k, v in value.items()
        }
    return _referenced(ctx, value, path + (key,), depth + 1)


def _referenced(ctx: RewriteContext, value: Any, path: Path, depth: int) -> Any:
    """``value`` outside the schema keywords, with the schemas a ``$ref`` points to in it rewritten.

    A reference may point anywhere (``#/channels``, a key no keyword defines); llguidance
    follows it, so what it finds there must be rewritten like any schema.
    """
    if depth > ctx.limits.max_rewrite_depth or path not in ctx.refs.pinned_prefixes:
        return value
    if path in ctx.refs.pinned or path in ctx.memo:  # a schema (rewritten already when a ref led there)
        return rewrite_node(ctx, value, path, depth)
    if isinstance(value, dict):
        return {k: _referenced(ctx, v, path + (k,), depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_referenced(ctx, v, path + (str(i),), depth + 1) for i, v in enumerate(value)]
    return value
