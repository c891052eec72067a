"""A turn's text read back as variables: ``content`` and ``tool_calls``, complete or so far.

The reader follows the same format entry as the grammar (:mod:`core.tools.families`), so what it
reads is what the grammar allowed: text up to the trigger is content, then the calls, each a name
and its arguments, parsed (JSON; the tag styles' properties, typed by the tool's schema; Gemma 4's
notation). While a call is being written its arguments so far are read too (a prefix of JSON
parsed as far as it goes), so partial values only grow.

Variables::

    {"content": "Let me look.", "tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from core.partial_json import parse_partial_json
from core.tools.arguments import is_text_property
from core.tools.parts import python_pattern
from core.tools.request import ToolRequest

__all__ = ["ToolReader"]

_DECODER = json.JSONDecoder()


@dataclass
class _Call:
    name: str
    arguments: Any
    complete: bool


@dataclass
class _Reading:
    content: str = ""
    content_done: bool = False
    calls: list[_Call] = field(default_factory=list)


def _holdback(text: str, marker: str) -> int:
    """How many trailing characters of ``text`` may be the start of ``marker``."""
    for k in range(min(len(marker) - 1, len(text)), 0, -1):
        if marker.startswith(text[-k:]):
            return k
    return 0


def _gemma_to_json(text: str, pos: int) -> tuple[str, int | None]:
    """Gemma 4's notation from ``pos`` as JSON text, and where the value ends (None: not yet)."""
    out: list[str] = []
    depth = 0
    i = pos
    quote = '<|"|>'
    while i < len(text):
        if text.startswith(quote, i):
            end = text.find(quote, i + len(quote))
            if end < 0:
                body = text[i + len(quote) :]
                body = body[: len(body) - _holdback(body, quote)]
                out.append(json.dumps(body, ensure_ascii=False)[:-1])
                return "".join(out), None
            out.append(json.dumps(text[i + len(quote) : end], ensure_ascii=False))
            i = end + len(quote)
        else:
            m = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?=:)|None\b").match(text, i)
            c = text[i]
            if m and text[i - 1 : i] in ("{", ","):
                out.append("null" if m.group() == "None" else json.dumps(m.group()))
                i = m.end()
                continue
            if c in "{[":
                depth += 1
            elif c in "}]":
                depth -= 1
            out.append(c)
            i += 1
        if depth == 0:
            return "".join(out), i
    return "".join(out), None


class ToolReader:
    """Reads turns of one ``tools`` request."""

    def __init__(self, request: ToolRequest) -> None:
        self.request = request
        fmt = request.format
        self.fmt = fmt
        names = "|".join(re.escape(t.name) for t in sorted(request.tools, key=lambda t: -len(t.name)))
        name = f"(?P<name>{names or '(?!)'})"
        self._open = re.compile(python_pattern(fmt.call_open) + name + python_pattern(fmt.name_close))
        self._close = re.compile(python_pattern(fmt.call_close))
        self._sep = re.compile(python_pattern(fmt.separator))
        self._section_open = re.compile(python_pattern(fmt.section_open))
        if fmt.arguments == "xml-qwen":
            self._tag = re.compile(r"<parameter=(?P<key>[^>\n]+)>\n")
            self._tag_end = "\n</parameter>\n"
        else:
            self._tag = re.compile(r"\n?<arg_key>(?P<key>.*?)</arg_key>\n?<arg_value>", re.S)
            self._tag_end = "</arg_value>"

    # -- the answers
    def values(self, text: str) -> dict[str, Any]:
        """The complete values: the content, and every call written whole."""
        r = self.read(text)
        return {
            "content": r.content,
            "tool_calls": [{"name": c.name, "arguments": c.arguments} for c in r.calls if c.complete],
        }

    def partial(self, text: str, terminated: bool) -> dict[str, dict[str, Any]]:
        """Every value so far (:mod:`core.partial`'s shape): the call being written with its
        arguments parsed so far."""
        r = self.read(text)
        done = sum(1 for c in r.calls if c.complete)
        return {
            "content": {"value": r.content, "complete": terminated or r.content_done},
            "tool_calls": {
                "value": [{"name": c.name, "arguments": c.arguments} for c in r.calls],
                "complete": terminated,
                "complete_items": done,
            },
        }

    # -- reading
    def read(self, text: str) -> _Reading:
        r = _Reading()
        fmt = self.fmt
        if self.request.choice == "none":
            r.content = text.strip()
            return r
        trigger = fmt.trigger
        if fmt.content == "exclusive":
            opening = python_pattern(fmt.opening)
            head = text[: len(trigger)]
            if not (text.startswith(trigger) or (trigger.startswith(head) and re.match(opening, text) is None)):
                r.content = text.strip()
                return r
            if not text.startswith(trigger):
                return r  # too short to tell
            at = 0
        else:
            at = text.find(trigger)
            if at < 0:
                r.content = text[: len(text) - _holdback(text, trigger)].strip()
                return r
        r.content, r.content_done = text[:at].strip(), True
        pos: int | None = at
        if fmt.section_open:
            m = self._section_open.match(text, at)
            pos = m.end() if m else None
        while pos is not None and pos < len(text):
            pos = self._call(text, pos, r)
            if pos is None:
                break
            m = self._sep.match(text, pos)
            if m is not None and self._open.match(text, m.end()):
                pos = m.end()
                continue
            break
        return r

    def _call(self, text: str, pos: int, r: _Reading) -> int | None:
        m = self._open.match(text, pos)
        if m is None:
            return None
        name = m.group("name")
        tool = self.request.tool(name)
        schema: Mapping[str, Any] = tool.parameters if tool else {}
        args, end = self._arguments(text, m.end(), schema)
        call = _Call(name, args, False)
        r.calls.append(call)
        if end is None:
            return None
        close = self._close.match(text, end)
        if close is None:
            return None
        call.complete = True
        return close.end()

    def _arguments(self, text: str, pos: int, schema: Mapping[str, Any]) -> tuple[Any, int | None]:
        style = self.fmt.arguments
        if style == "json":
            try:
                return _DECODER.raw_decode(text, pos)
            except ValueError:
                return parse_partial_json(text[pos:])[0], None
        if style == "gemma":
            js, stop = _gemma_to_json(text, pos)
            if stop is not None:
                try:
                    return json.loads(js), stop
                except ValueError:
                    return None, None
            return parse_partial_json(js)[0], None
        return self._tags(text, pos, schema)

    def _tags(self, text: str, pos: int, schema: Mapping[str, Any]) -> tuple[dict[str, Any], int | None]:
        props = schema.get("properties") if isinstance(schema.get("properties"), Mapping) else {}
        out: dict[str, Any] = {}
        while True:
            m = self._tag.match(text, pos)
            if m is None:  # the arguments end where the call's closing starts
                return out, (pos if self._close.match(text, pos) else None)
            key = m.group("key")
            sub = props.get(key, {}) if isinstance(props, Mapping) else {}
            end = text.find(self._tag_end, m.end())
            if end < 0:
                raw = text[m.end() :]
                raw = raw[: len(raw) - _holdback(raw, self._tag_end)]
                out[key] = raw if is_text_property(sub) else parse_partial_json(raw)[0]
                return out, None
            out[key] = _typed(text[m.end() : end], sub)
            pos = end + len(self._tag_end)


def _typed(raw: str, schema: Any) -> Any:
    """A tag's text as its value: raw text for a string property, else JSON (Python's True too)."""
    if is_text_property(schema):
        return raw
    if raw in ("True", "False"):
        return raw == "True"
    try:
        return json.loads(raw)
    except ValueError:
        return raw
