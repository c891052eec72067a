"""Python values as constraints, and generated text back as Python values.

What a worker already has, turned into a compile body's parts without any dependency of this
package: a ``guidance`` grammar object (serialised here, on the worker, with its ``ll_grammar()``),
a Pydantic model, ``TypeAdapter`` or dataclass (their JSON schema, through Pydantic when it is
installed), ``Literal[...]`` and ``Enum`` types (their values, as a choice). And the reverse for
JSON: :func:`parse_as` validates a grammar's text with the same type.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import typing
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["choice_options", "grammar_text", "json_schema_of", "parse_as"]


def grammar_text(grammar: Any) -> str:
    """Lark text: ``grammar`` itself, or a ``guidance`` grammar object serialised by its ``ll_grammar()``.

    Raises:
        TypeError: neither a string nor an object with ``ll_grammar()``.
    """
    if isinstance(grammar, str):
        return grammar
    serialise = getattr(grammar, "ll_grammar", None)
    if callable(serialise):
        text = serialise()
        if isinstance(text, str):
            return text
    raise TypeError(f"grammar must be Lark text or a guidance grammar object, not {type(grammar).__name__}")


def _pydantic_adapter(target: Any) -> Any:
    try:
        from pydantic import TypeAdapter
    except ImportError:  # pragma: no cover - pydantic is there wherever these types are
        raise TypeError(f"{target!r} needs pydantic installed to be turned into a JSON schema") from None
    return TypeAdapter(target)


def _is_type_like(value: Any) -> bool:
    return isinstance(value, type) or typing.get_origin(value) is not None


def json_schema_of(value: Any) -> Mapping[str, Any] | bool | str:
    """A JSON schema: ``value`` itself (an object, a boolean or JSON text), or the schema of a Python
    type: a Pydantic model (``model_json_schema()``), a ``TypeAdapter`` (``json_schema()``), a
    dataclass, ``Literal``/``Enum`` or any other type Pydantic can describe."""
    if isinstance(value, (Mapping, bool, str)):
        return value
    schema_of = getattr(value, "model_json_schema", None)
    if isinstance(value, type) and callable(schema_of):
        return dict(schema_of())
    if hasattr(value, "json_schema") and hasattr(value, "validate_json"):  # a TypeAdapter
        return dict(value.json_schema())
    if dataclasses.is_dataclass(value) or _is_type_like(value):
        return dict(_pydantic_adapter(value).json_schema())
    raise TypeError(f"json_schema must be a schema or a Python type, not {type(value).__name__}")


def choice_options(value: Any) -> list[str]:
    """The strings of a choice: a list of them, a ``Literal[...]`` of strings, or an ``Enum`` type
    (its members' values when they are strings, else their names)."""
    if isinstance(value, type) and issubclass(value, enum.Enum):
        return [m.value if isinstance(m.value, str) else m.name for m in value]
    if typing.get_origin(value) is typing.Literal:
        options = typing.get_args(value)
        if not all(isinstance(o, str) for o in options):
            raise TypeError("a Literal choice takes strings only")
        return list(options)
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise TypeError(f"choice must be a list of strings, a Literal or an Enum, not {type(value).__name__}")
    return list(value)


def parse_as(text: str, target: Any = None) -> Any:
    """``text`` (generated JSON) as ``target``: a Pydantic model (validated), a ``TypeAdapter``, a
    dataclass or another type Pydantic can validate; with no target, the parsed JSON value.

    Raises:
        ValueError: the text is not JSON, or not valid for ``target`` (Pydantic's ``ValidationError``
            is a ``ValueError``).
    """
    if target is None:
        return json.loads(text)
    validate = getattr(target, "model_validate_json", None)
    if isinstance(target, type) and callable(validate):
        return validate(text)
    if hasattr(target, "validate_json") and hasattr(target, "json_schema"):  # a TypeAdapter
        return target.validate_json(text)
    return _pydantic_adapter(target).validate_json(text)
