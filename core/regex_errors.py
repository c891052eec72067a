"""Regex errors as the user wrote the pattern, not as llguidance wrapped it.

llguidance compiles a regex as the Lark grammar ``start: /PATTERN/`` (with ``/`` and line breaks
escaped), and its error points into that wrapper: ``at 1(8): ... 1 | start: /[a-z/``. The regex
parser's own report inside it (the pattern echoed, a caret under the fault) is what a user can
act on; :func:`regex_message` keeps that, with the column counted in the user's pattern.
"""

from __future__ import annotations

import re

__all__ = ["regex_column", "regex_message"]

_WRAPPER_AT = re.compile(r"^at \d+\(\d+\): ")
_INVALID = re.compile(r'^invalid regex "(?:[^"\\]|\\.)*" \(in regex\): regex parse error:\n', re.DOTALL)


def _escaped(pattern: str) -> list[str]:
    """Each character of ``pattern`` as it appears in the wrapper (``/``, ``\\n``, ``\\r`` escaped)."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            out.extend([c, pattern[i + 1]])
            i += 2
            continue
        out.append({"/": "\\/", "\n": "\\n", "\r": "\\r"}.get(c, c))
        i += 1
    return out


def regex_column(pattern: str, echoed: str, caret_at: int) -> int | None:
    """The 1-based column in ``pattern`` of offset ``caret_at`` in its echo ``echoed`` (None: not mapped)."""
    parts = _escaped(pattern)
    if "".join(parts) != echoed:
        return None
    offset = 0
    for index, part in enumerate(parts):
        if offset + len(part) > caret_at:
            return index + 1
        offset += len(part)
    return len(parts) + 1


def regex_message(pattern: str, message: str) -> tuple[str, int | None]:
    """llguidance's error on a regex as ``(message, column)``, both about the user's pattern.

    The message keeps the regex parser's reason; the wrapper's position and its quote are dropped.
    ``column`` is 1-based in ``pattern`` (None when the report does not say where).
    """
    text = _WRAPPER_AT.sub("", message.strip(), count=1)
    head = _INVALID.match(text)
    if head is None:
        return _drop_wrapper_quote(text), None
    lines = text[head.end() :].splitlines()
    echoed = caret = None
    reason = ""
    for k, line in enumerate(lines):
        if line.startswith("error: "):
            reason = line[len("error: ") :]
            if k >= 2 and lines[k - 1].strip().startswith("^"):
                echoed, caret = lines[k - 2][4:], lines[k - 1]
            break
    column = None
    if echoed is not None and caret is not None:
        column = regex_column(pattern, echoed, len(caret) - len(caret.lstrip()) - 4)
    where = f" at column {column}" if column is not None else ""
    out = f"invalid regex{where}: {reason or 'parse error'}"
    if column is not None and "\n" not in pattern and len(pattern) <= 200:
        width = max(1, len(caret.strip())) if caret is not None else 1
        out += f"\n    {pattern}\n    {' ' * (column - 1)}{'^' * width}"
    return out, column


def _drop_wrapper_quote(text: str) -> str:
    kept = [line for line in text.splitlines() if not re.match(r"^\s*1 \| start: /", line)]
    while kept and kept[-1].strip().startswith("^"):
        kept.pop()
    return "\n".join(kept).strip()
