"""A program's variables: how its captures and text are read, per kind.

Templates and grammars read llguidance's capture records (:mod:`core.captures`; partial values by
:mod:`core.partial`). A ``tools`` program reads its text with its family's reader
(:class:`~core.tools.ToolReader`): ``content`` and ``tool_calls``. A think block
(:mod:`core.reasoning`) is read off the front of the text first, as ``reasoning``, and the rest is
read as the constraint's own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from core.captures import CaptureLayout, utf8_prefix
from core.limits import Limits
from core.partial import partial_values
from core.reasoning import REASONING, split_reasoning
from core.spec import ProgramSpec
from core.template import GuidanceTemplate, Node
from core.tools import ToolReader, tool_request

__all__ = ["VariableReader"]


class VariableReader:
    """Reads the variables of one program's sessions (built once per program, on first use).

    Args:
        spec: what the program was compiled from.
        layout: the program's capture layout.
        limits: the limits (a template is parsed again under them).
    """

    def __init__(self, spec: ProgramSpec, layout: CaptureLayout, limits: Limits) -> None:
        self.spec = spec
        self.layout = layout
        self.nodes: list[Node] | None = None
        self.tools: ToolReader | None = None
        if spec.kind == "template":
            self.nodes = GuidanceTemplate(spec.source, spec.variables, limits).nodes
        elif spec.kind == "tools":
            self.tools = ToolReader(tool_request(spec.source, spec.options, limits))

    @property
    def needs_text(self) -> bool:
        """Whether :meth:`values` reads the text (else the capture records are enough)."""
        return self.tools is not None

    def _split(self, data: bytes) -> tuple[dict[str, Any], bytes]:
        """The think block's partial entry (if the program has one) and the text after it."""
        if self.spec.reasoning is None:
            return {}, data
        text, closed, rest = split_reasoning(self.spec.reasoning, data)
        if text is None:
            return {}, rest
        return {REASONING: {"value": utf8_prefix(text), "complete": closed}}, rest

    def values(self, records: Sequence[tuple[str, bytes]], data: bytes) -> dict[str, Any]:
        """The complete values (``data``: the text so far, read only when :attr:`needs_text`)."""
        out = self.layout.values(records)
        if self.tools is not None:
            _, rest = self._split(data)
            out.update(self.tools.values(utf8_prefix(rest)))
        return out

    def partial(
        self,
        records: Sequence[tuple[str, bytes]],
        data: bytes,
        *,
        parse_json: bool,
        complete: Mapping[str, Any],
        terminated: bool,
    ) -> dict[str, dict[str, Any]]:
        """Every value so far (see :mod:`core.partial` for the shape)."""
        think, rest = self._split(data)
        if terminated and REASONING in think:
            think[REASONING]["complete"] = True
        if self.tools is not None:
            out = self.tools.partial(utf8_prefix(rest), terminated)
            out.update(think)
            return out
        own = {k: v for k, v in complete.items() if k != REASONING}
        recs = [r for r in records if r[0] != REASONING]
        out = partial_values(
            self.nodes, self.layout, rest, recs, parse_json=parse_json, complete=own, terminated=terminated
        )
        out.update(think)
        return out
