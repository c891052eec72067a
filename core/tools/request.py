"""A ``tools`` request as OpenAI's API writes it, checked: the functions, the choice, parallel calls.

``tools`` is a list of ``{"type": "function", "function": {"name", "description"?, "parameters"?,
"strict"?}}`` (a bare ``{"name", "parameters"}`` is taken too). ``tool_choice`` is ``"none"``,
``"auto"`` (the default), ``"required"`` or ``{"type": "function", "function": {"name": ...}}``.
``parallel_tool_calls`` (default true) allows several calls in one turn. Anything else is a
:class:`~core.errors.GrammarError` (400) that says what is wrong.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from core.errors import GrammarError, LimitExceeded
from core.limits import Limits
from core.options import KindOptions, option
from core.tools.families import TOOL_FORMATS, ToolFormat

__all__ = ["Tool", "ToolRequest", "ToolsOptions", "tool_request"]

# OpenAI's rule for function names; it also keeps names safe inside every format's markers.
_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")

Choice = Literal["none", "auto", "required", "named"]


@dataclass(frozen=True, kw_only=True)
class ToolsOptions(KindOptions):
    """The options of a ``tools`` program (also fields of the compile body beside ``tools``)."""

    tool_choice: str | dict[str, Any] = field(
        default="auto",
        metadata=option(
            '`"none"`, `"auto"` (default), `"required"`, or `{"type": "function", "function": {"name": ...}}`.'
        ),
    )
    parallel_tool_calls: bool = field(
        default=True, metadata=option("several calls in one turn (default true, where the family has them).")
    )
    tool_format: str = field(
        metadata=option(
            "the model family (required), one of " + ", ".join(TOOL_FORMATS) + ".",
            missing=f"tools need a tool_format, one of: {', '.join(TOOL_FORMATS)}",
        )
    )

    def __post_init__(self) -> None:
        family: object = self.tool_format
        if not isinstance(family, str) or family not in TOOL_FORMATS:
            raise GrammarError(f"unknown tool_format {str(family)[:40]!r}; the families are: {', '.join(TOOL_FORMATS)}")
        if not isinstance(self.parallel_tool_calls, bool):
            raise GrammarError("parallel_tool_calls must be true or false")
        raw: object = self.tool_choice
        if isinstance(raw, Mapping):
            valid = isinstance(raw.get("function"), Mapping) and raw.get("type", "function") == "function"
        else:
            valid = raw in ("none", "auto", "required")
        if not valid:
            raise GrammarError(
                'tool_choice must be "none", "auto", "required" or {"type": "function", "function": {"name": ...}}'
            )


@dataclass(frozen=True)
class Tool:
    """One function: its name and the JSON schema of its arguments (an object)."""

    name: str
    parameters: Mapping[str, Any]


@dataclass(frozen=True)
class ToolRequest:
    """A checked ``tools`` request.

    Attributes:
        tools: the functions a call may name (only the named one with a named choice).
        choice: ``none``: never call; ``auto``: text or calls; ``required``: at least one call;
            ``named``: exactly one call of ``tools[0]``.
        parallel: several calls in one turn (when the family writes them).
        format: the family's format.
    """

    tools: tuple[Tool, ...]
    choice: Choice
    parallel: bool
    format: ToolFormat

    @property
    def many(self) -> bool:
        """Whether a turn may hold more than one call."""
        return self.parallel and self.format.parallel

    def tool(self, name: str) -> Tool | None:
        """The function by that name."""
        for t in self.tools:
            if t.name == name:
                return t
        return None


def _function(entry: Any, index: int) -> Tool:
    where = f"tools[{index}]"
    if not isinstance(entry, Mapping):
        raise GrammarError(f"{where} must be an object")
    if "function" in entry or "type" in entry:
        if entry.get("type", "function") != "function":
            got = str(entry.get("type"))[:40]
            raise GrammarError(f'{where}: only tools of type "function" are supported (got {got!r})')
        entry = entry.get("function")
        where += ".function"
        if not isinstance(entry, Mapping):
            raise GrammarError(f"{where} must be an object")
    name = entry.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise GrammarError(f"{where}.name must be 1 to 64 letters, digits, '_', '.' or '-'")
    parameters = entry.get("parameters", {"type": "object", "properties": {}})
    if parameters is None:
        parameters = {"type": "object", "properties": {}}
    if not isinstance(parameters, Mapping):
        raise GrammarError(f"{where}.parameters must be a JSON schema object")
    if parameters.get("type", "object") != "object":
        raise GrammarError(f'{where}.parameters must describe an object ("type": "object")')
    return Tool(name, parameters)


def tool_request(tools: Any, options: Mapping[str, Any], limits: Limits) -> ToolRequest:
    """Check a ``tools`` list and its options (``tool_choice``, ``parallel_tool_calls``, ``tool_format``).

    Raises:
        GrammarError: a malformed tool, a duplicate name, an unknown family or choice.
        LimitExceeded: more tools than ``limits.max_choices``.
    """
    checked = ToolsOptions.parse(options, "tools")
    fmt = TOOL_FORMATS[checked.tool_format]
    if not isinstance(tools, Sequence) or isinstance(tools, (str, bytes)):
        raise GrammarError("tools must be a list of functions")
    if len(tools) > limits.max_choices:
        raise LimitExceeded(f"{len(tools)} tools, above the limit of {limits.max_choices}", "max_choices")
    parsed = [_function(entry, i) for i, entry in enumerate(tools)]
    seen: set[str] = set()
    for t in parsed:
        if t.name in seen:
            raise GrammarError(f"two tools are named {t.name!r}")
        seen.add(t.name)
    raw = checked.tool_choice
    choice: Choice
    if isinstance(raw, str):
        choice = cast(Choice, raw)  # one of the three (ToolsOptions)
    else:
        name = raw["function"].get("name")
        named = [t for t in parsed if t.name == name]
        if not named:
            raise GrammarError(f"tool_choice names {str(name)[:64]!r}, which is not among the tools")
        parsed, choice = named, "named"
    if not parsed and choice != "none":
        raise GrammarError('tools is empty: give at least one function, or tool_choice "none"')
    return ToolRequest(tuple(parsed), choice, checked.parallel_tool_calls, fmt)
