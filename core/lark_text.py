"""Lark text (llguidance's dialect) at the level of its tokens: read without parsing, literals written.

Reading, for the static checks that must see a grammar before llguidance does
(:mod:`core.expansion`, :mod:`core.derivation`): :data:`LARK_TOKEN` splits a rule body into
strings, regexes, ``%json`` markers, repeats, brackets, alternatives and names
(:func:`lark_tokens` walks a body with it, decoding the schema after each ``%json``);
:func:`lark_statements` yields a grammar's statements with continuation lines joined, with the
name each defines. Writing, for the grammars we generate: :func:`lark_string` and
:func:`lark_regex` write text and regexes as Lark terminals.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

__all__ = [
    "LARK_HEADER",
    "LARK_TOKEN",
    "lark_capture_names",
    "lark_regex",
    "lark_statements",
    "lark_string",
    "lark_tokens",
]

LARK_TOKEN = re.compile(
    r"""
    (?P<str>"(?:[^"\\]|\\.)*"i?)
  | (?P<re>/(?:[^/\\\n]|\\.)+/[imslux]*)
  | (?P<json>%json\b)
  | (?P<comment>//[^\n]*)
  | (?P<quant>\{\s*\d+\s*(?:,\s*\d*\s*)?\})
  | (?P<tilde>~\s*(?P<lo>\d+)(?:\s*\.\.\s*(?P<hi>\d+))?)
  | (?P<open>[(\[])
  | (?P<close>[)\]])
  | (?P<bar>\|)
  | (?P<name>[A-Za-z_][\w.]*)
  | (?P<other>.)
    """,
    re.VERBOSE | re.DOTALL,
)
LARK_HEADER = re.compile(r"""\s*[?!]?[\w.]+(?:\[(?:"(?:[^"\\]|\\.)*"|[^\]"\n])*\])?\s*:""")


def lark_statements(text: str) -> Iterator[tuple[str | None, str]]:
    """``(name, body)`` of each statement of a Lark grammar, continuation lines joined.

    ``name`` is the rule or terminal the statement defines, without its capture, priority or
    ``?``/``!`` marks; None for directives and lines that define nothing.
    """
    name: str | None = None
    current: list[str] = []
    for line in text.splitlines():
        stripped = line.lstrip()
        if stripped.startswith("|") and current:
            current.append(line)
            continue
        if current:
            yield name, "\n".join(current)
        header = LARK_HEADER.match(line)
        name = _defined_name(header.group(0)) if header else None
        current = [line[header.end() :] if header else line]
    if current:
        yield name, "\n".join(current)


# ``capture`` or ``capture="name"`` among a rule's attributes (``name[capture, stop="\n"]:``).
_CAPTURE_ATTR = re.compile(r'(?:^|,)\s*capture\s*(?:=\s*(?P<name>"(?:[^"\\]|\\.)*"))?\s*(?=,|$)')


def lark_capture_names(text: str) -> list[str]:
    """The capture names a Lark grammar declares (``rule[capture]``, ``rule[capture="name"]``), in order.

    Names are as llguidance records them (a ``__LIST_APPEND:`` prefix included); each appears once.
    """
    names: dict[str, None] = {}
    for line in text.splitlines():
        header = LARK_HEADER.match(line)
        if header is None or "[" not in header.group(0):
            continue
        head = header.group(0).strip().rstrip(":").strip().lstrip("?!")
        rule, _, attrs = head.partition("[")
        for m in _CAPTURE_ATTR.finditer(attrs.rstrip().removesuffix("]")):
            quoted = m.group("name")
            try:
                name = json.loads(quoted) if quoted else rule.strip()
            except ValueError:
                name = rule.strip()
            if isinstance(name, str) and name:
                names.setdefault(name)
    return list(names)


def _defined_name(header: str) -> str | None:
    bare = header.strip().rstrip(":").strip().lstrip("?!")
    return bare.split("[", 1)[0].split(".", 1)[0] or None


def lark_tokens(body: str) -> Iterator[tuple[str, Any]]:
    """``(kind, value)`` of each token of a rule body: the :data:`LARK_TOKEN` group and its match,
    except ``("json", schema)`` for ``%json`` followed by a schema (decoded, and skipped past)."""
    pos = 0
    while pos < len(body):
        m = LARK_TOKEN.match(body, pos)
        if m is None:  # pragma: no cover - the pattern matches any character
            return
        pos = m.end()
        kind = m.lastgroup or "other"
        if kind == "json":
            try:
                schema, pos = json.JSONDecoder().raw_decode(body, len(body) - len(body[pos:].lstrip()))
            except ValueError:
                continue
            yield kind, schema
        else:
            yield kind, m


def lark_string(text: str) -> str:
    """``text`` as a Lark string literal (JSON's quoting, which llguidance's Lark reads)."""
    return json.dumps(text, ensure_ascii=False)


def lark_regex(regex: str) -> str:
    """``regex`` as a Lark ``/.../`` terminal: bare slashes and line breaks escaped."""
    out: list[str] = []
    i = 0
    while i < len(regex):
        c = regex[i]
        if c == "\\" and i + 1 < len(regex):
            out.append(regex[i : i + 2])
            i += 2
            continue
        if c == "/":
            out.append("\\/")
        elif c == "\n":
            out.append("\\n")
        elif c == "\r":
            out.append("\\r")
        else:
            out.append(c)
        i += 1
    return "/" + "".join(out) + "/"
