"""Compile bodies (``POST /compile``): one kind, from what a worker has, plus the optional fields.

The kinds are the server's, one entry each in :data:`KINDS` (the body's field, and the fields only
it takes): its own (``template``, ``json_schema``, ``regex``, ``grammar``, ``gbnf``, ``choice``,
``llguidance``, ``structural_tag``, ``tools`` with ``tool_choice``, ``parallel_tool_calls`` and
``tool_format``) and other engines' request forms as their users write them (``response_format``,
OpenAI's; ``structured_outputs``, vLLM's; ``ebnf``, SGLang's). Any body may also take
``reasoning`` (a think block before the constraint), ``variables``, ``options`` and ``tokenizer``.
Python values are accepted where they say the same thing (:mod:`guidance_client.pytypes`): a
``guidance`` grammar object as ``grammar``, a Pydantic model or other type as ``json_schema``, a
``Literal`` or ``Enum`` as ``choice``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from guidance_client.pytypes import choice_options, grammar_text, json_schema_of

__all__ = ["KINDS", "program_spec"]

KINDS: Mapping[str, tuple[str, ...]] = {
    "template": (),
    "json_schema": (),
    "regex": (),
    "grammar": (),
    "gbnf": (),
    "choice": (),
    "llguidance": (),
    "response_format": (),
    "structured_outputs": (),
    "ebnf": (),
    "structural_tag": (),
    "tools": ("tool_choice", "parallel_tool_calls", "tool_format"),
}
"""Each kind's field in a compile body, as the server names them (exactly one per body), with the
fields only that kind takes: the server's registry of kinds (``core.kinds.KINDS``) as this package,
which does not depend on the server, knows it; the server's tests hold the two equal."""

# A kind's own field -> its kind.
_OWNERS = {name: kind for kind, own in KINDS.items() for name in own}


def _tools(tools: Any) -> list[dict[str, Any]]:
    return [dict(t) for t in tools]


_CONVERT: Mapping[str, Callable[[Any], Any]] = {
    "json_schema": json_schema_of,
    "grammar": grammar_text,
    "choice": choice_options,
    "tools": _tools,
}


def program_spec(
    template: str | None = None,
    *,
    reasoning: str | Mapping[str, Any] | None = None,
    variables: Mapping[str, Any] | None = None,
    options: Mapping[str, Any] | None = None,
    tokenizer: str | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """A compile body: exactly one kind (``template``, or one of :data:`KINDS` by keyword) with the
    fields only it takes (``tools=``, ``tool_format=``, ``tool_choice=``, ``parallel_tool_calls=``),
    plus the optional fields given.

    ``json_schema`` takes a schema or a Python type (a Pydantic model, ``TypeAdapter``, dataclass...),
    ``grammar`` Lark text or a ``guidance`` grammar object, ``choice`` a list, ``Literal`` or ``Enum``.

    Raises:
        TypeError: a keyword that is neither a kind nor a kind's field, or a value a kind cannot take.
        ValueError: not exactly one kind, or a kind's own field without its kind.
    """
    unknown = [k for k in fields if k not in KINDS and k not in _OWNERS]
    if unknown:
        raise TypeError(f"program_spec() got an unexpected keyword argument {unknown[0]!r}")
    kinds = {"template": template, **{k: v for k, v in fields.items() if k in KINDS}}
    given = {k: v for k, v in kinds.items() if v is not None}
    if len(given) != 1:
        raise ValueError(f"give exactly one of {', '.join(KINDS)}" + (f" (got {', '.join(given)})" if given else ""))
    ((kind, value),) = given.items()
    convert = _CONVERT.get(kind)
    spec: dict[str, Any] = {kind: convert(value) if convert is not None else value}
    for name, field in fields.items():
        if name not in _OWNERS or field is None:
            continue
        if _OWNERS[name] != kind:
            raise ValueError(f"{name} applies to {_OWNERS[name]} only")
        spec[name] = field
    if reasoning is not None:
        spec["reasoning"] = reasoning
    if variables:
        spec["variables"] = dict(variables)
    if options:
        spec["options"] = dict(options)
    if tokenizer is not None:
        spec["tokenizer"] = tokenizer
    return spec
