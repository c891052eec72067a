"""A parsed template with its compile-time variables resolved, and the slots it holds.

:class:`GuidanceTemplate` parses the text (:mod:`core.template.parser`), puts each compile-time
variable in its place (interpolations become literal text; ``options=``, ``schema=`` and
``lark=`` references become the values they name) and checks that capture names are unique in
their scope. :class:`GuidanceVariable` is one slot, as ``get_variable_sequence()`` lists them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from core.errors import LimitExceeded, TemplateError, excerpt
from core.hashing import content_hash
from core.limits import Limits
from core.template.lark import slot_pattern
from core.template.nodes import (
    SLOT_TYPES,
    GrammarNode,
    GuidanceTemplateType,
    InterpolationNode,
    JsonNode,
    Node,
    RepeatNode,
    SelectNode,
    TextNode,
)
from core.template.parser import ParsedNode, PendingGrammar, PendingJson, PendingSelect, parse

__all__ = ["GuidanceTemplate", "GuidanceVariable"]


@dataclass(frozen=True)
class GuidanceVariable:
    """One slot of a template: its kind, its capture name and where it is."""

    type: GuidanceTemplateType
    name: str | None
    line: int
    column: int
    node: Node = field(repr=False, compare=False)
    in_repeat: bool = False

    def to_pattern(self, limits: Limits | None = None) -> str:
        """The slot's constraint: a regex for ``gen`` and inline ``select``, a Lark fragment otherwise.

        Args:
            limits: the limits a ``json`` slot's schema and the slots inside a block are checked
                against; the defaults of :class:`~core.limits.Limits` when None (not the limits
                of the template the slot came from).

        Raises:
            TemplateError: a slot inside a block does not compile.
            LimitExceeded: a schema or a slot's source breaks ``limits``.
        """
        return slot_pattern(self.node, limits or Limits())


def _interpolated_text(value: Any, variable: str, line: int, column: int) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or value is None or isinstance(value, (int, float)):
        return json.dumps(value)
    raise TemplateError(f"variable '{excerpt(variable, 40)}' is not a string or number", line, column)


class GuidanceTemplate:
    """A parsed template with its compile-time variables resolved.

    Args:
        source: the template text.
        variables: compile-time values for interpolations and option references.
        limits: size and depth limits; defaults to :class:`~core.limits.Limits`.

    Raises:
        TemplateError: the template does not parse, or names a variable that is missing.
        LimitExceeded: the template is larger than ``limits.max_source_bytes``.
    """

    def __init__(self, source: str, variables: Mapping[str, Any] | None = None, limits: Limits | None = None) -> None:
        if not isinstance(source, str):
            raise TypeError("template source must be a str")
        self.limits = limits or Limits()
        if len(source.encode("utf-8")) > self.limits.max_source_bytes:
            # the same answer as every other kind's source over the limit: 413 limit-exceeded
            raise LimitExceeded(f"template is larger than {self.limits.max_source_bytes} bytes", "max_source_bytes")
        self.source = source
        self.variables: dict[str, Any] = dict(variables or {})
        self.nodes: list[Node] = self._resolve(parse(source, self.limits))
        self._check_names(self.nodes)

    # -- public surface
    @property
    def cache_key(self) -> str:
        """What this template is: a content hash of its text and its compile-time variables.

        It identifies the template before any tokenizer or compile option: the same text and
        variables (in the same order) give the same key on every machine and every run. A
        program's id (``ProgramSpec.cache_key``) adds the kind, the tokenizer and the compiler's
        version; both are hashed by :func:`core.hashing.content_hash`.
        """
        return content_hash([self.source, self.variables])

    def get_prefix_text(self) -> str:
        """The literal text before the first slot (interpolations included)."""
        out: list[str] = []
        for node in self.nodes:
            if isinstance(node, TextNode):
                out.append(node.text)
            else:
                break
        return "".join(out)

    def get_variable_sequence(self) -> list[GuidanceVariable]:
        """The slots in template order, depth first (slots inside blocks follow their block)."""
        out: list[GuidanceVariable] = []

        def walk(nodes: Sequence[Node], in_repeat: bool) -> None:
            for node in nodes:
                kind = SLOT_TYPES.get(type(node))
                if kind is None:
                    continue
                assert not isinstance(node, (TextNode, InterpolationNode))
                out.append(GuidanceVariable(kind, node.name, node.line, node.column, node, in_repeat))
                if isinstance(node, SelectNode) and node.branches:
                    for branch in node.branches:
                        walk(branch, in_repeat)
                elif isinstance(node, RepeatNode):
                    walk(node.body, True)

        walk(self.nodes, False)
        return out

    # -- resolution of variables
    def _lookup(self, variable: str, line: int, column: int) -> Any:
        if variable not in self.variables:
            raise TemplateError(f"unknown variable '{excerpt(variable, 40)}'", line, column)
        return self.variables[variable]

    def _resolve(self, nodes: Sequence[ParsedNode]) -> list[Node]:
        out: list[Node] = []
        for node in nodes:
            resolved: Node
            if isinstance(node, InterpolationNode):
                value = self._lookup(node.variable, node.line, node.column)
                resolved = TextNode(_interpolated_text(value, node.variable, node.line, node.column))
            elif isinstance(node, PendingSelect):
                value = self._lookup(node.variable, node.line, node.column)
                if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
                    raise TemplateError(
                        f"variable '{node.variable}' must be a non-empty list of strings for select",
                        node.line,
                        node.column,
                    )
                if len(value) > self.limits.max_choices:
                    raise TemplateError(
                        f"select has {len(value)} options, above the limit of {self.limits.max_choices}",
                        node.line,
                        node.column,
                    )
                resolved = SelectNode(node.name, list(value), None, node.line, node.column)
            elif isinstance(node, PendingJson):
                value = self._lookup(node.variable, node.line, node.column)
                if isinstance(value, str):
                    try:
                        value = json.loads(value)
                    except json.JSONDecodeError as e:
                        raise TemplateError(
                            f"variable '{node.variable}' is not valid JSON: {e.msg}", node.line, node.column
                        ) from None
                if not isinstance(value, (dict, bool)):
                    raise TemplateError(
                        f"variable '{node.variable}' must be a JSON schema object", node.line, node.column
                    )
                resolved = JsonNode(node.name, value, node.whitespace, node.line, node.column)
            elif isinstance(node, PendingGrammar):
                value = self._lookup(node.variable, node.line, node.column)
                if not isinstance(value, str) or not value.strip():
                    raise TemplateError(
                        f"variable '{node.variable}' must be a Lark grammar string", node.line, node.column
                    )
                resolved = GrammarNode(node.name, value, node.line, node.column)
            elif isinstance(node, SelectNode) and node.branches is not None:
                resolved = SelectNode(
                    node.name, None, [self._resolve(b) for b in node.branches], node.line, node.column
                )
            elif isinstance(node, RepeatNode):
                resolved = RepeatNode(
                    node.name, node.min, node.max, node.sep, self._resolve(node.body), node.line, node.column
                )
            else:
                resolved = node
            # merge adjacent text so literal runs are one piece
            if isinstance(resolved, TextNode) and out and isinstance(out[-1], TextNode):
                out[-1] = TextNode(out[-1].text + resolved.text)
            elif not (isinstance(resolved, TextNode) and resolved.text == ""):
                out.append(resolved)
        return out

    # -- capture names: unique within a scope (select branches are alternatives)
    def _check_names(self, nodes: Sequence[Node]) -> None:
        def names(seq: Sequence[Node]) -> dict[str, tuple[int, int]]:
            seen: dict[str, tuple[int, int]] = {}
            for node in seq:
                if isinstance(node, (TextNode, InterpolationNode)):
                    continue
                mine: dict[str, tuple[int, int]] = {}
                if node.name is not None:
                    mine[node.name] = (node.line, node.column)
                if isinstance(node, SelectNode) and node.branches is not None:
                    for branch in node.branches:
                        for k, v in names(branch).items():
                            if k in mine and k == node.name:
                                raise TemplateError(f"duplicate capture name '{excerpt(k, 40)}'", *v)
                            mine.setdefault(k, v)
                elif isinstance(node, RepeatNode):
                    for k, v in names(node.body).items():
                        if k in mine:
                            raise TemplateError(f"duplicate capture name '{excerpt(k, 40)}'", *v)
                        mine[k] = v
                for k, v in mine.items():
                    if k in seen:
                        raise TemplateError(f"duplicate capture name '{excerpt(k, 40)}'", *v)
                    seen[k] = v
            return seen

        names(nodes)
