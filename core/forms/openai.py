"""OpenAI's ``response_format``, as the Chat Completions API (and vLLM's and SGLang's) takes it.

- ``{"type": "text"}``: any text.
- ``{"type": "json_object"}``: any JSON object (OpenAI's JSON mode).
- ``{"type": "json_schema", "json_schema": {"name", "schema", "strict"?, "description"?}}``: JSON
  valid for ``schema`` (missing: any JSON value). The Responses API's flat spelling,
  ``{"type": "json_schema", "name", "schema", ...}`` (its ``text.format``), is the same.

Where this differs from OpenAI: the schema is enforced whatever ``strict`` says (OpenAI
guarantees it only with ``strict: true``), and a schema outside OpenAI's strict subset is compiled
rather than refused (every property need not be required, ``additionalProperties`` need not be
false). JSON is compact unless the request's ``options`` allow whitespace, as for ``json_schema``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from core.errors import FormError
from core.forms.fields import form_object, json_options, only_json_options
from core.spec import ProgramSpec

__all__ = ["ANY_TEXT", "lower_response_format"]

ANY_TEXT = "(?s:.*)"
"""The regex of free text (``type: text``)."""

_SCHEMA_MEMBERS = ("name", "schema", "strict", "description")


def lower_response_format(source: Any, options: Mapping[str, Any]) -> ProgramSpec:
    """The base-kind spec of a ``response_format`` object.

    Raises:
        FormError: an unknown ``type``, a missing or mistyped member (named by its JSON pointer).
    """
    if not isinstance(source, Mapping) or "type" not in source:
        raise FormError(
            'response_format must be an object with a "type": "text", "json_object" or "json_schema"', pointer=""
        )
    kind = source["type"]
    if kind == "text":
        form_object(source, "response_format of type text", ("type",))
        only_json_options(options, "response_format of type text")
        return ProgramSpec("regex", ANY_TEXT)
    if kind == "json_object":
        form_object(source, "response_format of type json_object", ("type",))
        return ProgramSpec("json_schema", {"type": "object"}, options=json_options(options))
    if kind != "json_schema":
        raise FormError(
            f'response_format type must be "text", "json_object" or "json_schema", not {str(kind)[:64]!r}',
            pointer="/type",
        )
    if "json_schema" in source:  # Chat Completions
        form_object(source, "response_format", ("type", "json_schema"))
        inner, at = source["json_schema"], "/json_schema"
    else:  # the Responses API's text.format: the same members, flat
        inner, at = {k: v for k, v in source.items() if k != "type"}, ""
    body = form_object(inner, "response_format.json_schema", _SCHEMA_MEMBERS)
    if not isinstance(body.get("name"), str) or not body["name"]:
        raise FormError("response_format.json_schema needs a name (a non-empty string)", pointer=at + "/name")
    for key, types, what in (
        ("strict", (bool, type(None)), "a boolean"),
        ("description", (str, type(None)), "a string"),
    ):
        if not isinstance(body.get(key), types):
            raise FormError(f"response_format.json_schema.{key} must be {what}", pointer=f"{at}/{key}")
    schema = body.get("schema", {})
    if not isinstance(schema, (Mapping, bool)):
        raise FormError("response_format.json_schema.schema must be a JSON schema (an object)", pointer=at + "/schema")
    return ProgramSpec("json_schema", schema, options=json_options(options))
