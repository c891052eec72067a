"""The static pre-check behind ``max_expansion``.

llguidance bounds its work per mask with fuel, but a long *literal* lexeme (a 100,000-character
template text, ``a{100000}``, ``"x"{50000}`` in Lark, a huge ``const``) costs every mask time
quadratic in its length (measured: 10k characters about 50 ms, 100k about 3 s per mask on the
tekken vocabulary) and no llguidance limit stops it. Such programs are refused before a matcher
is built.
"""

from __future__ import annotations

import json
import re
from typing import Any

from core.lark_text import lark_statements, lark_tokens

__all__ = ["expansion", "expansion_above", "regex_expansion"]

_QUANT = re.compile(r"\{\s*(\d+)\s*(?:(,)\s*(\d*)\s*)?\}")
# What can make an expansion longer than its source text: a bounded repeat ("{3}", "{ 2,5}", Lark's
# "~ 4"), or an escape that could be one ("{\\n3}" in JSON text). An object's "{" is followed by a
# key or "}".
_REPEAT_MARK = re.compile(r'\{(?!\s*["}])|~')
_SKIPPED_KEYS = frozenset({"description", "title", "$comment", "examples", "default", "$id", "$schema"})


class _Sizer:
    """Sums atom sizes along a sequence, takes alternatives' maximum, multiplies by repeat bounds."""

    def __init__(self, alternation_resets: bool) -> None:
        self.alternation_resets = alternation_resets
        self.stack: list[list[int]] = [[0, 0, 0, 0]]  # [alt_max, cur, last, had_alternation]
        self.peak = 0

    def atom(self, size: int) -> None:
        frame = self.stack[-1]
        frame[1] += size
        frame[2] = size
        self.peak = max(self.peak, frame[1])

    def repeat(self, bound: int) -> None:
        frame = self.stack[-1]
        frame[1] += frame[2] * (max(bound, 1) - 1)
        frame[2] *= max(bound, 1)
        self.peak = max(self.peak, frame[1])

    def open(self) -> None:
        self.stack.append([0, 0, 0, 0])

    def close(self) -> None:
        if len(self.stack) == 1:
            return
        alt_max, cur, _, alternated = self.stack.pop()
        size = 0 if (alternated and self.alternation_resets) else max(alt_max, cur)
        self.atom(size)

    def bar(self) -> None:
        frame = self.stack[-1]
        frame[0] = max(frame[0], frame[1])
        frame[1] = frame[2] = 0
        frame[3] = 1

    def result(self) -> int:
        while len(self.stack) > 1:
            self.close()
        return max(self.peak, self.stack[0][0], self.stack[0][1])


def _bound(match: re.Match[str]) -> int:
    low = int(match.group(1))
    high = match.group(3)
    return max(low, int(high)) if high else low


def regex_expansion(pattern: str) -> int:
    """Literal characters of a regex with bounded repeats multiplied out.

    Character classes (of more than one character), ``.``, class escapes and groups with
    alternatives count 0: llguidance's derivatives keep those small; literal runs are what cost.
    """
    s = _Sizer(alternation_resets=True)
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\":
            nxt = pattern[i + 1 : i + 2]
            if nxt in ("p", "P", "x", "u") and pattern[i + 2 : i + 3] == "{":
                end = pattern.find("}", i + 3)
                i = n if end < 0 else end + 1
            else:
                i += 2
            s.atom(0 if nxt in ("d", "D", "w", "W", "s", "S", "p", "P") else 1)
            continue
        if c == "[":
            j, depth = i + 1, 1
            if pattern[j : j + 1] == "^":
                j += 1
            start = j
            if pattern[j : j + 1] == "]":
                j += 1
            while j < n and depth:
                if pattern[j] == "\\":
                    j += 2
                    continue
                if pattern[j] == "[":
                    depth += 1
                elif pattern[j] == "]":
                    depth -= 1
                j += 1
            body = pattern[start : j - 1]
            s.atom(1 if len(body) == 1 and pattern[i + 1] != "^" else 0)
            i = j
            continue
        if c == "(":
            s.open()
            if pattern[i + 1 : i + 2] == "?":  # (?:  (?P<name>  (?<name>  (?i)  (?i-s:
                j = i + 2
                if pattern[j : j + 1] == "P" or (
                    pattern[j : j + 1] == "<" and pattern[j + 1 : j + 2] not in ("=", "!")
                ):
                    end = pattern.find(">", j)
                    i = n if end < 0 else end + 1
                    continue
                while j < n and (pattern[j].isalpha() or pattern[j] == "-"):
                    j += 1
                i = j + 1 if j < n and pattern[j] == ":" else j
            else:
                i += 1
            continue
        if c == ")":
            s.close()
        elif c == "|":
            s.bar()
        elif c == "{":
            m = _QUANT.match(pattern, i)
            if m:
                s.repeat(_bound(m))
                i = m.end()
                continue
            s.atom(1)
        elif c in "*+?^$":
            pass
        elif c == ".":
            s.atom(0)
        else:
            s.atom(1)
        i += 1
    return s.result()


