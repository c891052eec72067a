"""The template's tree: one node type per tag, and the slot kinds they stand for.

The parser (:mod:`core.template.parser`) builds these nodes; :class:`~core.template.template.
GuidanceTemplate` resolves compile-time variables into them; :mod:`core.template.lark` writes them
as llguidance Lark; :mod:`core.partial` walks them over a session's text.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

__all__ = [
    "GenNode",
    "GrammarNode",
    "GuidanceTemplateType",
    "InterpolationNode",
    "JsonNode",
    "Node",
    "RepeatNode",
    "SLOT_TYPES",
    "SelectNode",
    "TextNode",
]


class GuidanceTemplateType(enum.Enum):
    """The kinds of slot a template can hold."""

    GEN = "gen"
    SELECT = "select"
    JSON = "json"
    GRAMMAR = "grammar"
    REPEAT = "repeat"


@dataclass
class TextNode:
    """Literal text, produced exactly."""

    text: str


@dataclass
class InterpolationNode:
    """``{{varname}}``: replaced by the variable's value, as literal text, when variables resolve."""

    variable: str
    line: int
    column: int


@dataclass
class GenNode:
    """``{{gen}}``: generated text, matching ``regex`` (any text without one)."""

    name: str | None
    regex: str | None
    stop: list[str] | None
    max_tokens: int | None
    line: int
    column: int

    def ending(self, follow: str | None) -> tuple[tuple[str, ...], str | None]:
        """What ends this slot, given the literal text ``follow`` right after it (None if none).

        The rule of the language: with ``stop=``, the slot ends at a stop string, which is
        produced but not captured; when ``follow`` starts with the only stop string, that text is
        the stop and is produced once. Without ``stop=``, non-empty following text ends the slot
        at its first occurrence and is the stop.

        Returns:
            ``(stops, rest)``: the strings that end the slot, and what remains of ``follow`` to be
            produced after the stop (None when there was no following text).
        """
        if self.stop is not None:
            if len(self.stop) == 1 and follow is not None and follow.startswith(self.stop[0]):
                return (self.stop[0],), follow[len(self.stop[0]) :]
            return tuple(self.stop), follow
        if follow:
            return (follow,), ""
        return (), follow


@dataclass
class SelectNode:
    """``{{select options=[...]}}`` (``options`` set) or the ``{{#select}}`` block (``branches`` set)."""

    name: str | None
    options: list[str] | None
    branches: list[list[Node]] | None
    line: int
    column: int


@dataclass
class JsonNode:
    """``{{json}}``: a JSON value valid for ``schema``, compact unless ``whitespace`` allows some."""

    name: str | None
    schema: dict[str, Any] | bool
    whitespace: int | None
    line: int
    column: int


@dataclass
class GrammarNode:
    """``{{grammar}}``: text from a Lark grammar in llguidance's dialect."""

    name: str | None
    lark: str
    line: int
    column: int


@dataclass
class RepeatNode:
    """``{{#repeat}}``: the body ``min`` to ``max`` times, items separated by ``sep``."""

    name: str | None
    min: int
    max: int | None
    sep: str
    body: list[Node]
    line: int
    column: int


Node = TextNode | InterpolationNode | GenNode | SelectNode | JsonNode | GrammarNode | RepeatNode

#: The slot kind of each node type that is a slot (text and interpolations are not).
SLOT_TYPES: dict[type, GuidanceTemplateType] = {
    GenNode: GuidanceTemplateType.GEN,
    SelectNode: GuidanceTemplateType.SELECT,
    JsonNode: GuidanceTemplateType.JSON,
    GrammarNode: GuidanceTemplateType.GRAMMAR,
    RepeatNode: GuidanceTemplateType.REPEAT,
}
