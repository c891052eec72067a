"""Compile bodies (``POST /compile``): one kind, from what a worker has, plus the optional fields.

The kinds are the server's: its own (``template``, ``json_schema``, ``regex``, ``grammar``,
``gbnf``, ``choice``, ``llguidance``) and other engines' request forms as their users write them
(``response_format``, OpenAI's; ``structured_outputs``, vLLM's; ``ebnf``, SGLang's). Python values
are accepted where they say the same thing (:mod:`guidance_client.pytypes`): a ``guidance``
grammar object as ``grammar``, a Pydantic model or other type as ``json_schema``, a ``Literal`` or
``Enum`` as ``choice``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from guidance_client.pytypes import choice_options, grammar_text, json_schema_of

__all__ = ["KINDS", "program_spec"]

KINDS = (
    "template",
    "json_schema",
    "regex",
    "grammar",
    "gbnf",
    "choice",
    "llguidance",
    "response_format",
    "structured_outputs",
    "ebnf",
)
"""The kinds of a compile body, as the server names them (exactly one per body)."""

_CONVERT = {"json_schema": json_schema_of, "grammar": grammar_text, "choice": choice_options}


def program_spec(
    template: str | None = None,
    *,
    variables: Mapping[str, Any] | None = None,
    options: Mapping[str, Any] | None = None,
    tokenizer: str | None = None,
    **kinds: Any,
) -> dict[str, Any]:
    """A compile body: exactly one kind (``template``, or one of :data:`KINDS` by keyword), plus the
    optional fields given.

    ``json_schema`` takes a schema or a Python type (a Pydantic model, ``TypeAdapter``, dataclass...),
    ``grammar`` Lark text or a ``guidance`` grammar object, ``choice`` a list, ``Literal`` or ``Enum``.

    Raises:
        TypeError: a keyword that is not a kind, or a value a kind cannot take.
        ValueError: not exactly one kind.
    """
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise TypeError(f"program_spec() got an unexpected keyword argument {unknown[0]!r}")
    given = {k: v for k, v in {"template": template, **kinds}.items() if v is not None}
    if len(given) != 1:
        raise ValueError(f"give exactly one of {', '.join(KINDS)}" + (f" (got {', '.join(given)})" if given else ""))
    ((kind, value),) = given.items()
    convert = _CONVERT.get(kind)
    spec: dict[str, Any] = {kind: convert(value) if convert is not None else value}
    if variables:
        spec["variables"] = dict(variables)
    if options:
        spec["options"] = dict(options)
    if tokenizer is not None:
        spec["tokenizer"] = tokenizer
    return spec
