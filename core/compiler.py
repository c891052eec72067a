"""Compilation of templates and direct constraints to llguidance grammars.

A template becomes one llguidance top-level grammar: a Lark grammar whose ``start`` rule follows
the template, with a captured rule per named slot, ``%json`` for embedded schemas and a named
sub-grammar per embedded Lark grammar. Repeats mark each separator with an internal capture so
that the values captured inside a repeat can be grouped per item (see :class:`CaptureLayout`).

Semantics chosen here (and documented in the README):

* ``gen`` followed by literal text stops at the first occurrence of that text (Guidance's rule);
  with ``stop=``, it stops at the stop string, which stays in the output (a server cannot hide
  tokens) but not in the captured value; when the text after the slot starts with the stop string,
  that text is the stop and is produced once.
* JSON is compact unless ``whitespace=N`` allows up to N whitespace characters wherever JSON
  allows whitespace (enough for pretty-printing).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import llguidance

from core.errors import GrammarError, LimitExceeded, SchemaError, TemplateError, classify_engine_error
from core.derivation import derivation_depth, schema_derivation_depth
from core.expansion import expansion
from core.limits import Limits
from core.jsonschema import DEFAULT_FORMAT_MODE, FORMAT_MODES, FormatMode, format_hint, rewrite_schema_report
from core.template import (
    GenNode,
    GrammarNode,
    GuidanceTemplate,
    JsonNode,
    Node,
    RepeatNode,
    SelectNode,
    TextNode,
)

if TYPE_CHECKING:
    from core.program import ProgramSpec

__all__ = [
    "CaptureLayout",
    "CompiledGrammar",
    "compile_choice",
    "compile_json_schema",
    "compile_lark",
    "compile_regex",
    "compile_spec",
    "compile_template",
    "json_schema_with_options",
    "prepare_json_schema",
    "slot_pattern",
]

_ANY_TEXT = "(?s:.*)"
_LIST_APPEND = "__LIST_APPEND:"
_MESSAGE_CHARS = 1000
_COMPACT = {"whitespace_flexible": False, "item_separator": ",", "key_separator": ":"}


@dataclass(frozen=True)
class RepeatInfo:
    """One ``{{#repeat}}`` block as seen by capture grouping."""

    id: int
    name: str | None
    item: str  # capture name of one repetition (the user's name, or an internal one)
    sep_marker: str | None  # capture name of the separator, None when sep=''


@dataclass(frozen=True)
class CaptureLayout:
    """Where each capture lives, to turn llguidance's flat capture list into variables.

    ``scope`` maps a capture name to the repeats it is inside, outermost first (a repeat's own
    item capture is inside its repeat). Values at the top level are strings; inside a repeat they
    become lists, one entry per repetition (lists of lists for nested repeats).
    """

    scope: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    repeats: Mapping[int, RepeatInfo] = field(default_factory=dict)
    markers: Mapping[str, int] = field(default_factory=dict)
    # a user's own Lark grammar: report its ``name[capture]`` rules as they are (last value wins)
    passthrough: bool = False

    def values(self, records: Sequence[tuple[str, bytes]]) -> dict[str, Any]:
        """Group llguidance ``get_captures()`` records into the template's variables."""
        root: dict[Any, Any] = {}
        for name, raw in records:
            name = name.removeprefix(_LIST_APPEND)
            value = _decode_partial(raw)
            k = self.markers.get(name)
            if k is not None:
                ctx = self._context(root, self.scope[self.repeats[k].item][:-1], None, None)
                items = ctx.setdefault(("#r", k), [])
                if not items:
                    items.append({})
                items.append({})
                continue
            chain = self.scope.get(name)
            if chain is None:
                if self.passthrough:
                    root[name] = value
                continue
            ctx = self._context(root, chain, name, value)
            ctx[name] = value
        return self._render(root)

    def _context(
        self, root: dict[Any, Any], chain: Sequence[int], name: str | None, value: str | None
    ) -> dict[Any, Any]:
        ctx = root
        for k in chain:
            items: list[dict[Any, Any]] = ctx.setdefault(("#r", k), [])
            if not items:
                items.append({})
            info = self.repeats[k]
            if info.sep_marker is None and name is not None and info.item in items[-1]:
                # No separator to count items by: a finished item followed by a new capture,
                # or an item value that does not extend the last one, starts a new item.
                old = items[-1][info.item]
                if name != info.item or not (isinstance(old, str) and value is not None and value.startswith(old)):
                    items.append({})
            ctx = items[-1]
        return ctx

    def _render(self, ctx: Mapping[Any, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, val in ctx.items():
            if isinstance(key, str):
                if not key.startswith("#"):
                    out[key] = val
                continue
            info = self.repeats[key[1]]
            rendered = [self._render(item) for item in val]
            if info.name is not None:
                out[info.name] = [item[info.item] for item in val if info.item in item]
            for item in rendered:
                for inner, v in item.items():
                    if inner != info.name:
                        out.setdefault(inner, []).append(v)
        return out


def _decode_partial(raw: bytes) -> str:
    """Decode UTF-8, dropping an incomplete character at the end (a value still growing)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        for cut in range(1, 4):
            try:
                return raw[:-cut].decode("utf-8")
            except UnicodeDecodeError:
                continue
        return raw.decode("utf-8", errors="replace")


@dataclass(frozen=True)
class CompiledGrammar:
    """An llguidance grammar (top-level JSON text) and how to read its captures."""

    grammar: str
    layout: CaptureLayout
    #: What the schema asks that is compiled as an annotation only (``format "path" at #/...``).
    ignored: tuple[str, ...] = ()


# ---------------------------------------------------------------------------------------------
# helpers


def _lark_string(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _lark_regex(regex: str) -> str:
    """Write a regex as a Lark ``/.../`` terminal: escape bare slashes and line breaks."""
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


def _error_text(message: str) -> str:
    message = message.strip()
    return message if len(message) <= _MESSAGE_CHARS else message[:_MESSAGE_CHARS] + "..."


def _too_deep(limits: Limits) -> LimitExceeded:
    return LimitExceeded(
        f"the constraint chains references (subschemas, $refs or Lark rules) more than "
        f"{limits.max_derivation_depth} levels deep",
        "max_derivation_depth",
    )


def _validate(
    grammar: str, tokenizer: llguidance.LLTokenizer | None, limits: Limits
) -> str:
    """llguidance's own check; returns "" or the error message.

    Every grammar reaches llguidance through here first, so the derivation depth is checked here:
    the engine's own parse recurses through it and would overflow its stack on deeper ones.
    """
    if derivation_depth(grammar, limits.max_derivation_depth) > limits.max_derivation_depth:
        raise _too_deep(limits)
    is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(
        grammar, tokenizer, limits=limits.parser_limits()
    )
    return messages[0] if is_error and messages else ""


def _json_depth(value: Any, limit: int) -> bool:
    """True when ``value`` nests deeper than ``limit`` (iterative: safe on hostile input)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
    return False


def json_schema_with_options(
    schema: Mapping[str, Any] | bool, whitespace: int | None, limits: Limits
) -> dict[str, Any]:
    """The schema rewritten for llguidance, its ``x-guidance`` formatting options set (compact by default).

    Keys the schema itself sets in ``x-guidance`` win over the compact default; ``whitespace=N``
    wins over both. ``format`` is asserted where known (see :func:`prepare_json_schema`).
    """
    return prepare_json_schema(schema, whitespace, limits)[0]


def prepare_json_schema(
    schema: Mapping[str, Any] | bool,
    whitespace: int | None,
    limits: Limits,
    formats: FormatMode = DEFAULT_FORMAT_MODE,
) -> tuple[dict[str, Any], list[str]]:
    """:func:`json_schema_with_options` with the ``formats`` mode, also returning what was ignored.

    Returns:
        ``(schema, ignored)``: the schema for llguidance, and the annotations it does not assert
        (see :mod:`core.jsonschema.formats`).
    """
    if isinstance(schema, bool):
        schema = {} if schema else {"not": {}}
    if not isinstance(schema, Mapping):
        raise SchemaError("a JSON schema must be an object or a boolean")
    if _json_depth(schema, limits.max_nesting_depth):
        raise LimitExceeded(
            f"JSON schema nests deeper than {limits.max_nesting_depth} levels", "max_nesting_depth"
        )
    size = len(json.dumps(schema, ensure_ascii=False))
    if size > limits.max_source_bytes:
        raise LimitExceeded(f"JSON schema is larger than {limits.max_source_bytes} bytes", "max_source_bytes")
    if schema_derivation_depth(schema, limits.max_derivation_depth) > limits.max_derivation_depth:
        raise _too_deep(limits)  # before the rewrites too, whose work grows with the chains
    # exact rewrites of what llguidance refuses (core/jsonschema/)
    schema, report = rewrite_schema_report(schema, formats, limits=limits)
    user = schema.get("x-guidance")
    options: dict[str, Any] = dict(_COMPACT)
    if isinstance(user, Mapping):
        options.update(user)
    if whitespace:
        options.pop("whitespace_flexible", None)
        options["whitespace_pattern"] = "[\\x20\\x0A\\x0D\\x09]{0,%d}" % whitespace
    out = dict(schema)
    out["x-guidance"] = options
    return out, report.ignored


def _check_size(text: str, what: str, limits: Limits) -> None:
    if len(text.encode("utf-8")) > limits.max_source_bytes:
        raise LimitExceeded(f"{what} is larger than {limits.max_source_bytes} bytes", "max_source_bytes")


# ---------------------------------------------------------------------------------------------
# template -> Lark


class _Builder:
    def __init__(self, tokenizer: llguidance.LLTokenizer | None, limits: Limits) -> None:
        self.tokenizer = tokenizer
        self.limits = limits
        self.rules: list[str] = []
        self.subgrammars: list[dict[str, Any]] = []
        self.scope: dict[str, tuple[int, ...]] = {}
        self.repeats: dict[int, RepeatInfo] = {}
        self.markers: dict[str, int] = {}
        self.count = 0

    def fresh(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}_{self.count}"

    def attrs(self, name: str | None, chain: tuple[int, ...], extra: Sequence[str] = ()) -> str:
        # Inside a repeat every capture must be recorded, even when its value repeats: llguidance
        # appends names with this prefix instead of de-duplicating them.
        if name is not None and chain:
            name = _LIST_APPEND + name
        parts = [f"capture={_lark_string(name)}"] if name is not None else []
        parts.extend(extra)
        return f"[{', '.join(parts)}]" if parts else ""

    def rule(self, prefix: str, attrs: str, body: str) -> str:
        name = self.fresh(prefix)
        self.rules.append(f"{name}{attrs}: {body}")
        return name

    def note(self, name: str | None, chain: tuple[int, ...]) -> None:
        if name is not None:
            self.scope[name] = chain

    def check_slot(self, grammar: str, line: int, column: int, what: str) -> None:
        message = _validate(grammar, self.tokenizer, self.limits)
        if message:
            raise TemplateError(f"invalid {what}: {_error_text(message)}", line, column)

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
                        parts.append(_lark_string(rest))
                    i += 1  # the text was folded into the gen
            else:
                parts.append(self.node(node, chain))
            i += 1
        return " ".join(p for p in parts if p) or '""'

    def node(self, node: Node, chain: tuple[int, ...]) -> str:
        if isinstance(node, TextNode):
            return _lark_string(node.text) if node.text else ""
        if isinstance(node, SelectNode):
            self.note(node.name, chain)
            if node.options is not None:
                body = " | ".join(_lark_string(o) for o in node.options)
            else:
                assert node.branches is not None
                body = " | ".join(f"({self.seq(b, chain)})" for b in node.branches)
            return self.rule("select", self.attrs(node.name, chain), body)
        if isinstance(node, JsonNode):
            self.note(node.name, chain)
            try:
                schema = json_schema_with_options(node.schema, node.whitespace, self.limits)
            except SchemaError as e:
                raise TemplateError(e.detail, node.line, node.column) from None
            self.check_slot(
                llguidance.LLMatcher.grammar_from_json_schema(schema), node.line, node.column, "JSON schema"
            )
            return self.rule("json", self.attrs(node.name, chain), "%json " + json.dumps(schema, ensure_ascii=False))
        if isinstance(node, GrammarNode):
            self.note(node.name, chain)
            _check_size(node.lark, "grammar", self.limits)
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
            _check_size(node.regex, "regex", self.limits)
            self.check_slot(llguidance.LLMatcher.grammar_from_regex(node.regex), node.line, node.column, "regex")
        extra: list[str] = []
        rest = follow
        if node.stop is not None:
            if len(node.stop) == 1:
                extra.append(f"suffix={_lark_string(node.stop[0])}")
                if follow is not None and follow.startswith(node.stop[0]):
                    rest = follow[len(node.stop[0]) :]
            else:
                term = self.fresh("STOP").upper()
                self.rules.append(f"{term}: " + " | ".join(_lark_string(s) for s in node.stop))
                extra.append(f"suffix={term}")
        elif follow:
            extra.append(f"suffix={_lark_string(follow)}")
            rest = ""
        if node.max_tokens is not None:
            extra.append(f"max_tokens={node.max_tokens}")
        attrs = self.attrs(node.name, chain, extra)
        body = _lark_regex(regex)
        expr = self.rule("gen", attrs, body) if attrs else body
        return expr, rest

    def repeat(self, node: RepeatNode, chain: tuple[int, ...]) -> str:
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
            sep = self.rule("sep", self.attrs(marker, inner), _lark_string(node.sep))
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


def slot_pattern(node: Node) -> str:
    """The constraint of one slot: the regex of a gen or inline select, else a Lark fragment."""
    if isinstance(node, GenNode):
        return node.regex if node.regex is not None else _ANY_TEXT
    if isinstance(node, SelectNode) and node.options is not None:
        import re

        return "|".join(re.escape(o) for o in node.options)
    builder = _Builder(None, Limits())
    if isinstance(node, JsonNode):
        return "%json " + json.dumps(json_schema_with_options(node.schema, node.whitespace, Limits()))
    if isinstance(node, GrammarNode):
        return node.lark
    expr = builder.node(node, ())
    return "\n".join(builder.rules + [f"start: {expr}"])


def compile_template(
    template: GuidanceTemplate, tokenizer: llguidance.LLTokenizer | None, limits: Limits
) -> CompiledGrammar:
    """Compile a parsed template to an llguidance grammar; errors carry line and column."""
    builder = _Builder(tokenizer, limits)
    start = builder.seq(template.nodes, ())
    lark = "\n".join([f"start: {start}", *builder.rules]) + "\n"
    grammar = json.dumps({"grammars": [{"lark_grammar": lark}, *builder.subgrammars]}, ensure_ascii=False)
    message = _validate(grammar, tokenizer, limits)
    if message:
        limit = classify_engine_error(message)
        if limit is not None:
            raise LimitExceeded(f"template too complex: {_error_text(message)}", limit)
        raise TemplateError(f"template does not compile: {_error_text(message)}")
    layout = CaptureLayout(dict(builder.scope), dict(builder.repeats), dict(builder.markers))
    return CompiledGrammar(grammar, layout)


def _finish(
    grammar: str,
    tokenizer: llguidance.LLTokenizer | None,
    limits: Limits,
    error: type[GrammarError],
    layout: CaptureLayout | None = None,
) -> CompiledGrammar:
    message = _validate(grammar, tokenizer, limits)
    if message:
        limit = classify_engine_error(message)
        if limit is not None:
            raise LimitExceeded(f"constraint too complex: {_error_text(message)}", limit)
        raise error(_error_text(message))
    return CompiledGrammar(grammar, layout or CaptureLayout())


def compile_regex(pattern: str, tokenizer: llguidance.LLTokenizer | None, limits: Limits) -> CompiledGrammar:
    """A regex (Rust ``regex`` syntax: no lookarounds or backreferences) over the whole output."""
    if not isinstance(pattern, str):
        raise GrammarError("regex must be a string")
    _check_size(pattern, "regex", limits)
    return _finish(llguidance.LLMatcher.grammar_from_regex(pattern), tokenizer, limits, GrammarError)


def compile_lark(lark: str, tokenizer: llguidance.LLTokenizer | None, limits: Limits) -> CompiledGrammar:
    """A Lark grammar in llguidance's dialect (``start`` rule, ``%json``, lexeme options)."""
    if not isinstance(lark, str) or not lark.strip():
        raise GrammarError("grammar must be a non-empty Lark string")
    _check_size(lark, "grammar", limits)
    return _finish(
        llguidance.LLMatcher.grammar_from_lark(lark), tokenizer, limits, GrammarError, CaptureLayout(passthrough=True)
    )


def compile_json_schema(
    schema: Mapping[str, Any] | bool | str,
    tokenizer: llguidance.LLTokenizer | None,
    limits: Limits,
    whitespace: int | None = None,
    formats: FormatMode = DEFAULT_FORMAT_MODE,
) -> CompiledGrammar:
    """A JSON schema, compact unless ``whitespace`` allows bounded whitespace; ``format`` per ``formats``."""
    if isinstance(schema, str):
        _check_size(schema, "JSON schema", limits)
        try:
            schema = json.loads(schema)
        except json.JSONDecodeError as e:
            raise SchemaError(f"JSON schema is not valid JSON: {e.msg} at {e.pos}") from None
    if not isinstance(schema, (Mapping, bool)):
        raise SchemaError("a JSON schema must be an object or a boolean")
    prepared, ignored = prepare_json_schema(schema, whitespace, limits, formats)
    try:
        grammar = llguidance.LLMatcher.grammar_from_json_schema(prepared)
    except ValueError as e:
        raise SchemaError(_error_text(str(e))) from None
    try:
        compiled = _finish(grammar, tokenizer, limits, SchemaError)
    except SchemaError as e:
        raise SchemaError(format_hint(e.detail)) from None
    return replace(compiled, ignored=tuple(ignored))


def compile_choice(options: Sequence[str], tokenizer: llguidance.LLTokenizer | None, limits: Limits) -> CompiledGrammar:
    """Exactly one of the given strings."""
    if isinstance(options, str) or not isinstance(options, Sequence) or not options:
        raise GrammarError("choice must be a non-empty list of strings")
    if not all(isinstance(o, str) for o in options):
        raise GrammarError("choice options must be strings")
    if len(options) > limits.max_choices:
        raise LimitExceeded(f"choice has {len(options)} options, above {limits.max_choices}", "max_choices")
    _check_size("".join(options), "choice", limits)
    lark = "start: " + " | ".join(_lark_string(o) for o in options) + "\n"
    return _finish(llguidance.LLMatcher.grammar_from_lark(lark), tokenizer, limits, GrammarError)


def compile_spec(spec: ProgramSpec, tokenizer: llguidance.LLTokenizer | None, limits: Limits) -> CompiledGrammar:
    """The validated grammar of a program spec: every check of a compile short of the matcher.

    Runs in the server or in a compile worker (:mod:`core.workers`) alike; either way on an engine
    thread (:mod:`core.threads`), since llguidance's validation recurses natively.

    Raises:
        GuidanceError: the spec does not compile or breaks a limit.
    """
    try:
        compiled = _compile_kind(spec, tokenizer, limits)
    except RecursionError:
        raise LimitExceeded("the constraint is nested too deeply", "max_nesting_depth") from None
    grown = expansion(compiled.grammar)
    if grown > limits.max_expansion:
        raise LimitExceeded(
            f"the constraint expands to a literal or repeat of about {grown} characters, above the limit "
            f"of {limits.max_expansion} (every mask would cost time quadratic in it)",
            "max_expansion",
        )
    return compiled


def _compile_kind(spec: ProgramSpec, ll: llguidance.LLTokenizer | None, limits: Limits) -> CompiledGrammar:
    if spec.kind == "template":
        if not isinstance(spec.source, str):
            raise GrammarError("template must be a string")
        return compile_template(GuidanceTemplate(spec.source, spec.variables, limits), ll, limits)
    if spec.variables:
        raise GrammarError("variables apply to templates only")
    if spec.kind == "json_schema":
        ws = spec.options.get("whitespace")
        if ws is not None and (not isinstance(ws, int) or isinstance(ws, bool) or not 0 <= ws <= 64):
            raise GrammarError("option whitespace must be an integer from 0 to 64")
        formats = spec.options.get("formats", DEFAULT_FORMAT_MODE)
        if formats not in FORMAT_MODES:
            raise GrammarError(f"option formats must be one of {', '.join(FORMAT_MODES)}")
        return compile_json_schema(spec.source, ll, limits, ws, formats)
    if spec.kind == "regex":
        return compile_regex(spec.source, ll, limits)
    if spec.kind == "grammar":
        return compile_lark(spec.source, ll, limits)
    return compile_choice(spec.source, ll, limits)
