"""Text at the edge: every string a request carries must be encodable in UTF-8.

JSON's ``\\u`` escapes can spell code points that are not Unicode scalar values: unpaired
surrogates (``"\\ud800"``). Python's JSON parser keeps them as lone surrogates in a ``str``, which
then fails wherever text is encoded: hashing a program, llguidance, logging, writing a problem
document. Raw bytes that are not UTF-8 become the same lone surrogates when a parser decodes them
with ``surrogatepass`` (the standard library does). So each request is checked once, before
routing (``service.middleware.TextGuardMiddleware``), by the functions here:

* :func:`body_text_error`: the body must be UTF-8 (JSON travels as UTF-8, RFC 8259 section 8.1)
  with no unpaired surrogate escape. The common case (ASCII without a backslash: a ``/step``
  body) costs three ``memchr``-speed scans of the bytes; only a body that fails is parsed, to
  name the field.
* :func:`url_text_error`: percent-encoded path segments and query parameters must decode as
  UTF-8 (servers otherwise replace bad bytes with U+FFFD silently).

Headers need no check: they are bytes read as Latin-1, every code point of which encodes.

A failure is a :class:`~service.errors.InvalidText` (422 ``unicode-invalid``) naming where: ``location``
(``body``, ``path`` or ``query``) and ``field`` (an RFC 6901 JSON pointer into the body, the
query parameter's name, or the path), both printable whatever the input was (:func:`printable`).
"""

from __future__ import annotations

import codecs
import json
import re
from typing import Any
from urllib.parse import unquote_to_bytes

from core.errors import excerpt
from service.errors import InvalidText

__all__ = ["body_text_error", "find_invalid_string", "printable", "url_text_error"]

# A JSON escape of a surrogate code unit: a run of backslashes, then u + D[89AB]xx (high) or
# D[C-F]xx (low). Only an odd run is an escape (an even run is escaped backslashes).
_SURROGATE_ESCAPE = re.compile(rb"(\\+)u([dD][89a-fA-F][0-9a-fA-F]{2})")
# Where a value sits in a parsed body: (parent link, key or index), None at the root.
_Link = tuple[Any, str | int] | None
# Bodies larger than this are validated as UTF-8 in slices (no copy of the whole body as text).
_SLICE = 1 << 20


def printable(text: str, limit: int = 200) -> str:
    """``text`` quoted safely: unencodable code points as ``\\udXXX``, at most ``limit`` characters."""
    if not text.isascii():
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return excerpt(text, limit)


def _encodable(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _pointer(parts: list[str | int]) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def find_invalid_string(value: Any) -> list[str | int] | None:
    """Where the first unencodable string (value or object key) of a parsed JSON value is, or None.

    Iterative, and linear in the size of the value: a body nested as deep as any parser allows
    costs no stack here (a path is a chain of ``(parent, key)`` links, unrolled only when found).
    """
    stack: list[tuple[Any, _Link]] = [(value, None)]
    while stack:
        node, link = stack.pop()
        if isinstance(node, str):
            if not _encodable(node):
                return _unroll(link)
        elif isinstance(node, dict):
            for key in node:
                if not _encodable(key):
                    return _unroll((link, key))
            stack.extend((v, (link, k)) for k, v in reversed(node.items()))
        elif isinstance(node, list):
            stack.extend((v, (link, i)) for i, v in reversed(list(enumerate(node))))
    return None


def _unroll(link: _Link) -> list[str | int]:
    path: list[str | int] = []
    while link is not None:
        link, key = link
        path.append(key)
    return path[::-1]


def _utf8_error(body: bytes) -> int | None:
    """The offset of the first byte that is not UTF-8 (lone surrogates included), or None."""
    if body.isascii():
        return None
    decoder = codecs.getincrementaldecoder("utf-8")()
    for start in range(0, len(body), _SLICE):
        try:
            decoder.decode(body[start : start + _SLICE], final=start + _SLICE >= len(body))
        except UnicodeDecodeError as exc:
            return start + exc.start
    return None


def _unpaired_escape(body: bytes) -> int | None:
    """The offset of the first ``\\uD800``-``\\uDFFF`` escape that is not half of a pair, or None."""
    if body.find(b"\\") < 0:  # memchr: most bodies have no escape at all
        return None
    pending_high: int | None = None  # offset of a high surrogate escape waiting for its low half
    expect_at = -1  # where that low half must start
    for m in _SURROGATE_ESCAPE.finditer(body):
        if len(m.group(1)) % 2 == 0:
            continue  # an escaped backslash followed by the letters "ud..."
        at = m.start() + len(m.group(1)) - 1
        high = m.group(2)[1:2] in b"89abAB"
        if pending_high is not None:
            if at == expect_at and not high:
                pending_high = None
                continue
            return pending_high
        if not high:
            return at
        pending_high, expect_at = at, m.end()
    return pending_high


def body_text_error(body: bytes) -> InvalidText | None:
    """The ``InvalidText`` a JSON request body deserves, or None if its text is sound."""
    nul = body.find(b"\x00")
    if nul >= 0:
        # Never part of UTF-8 JSON text, and what makes a JSON parser guess UTF-16 or UTF-32
        # (whose code units could then spell lone surrogates without any escape).
        return InvalidText("body", "", f"the request body is not UTF-8 JSON text (a NUL byte at byte {nul})", nul)
    offset = _utf8_error(body)
    escape = None if offset is not None else _unpaired_escape(body)
    if offset is None and escape is None:
        return None
    # The error path: parse to name the field (bad bytes become lone surrogates in the text).
    where = offset if offset is not None else escape
    try:
        parsed = json.loads(body.decode("utf-8", "surrogateescape"))
    except (ValueError, RecursionError):
        parsed = None
    path = find_invalid_string(parsed) if parsed is not None else None
    what = "bytes that are not UTF-8" if offset is not None else "an unpaired surrogate escape"
    if path is None:
        return InvalidText("body", "", f"the request body holds {what} at byte {where}", where)
    field = printable(_pointer(path))
    return InvalidText("body", field, f"{field or 'the body'}: the string holds {what}", where)


def url_text_error(raw_path: bytes, query_string: bytes) -> InvalidText | None:
    """The ``InvalidText`` a request's percent-encoded path or query deserves, or None."""
    if (b"%" in raw_path or not raw_path.isascii()) and _utf8_error(unquote_to_bytes(raw_path)) is not None:
        path = printable(raw_path.decode("latin-1"))
        return InvalidText("path", path, f"the path {path} does not decode as UTF-8")
    if b"%" not in query_string and query_string.isascii():
        return None
    for pair in query_string.split(b"&"):
        name, _, value = pair.partition(b"=")
        raw_name = unquote_to_bytes(name.replace(b"+", b" "))
        if _utf8_error(raw_name) is not None or _utf8_error(unquote_to_bytes(value.replace(b"+", b" "))) is not None:
            field = printable(raw_name.decode("utf-8", "backslashreplace"))
            return InvalidText("query", field, f"query parameter {field}: does not decode as UTF-8")
    return None
