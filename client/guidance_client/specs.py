"""Compile bodies: what ``POST /compile`` takes, built and checked on the worker's side.

One entry per kind of constraint in :data:`KINDS`: the body's field, and the fields that belong to
it (``tools`` takes ``tool_choice``, ``parallel_tool_calls`` and ``tool_format``). Any body may
also take ``reasoning`` (a think block before the constraint), ``variables``, ``options`` and
``tokenizer``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["KINDS", "program_spec"]

#: Each kind's field in a compile body, with the fields only it takes.
KINDS: Mapping[str, tuple[str, ...]] = {
    "template": (),
    "json_schema": (),
    "regex": (),
    "grammar": (),
    "choice": (),
    "structural_tag": (),
    "tools": ("tool_choice", "parallel_tool_calls", "tool_format"),
}


def program_spec(
    template: str | None = None,
    *,
    json_schema: Mapping[str, Any] | bool | str | None = None,
    regex: str | None = None,
    grammar: str | None = None,
    choice: Sequence[str] | None = None,
    structural_tag: Mapping[str, Any] | str | None = None,
    tools: Sequence[Mapping[str, Any]] | None = None,
    tool_choice: str | Mapping[str, Any] | None = None,
    parallel_tool_calls: bool | None = None,
    tool_format: str | None = None,
    reasoning: str | Mapping[str, Any] | None = None,
    variables: Mapping[str, Any] | None = None,
    options: Mapping[str, Any] | None = None,
    tokenizer: str | None = None,
) -> dict[str, Any]:
    """A compile body: exactly one kind, plus the optional fields given.

    Raises:
        ValueError: no kind or several, or a kind's own field without its kind.
    """
    values: dict[str, Any] = {
        "template": template,
        "json_schema": json_schema,
        "regex": regex,
        "grammar": grammar,
        "choice": list(choice) if choice is not None else None,
        "structural_tag": structural_tag,
        "tools": [dict(t) for t in tools] if tools is not None else None,
    }
    given = {k: v for k, v in values.items() if v is not None}
    if len(given) != 1:
        raise ValueError("give exactly one of " + ", ".join(KINDS))
    (kind,) = given
    spec: dict[str, Any] = dict(given)
    extra = {"tool_choice": tool_choice, "parallel_tool_calls": parallel_tool_calls, "tool_format": tool_format}
    for name, value in extra.items():
        if value is None:
            continue
        if name not in KINDS[kind]:
            raise ValueError(f"{name} applies to {', '.join(k for k, own in KINDS.items() if name in own)} only")
        spec[name] = value
    if reasoning is not None:
        spec["reasoning"] = reasoning
    if variables:
        spec["variables"] = dict(variables)
    if options:
        spec["options"] = dict(options)
    if tokenizer is not None:
        spec["tokenizer"] = tokenizer
    return spec
