"""A ``tools`` request as one Lark grammar, in its family's format.

The grammar follows the request's choice: ``none`` is text without calls, ``required`` and a
named choice are calls only, ``auto`` is text, calls, or text then calls (``exclusive`` families:
text or a call). Text before the calls ends at the format's trigger: a special token it cannot
hold, or, where the trigger is text, a lazy lexeme that stops at its first occurrence (llguidance's
lazy lexemes, as its structural tags use them). Text alone never holds the trigger, so a turn
without calls never looks like one.
"""

from __future__ import annotations

from collections.abc import Mapping

import llguidance

from core.lark_text import lark_regex
from core.limits import Limits
from core.tools.arguments import ArgumentWriter
from core.tools.parts import Piece, lark_pieces, python_pattern, special_tokens
from core.tools.request import ToolRequest

__all__ = ["tools_lark"]

_ANY = "(?s:.*)"


class _Rules:
    """The grammar's rules, named in order; a rule whose body, kind and laziness repeat an earlier
    one's is that rule (identical sub-grammars, across tools too, are written and compiled once).
    A ``""`` body is never shared: it reserves a name whose body is set later (``replace``)."""

    def __init__(self) -> None:
        self.rules: dict[str, tuple[str, bool]] = {}
        self._known: dict[tuple[bool, str, bool], str] = {}

    def __call__(self, prefix: str, body: str, *, lazy: bool = False, replace: bool = False) -> str:
        if replace:
            self.rules[prefix] = (body, self.rules[prefix][1])
            return prefix
        key = (prefix.isupper(), body, lazy)
        known = self._known.get(key)
        if known is not None:
            return known
        name = f"{prefix}_{len(self.rules)}"
        name = name.upper() if prefix.isupper() else name.lower()
        self.rules[name] = (body, lazy)
        if body != '""':
            self._known[key] = name
        return name

    def text(self, start: str) -> str:
        lines = [f"start: {start}"]
        lines += [f"{name}{'[lazy]' if lazy else ''}: {body}" for name, (body, lazy) in self.rules.items()]
        return "\n".join(lines) + "\n"


def _without_trigger(pieces: tuple[Piece, ...], trigger: str) -> tuple[Piece, ...]:
    first = pieces[0]
    assert isinstance(first, str) and first.startswith(trigger)
    rest = first[len(trigger) :]
    return ((rest,) if rest else ()) + pieces[1:]


def tools_lark(request: ToolRequest, tokenizer: llguidance.LLTokenizer | None, limits: Limits) -> str:
    """The Lark grammar of a ``tools`` request for a vocabulary (its special tokens decide how
    markers are matched).

    Raises:
        SchemaError: a tool's parameters do not compile (names the tool).
        LimitExceeded: a schema breaks a limit.
    """
    fmt = request.format
    specials: Mapping[str, int] = special_tokens(tokenizer) if tokenizer is not None else {}
    rules = _Rules()

    def lark(*pieces: Piece) -> str:
        return lark_pieces(pieces, fmt.specials, specials) or '""'

    trigger = fmt.trigger
    special_trigger = trigger in fmt.specials and trigger in specials
    if special_trigger:
        free = lark_regex(_ANY)
    elif fmt.content == "exclusive":
        free = f"{lark_regex(_ANY)} & ~{lark_regex(python_pattern((trigger,)) + _ANY)}"
    else:
        free = f"{lark_regex(_ANY)} & ~{lark_regex(_ANY + python_pattern((trigger,)) + _ANY)}"
    text = rules("TEXT", free)
    if request.choice == "none":
        return rules.text(text)

    writer = ArgumentWriter(fmt, rules, specials, limits)
    tails = []
    for tool in request.tools:
        args = writer.arguments(tool.parameters, f"tool {tool.name!r}")
        tails.append(rules("tail", f"{lark(tool.name, *fmt.name_close)} {args} {lark(*fmt.call_close)}"))
    tail = rules("tails", " | ".join(tails))
    call = rules("call", f"{lark(*fmt.call_open)} {tail}")
    more = f"({lark(*fmt.separator)} {call})*" if request.many and request.choice != "named" else ""
    if fmt.section_open:
        after_open = f"{lark(*_without_trigger(fmt.section_open, trigger))} {call} {more} {lark(*fmt.section_close)}"
        calls = f"{lark(*fmt.section_open)} {call} {more} {lark(*fmt.section_close)}"
    else:  # the first call's opening, without the trigger (the text before it ends with it)
        after_open = f"{lark(*_without_trigger(fmt.call_open, trigger))} {tail} {more}"
        calls = f"{call} {more}"
    if request.choice in ("required", "named"):
        return rules.text(calls)
    if fmt.content == "exclusive":
        return rules.text(f"{text} | {calls}")
    if special_trigger:
        return rules.text(f"{text} | {text}? {calls}")
    head = rules("head", lark_regex(_ANY + python_pattern((trigger,))), lazy=True)
    return rules.text(f"{text} | {head} {after_open}")
