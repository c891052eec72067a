"""Template nodes to llguidance's Lark dialect: the template's grammar and each slot's pattern.

A template becomes one llguidance top-level grammar: a Lark grammar whose ``start`` rule follows
the template, with a captured rule per named slot, ``%json`` for embedded schemas and a named
sub-grammar per embedded Lark grammar. Repeats mark each separator with an internal capture so
that the values captured inside a repeat can be grouped per item (:mod:`core.captures`).

Semantics chosen here (and documented in the README):

* ``gen`` followed by literal text stops at the first occurrence of that text (Guidance's rule);
  with ``stop=``, it stops at the stop string, which stays in the output (a server cannot hide
  tokens) but not in the captured value (:meth:`~core.template.nodes.GenNode.ending`).
* A ``json`` slot's schema is prepared exactly as a direct ``json_schema`` constraint is
  (:func:`core.jsonschema.schema_grammar`: the same checks, rewrites, ``format`` handling, error
  hints and JSON pointers, and the same annotations reported as ignored); JSON is compact unless
  ``whitespace=N`` allows bounded whitespace.

Each slot is checked by llguidance as it is written, so that an error names its line and column.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

import llguidance

from core.captures import LIST_APPEND, CaptureLayout, RepeatInfo
from core.errors import SchemaError, TemplateError
from core.jsonschema import prepare_json_schema, schema_grammar
from core.lark_text import lark_regex, lark_string
from core.limits import Limits
from core.regex_errors import regex_message
from core.template.nodes import GenNode, GrammarNode, JsonNode, Node, RepeatNode, SelectNode, TextNode
from core.validation import check_size, trimmed, validate

__all__ = ["slot_pattern", "template_grammar"]

# The pattern of a ``gen`` without ``regex=``: any text, line breaks included.
_ANY_TEXT = "(?s:.*)"


class _Writer:
    """Writes one template's rules, numbering them and noting where each capture lives."""

    def __init__(self, tokenizer: llguidance.LLTokenizer | None, limits: Limits) -> None:
        self.tokenizer = tokenizer
        self.limits = limits
        self.rules: list[str] = []
        self.subgrammars: list[dict[str, Any]] = []
        self.scope: dict[str, tuple[int, ...]] = {}
        self.repeats: dict[int, RepeatInfo] = {}
        self.markers: dict[str, int] = {}
        self.ignored: list[str] = []  # what the json slots' schemas ask that is compiled as annotation
        self.count = 0

    def layout(self) -> CaptureLayout:
        return CaptureLayout(dict(self.scope), dict(self.repeats), dict(self.markers))

    def fresh(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}_{self.count}"

    def attrs(self, name: str | None, chain: tuple[int, ...], extra: Sequence[str] = ()) -> str:
        # Inside a repeat every capture must be recorded, even when its value repeats.
        if name is not None and chain:
            name = LIST_APPEND + name
        parts = [f"capture={lark_string(name)}"] if name is not None else []
        parts.extend(extra)
        return f"[{', '.join(parts)}]" if parts else ""

    def rule(self, prefix: str, attrs: str, body: str) -> str:
        name = self.fresh(prefix)
        self.rules.append(f"{name}{attrs}: {body}")
        return name

    def note(self, name: str | None, chain: tuple[int, ...]) -> None:
        if name is not None:
            self.scope[name] = chain

    def check_slot(self, grammar: str, line: int, column: int, what: str, regex: str | None = None) -> None:
        message = validate(grammar, self.tokenizer, self.limits)
        if message:
            if regex is not None:  # about the slot's pattern, not the grammar wrapping it
                raise TemplateError(regex_message(regex, trimmed(message))[0].split("\n", 1)[0], line, column)
            raise TemplateError(f"invalid {what}: {trimmed(message)}", line, column)

    # sequences
    def seq(self, nodes: Sequence[Node], chain: tuple[int, ...]) -> str:
        parts: list[str] = []
        i = 0
        while i < len(nodes):
            node = nodes[i]
            nxt = nodes[i + 1] if i + 1 < len(nodes) else None
            if isinstance(node, GenNode):
                follow = nxt.text if isinstance(nxt, TextNode) else None
                expr, rest = self.gen(node, follow, chain)
                parts.append(expr)
                if follow is not None:
                    if rest:
                        parts.append(lark_string(rest))
                    i += 1  # the text was folded into the gen
            else:
                parts.append(self.node(node, chain))
            i += 1
        return " ".join(p for p in parts if p) or '""'

    def node(self, node: Node, chain: tuple[int, ...]) -> str:
        if isinstance(node, TextNode):
            return lark_string(node.text) if node.text else ""
        if isinstance(node, SelectNode):
            self.note(node.name, chain)
            if node.options is not None:
                body = " | ".join(lark_string(o) for o in node.options)
            else:
                assert node.branches is not None
                body = " | ".join(f"({self.seq(b, chain)})" for b in node.branches)
            return self.rule("select", self.attrs(node.name, chain), body)
        if isinstance(node, JsonNode):
            self.note(node.name, chain)
            try:
                _, prepared, _ = schema_grammar(node.schema, self.tokenizer, self.limits, node.whitespace)
            except SchemaError as e:
                raise TemplateError(f"invalid JSON schema: {e.detail}", node.line, node.column) from None
            self.ignored.extend(prepared.ignored)
            body = "%json " + json.dumps(prepared.schema, ensure_ascii=False)
            return self.rule("json", self.attrs(node.name, chain), body)
        if isinstance(node, GrammarNode):
            self.note(node.name, chain)
            check_size(node.lark, "grammar", self.limits)
            self.check_slot(llguidance.LLMatcher.grammar_from_lark(node.lark), node.line, node.column, "grammar")
            sub = self.fresh("g")
            self.subgrammars.append({"name": sub, "lark_grammar": node.lark})
            return self.rule("grammar", self.attrs(node.name, chain), "@" + sub)
        if isinstance(node, RepeatNode):
            return self.repeat(node, chain)
        if isinstance(node, GenNode):
            return self.gen(node, None, chain)[0]
        raise TypeError(f"unexpected node {node!r}")  # pragma: no cover

    def gen(self, node: GenNode, follow: str | None, chain: tuple[int, ...]) -> tuple[str, str | None]:
        """A gen slot; returns its expression and what remains of the following text."""
        self.note(node.name, chain)
        regex = node.regex if node.regex is not None else _ANY_TEXT
        if node.regex is not None:
            check_size(node.regex, "regex", self.limits)
            self.check_slot(
                llguidance.LLMatcher.grammar_from_regex(node.regex), node.line, node.column, "regex", node.regex
            )
        extra: list[str] = []
        stops, rest = node.ending(follow)
        if len(stops) == 1:
            extra.append(f"suffix={lark_string(stops[0])}")
        elif stops:
            term = self.fresh("STOP").upper()
            self.rules.append(f"{term}: " + " | ".join(lark_string(s) for s in stops))
            extra.append(f"suffix={term}")
        if node.max_tokens is not None:
            extra.append(f"max_tokens={node.max_tokens}")
        attrs = self.attrs(node.name, chain, extra)
        body = lark_regex(regex)
        expr = self.rule("gen", attrs, body) if attrs else body
        return expr, rest

    def repeat(self, node: RepeatNode, chain: tuple[int, ...]) -> str:
        # Repeats are numbered in template order, depth first: core.partial pairs them so.
        k = self.count + 1
        self.count += 1
        inner = chain + (k,)
        item_name = node.name if node.name is not None else f"#item{k}"
        marker = f"#sep{k}" if node.sep else None
        self.repeats[k] = RepeatInfo(k, node.name, item_name, marker)
        self.scope[item_name] = inner
        body = self.seq(node.body, inner)
        item = self.rule("item", self.attrs(item_name, inner), body)
        if marker is not None:
            self.markers[marker] = k
            sep = self.rule("sep", self.attrs(marker, inner), lark_string(node.sep))
            rest = f"{sep} {item}"
        else:
            rest = item
        lo, hi = node.min, node.max

        def times(a: int, b: int | None) -> str:
            if b is None:
                return f"({rest})*" if a == 0 else f"({rest}){{{a},}}"
            if b == 0:
                return ""
            return f"({rest}){{{a},{b}}}"

        more = times(max(lo - 1, 0), None if hi is None else hi - 1)
        expr = f"{item} {more}".strip()
        return f"({expr})?" if lo == 0 else f"({expr})"


