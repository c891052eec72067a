"""Complements of regular expressions, for the exact schema rewrites (``not``, ``oneOf``).

llguidance has no negation in patterns, so the complement of a string constraint must be written
as another pattern. This module writes it for the shapes where that is short and exact: a finite
set of words (a ``const``/``enum`` of strings), a whole string over one character class
(``^[a-z]+$``), and a fixed sequence of single-character atoms anchored at the start, the end or
both (``^[ab]``, ``[xyz]$``, ``^v1\\.[0-9]$``), or one such atom anywhere (``A``). Other patterns
have no complement here and the rewrite that needs one is not made.

Patterns are written in the syntax Rust's ``regex`` crate and Python's ``re`` share; the
complements are exact under Rust's semantics (where ``$`` is the end of the text).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

__all__ = ["ANY_CHAR", "complement_pattern", "complement_words", "regex_char"]

#: Any character, newlines included.
ANY_CHAR = "[\\s\\S]"


def regex_char(c: str) -> str:
    """``c`` as a regex atom (escaped unless an ASCII letter or digit)."""
    if c.isalnum() and c.isascii():
        return c
    o = ord(c)
    if o < 0x80 or not c.isprintable():
        return f"\\u{o:04x}" if o <= 0xFFFF else f"\\U{o:08x}"
    return c


def complement_words(words: Sequence[str]) -> str:
    """An anchored regex matching exactly the strings not in ``words`` (Rust and Python syntax)."""
    trie: dict[str, Any] = {}
    for w in words:
        node = trie
        for c in w:
            node = node.setdefault(c, {})
        node[""] = {}

    # Iterative post-order build: R(node) = strings s such that prefix(node) + s is not a word.
    def alternatives(node: dict[str, Any], inner: dict[int, str]) -> str:
        alts = []
        children = sorted(c for c in node if c)
        if children:
            cls = "".join(regex_char(c) for c in children)
            alts.append(f"[^{cls}]{ANY_CHAR}*")
        else:
            alts.append(f"{ANY_CHAR}+" if "" in node else f"{ANY_CHAR}*")
        for c in children:
            alts.append(regex_char(c) + inner[id(node[c])])
        body = "|".join(alts)
        if "" not in node and children:
            return f"(?:{body})?"  # the prefix itself is not a word
        return f"(?:{body})"

    built: dict[int, str] = {}
    stack: list[tuple[dict[str, Any], bool]] = [(trie, False)]
    while stack:
        node, ready = stack.pop()
        if ready:
            built[id(node)] = alternatives(node, built)
            continue
        stack.append((node, True))
        stack.extend((child, False) for c, child in node.items() if c)
    return "^" + built[id(trie)] + "$"


_CLASS_PATTERN = re.compile(r"\^\[(\^?)((?:\\.|[^\]\\\[])+)\](\+|\*|\{(\d+)(,(\d*))?\})\$")
_CLASS = re.compile(r"\[(\^?)((?:\\.|[^\]\\\[])+)\]")
_SET_OPERATIONS = ("&&", "--", "~~")
_METACHARACTERS = frozenset("()|*+?{}^$[]")


def complement_pattern(pattern: str, max_atoms: int) -> str | None:
    """An exact complement of ``pattern`` (JSON Schema: found anywhere in the string), or None.

    Handled: ``^[C]+$``, ``^[C]*$``, ``^[C]{m,n}$`` (a whole string over one class); a sequence
    of at most ``max_atoms`` single-character atoms (a literal character, an escaped one,
    ``\\d``/``\\w``/``\\s`` and their negations, a class, ``.``) anchored at the start, the end or
    both (the complement nests one group per atom); one atom anywhere.
    """
    whole = _complement_class_string(pattern)
    if whole is not None:
        return whole
    start = pattern.startswith("^")
    body = pattern[1:] if start else pattern
    end = body.endswith("$") and not _escaped_at(body, len(body) - 1)
    body = body[:-1] if end else body
    atoms = _atoms(body)
    if atoms is None or len(atoms) > max_atoms:
        return None
    n = len(atoms)
    if not n and not (start and end):
        return None  # matches every string: the complement is empty
    if start:
        # Left to right, nested (linear in size, and easy for llguidance's emptiness checks): the
        # string ends early, or the first atom that fails, or (anchored at the end) more follows.
        inner = f"{ANY_CHAR}+" if end else None
        for atom, other in reversed(atoms):
            rest = f"|{atom}{inner}" if inner is not None else ""
            inner = f"(?:|{other}{ANY_CHAR}*{rest})"
        return f"^{inner}$"
    if end:  # the same from the end: the start is reached early, or the last atom that fails
        inner = None
        for atom, other in atoms:
            rest = f"|{inner}{atom}" if inner is not None else ""
            inner = f"(?:|{ANY_CHAR}*{other}{rest})"
        return f"^{inner}$"
    if n == 1:
        return f"^{atoms[0][1]}*$"
    return None


def _complement_class_string(pattern: str) -> str | None:
    """The complement of ``^[C]+$``, ``^[C]*$`` or ``^[C]{m,n}$`` (a whole string over one class).

    A string fails such a pattern when it holds a character outside the class or has another
    length: both are patterns. Classes with set operations or nested classes are left alone.
    """
    m = _CLASS_PATTERN.fullmatch(pattern)
    if m is None or any(op in m.group(2) for op in _SET_OPERATIONS):
        return None
    negated, body, quantifier = m.group(1), m.group(2), m.group(3)
    outside = f"[{body}]" if negated else f"[^{body}]"
    if quantifier == "+":
        lo, hi = 1, None
    elif quantifier == "*":
        lo, hi = 0, None
    else:
        lo = int(m.group(4))
        hi = lo if m.group(5) is None else (int(m.group(6)) if m.group(6) else None)
        if hi is not None and hi < lo:
            return None
    alternatives = [outside]
    if lo > 0:
        alternatives.append(f"^{ANY_CHAR}{{0,{lo - 1}}}$")
    if hi is not None:
        alternatives.append(f"^{ANY_CHAR}{{{hi + 1},}}$")
    return "|".join(alternatives)


def _escaped_at(text: str, i: int) -> bool:
    """Whether ``text[i]`` is escaped (an odd number of backslashes before it)."""
    n = 0
    while i - n - 1 >= 0 and text[i - n - 1] == "\\":
        n += 1
    return n % 2 == 1


def _atoms(body: str) -> list[tuple[str, str]] | None:
    """``body`` as single-character atoms ``(atom, its complement)``, or None if it is not one."""
    out: list[tuple[str, str]] = []
    i = 0
    while i < len(body):
        c = body[i]
        if c == "\\":
            if i + 1 >= len(body):
                return None
            e = body[i + 1]
            if e in "dDwWsS":
                out.append((f"\\{e}", f"\\{e.swapcase()}"))
            elif not e.isalnum() and e.isascii() and e.isprintable():
                out.append((f"\\{e}", f"[^{regex_char(e)}]"))
            else:
                return None  # \b, \A, \n, \p{..}, \u....: not read here
            i += 2
        elif c == "[":
            m = _CLASS.match(body, i)
            if m is None or any(op in m.group(2) for op in _SET_OPERATIONS):
                return None
            negated, inner = m.group(1), m.group(2)
            out.append((m.group(0), f"[{inner}]" if negated else f"[^{inner}]"))
            i = m.end()
        elif c == ".":
            out.append((".", "\\n"))  # without the s flag, "." is every character but a newline
            i += 1
        elif c in _METACHARACTERS:
            return None
        else:
            out.append((regex_char(c), f"[^{regex_char(c)}]"))
            i += 1
    return out
