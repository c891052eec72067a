"""A structural tag's format tree as one llguidance grammar.

Each format becomes a Lark expression. Free text (``any_text``, the text around ``triggered_tags``)
that has a known end (the enclosing ``tag``'s end, or the next ``const_string`` of a ``sequence``)
is a lazy lexeme that stops at the first occurrence of that end, as xgrammar's end detection does;
a trigger is a lazy lexeme too, or the special token it names. ``excludes`` are strings the text
never holds. JSON is compact, as everywhere here; ``grammar`` is GBNF (xgrammar's EBNF), turned
into Lark by llguidance's converter.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import llguidance
from llguidance.gbnf_to_lark import any_to_lark

from core.errors import GrammarError, map_errors
from core.jsonschema import prepare_json_schema
from core.lark_text import lark_regex, lark_string
from core.limits import Limits
from core.structural_tag.forms import SUPPORTED_FORMATS, UNSUPPORTED_FORMATS, structural_tag_format
from core.tools.parts import special_tokens

__all__ = ["structural_tag_grammar"]

_ANY = "(?s:.*)"


def _lit(text: str) -> str:
    """``text`` as a regex matching it literally."""
    return "".join("\\" + c if c in "\\.+*?()|[]{}^$" else c for c in text)


class _Writer:
    def __init__(self, tokenizer: llguidance.LLTokenizer | None, limits: Limits) -> None:
        self.tokenizer = tokenizer
        self.specials = special_tokens(tokenizer) if tokenizer is not None else {}
        self.limits = limits
        self.rules: list[str] = []
        self.subgrammars: list[dict[str, Any]] = []
        self.count = 0

    def rule(self, prefix: str, body: str, options: str = "") -> str:
        self.count += 1
        name = f"{prefix}_{self.count}"
        self.rules.append(f"{name}{options}: {body}")
        return name

    def marker(self, text: str) -> str:
        """A string, as the special token it names when the vocabulary has one, else as text."""
        if text in self.specials:
            return f"<[{self.specials[text]}]>"
        return lark_string(text) if text else '""'

    # -- formats; each returns (expression, whether it consumed ``end``)
    def fmt(self, node: Any, end: str | None, depth: int) -> tuple[str, bool]:
        if depth > self.limits.max_nesting_depth:
            raise GrammarError("structural tag nests too deeply")
        if not isinstance(node, Mapping) or not isinstance(node.get("type"), str):
            raise GrammarError("structural tag: every format is an object with a type")
        kind = node["type"]
        if kind in UNSUPPORTED_FORMATS:
            raise GrammarError(
                f"structural tag format {kind!r} is not supported; supported: {', '.join(SUPPORTED_FORMATS)}"
            )
        method = getattr(self, "f_" + kind, None) if kind in SUPPORTED_FORMATS else None
        if method is None:
            raise GrammarError(
                f"unknown structural tag format {kind[:40]!r}; supported: {', '.join(SUPPORTED_FORMATS)}"
            )
        result: tuple[str, bool] = method(node, end, depth + 1)
        return result

    def need(self, node: Mapping[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
        value = node.get(key)
        if not isinstance(value, kind) or isinstance(value, bool) and kind is int:
            raise GrammarError(f"structural tag: {node['type']} needs {key!r}")
        return value

    def f_const_string(self, node: Mapping[str, Any], end: str | None, depth: int) -> tuple[str, bool]:
        return lark_string(self.need(node, "value", str)) or '""', False

    def f_token(self, node: Mapping[str, Any], end: str | None, depth: int) -> tuple[str, bool]:
        token = node.get("token")
        if isinstance(token, int) and not isinstance(token, bool):
            return f"<[{token}]>", False
        if isinstance(token, str) and token in self.specials:
            return f"<[{self.specials[token]}]>", False
        raise GrammarError(f"structural tag: token {str(token)[:60]!r} is not a special token of this vocabulary")

    def f_json_schema(self, node: Mapping[str, Any], end: str | None, depth: int) -> tuple[str, bool]:
        style = node.get("style", "json")
        if style != "json":
            raise GrammarError(f"structural tag: json_schema style {str(style)[:40]!r} is not supported (only json)")
        if node.get("any_order"):
            raise GrammarError("structural tag: json_schema any_order is not supported")
        schema = node.get("json_schema")
        if isinstance(schema, str):
            try:
                schema = json.loads(schema)
            except json.JSONDecodeError as e:
                raise GrammarError(f"structural tag: json_schema is not valid JSON: {e.msg}") from None
        if not isinstance(schema, (Mapping, bool)):
            raise GrammarError("structural tag: json_schema needs a schema")
        prepared, _ = prepare_json_schema(schema, None, self.limits)
        return self.rule("json", "%json " + json.dumps(prepared, ensure_ascii=False)), False

    def f_regex(self, node: Mapping[str, Any], end: str | None, depth: int) -> tuple[str, bool]:
        return self.rule("RX", lark_regex(self.need(node, "pattern", str))), False

    def f_grammar(self, node: Mapping[str, Any], end: str | None, depth: int) -> tuple[str, bool]:
        text = self.need(node, "grammar", str)
        with map_errors({Exception: _not_converted}):  # the converter raises plain exceptions on bad GBNF
            lark = any_to_lark(text)
        name = f"g{len(self.subgrammars) + 1}"
        self.subgrammars.append({"name": name, "lark_grammar": lark})
        return f"@{name}", False

    def f_any_text(self, node: Mapping[str, Any], end: str | None, depth: int) -> tuple[str, bool]:
        if node.get("max_chars") is not None:
            raise GrammarError("structural tag: any_text max_chars is not supported (max_tokens is)")
        excludes = node.get("excludes", [])
        if not isinstance(excludes, list) or not all(isinstance(x, str) and x for x in excludes):
            raise GrammarError("structural tag: excludes must be a list of non-empty strings")
        options = []
        max_tokens = node.get("max_tokens")
        if max_tokens is not None:
            if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 0:
                raise GrammarError("structural tag: max_tokens must be a non-negative integer")
            options.append(f"max_tokens={max_tokens}")
        return self.text(excludes, end, options)

    def text(self, excludes: Sequence[str], end: str | None, options: list[str]) -> tuple[str, bool]:
        """Free text without ``excludes``; lazily up to ``end`` (consuming it) when ``end`` is text."""
        banned = f" & ~{lark_regex(_ANY + '(' + '|'.join(_lit(x) for x in excludes) + ')' + _ANY)}" if excludes else ""
        if end and end not in self.specials:
            body = lark_regex(_ANY + _lit(end)) + banned
            return self.rule("text", body, "[" + ", ".join(["lazy", *options]) + "]"), True
        body = lark_regex(_ANY) + banned
        return self.rule("TEXT" if not options else "text", body, f"[{', '.join(options)}]" if options else ""), False

    def f_sequence(self, node: Mapping[str, Any], end: str | None, depth: int) -> tuple[str, bool]:
        elements = self.need(node, "elements", list)
        parts = []
        consumed = False
        i = 0
        while i < len(elements):
            nxt = elements[i + 1] if i + 1 < len(elements) else None
            if nxt is None:
                inner_end = end
            elif isinstance(nxt, Mapping) and nxt.get("type") == "const_string" and isinstance(nxt.get("value"), str):
                inner_end = nxt["value"] or None
            else:
                inner_end = None
            expr, took = self.fmt(elements[i], inner_end, depth)
            parts.append(expr)
            consumed = took and nxt is None
            i += 2 if took and nxt is not None else 1  # the next const_string was read with the text
        return "(" + " ".join(parts or ['""']) + ")", consumed

    def f_or(self, node: Mapping[str, Any], end: str | None, depth: int) -> tuple[str, bool]:
        elements = self.need(node, "elements", list)
        if not elements:
            raise GrammarError("structural tag: or needs elements")
        return "(" + " | ".join(self.fmt(e, None, depth)[0] for e in elements) + ")", False

    def _inner(self, node: Mapping[str, Any], depth: int) -> str:
        return self.fmt(self.need(node, "content", Mapping), None, depth)[0]

    def f_optional(self, node: Mapping[str, Any], end: str | None, depth: int) -> tuple[str, bool]:
        return f"({self._inner(node, depth)})?", False

    def f_plus(self, node: Mapping[str, Any], end: str | None, depth: int) -> tuple[str, bool]:
        return f"({self._inner(node, depth)})+", False

    def f_star(self, node: Mapping[str, Any], end: str | None, depth: int) -> tuple[str, bool]:
        return f"({self._inner(node, depth)})*", False

    def f_repeat(self, node: Mapping[str, Any], end: str | None, depth: int) -> tuple[str, bool]:
        low, high = self.need(node, "min", int), self.need(node, "max", int)
        if low < 0 or (high != -1 and high < low) or max(low, high) > self.limits.max_repeat:
            bound = self.limits.max_repeat
            raise GrammarError(f"structural tag: repeat needs 0 <= min <= max <= {bound} (max -1: unbounded)")
        return f"({self._inner(node, depth)}){{{low},{'' if high == -1 else high}}}", False

    def f_tag(self, node: Mapping[str, Any], end: str | None, depth: int) -> tuple[str, bool]:
        return self.tag(node, depth, skip=0), False

    def tag(self, node: Any, depth: int, skip: int) -> str:
        """A tag, its begin less the first ``skip`` characters (a trigger already matched)."""
        if not isinstance(node, Mapping) or node.get("type", "tag") != "tag":
            raise GrammarError("structural tag: tags must be tag formats")
        begin, ends = node.get("begin"), node.get("end")
        if not isinstance(begin, str):
            raise GrammarError("structural tag: a tag's begin must be a string (token begins are not supported)")
        if isinstance(ends, str):
            ends = [ends]
        if not isinstance(ends, list) or not ends or not all(isinstance(e, str) for e in ends):
            raise GrammarError("structural tag: a tag's end must be a string or a list of strings")
        head = self.marker(begin[skip:]) if begin[skip:] else ""
        if len(ends) == 1:
            content, took = self.fmt(self.need(node, "content", Mapping), ends[0], depth + 1)
            return f"{head} {content} {'' if took else self.marker(ends[0])}"
        content, _ = self.fmt(self.need(node, "content", Mapping), None, depth + 1)
        return f"{head} {content} ({' | '.join(self.marker(e) for e in ends)})"

    def f_triggered_tags(self, node: Mapping[str, Any], end: str | None, depth: int) -> tuple[str, bool]:
        triggers = self.need(node, "triggers", list)
        tags = self.need(node, "tags", list)
        if not triggers or not all(isinstance(t, str) and t for t in triggers) or not tags:
            raise GrammarError("structural tag: triggered_tags needs non-empty triggers and tags")
        excludes = node.get("excludes", [])
        if not isinstance(excludes, list) or not all(isinstance(x, str) and x for x in excludes):
            raise GrammarError("structural tag: excludes must be a list of non-empty strings")
        by_trigger: dict[str, list[str]] = {}
        full = []
        for tag in tags:
            begin = tag.get("begin") if isinstance(tag, Mapping) else None
            trigger = next((t for t in triggers if isinstance(begin, str) and begin.startswith(t)), None)
            if trigger is None:
                raise GrammarError(f"structural tag: tag begin {str(begin)[:60]!r} starts with none of the triggers")
            by_trigger.setdefault(trigger, []).append(self.tag(tag, depth, skip=len(trigger)))
            full.append(self.tag(tag, depth, skip=0))
        # text, then a trigger (the head), then the rest of one of its tags
        heads = []
        for trigger, rests in by_trigger.items():
            rest = " | ".join(f"({r})" for r in rests)
            if trigger in self.specials:
                text = self.rule("TEXT", lark_regex(_ANY) + self._banned(excludes))
                heads.append(f"{text}? {self.marker(trigger)} ({rest})")
            else:
                body = lark_regex(_ANY + _lit(trigger)) + self._banned(excludes)
                heads.append(f"{self.rule('head', body, '[lazy]')} ({rest})")
        one = self.rule("dispatch", " | ".join(f"({h})" for h in heads))
        any_tag = self.rule("anytag", " | ".join(f"({t})" for t in full))
        tail, took = self.text([*triggers, *excludes], end, [])
        if node.get("stop_after_first"):
            body = any_tag if node.get("at_least_one") else f"{one} | {tail}"
            return self.rule("tt", body), took and not node.get("at_least_one")
        if node.get("at_least_one"):
            return self.rule("tt", f"{any_tag} ({one})* {tail}"), took
        return self.rule("tt", f"({one})* {tail}"), took

    def _banned(self, excludes: Sequence[str]) -> str:
        if not excludes:
            return ""
        return f" & ~{lark_regex(_ANY + '(' + '|'.join(_lit(x) for x in excludes) + ')' + _ANY)}"

    def f_tags_with_separator(self, node: Mapping[str, Any], end: str | None, depth: int) -> tuple[str, bool]:
        tags = self.need(node, "tags", list)
        sep = self.need(node, "separator", str)
        if not tags:
            raise GrammarError("structural tag: tags_with_separator needs tags")
        one = self.rule("anytag", " | ".join(f"({self.tag(t, depth, 0)})" for t in tags))
        if node.get("stop_after_first"):
            return (one if node.get("at_least_one") else f"({one})?"), False
        seq = f"{one} ({self.marker(sep)} {one})*"
        return (f"({seq})" if node.get("at_least_one") else f"({seq})?"), False


def structural_tag_grammar(tag: Mapping[str, Any], tokenizer: llguidance.LLTokenizer | None, limits: Limits) -> str:
    """llguidance's top-level grammar (JSON text) for a structural tag in either form.

    Raises:
        GrammarError: a malformed tag, or a format we do not support (the message names it).
        SchemaError: a JSON schema inside it is refused.
    """
    writer = _Writer(tokenizer, limits)
    expr, _ = writer.fmt(structural_tag_format(tag), None, 0)
    lark = "\n".join([f"start: {expr}", *writer.rules]) + "\n"
    return json.dumps({"grammars": [{"name": "structural_tag", "lark_grammar": lark}, *writer.subgrammars]})


def _not_converted(error: Exception) -> GrammarError:
    return GrammarError(f"structural tag: grammar does not convert: {str(error)[:300]}")
