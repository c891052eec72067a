"""The walk of a schema document: every subschema rewritten bottom-up, each location once.

Children are rewritten before their parent, so every pass sees rewritten subschemas; a location a
``$ref`` points to is rewritten once (memoised by its path) and a reference that leads back to a
location being rewritten (a cycle) is not followed. Each node then goes through the passes, in
the order :func:`_passes` calls them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from core.jsonschema.analysis import Analysis
from core.jsonschema.cleanup import decimal_counts, formats, no_ops
from core.jsonschema.context import RewriteContext
from core.jsonschema.formats import FormatMode
from core.jsonschema.items import unique_items
from core.jsonschema.keywords import LISTS, MAPS, SINGLE
from core.jsonschema.logic import conditional, false_ref, negation
from core.jsonschema.one_of import one_of
from core.jsonschema.properties import dependencies, property_counts, property_names
from core.jsonschema.refs import Path, References
from core.jsonschema.unevaluated import unevaluated
from core.limits import Limits

__all__ = ["new_context", "rewrite_node"]


def new_context(root: Mapping[str, Any], limits: Limits, mode: FormatMode, formats_only: bool) -> RewriteContext:
    """A context for rewriting ``root``, whose analysis reads referenced schemas rewritten."""
    refs = References(root, limits.max_rewrite_depth)

    def read(node: Any, path: Path, depth: int) -> Any:
        return None if path in ctx.active else rewrite_node(ctx, node, path, depth)

    ctx = RewriteContext(refs, Analysis(refs, limits, read), limits, mode, formats_only)
    return ctx


def rewrite_node(ctx: RewriteContext, node: Any, path: Path, depth: int) -> Any:
    """The node at ``path`` rewritten (children first); nodes deeper than the bound stay as they are."""
    if not isinstance(node, dict) or depth > ctx.limits.max_rewrite_depth:
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
    """The passes over one node whose children are rewritten: each takes and returns a fresh dict."""
    # Called one by one rather than from a table: a call site that sees one function stays fast.
    s = formats(ctx, s, path, depth)
    if ctx.formats_only:
        return s
    s = decimal_counts(ctx, s, path, depth)
    s = no_ops(ctx, s, path, depth)
    s = property_counts(ctx, s, path, depth)
    # before the passes that turn not/if/oneOf/dependentSchemas into allOf entries, which would
    # read as evaluating properties
    s = unevaluated(ctx, s, path, depth)
    s = property_names(ctx, s, path, depth)
    s = unique_items(ctx, s, path, depth)
    s = dependencies(ctx, s, path, depth)
    s = conditional(ctx, s, path, depth)
    s = negation(ctx, s, path, depth)
    s = one_of(ctx, s, path, depth)
    return false_ref(ctx, s, path, depth)  # last: on the result, and it may give ``false``


def _child(ctx: RewriteContext, key: str, value: Any, path: Path, depth: int) -> Any:
    if key in SINGLE or (key == "items" and isinstance(value, dict)):
        return rewrite_node(ctx, value, path + (key,), depth + 1)
    if key in MAPS and isinstance(value, dict):
        return {k: rewrite_node(ctx, v, path + (key, k), depth + 1) for k, v in value.items()}
    if (key in LISTS or key == "items") and isinstance(value, list):
        return [rewrite_node(ctx, v, path + (key, str(i)), depth + 1) for i, v in enumerate(value)]
    if key == "dependencies" and isinstance(value, dict):
        return {
            k: rewrite_node(ctx, v, path + (key, k), depth + 1) if isinstance(v, dict) else v
            for k, v in value.items()
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
