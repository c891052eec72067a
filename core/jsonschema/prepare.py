"""A JSON schema as llguidance receives it: checked, rewritten, its output format set.

Every JSON schema goes through :func:`prepare_json_schema`, whether it is a direct
``json_schema`` constraint or a template's ``{{json}}`` slot: the limits are checked first (nesting,
size, derivation depth), then the exact rewrites of what llguidance refuses
(:mod:`core.jsonschema.rewrite`), then the ``x-guidance`` formatting options. JSON is compact by
default (no free whitespace, so a model cannot run away in spaces and newlines); ``whitespace=N``
allows up to N whitespace characters wherever JSON allows whitespace.

Most schemas need no rewrite and have no ``$ref``: one walk over the schema (the nesting check's)
collects the keywords it uses, and the rewrites and the derivation-depth walk run only when a
keyword they act on appears (:data:`REWRITTEN_KEYWORDS`; without ``$ref`` a chain of subschemas
is no longer than the nesting, which is bounded already).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import llguidance

from core.derivation import schema_derivation_depth
from core.errors import LimitExceeded, SchemaError, map_errors, refusal
from core.jsonschema.formats import DEFAULT_FORMAT_MODE, FormatMode, format_hint
from core.jsonschema.keywords import object_keys
from core.jsonschema.locate import locate_schema_error
from core.jsonschema.rewrite import RewriteReport, rewrite_schema_report
from core.jsonschema.walk import PASS_KEYWORDS
from core.limits import Limits
from core.validation import build, too_deep, trimmed

__all__ = [
    "MAX_WHITESPACE",
    "REWRITTEN_KEYWORDS",
    "PreparedSchema",
    "prepare_json_schema",
    "prepare_schema",
    "schema_grammar",
]

# The most whitespace characters ``whitespace=N`` may allow at one place: one bound for a direct
# schema's ``options.whitespace`` and a template's ``{{json whitespace=N}}`` (openapi.yaml).
MAX_WHITESPACE = 64

# llguidance's options for compact JSON (its own default is flexible whitespace).
_COMPACT = {"whitespace_flexible": False, "item_separator": ",", "key_separator": ":"}

#: The keywords some rewrite pass acts on (core.jsonschema.walk): a schema using none of them
#: anywhere comes out of the rewrites as it went in. ``$ref`` is one (a reference to ``false``).
REWRITTEN_KEYWORDS = PASS_KEYWORDS


@dataclass(frozen=True)
class PreparedSchema:
    """A schema ready for llguidance (see :func:`prepare_schema`).

    Attributes:
        schema: the schema for llguidance, its ``x-guidance`` options set.
        ignored: the annotations it does not assert (see :mod:`core.jsonschema.formats`).
        shallow: its derivations are known to be within ``max_derivation_depth`` (nothing was
            rewritten, so the schema checked is the one llguidance gets; or it has no ``$ref``
            and nests no deeper than that), so a grammar made of it need not be walked again.
    """

    schema: dict[str, Any]
    ignored: list[str]
    shallow: bool


def _check_pattern_properties(schema: Any, limit: int) -> None:
    """Refuse an object schema with more than ``limit`` ``patternProperties`` (iterative: the
    nesting is already bounded)."""
    stack: list[Any] = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            patterns = node.get("patternProperties")
            if isinstance(patterns, dict) and len(patterns) > limit:
                raise LimitExceeded(
                    f"{len(patterns)} patternProperties in one object, above the limit of {limit}",
                    "max_pattern_properties",
                )
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def prepare_json_schema(
    schema: Mapping[str, Any] | bool,
    whitespace: int | None,
    limits: Limits,
    formats: FormatMode = DEFAULT_FORMAT_MODE,
    whitespace_pattern: str | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """:func:`prepare_schema`'s schema and ignored annotations, as a pair.

    Returns:
        ``(schema, ignored)``: :attr:`PreparedSchema.schema` and :attr:`PreparedSchema.ignored`
        of :func:`prepare_schema`.
    """
    prepared = prepare_schema(schema, whitespace, limits, formats, whitespace_pattern)
    return prepared.schema, prepared.ignored


def prepare_schema(
    schema: Mapping[str, Any] | bool,
    whitespace: int | None,
    limits: Limits,
    formats: FormatMode = DEFAULT_FORMAT_MODE,
    whitespace_pattern: str | None = None,
) -> PreparedSchema:
    """A JSON schema checked, rewritten and formatted for llguidance: the one way every schema goes.

    ``whitespace_pattern`` (without ``whitespace``) is the regex of the whitespace allowed where
    JSON allows some (vLLM's option of that name).

    Raises:
        SchemaError: ``schema`` is not an object or a boolean, or a rewrite refuses it.
        LimitExceeded: it nests, weighs or derives beyond ``limits``.
    """
    if isinstance(schema, bool):
        schema = {} if schema else {"not": {}}
    if not isinstance(schema, Mapping):
        raise SchemaError("a JSON schema must be an object or a boolean")
    keywords = object_keys(schema, limits.max_nesting_depth)
    if keywords is None:
        raise LimitExceeded(f"JSON schema nests deeper than {limits.max_nesting_depth} levels", "max_nesting_depth")
    if "patternProperties" in keywords:
        _check_pattern_properties(schema, limits.max_pattern_properties)
    size = len(json.dumps(schema, ensure_ascii=False))
    if size > limits.max_source_bytes:
        raise LimitExceeded(f"JSON schema is larger than {limits.max_source_bytes} bytes", "max_source_bytes")
    # Each step of a chain of subschemas goes one level deeper in the document, except a $ref.
    shallow = "$ref" not in keywords and limits.max_nesting_depth <= limits.max_derivation_depth
    if not shallow and schema_derivation_depth(schema, limits.max_derivation_depth) > limits.max_derivation_depth:
        raise too_deep(limits)  # before the rewrites too, whose work grows with the chains
    if keywords.isdisjoint(REWRITTEN_KEYWORDS):
        report = RewriteReport()
    else:
        schema, report = rewrite_schema_report(schema, formats, limits=limits, keywords=keywords)
    user = schema.get("x-guidance")
    options: dict[str, Any] = dict(_COMPACT)
    if isinstance(user, Mapping):
        options.update(user)
    if whitespace:
        options.pop("whitespace_flexible", None)
        options["whitespace_pattern"] = f"[\\x20\\x0A\\x0D\\x09]{{0,{whitespace}}}"
    elif whitespace_pattern is not None:
        options.pop("whitespace_flexible", None)
        options["whitespace_pattern"] = whitespace_pattern
    out = dict(schema)
    out["x-guidance"] = options
    # Rewrites add no $ref: without one, a chain of subschemas is no longer than the nesting.
    checked = not report.changed or (shallow and object_keys(out, limits.max_derivation_depth) is not None)
    return PreparedSchema(out, report.ignored, checked)


def schema_grammar(
    schema: Mapping[str, Any] | bool,
    tokenizer: llguidance.LLTokenizer | None,
    limits: Limits,
    whitespace: int | None = None,
    formats: FormatMode = DEFAULT_FORMAT_MODE,
    whitespace_pattern: str | None = None,
) -> tuple[str, PreparedSchema, llguidance.LLMatcher | None]:
    """A JSON schema as llguidance's grammar, built once: a direct constraint or a template's slot.

    Returns:
        ``(grammar, prepared, matcher)``: the grammar text, the schema prepared by
        :func:`prepare_schema`, and the matcher llguidance built of it (None without a tokenizer).

    Raises:
        SchemaError: the schema is refused; the message names the place by its JSON pointer where
            it can tell (``pointer``), and what to do about an inexact ``format``.
        LimitExceeded: it breaks a limit, ours (:func:`prepare_schema`) or llguidance's.
    """
    prepared = prepare_schema(schema, whitespace, limits, formats, whitespace_pattern)
    with map_errors({ValueError: lambda e: _located(schema, trimmed(str(e)))}):
        grammar = llguidance.LLMatcher.grammar_from_json_schema(prepared.schema)
    # The rewritten schema's chains are measured on the object, not on the grammar's text parsed again.
    deepest = limits.max_derivation_depth
    if not prepared.shallow and schema_derivation_depth(prepared.schema, deepest) > deepest:
        raise too_deep(limits)
    matcher, message = build(grammar, tokenizer, limits, shallow=True)
    if message:
        raise refusal(trimmed(message), lambda detail: _located(schema, format_hint(detail)))
    return grammar, prepared, matcher


def _located(schema: Any, detail: str) -> SchemaError:
    """The error llguidance reports, with the JSON pointer of the place in ``schema`` it is about."""
    pointer = locate_schema_error(schema, detail)
    if pointer is None:
        return SchemaError(detail)
    return SchemaError(f"{detail} (at #{pointer})", pointer=pointer)
