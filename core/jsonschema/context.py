"""What every rewrite pass reads and writes: the document's references and analysis, the limits,
the ``format`` mode, and the notes of what was rewritten."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from core.jsonschema.analysis import Analysis
from core.jsonschema.formats import FormatMode
from core.jsonschema.refs import Path, References, json_pointer
from core.limits import Limits

__all__ = ["RewriteContext"]


@dataclass
class RewriteContext:
    """The state of one rewrite of one document, shared by the walk and every pass.

    Attributes:
        refs: the document's references (what may move: ``refs.movable(path, key)``).
        analysis: facts and complements of its subschemas, reading referenced schemas rewritten.
        limits: the bounds of the rewrites (``max_rewrite_*``).
        formats: what ``format`` does (see :mod:`core.jsonschema.formats`).
        formats_only: rewrite the formats and nothing else (the result grew past its bound).
        notes: one ``kind: #/pointer`` note per rewrite made.
        ignored: what was compiled as an annotation only (``format "path" at #/properties/p``).
        memo: rewritten nodes by location (a referenced location is rewritten once).
        active: locations being rewritten (a reference back to one of them is a cycle).
        passes: the passes each node goes through, in order (:mod:`core.jsonschema.walk`).
        live: the ids of the document's objects and lists some pass may act on, at or below them.
        unevaluated: the document has ``unevaluatedProperties`` somewhere: a pass may not add
            ``properties`` or ``patternProperties`` to a subschema, which an enclosing
            ``unevaluatedProperties`` would read as evaluating names the original left unevaluated.
    """

    refs: References
    analysis: Analysis
    limits: Limits
    formats: FormatMode
    formats_only: bool = False
    notes: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    memo: dict[Path, Any] = field(default_factory=dict)
    active: set[Path] = field(default_factory=set)
    passes: tuple[Callable[[RewriteContext, dict[str, Any], Path, int], Any], ...] = ()
    live: set[int] = field(default_factory=set)
    unevaluated: bool = True

    def note(self, kind: str, path: Path) -> None:
        """Record a rewrite of ``kind`` at ``path``."""
        self.notes.append(f"{kind}: {json_pointer(path)}")
