"""What a program is compiled from: the spec, its kinds, and its content-hash id.

A :class:`ProgramSpec` is the whole input of a compile (kind, source, compile-time variables,
options). Its :meth:`~ProgramSpec.cache_key` with a vocabulary's digest is the program id:
equal on every replica for the same input, so any replica can compile a program it has not seen.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from core.hashing import content_hash

__all__ = ["PROGRAM_KINDS", "ProgramKind", "ProgramSpec", "spec_from_kwargs"]

# The kinds' names; each kind's entry (compile function, field, options, file suffixes) is in core.kinds.
ProgramKind = Literal[
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
    "structural_tag",
    "tools",
]
PROGRAM_KINDS: tuple[ProgramKind, ...] = get_args(ProgramKind)

# Bumped whenever compilation changes meaning, so stale ids never alias new programs.
_COMPILER_VERSION = 3


@dataclass(frozen=True)
class ProgramSpec:
    """What a program is compiled from: everything that determines its masks.

    Attributes:
        kind: one of :data:`PROGRAM_KINDS` (see :mod:`core.kinds`): the server's own
            (``template``, ``json_schema``, ``regex``, ``grammar`` (Lark), ``gbnf``, ``choice``,
            ``llguidance``, ``structural_tag``, ``tools``) and other engines' request forms
            (``response_format``, ``structured_outputs``, ``ebnf``; :mod:`core.forms`).
        source: the template text, schema (object or JSON text), regex, Lark or GBNF text, list of
            choices, llguidance grammar object, structural tag (object or JSON text), list of
            tools, or the form's object.
        variables: compile-time variables (templates only).
        options: the kind's options as the request gives them (the kind's entry has their typed
            model, :mod:`core.options`): ``whitespace`` and ``formats`` for JSON schemas (and the
            forms that lower to one); ``tool_format``, ``tool_choice``, ``parallel_tool_calls`` for
            tools. Kept as given: the program id hashes them.
        reasoning: a think block before the constraint: a family name, or ``{"start", "end",
            "max_tokens"?}`` (see :mod:`core.reasoning`); None: none.
    """

    kind: ProgramKind
    source: Any
    variables: Mapping[str, Any] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)
    reasoning: str | Mapping[str, Any] | None = None

    def cache_key(self, tokenizer_digest: str) -> str:
        """A content hash: equal on every machine for the same spec and vocabulary."""
        # Key order is kept (core.hashing): schemas differing only in order are different programs.
        parts = [_COMPILER_VERSION, self.kind, self.source, dict(self.variables), dict(self.options), tokenizer_digest]
        if self.reasoning is not None:  # absent from the key when unused
            parts.append({"reasoning": self.reasoning})
        return content_hash(parts)


def spec_from_kwargs(
    kind: ProgramKind,
    source: Any,
    variables: Mapping[str, Any] | None,
    options: Mapping[str, Any] | None,
    reasoning: str | Mapping[str, Any] | None = None,
) -> ProgramSpec:
    """Build a :class:`ProgramSpec`, normalising a few shapes (a sequence source as a list, options dict)."""
    if kind not in PROGRAM_KINDS:
        raise ValueError(f"unknown program kind {kind!r}")
    if isinstance(source, Sequence) and not isinstance(source, (str, bytes, list)):
        source = list(source)
    return ProgramSpec(kind, source, dict(variables or {}), dict(options or {}), reasoning)