def template_grammar(
    nodes: Sequence[Node], tokenizer: llguidance.LLTokenizer | None, limits: Limits
) -> tuple[str, CaptureLayout, list[str]]:
    """The llguidance top-level grammar (JSON text) of a template's nodes, its capture layout, and
    what its json slots' schemas ask that is compiled as an annotation only.

    Each slot is validated as it is written (against ``tokenizer`` when given); the whole grammar
    is not: the caller validates it (:func:`core.compiler.compile_template`).

    Raises:
        TemplateError: a slot does not compile; the error names its line and column.
        LimitExceeded: a slot's source breaks ``limits``.
    """
    writer = _Writer(tokenizer, limits)
    start = writer.seq(nodes, ())
    lark = "\n".join([f"start: {start}", *writer.rules]) + "\n"
    grammar = json.dumps({"grammars": [{"lark_grammar": lark}, *writer.subgrammars]}, ensure_ascii=False)
    return grammar, writer.layout(), writer.ignored


def slot_pattern(node: Node, limits: Limits) -> str:
    """The constraint of one slot: the regex of a gen or inline select, else a Lark fragment.

    A ``json`` slot's schema is prepared under ``limits``, and the slots inside a block are
    checked against them (without a tokenizer).
    """
    if isinstance(node, GenNode):
        return node.regex if node.regex is not None else _ANY_TEXT
    if isinstance(node, SelectNode) and node.options is not None:
        return "|".join(re.escape(o) for o in node.options)
    if isinstance(node, JsonNode):
        return "%json " + json.dumps(prepare_json_schema(node.schema, node.whitespace, limits)[0])
    if isinstance(node, GrammarNode):
        return node.lark
    writer = _Writer(None, limits)
    expr = writer.node(node, ())
    return "\n".join(writer.rules + [f"start: {expr}"])
