"""Reasoning: a think block of free text before any constraint, captured as ``reasoning``.

``reasoning`` is a family name (the families of :mod:`core.tools.families` that have a think block:
``qwen3``, ``deepseek-v3``, ``deepseek-r1``, ``gemma4``, ``glm4``, ``kimi-k2``) or
``{"start", "end", "max_tokens"?}``. The program becomes: the block (the start marker, free text,
the end marker, then any line breaks or spaces), then the constraint. The block is required (a
model run without thinking is compiled without ``reasoning``: an optional block would make the
text before a constraint that allows free text ambiguous). A block whose ``start`` is empty was
opened by the generation prompt: its text starts at once. ``max_tokens`` bounds the text.
Markers the vocabulary has as special tokens are matched as those tokens.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import llguidance

from core.captures import CaptureLayout
from core.errors import GrammarError
from core.lark_text import lark_regex, lark_string
from core.tools.families import TOOL_FORMATS, Reasoning
from core.tools.parts import lark_pieces, special_tokens

__all__ = ["REASONING_FAMILIES", "ReasoningBlock", "reasoning_block", "split_reasoning", "with_reasoning"]

#: The families whose name ``reasoning`` takes, with their think block.
REASONING_FAMILIES: Mapping[str, Reasoning] = {
    name: fmt.reasoning for name, fmt in TOOL_FORMATS.items() if fmt.reasoning is not None
}

#: The capture the block's text is read from.
REASONING = "reasoning"

_MAX_MARKER = 256


@dataclass(frozen=True)
class ReasoningBlock:
    """A checked think block: its markers, and the most tokens its text may take (None: unbounded)."""

    markers: Reasoning
    max_tokens: int | None = None


def reasoning_block(value: str | Mapping[str, Any]) -> ReasoningBlock:
    """Check a ``reasoning`` value.

    Raises:
        GrammarError: an unknown family, or a malformed ``{start, end, max_tokens}``.
    """
    if isinstance(value, str):
        if value not in REASONING_FAMILIES:
            raise GrammarError(
                f"reasoning {value[:40]!r} is not a family with a think block; those are: "
                + ", ".join(REASONING_FAMILIES)
                + ' (or give {"start", "end", "max_tokens"})'
            )
        return ReasoningBlock(REASONING_FAMILIES[value])
    if not isinstance(value, Mapping):
        raise GrammarError('reasoning must be a family name or {"start", "end", "max_tokens"?}')
    unknown = set(value) - {"start", "end", "max_tokens", "family"}
    if unknown:
        raise GrammarError(f"unknown reasoning field(s): {', '.join(sorted(unknown))}")
    family = value.get("family")
    if family is not None:
        base = reasoning_block(family).markers if isinstance(family, str) else None
        if base is None:
            raise GrammarError("reasoning.family must be a string")
    else:
        start, end = value.get("start"), value.get("end")
        if not isinstance(start, str) or not isinstance(end, str) or not end:
            raise GrammarError("reasoning needs start (a string, may be empty) and end (a non-empty string)")
        if len(start) > _MAX_MARKER or len(end) > _MAX_MARKER:
            raise GrammarError(f"reasoning markers are at most {_MAX_MARKER} characters")
        base = Reasoning(start, end)
    max_tokens = value.get("max_tokens")
    if max_tokens is not None and (not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1):
        raise GrammarError("reasoning.max_tokens must be a positive integer")
    return ReasoningBlock(base, max_tokens)


def _markers(block: ReasoningBlock) -> tuple[str, ...]:
    return tuple(m for m in (block.markers.start, block.markers.end) if m)


def with_reasoning(
    grammar: str, layout: CaptureLayout, value: str | Mapping[str, Any], tokenizer: llguidance.LLTokenizer | None
) -> tuple[str, CaptureLayout]:
    """A compiled constraint (llguidance's grammar and its layout) with the think block before it;
    its text captured as ``reasoning``."""
    block = reasoning_block(value)
    specials = special_tokens(tokenizer) if tokenizer is not None else {}
    markers = _markers(block)
    m = block.markers
    text = grammar
    top = json.loads(text) if text.lstrip().startswith("{") else {"grammars": [{"lark_grammar": text}]}
    grammars = list(top["grammars"])
    inner = dict(grammars[0])
    inner.setdefault("name", "constraint")
    grammars[0] = inner
    options = ["capture"]
    if block.max_tokens is not None:
        options.append(f"max_tokens={block.max_tokens}")
    end_special = m.end in specials
    if not end_special:
        options.append(f"suffix={lark_string(m.end)}")
    body = f"reasoning[{', '.join(options)}]: {lark_regex('(?s:.*)')}"
    end = lark_pieces((m.end,), markers, specials) if end_special else ""
    opening = lark_pieces((m.start,), markers, specials) if m.start else ""
    lead = f"{lark_string(m.lead)}? " if m.lead else ""
    block_rule = f"think: {lead}{opening} reasoning {end} THINK_WS?"
    start = f"start: think @{inner['name']}"
    lark = "\n".join([start, block_rule, body, "THINK_WS: /[ \\n]+/"]) + "\n"
    top["grammars"] = [{"name": "reasoning_block", "lark_grammar": lark}, *grammars]
    layout = replace(layout, scope={**layout.scope, REASONING: ()})
    return json.dumps(top, ensure_ascii=False), layout


def split_reasoning(value: str | Mapping[str, Any], data: bytes) -> tuple[bytes | None, bool, bytes]:
    """Cut a text at its think block: ``(block text or None, block closed, the rest)``."""
    m = reasoning_block(value).markers
    start, end = m.start.encode(), m.end.encode()
    pos = 0
    if m.lead and data.startswith(m.lead.encode()):
        pos = len(m.lead.encode())
    if start:
        if not data.startswith(start, pos):
            if start.startswith(data[pos:]):
                return b"", False, b""  # it may still open
            return None, True, data
        pos += len(start)
    at = data.find(end, pos)
    if at < 0:
        return data[pos:], False, b""
    rest = at + len(end)
    while rest < len(data) and data[rest : rest + 1] in (b" ", b"\n"):
        rest += 1
    return data[pos:at], True, data[rest:]
