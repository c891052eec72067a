"""Partial JSON: the value a prefix of a JSON text shows so far, and which parts of it are final.

A ``{{json}}`` slot being generated holds a prefix of valid JSON (its grammar guarantees it);
:func:`parse_partial_json` reads such a prefix without waiting for the value to close, for the
partial values of :mod:`core.partial`.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["parse_partial_json"]


class _End(Exception):
    """The text ended inside a value."""


class _PartialJson:
    def __init__(self, text: str) -> None:
        self.s = text
        self.i = 0
        self.final: list[str] = []

    def ws(self) -> None:
        while self.i < len(self.s) and self.s[self.i] in " \t\r\n":
            self.i += 1
        if self.i >= len(self.s):
            raise _End

    def value(self, path: str) -> tuple[Any, bool]:
        """(value so far, complete); raises _End with nothing to show."""
        self.ws()
        c = self.s[self.i]
        if c == "{":
            return self.obj(path)
        if c == "[":
            return self.arr(path)
        if c == '"':
            text, done = self.string()
            if done:
                self.final.append(path)
            return text, done
        return self.scalar(path), True

    def scalar(self, path: str) -> Any:
        j = self.i
        while j < len(self.s) and self.s[j] not in ",]} \t\r\n":
            j += 1
        if j >= len(self.s):
            raise _End  # a number or literal may still grow: not shown yet
        value = json.loads(self.s[self.i : j])
        self.i = j
        self.final.append(path)
        return value

    def string(self) -> tuple[str, bool]:
        self.i += 1
        out: list[str] = []
        s = self.s
        while self.i < len(s):
            c = s[self.i]
            if c == '"':
                self.i += 1
                return "".join(out), True
            if c == "\\":
                if self.i + 1 >= len(s):
                    break
                e = s[self.i + 1]
                if e == "u":
                    if self.i + 6 > len(s):
                        break
                    code = int(s[self.i + 2 : self.i + 6], 16)
                    if 0xD800 <= code < 0xDC00:
                        if self.i + 12 > len(s):
                            break
                        low = int(s[self.i + 8 : self.i + 12], 16)
                        out.append(chr(0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)))
                        self.i += 12
                        continue
                    out.append(chr(code))
                    self.i += 6
                    continue
                out.append(json.loads(f'"\\{e}"'))
                self.i += 2
                continue
            out.append(c)
            self.i += 1
        self.i = len(s)
        return "".join(out), False

    def obj(self, path: str) -> tuple[dict[str, Any], bool]:
        self.i += 1
        out: dict[str, Any] = {}
        try:
            self.ws()
            if self.s[self.i] == "}":
                self.i += 1
                self.final.append(path)
                return out, True
            while True:
                self.ws()
                key, done = self.string()
                if not done:
                    return out, False
                self.ws()
                self.i += 1  # ':'
                sub = path + "/" + key.replace("~", "~0").replace("/", "~1")
                try:
                    value, done = self.value(sub)
                except _End:
                    return out, False
                out[key] = value
                if not done:
                    return out, False
                self.ws()
                c = self.s[self.i]
                self.i += 1
                if c == "}":
                    self.final.append(path)
                    return out, True
        except _End:
            return out, False

    def arr(self, path: str) -> tuple[list[Any], bool]:
        self.i += 1
        out: list[Any] = []
        try:
            self.ws()
            if self.s[self.i] == "]":
                self.i += 1
                self.final.append(path)
                return out, True
            while True:
                try:
                    value, done = self.value(f"{path}/{len(out)}")
                except _End:
                    return out, False
                out.append(value)
                if not done:
                    return out, False
                self.ws()
                c = self.s[self.i]
                self.i += 1
                if c == "]":
                    self.final.append(path)
                    return out, True
        except _End:
            return out, False


def parse_partial_json(text: str) -> tuple[Any, list[str]]:
    """The value a JSON prefix shows so far, and the JSON pointers of its parts that are final.

    Strings being written show their characters so far (``{"name": "Ad`` gives
    ``{"name": "Ad"}``); a number or ``true``/``false``/``null`` shows once it ends, and a key
    once its string is closed. A pointer is listed when that part can no longer change; ``""``
    (the whole value) when the value is complete. ``None`` when nothing can be shown yet.

    The text must be a prefix of valid JSON (the grammar guarantees it for a json slot).
    """
    parser = _PartialJson(text)
    try:
        value, _ = parser.value("")
    except _End:
        return None, []
    except (ValueError, IndexError):
        return None, []
    return value, sorted(set(parser.final), key=lambda p: (p.count("/"), p))
