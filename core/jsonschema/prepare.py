"""A JSON schema as llguidance receives it: checked, rewritten, its output format set.

Every JSON schema goes through :func:`prepare_json_schema`, whether it is a direct
``json_schema`` constraint or a template's ``{{json}}`` slot: the limits are checked first (nesting,
size, derivation depth), then the exact rewrites of what llguidance refuses
(:mod:`core.jsonschema.rewrite`), then the ``x-guidance`` formatting options. JSON is compact by
default (no free whitespace, so a model cannot run away in spaces and newlines); ``whitespace=N``
allows up to N whitespace characters wherever JSON allows whitespace.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from core.derivation import schema_derivation_depth
from core.errors import LimitExceeded, SchemaError
from core.limits import Limits
from core.jsonschema.formats import DEFAULT_FORMAT_MODE, FormatMode
from core.jsonschema.rewrite import rewrite_schema_report
from core.validation import too_deep

__all__ = ["MAX_WHITESPACE", "json_schema_with_options", "prepare_json_schema"]

# The most whitespace characters ``whitespace=N`` may allow at one place: one bound for a direct
# schema's ``options.whitespace`` and a template's ``{{json whitespace=N}}`` (openapi.yaml).
MAX_WHITESPACE = 64

# llguidance's options for compact JSON (its own default is flexible whitespace).
_COMPACT = {"whitespace_flexible": False, "item_separator": ",", "key_separator": ":"}


def _json_depth(value: Any, limit: int) -> bool:
    """True when ``value`` nests deeper than ``limit`` (iterative: safe on hostile input)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
    return False


def json_schema_with_options(
    schema: Mapping[str, Any] | bool, whitespace: int | None, limits: Limits
) -> dict[str, Any]:
    """The schema rewritten for llguidance, its ``x-guidance`` formatting options set (compact by default).

    Keys the schema itself sets in ``x-guidance`` win over the compact default; ``whitespace=N``
    wins over both. ``format`` is asserted where known (see :func:`prepare_json_schema`).
    """
    return prepare_json_schema(schema, whitespace, limits)[0]


def prepare_json_schema(
    schema: Mapping[str, Any] | bool,
    whitespace: int | None,
    limits: Limits,
    formats: FormatMode = DEFAULT_FORMAT_MODE,
    whitespace_pattern: str | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """:func:`json_schema_with_options` with the ``formats`` mode, also returning what was ignored.

    ``whitespace_pattern`` (without ``whitespace``) is the regex of the whitespace allowed where
    JSON allows some (vLLM's option of that name).

    Returns:
        ``(schema, ignored)``: the schema for llguidance, and the annotations it does not assert
        (see :mod:`core.jsonschema.formats`).

    Raises:
        SchemaError: ``schema`` is not an object or a boolean, or a rewrite refuses it.
        LimitExceeded: it nests, weighs or derives beyond ``limits``.
    """
    if isinstance(schema, bool):
        schema = {} if schema else {"not": {}}
    if not isinstance(schema, Mapping):
        raise SchemaError("a JSON schema must be an object or a boolean")
    if _json_depth(schema, limits.max_nesting_depth):
        raise LimitExceeded(
            f"JSON schema nests deeper than {limits.max_nesting_depth} levels", "max_nesting_depth"
        )
    size = len(json.dumps(schema, ensure_ascii=False))
    if size > limits.max_source_bytes:
        raise LimitExceeded(f"JSON schema is larger than {limits.max_source_bytes} bytes", "max_source_bytes")
    if schema_derivation_depth(schema, limits.max_derivation_depth) > limits.max_derivation_depth:
        raise too_deep(limits)  # before the rewrites too, whose work grows with the chains
    schema, report = rewrite_schema_report(schema, formats, limits=limits)
    user = schema.get("x-guidance")
    options: dict[str, Any] = dict(_COMPACT)
    if isinstance(user, Mapping):
        options.update(user)
    if whitespace:
        options.pop("whitespace_flexible", None)
        options["whitespace_pattern"] = "[\\x20\\x0A\\x0D\\x09]{0,%d}" % whitespace
    elif whitespace_pattern is not None:
        options.pop("whitespace_flexible", None)
        options["whitespace_pattern"] = whitespace_pattern
    out = dict(schema)
    out["x-guidance"] = options
    return out, report.ignored
