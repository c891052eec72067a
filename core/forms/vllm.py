"""vLLM's ``structured_outputs`` (``StructuredOutputsParams``), as its API and ``SamplingParams`` take it.

Exactly one of ``json`` (a schema, or its JSON text), ``regex``, ``choice`` (a list of strings;
``choices``, as vLLM's own guide spells it, is taken too), ``grammar`` (GBNF/EBNF, or Lark, told
apart as vLLM's guidance backend does), ``json_object: true`` (any JSON object) or
``structural_tag`` (xgrammar's, in either form: :mod:`core.forms.structural_tag`); with ``json``,
``disable_additional_properties`` (objects that do not say otherwise get ``additionalProperties:
false``), ``whitespace_pattern`` (the regex of the whitespace JSON may have) and
``disable_any_whitespace``. ``disable_fallback`` is accepted and
has no effect (there is no other backend to fall back to).

Where this differs from vLLM: JSON is compact unless ``whitespace_pattern`` (or the request's
``options.whitespace``) allows whitespace; vLLM's backends allow any whitespace unless
``disable_any_whitespace`` is set. Output valid here is valid there; the reverse holds once
whitespace is allowed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from core.errors import FormError
from core.forms.fields import form_object, json_options, only_json_options
from core.forms.sglang import grammar_kind
from core.forms.structural_tag import lower_structural_tag
from core.spec import ProgramSpec

__all__ = ["close_objects", "lower_structured_outputs"]

_CONSTRAINTS = ("json", "regex", "choice", "choices", "grammar", "json_object", "structural_tag")
_FLAGS = ("disable_any_whitespace", "disable_additional_properties", "disable_fallback")
_MEMBERS = (*_CONSTRAINTS, *_FLAGS, "whitespace_pattern")


def close_objects(schema: Any) -> Any:
    """A copy of ``schema`` where every object schema with ``properties`` or ``patternProperties``
    and no ``additionalProperties`` gets ``additionalProperties: false`` (vLLM's
    ``disable_additional_properties``). Iterative: safe on deeply nested input."""
    root: list[Any] = [None]
    stack: list[tuple[Any, Any, Any]] = [(schema, root, 0)]
    while stack:
        node, parent, key = stack.pop()
        if isinstance(node, Mapping):
            copy: dict[str, Any] = {}
            parent[key] = copy
            for k, v in node.items():
                stack.append((v, copy, k))
            if "additionalProperties" not in node and ("properties" in node or "patternProperties" in node):
                copy["additionalProperties"] = False
        elif isinstance(node, list):
            items: list[Any] = [None] * len(node)
            parent[key] = items
            stack.extend((v, items, i) for i, v in enumerate(node))
        else:
            parent[key] = node
    return root[0]


def lower_structured_outputs(source: Any, options: Mapping[str, Any]) -> ProgramSpec:
    """The base-kind spec of a ``structured_outputs`` object.

    Raises:
        FormError: not exactly one constraint, or a member of the wrong type (named by its pointer).
    """
    body = form_object(source, "structured_outputs", _MEMBERS)
    given = [k for k in _CONSTRAINTS if body.get(k) is not None]
    if len(given) != 1:
        raise FormError(
            "structured_outputs takes exactly one of json, regex, choice, grammar, json_object, structural_tag"
            + (f" (got {', '.join(given)})" if given else ""),
            pointer="",
        )
    (kind,) = given
    for flag in _FLAGS:
        if not isinstance(body.get(flag, False), bool):
            raise FormError(f"structured_outputs.{flag} must be a boolean", pointer="/" + flag)
    pattern = body.get("whitespace_pattern")
    if pattern is not None and not isinstance(pattern, str):
        raise FormError(
            "structured_outputs.whitespace_pattern must be a regex (a string)", pointer="/whitespace_pattern"
        )
    value = body[kind]
    if kind not in ("json", "json_object"):
        for key in ("whitespace_pattern", "disable_additional_properties"):
            if body.get(key):
                raise FormError(f"structured_outputs.{key} applies to json and json_object only", pointer="/" + key)
        only_json_options(options, "structured_outputs." + kind)
    if kind == "structural_tag":
        return lower_structural_tag(value, "structured_outputs.structural_tag", "/structural_tag")
    if kind == "regex":
        if not isinstance(value, str):
            raise FormError("structured_outputs.regex must be a string", pointer="/regex")
        return ProgramSpec("regex", value)
    if kind in ("choice", "choices"):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise FormError(f"structured_outputs.{kind} must be a list of strings", pointer="/" + kind)
        return ProgramSpec("choice", list(value))
    if kind == "grammar":
        if not isinstance(value, str) or not value.strip():
            raise FormError("structured_outputs.grammar must be a non-empty grammar (a string)", pointer="/grammar")
        return ProgramSpec(grammar_kind(value), value)
    if kind == "json_object":
        if value is not True:
            raise FormError("structured_outputs.json_object must be true", pointer="/json_object")
        schema: Any = {"type": "object"}
    else:
        schema = value
        if isinstance(schema, str):
            try:
                schema = json.loads(schema)
            except ValueError as e:
                raise FormError(f"structured_outputs.json is not valid JSON: {e}", pointer="/json") from None
        if not isinstance(schema, (Mapping, bool)):
            raise FormError("structured_outputs.json must be a JSON schema (an object)", pointer="/json")
    if body.get("disable_additional_properties"):
        schema = close_objects(schema)
    return ProgramSpec("json_schema", schema, options=json_options(options, whitespace_pattern=pattern))
