"""The pieces a tool-call format is written in: literal text, marker tokens and small regexes.

A format (:mod:`core.tools.families`) spells each part of a call as a sequence of pieces. The
grammar writer turns them into Lark (:func:`lark_pieces`), the reader into a Python regex
(:func:`python_pattern`): both read the one spelling. A marker (``<tool_call>``, ``[TOOL_CALLS]``)
is matched as the vocabulary's special token when it has one by that name, else as text.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import llguidance

from core.lark_text import lark_regex, lark_string

__all__ = ["Opt", "Piece", "Rx", "lark_pieces", "python_pattern", "special_tokens", "text_of"]


@dataclass(frozen=True)
class Rx:
    """A regex piece, never empty (the same syntax in Rust's ``regex`` and Python's ``re`` for what formats use)."""

    pattern: str


@dataclass(frozen=True)
class Opt:
    """Pieces that may be left out."""

    pieces: tuple[Piece, ...]


#: A piece: literal text (markers inside it are found by name), a regex, or optional pieces.
Piece = str | Rx | Opt


@functools.lru_cache(maxsize=16)
def special_tokens(tokenizer: llguidance.LLTokenizer) -> Mapping[str, int]:
    """The vocabulary's special tokens by their text (computed once per tokenizer)."""
    found: dict[str, int] = {}
    for token_id in range(tokenizer.vocab_size):
        if tokenizer.is_special_token(token_id):
            name = tokenizer.decode_bytes([token_id]).decode("utf-8", errors="replace")
            found.setdefault(name, token_id)
    return found


def _split(text: str, markers: Sequence[str]) -> list[tuple[str, bool]]:
    """``text`` cut around the markers it contains: ``(part, is_marker)``, in order."""
    if not markers or not text:
        return [(text, False)] if text else []
    pattern = "|".join(re.escape(m) for m in sorted(markers, key=len, reverse=True))
    out: list[tuple[str, bool]] = []
    pos = 0
    for m in re.finditer(pattern, text):
        if m.start() > pos:
            out.append((text[pos : m.start()], False))
        out.append((m.group(), True))
        pos = m.end()
    if pos < len(text):
        out.append((text[pos:], False))
    return out


def lark_pieces(pieces: Sequence[Piece], markers: Sequence[str], specials: Mapping[str, int]) -> str:
    """Lark for a sequence of pieces; markers the vocabulary has as special tokens become ``<[id]>``."""
    out: list[str] = []
    for piece in pieces:
        if isinstance(piece, Rx):
            out.append(lark_regex(piece.pattern))
            continue
        if isinstance(piece, Opt):
            out.append(f"({lark_pieces(piece.pieces, markers, specials)})?")
            continue
        for part, is_marker in _split(piece, markers):
            if is_marker and part in specials:
                out.append(f"<[{specials[part]}]>")
            else:
                out.append(lark_string(part))
    return " ".join(out)


def python_pattern(pieces: Sequence[Piece]) -> str:
    """A Python regex for a sequence of pieces (markers read as their text, as decoded)."""
    out: list[str] = []
    for p in pieces:
        if isinstance(p, Rx):
            out.append(f"(?:{p.pattern})")
        elif isinstance(p, Opt):
            out.append(f"(?:{python_pattern(p.pieces)})?")
        else:
            out.append(re.escape(p))
    return "".join(out)


def text_of(pieces: Sequence[Piece]) -> str:
    """The literal text of pieces that hold no regex (a marker's or a separator's spelling)."""
    if not all(isinstance(p, str) for p in pieces):
        raise ValueError("pieces hold a regex")
    return "".join(p for p in pieces if isinstance(p, str))
