"""Reading Lark text (llguidance's dialect) without parsing it: the static checks' common ground.

:data:`LARK_TOKEN` splits a rule body into strings, regexes, ``%json`` markers, repeats,
brackets, alternatives and names; :func:`lark_statements` yields a grammar's statements with
continuation lines joined, with the name each defines. Used by
:mod:`core.expansion` and :mod:`core.derivation`, which must see a grammar before llguidance does.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

__all__ = ["LARK_HEADER", "LARK_TOKEN", "lark_statements"]

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


def _defined_name(header: str) -> str | None:
    bare = header.strip().rstrip(":").strip().lstrip("?!")
    return bare.split("[", 1)[0].split(".", 1)[0] or None
