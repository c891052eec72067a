"""Where in a JSON schema llguidance's complaint is: a JSON pointer for an error message.

llguidance reports what is wrong with a schema (``Invalid type: strin``, ``Expected positive
integer for 'minLength', got 1.5``, ``Unimplemented keys: ["uniqueItems"]``) but not where. The
message names a keyword, a value, or both; :func:`locate_schema_error` finds the place in the
user's schema that they name, preferring a place matching both, then the first in document order.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

__all__ = ["json_pointer", "locate_schema_error"]

# Walk at most this many places: the search is for a message, not worth a second compile's time.
_MAX_PLACES = 100_000


def json_pointer(parts: list[str | int]) -> str:
    """RFC 6901: ``["properties", "a/b"]`` -> ``/properties/a~1b``."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def _places(schema: Any) -> Iterator[tuple[list[str | int], str, Any]]:
    """``(path, key, value)`` of every object member of ``schema``, in document order (iterative)."""
    stack: list[tuple[list[str | int], Any]] = [([], schema)]
    seen = 0
    while stack and seen < _MAX_PLACES:
        path, node = stack.pop()
        children: list[tuple[list[str | int], Any]] = []
        if isinstance(node, dict):
            for key, value in node.items():
                seen += 1
                yield [*path, key], str(key), value
                children.append(([*path, key], value))
        elif isinstance(node, list):
            children = [([*path, i], v) for i, v in enumerate(node)]
        stack.extend(reversed(children))


def _mentions(message: str, text: str) -> bool:
    if not text:
        return False
    return re.search(rf"(?<![\w#/]){re.escape(text)}(?![\w])", message) is not None


def locate_schema_error(schema: Any, message: str) -> str | None:
    """The JSON pointer of the place in ``schema`` that llguidance's ``message`` is about, or None."""
    best, where = 1, None
    for path, key, value in _places(schema):
        score = 0
        if re.search(rf"['\"]{re.escape(key)}['\"]", message):
            score += 2
        elif key.startswith(("$", "min", "max")) or len(key) > 4:
            score += 1 if re.search(rf"(?<![\w$]){re.escape(key)}(?!\w)", message) else 0
        if isinstance(value, str):
            if _mentions(message, value) or (value.startswith("#") and _mentions(message, value[1:])):
                score += 3
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            score += 3 if _mentions(message, json.dumps(value)) and score else 0
        if score > best:
            best, where = score, json_pointer(path)
    return where
