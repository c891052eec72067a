"""Reading a request form's object: its fields checked, faults named by JSON pointer."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from core.errors import FormError
from core.jsonschema.locate import json_pointer
from core.options import JsonSchemaOptions

__all__ = ["form_object", "json_options", "only_json_options"]

# The compile options that apply to a form's JSON schema (core.compiler, the json_schema kind).
_JSON_OPTIONS = JsonSchemaOptions.names()


def form_object(source: Any, form: str, allowed: Iterable[str]) -> Mapping[str, Any]:
    """``source`` as the object of ``form``, refusing members outside ``allowed``.

    Raises:
        FormError: not an object, or a member the form does not have (named by its pointer).
    """
    if not isinstance(source, Mapping):
        raise FormError(f"{form} must be an object, not {type(source).__name__}", pointer="")
    known = set(allowed)
    unknown = [k for k in source if k not in known]
    if unknown:
        key = str(unknown[0])
        raise FormError(
            f"{form} has no member {key[:64]!r} (it takes {', '.join(sorted(known))})",
            pointer=json_pointer([key]),
        )
    return source


def json_options(options: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    """The compile options a form passes to its JSON schema, with ``extra`` (those not None) added."""
    out = {k: v for k, v in options.items() if k in _JSON_OPTIONS}
    out.update((k, v) for k, v in extra.items() if v is not None)
    return out


def only_json_options(options: Mapping[str, Any], form: str) -> None:
    """Refuse JSON options on a form that lowered to something other than a JSON schema.

    Raises:
        FormError: ``options`` has any.
    """
    given = [k for k in options if k in _JSON_OPTIONS]
    if given:
        raise FormError(f"option {given[0]} applies to JSON schemas, not to this {form}", pointer="")
