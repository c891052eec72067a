"""Arguments as each family writes them, as Lark: JSON, Qwen3-Coder's and GLM's tags, Gemma 4's notation.

JSON arguments are llguidance's own ``%json`` with the template's separators (``tojson``: ``", "``
and ``": "``), compact otherwise, strict to the tool's schema. The tag styles write one tag per
property, in the schema's order, required ones always: a string property is its raw text (the
template prints strings as they are), any other value is JSON. In the tag styles and Gemma's,
only declared properties are written (``"properties": {}``: no arguments). Gemma 4 writes every value in its
own notation (bare keys in sorted order, strings between ``<|"|>`` markers): its grammar is derived
here from the schema (types, ``enum``/``const``, ``properties``/``required``, ``items``, ``anyOf``,
local ``$ref``s); what it cannot read narrowly is any value.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Protocol

from core.errors import SchemaError
from core.jsonschema import prepare_json_schema
from core.lark_text import lark_regex, lark_string
from core.limits import Limits
from core.tools.families import ToolFormat
from core.tools.parts import Piece, lark_pieces

__all__ = ["ArgumentWriter", "RuleSink", "is_text_property"]

_JSON_NUMBER = r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?"
_JSON_INTEGER = r"-?(0|[1-9][0-9]*)"
_QUOTE = '<|"|>'  # Gemma 4's string delimiter


def _types(schema: Mapping[str, Any]) -> set[str]:
    t = schema.get("type")
    if isinstance(t, str):
        return {t}
    if isinstance(t, list):
        return {x for x in t if isinstance(x, str)}
    return set()


def is_text_property(schema: Any) -> bool:
    """Whether a property is written as raw text in the tag styles (a string, as the template prints it)."""
    if not isinstance(schema, Mapping):
        return False
    values = schema.get("enum", [schema["const"]] if "const" in schema else None)
    if isinstance(values, list) and values:
        return all(isinstance(v, str) for v in values)
    return _types(schema) == {"string"}


class RuleSink(Protocol):
    """Adds a rule to a grammar and answers its name (``replace``: set the body of ``prefix``, a name)."""

    def __call__(self, prefix: str, body: str, *, lazy: bool = False, replace: bool = False) -> str: ...


class ArgumentWriter:
    """Writes the argument rules of one format into a grammar's rule list.

    Args:
        fmt: the family's format.
        rule: adds a rule ``(prefix, body) -> name`` to the grammar.
        specials: the vocabulary's special tokens by text.
        limits: the compile limits (JSON schemas are prepared under them).
    """

    def __init__(self, fmt: ToolFormat, rule: RuleSink, specials: Mapping[str, int], limits: Limits) -> None:
        self.fmt = fmt
        self.rule = rule
        self.specials = specials
        self.limits = limits
        self._gemma: dict[str, str] = {}  # one tool's $refs, by reference
        self._gemma_any_rule = ""  # any value, shared by every tool

    def pieces(self, *pieces: Piece) -> str:
        return lark_pieces(pieces, self.fmt.specials, self.specials)

    def arguments(self, schema: Mapping[str, Any], where: str) -> str:
        """The rule name of a call's arguments for ``schema`` (``where`` names the tool in errors)."""
        try:
            if self.fmt.arguments == "json":
                return self.rule("args", self.json(schema))
            if self.fmt.arguments == "gemma":
                self._gemma = {}
                return self.rule("args", self.gemma(schema, schema, 0))
            return self.rule("args", self.tags(schema))
        except SchemaError as e:
            raise SchemaError(f"{where}: {e.detail}") from None

    # -- JSON, llguidance's
    def json(self, schema: Mapping[str, Any]) -> str:
        item, key = self.fmt.json_separators
        own = schema.get("x-guidance")
        options = {"whitespace_flexible": False, "item_separator": item, "key_separator": key}
        if isinstance(own, Mapping):
            options.update(own)
        prepared, _ = prepare_json_schema({**schema, "x-guidance": options}, None, self.limits)
        return "%json " + json.dumps(prepared, ensure_ascii=False)

    # -- one tag per property (Qwen3-Coder, GLM)
    def tags(self, schema: Mapping[str, Any]) -> str:
        props = schema.get("properties")
        required = schema.get("required", [])
        if not isinstance(props, Mapping) or not props:
            if schema.get("additionalProperties") is False or props is not None:
                return '""'
            return f"({self.tag(lark_regex('[A-Za-z0-9_.-]+'), {})})*"
        out = []
        for name, sub in props.items():
            item = self.tag(lark_string(name), sub if isinstance(sub, Mapping) else {})
            out.append(item if isinstance(required, list) and name in required else f"({item})?")
        return " ".join(out) or '""'

    def tag(self, key: str, schema: Mapping[str, Any]) -> str:
        if self.fmt.arguments == "xml-qwen":
            head, close = self.pieces("<parameter=") + f" {key} " + self.pieces(">\n"), ("\n</parameter>\n",)
        else:
            head = self.pieces("\n") + "? " + self.pieces("<arg_key>") + f" {key} " + self.pieces("</arg_key>")
            head += " " + self.pieces("\n") + "? " + self.pieces("<arg_value>")
            close = ("</arg_value>",)
        return f"{head} {self.value_then(schema, close)}"

    def value_then(self, schema: Mapping[str, Any], close: tuple[str, ...]) -> str:
        """A property's value followed by the text that closes it."""
        if not is_text_property(schema):
            if self.fmt.arguments == "xml-qwen" and _types(schema) == {"boolean"}:
                value = lark_regex("true|false|True|False")  # the template prints Python's True
            else:
                value = self.rule("value", self.json(schema))
            return f"{value} {self.pieces(*close)}"
        values = schema.get("enum", [schema["const"]] if "const" in schema else None)
        if isinstance(values, list) and values:
            return "(" + " | ".join(lark_string(v) for v in values) + ") " + self.pieces(*close)
        return self.text_until(close[0], self._string_regex(schema))

    def text_until(self, close: str, regex: str = "(?s:.*)") -> str:
        """Free text (matching ``regex``) up to ``close``: lazily when ``close`` is text, greedily
        before a special token (which text never holds)."""
        marker = next((m for m in self.fmt.specials if close.startswith(m)), None)
        if marker is not None and marker in self.specials:
            return f"{self.rule('TEXT', lark_regex(regex))} {self.pieces(close)}"
        return self.rule("text", lark_regex(f"(?:{regex}){_escape(close)}"), lazy=True)

    def _string_regex(self, schema: Mapping[str, Any]) -> str:
        low, high = schema.get("minLength"), schema.get("maxLength")
        if isinstance(low, int) or isinstance(high, int):
            lo = low if isinstance(low, int) else 0
            return f"(?s:.{{{lo},{high if isinstance(high, int) else ''}}})"
        return "(?s:.*)"

    # -- Gemma 4's notation
    def gemma(self, schema: Any, root: Mapping[str, Any], depth: int) -> str:
        if depth > self.limits.max_nesting_depth:
            raise SchemaError("the schema nests too deeply")
        if not isinstance(schema, Mapping):
            return self._gemma_any() if schema is not False else '""'
        ref = schema.get("$ref")
        if isinstance(ref, str):
            return self._gemma_ref(ref, root, depth)
        values = schema.get("enum", [schema["const"]] if "const" in schema else None)
        if isinstance(values, list) and values:
            return "(" + " | ".join(self._gemma_literal(v) for v in values) + ")"
        for key in ("anyOf", "oneOf"):
            branches = schema.get(key)
            if isinstance(branches, list) and branches:
                return "(" + " | ".join(self.gemma(b, root, depth + 1) for b in branches) + ")"
        types = _types(schema)
        if not types:  # any value (the keywords that would narrow it are not read here)
            return self._gemma_any()
        return "(" + " | ".join(self._gemma_type(t, schema, root, depth) for t in sorted(types)) + ")"

    def _gemma_type(self, t: str, schema: Mapping[str, Any], root: Mapping[str, Any], depth: int) -> str:
        if t == "string":
            return f"{self.pieces(_QUOTE)} {self.text_until(_QUOTE, self._string_regex(schema))}"
        if t == "integer":
            return lark_regex(_JSON_INTEGER)
        if t == "number":
            return lark_regex(_JSON_NUMBER)
        if t == "boolean":
            return '("true" | "false")'
        if t == "null":
            return '("null" | "None")'
        if t == "array":
            items = schema.get("items")
            item = self.rule("gv", self.gemma(items, root, depth + 1)) if items is not None else self._gemma_any()
            low = schema.get("minItems", 0) if isinstance(schema.get("minItems"), int) else 0
            high = schema.get("maxItems") if isinstance(schema.get("maxItems"), int) else None
            if high == 0:
                return '"[" "]"'
            rest = f'("," {item}){{{max(low - 1, 0)},{"" if high is None else high - 1}}}'
            body = f"{item} {rest}"
            return f'"[" {body} "]"' if low > 0 else f'"[" ({body})? "]"'
        if t == "object":
            return self._gemma_object(schema, root, depth)
        raise SchemaError(f"unknown type {t[:40]!r}")

    def _gemma_object(self, schema: Mapping[str, Any], root: Mapping[str, Any], depth: int) -> str:
        props = schema.get("properties")
        if not isinstance(props, Mapping) or not props:
            if schema.get("additionalProperties") is False or props is not None:
                return '"{" "}"'  # as the tag styles: declared properties only, none declared
            pair = f'{lark_regex("[A-Za-z0-9_]+")} ":" {self.rule("gv", self._gemma_any())}'
            return f'"{{" ({pair} ("," {pair})*)? "}}"'
        required = schema.get("required", [])
        names = sorted(props)  # the template writes keys in sorted order (dictsort)
        pairs = [f'{lark_string(n)} ":" {self.rule("gv", self.gemma(props[n], root, depth + 1))}' for n in names]
        needed = [isinstance(required, list) and n in required for n in names]
        # first[i]: properties i.. with none written yet; more[i]: the same after one was written.
        first, more = '""', '""'
        for i in range(len(names) - 1, -1, -1):
            new_more = self.rule("gm", f'"," {pairs[i]} {more}' + ("" if needed[i] else f" | {more}"))
            new_first = self.rule("gf", f"{pairs[i]} {more}" + ("" if needed[i] else f" | {first}"))
            first, more = new_first, new_more
        return f'"{{" {first} "}}"'

    def _gemma_ref(self, ref: str, root: Mapping[str, Any], depth: int) -> str:
        if ref in self._gemma:
            return self._gemma[ref]
        if not ref.startswith("#/"):
            raise SchemaError(f"only local $refs are supported here (got {ref[:80]!r})")
        node: Any = root
        for part in ref[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(node, Mapping) or part not in node:
                raise SchemaError(f"$ref {ref[:80]!r} points nowhere")
            node = node[part]
        name = self.rule("gref", '""')  # reserved first, so that a recursive $ref finds it
        self._gemma[ref] = name
        self.rule(name, self.gemma(node, root, depth + 1), replace=True)
        return name

    def _gemma_any(self) -> str:
        if self._gemma_any_rule:
            return self._gemma_any_rule
        name = self.rule("gany", '""')
        self._gemma_any_rule = name
        text = self.pieces(_QUOTE) + " " + self.text_until(_QUOTE)
        pair = f'{lark_regex("[A-Za-z0-9_]+")} ":" {name}'
        body = " | ".join(
            [
                text,
                lark_regex(_JSON_NUMBER),
                '"true"',
                '"false"',
                '"null"',
                f'"[" ({name} ("," {name})*)? "]"',
                f'"{{" ({pair} ("," {pair})*)? "}}"',
            ]
        )
        self.rule(name, body, replace=True)
        return name

    def _gemma_literal(self, value: Any) -> str:
        if isinstance(value, str):
            return self.pieces(_QUOTE, value, _QUOTE)
        if isinstance(value, bool):
            return '"true"' if value else '"false"'
        if value is None:
            return '"null"'
        if isinstance(value, (int, float)):
            return lark_string(json.dumps(value))
        if isinstance(value, list):
            return '"[" ' + ' "," '.join(self._gemma_literal(v) for v in value) + ' "]"' if value else '"[" "]"'
        if isinstance(value, Mapping):
            inner = ' "," '.join(f'{lark_string(k)} ":" {self._gemma_literal(value[k])}' for k in sorted(value))
            return '"{" ' + inner + ' "}"' if value else '"{" "}"'
        raise SchemaError("enum values must be JSON")


def _escape(text: str) -> str:
    """``text`` as a regex that matches it literally (Rust and Python agree on these escapes)."""
    return "".join("\\" + c if c in r"\.+*?()|[]{}^$" else c for c in text)