def _schema_expansion(value: Any, key: str | None = None) -> int:
    if isinstance(value, dict):
        best = 0
        for k, v in value.items():
            if k in _SKIPPED_KEYS:
                continue
            if key == "patternProperties":
                best = max(best, regex_expansion(str(k)))
            else:
                best = max(best, len(str(k)))
            best = max(best, _schema_expansion(v, str(k)))
        return best
    if isinstance(value, list):
        return max((_schema_expansion(v, key) for v in value), default=0)
    if isinstance(value, str):
        return regex_expansion(value) if key == "pattern" else len(value)
    return 0


def _lark_expansion(text: str) -> int:
    best = 0
    for _, statement in lark_statements(text):
        s = _Sizer(alternation_resets=False)
        for kind, m in lark_tokens(statement):
            if kind == "str":
                s.atom(len(m.group("str").rstrip("i")) - 2)
            elif kind == "re":
                body = m.group("re")
                s.atom(regex_expansion(body[1 : body.rindex("/")]))
            elif kind == "json":
                s.atom(_schema_expansion(m))
            elif kind == "quant":
                q = _QUANT.match(m.group("quant"))
                if q:
                    s.repeat(_bound(q))
            elif kind == "tilde":
                s.repeat(max(int(m.group("lo")), int(m.group("hi") or 0)))
            elif kind == "open":
                s.open()
            elif kind == "close":
                s.close()
            elif kind == "bar":
                s.bar()
            elif kind == "name":
                s.atom(1)
        best = max(best, s.result())
    return best


def expansion(grammar: str) -> int:
    """An upper estimate of the longest literal a compiled llguidance grammar expands to.

    ``grammar`` is what the compiler hands llguidance: Lark text, or its JSON top-level grammar
    (``{"grammars": [{"lark_grammar": ...} | {"json_schema": ...}]}``). The estimate is
    deliberately rough and conservative; ``max_expansion`` bounds it (see the module docstring).
    """
    text = grammar.lstrip()
    if text.startswith("{"):
        try:
            top = json.loads(text)
        except ValueError:
            return _lark_expansion(grammar)
        best = 0
        for g in top.get("grammars", []) if isinstance(top, dict) else []:
            if not isinstance(g, dict):
                continue
            if isinstance(g.get("lark_grammar"), str):
                best = max(best, _lark_expansion(g["lark_grammar"]))
            if g.get("json_schema") is not None:
                best = max(best, _schema_expansion(g["json_schema"]))
        return best
    return _lark_expansion(grammar)


def expansion_above(grammar: str, limit: int) -> int | None:
    """:func:`expansion` of ``grammar`` when it is above ``limit``, else None.

    A grammar of at most ``limit`` characters without a bounded repeat is within it without a
    walk: every atom counts at most the characters of its own source (escapes and the JSON
    encoding only lengthen the source), a sequence at most their sum, alternatives their maximum;
    only a repeat multiplies.
    """
    if len(grammar) <= limit and _REPEAT_MARK.search(grammar) is None:
        return None
    grown = expansion(grammar)
    return grown if grown > limit else None
