"""The template language: parsing a Handlebars-style template into slots.

Grammar of the language (see the README for the user-facing description)::

    text        any characters; ``\\{{`` is a literal ``{{``
    {{! ... }}  a comment ({{!-- ... --}} also works)
    {{gen 'name' regex='...' stop='...' max_tokens=N}}
    {{select 'name' options=['a', 'b']}}   or options=varname
    {{#select 'name'}} branch {{or}} branch {{/select}}
    {{json 'name' schema=varname}}         or schema={...}; whitespace=N
    {{grammar 'name' lark=varname}}        or lark='...'
    {{#repeat 'name' min=1 max=5 sep=', '}} body {{/repeat}}
    {{varname}} the compile-time variable's value, always literal text

The parser produces a tree of nodes; ``core.compiler`` turns it into llguidance's Lark dialect.
Every error is a :class:`~core.errors.TemplateError` with a 1-based line and column (a template
over the size limit is a :class:`~core.errors.LimitExceeded`, as any other source over it).
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

from core.errors import LimitExceeded, TemplateError, excerpt
from core.limits import Limits

__all__ = [
    "GenNode",
    "GrammarNode",
    "GuidanceTemplate",
    "GuidanceTemplateType",
    "GuidanceVariable",
    "InterpolationNode",
    "JsonNode",
    "Node",
    "RepeatNode",
    "SelectNode",
    "TextNode",
]


class GuidanceTemplateType(enum.Enum):
    """The kinds of slot a template can hold."""

    GEN = "gen"
    SELECT = "select"
    JSON = "json"
    GRAMMAR = "grammar"
    REPEAT = "repeat"


@dataclass
class TextNode:
    text: str


@dataclass
class InterpolationNode:
    variable: str
    line: int
    column: int


@dataclass
class GenNode:
    name: str | None
    regex: str | None
    stop: list[str] | None
    max_tokens: int | None
    line: int
    column: int


@dataclass
class SelectNode:
    name: str | None
    options: list[str] | None  # inline form
    branches: list[list[Node]] | None  # block form
    line: int
    column: int


@dataclass
class JsonNode:
    name: str | None
    schema: dict[str, Any] | bool
    whitespace: int | None
    line: int
    column: int


@dataclass
class GrammarNode:
    name: str | None
    lark: str
    line: int
    column: int


@dataclass
class RepeatNode:
    name: str | None
    min: int
    max: int | None
    sep: str
    body: list[Node]
    line: int
    column: int


Node = Union[TextNode, InterpolationNode, GenNode, SelectNode, JsonNode, GrammarNode, RepeatNode]

_SLOT_TYPES: dict[type, GuidanceTemplateType] = {
    GenNode: GuidanceTemplateType.GEN,
    SelectNode: GuidanceTemplateType.SELECT,
    JsonNode: GuidanceTemplateType.JSON,
    GrammarNode: GuidanceTemplateType.GRAMMAR,
    RepeatNode: GuidanceTemplateType.REPEAT,
}


@dataclass(frozen=True)
class GuidanceVariable:
    """One slot of a template: its kind, its capture name and where it is."""

    type: GuidanceTemplateType
    name: str | None
    line: int
    column: int
    node: Node = field(repr=False, compare=False)
    in_repeat: bool = False

    def to_pattern(self) -> str:
        """The slot's constraint: a regex for ``gen`` and inline ``select``, a Lark fragment otherwise."""
        from core.compiler import slot_pattern

        return slot_pattern(self.node)


# ---------------------------------------------------------------------------------------------
# Parsing

_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")
_KEYWORDS = {"gen", "select", "json", "grammar", "repeat", "or"}
_BLOCKS = {"select", "repeat"}
_CAPTURE_NAME_MAX = 128


class _Ref:
    """A bare identifier used as an option value: a reference to a compile-time variable."""

    def __init__(self, name: str) -> None:
        self.name = name


class _Parser:
    def __init__(self, source: str, limits: Limits) -> None:
        self.option_pos: dict[str, int] = {}
        self.src = source
        self.limits = limits
        self.pos = 0
        # line starts for position -> (line, column)
        self._line_starts = [0] + [m.end() for m in re.finditer("\n", source)]

    # -- positions and errors
    def where(self, pos: int) -> tuple[int, int]:
        lo, hi = 0, len(self._line_starts) - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self._line_starts[mid] <= pos:
                lo = mid
            else:
                hi = mid - 1
        return lo + 1, pos - self._line_starts[lo] + 1

    def error(self, message: str, pos: int | None = None) -> TemplateError:
        line, column = self.where(self.pos if pos is None else pos)
        return TemplateError(message, line=line, column=column)

    # -- top level
    def parse(self) -> list[Node]:
        nodes, end = self.parse_sequence(depth=0, closers=())
        if end is not None:  # pragma: no cover - closers=() never ends early
            raise self.error(f"unexpected {{{{{end}}}}}")
        return nodes

    def parse_sequence(self, depth: int, closers: tuple[str, ...]) -> tuple[list[Node], str | None]:
        """Parse nodes until EOF or one of ``closers`` (``or``, ``/select``...); return which ended it."""
        if depth > self.limits.max_nesting_depth:
            raise self.error(f"blocks nested deeper than {self.limits.max_nesting_depth} levels")
        nodes: list[Node] = []
        text: list[str] = []

        def flush() -> None:
            if text:
                nodes.append(TextNode("".join(text)))
                text.clear()

        src = self.src
        while self.pos < len(src):
            i = src.find("{{", self.pos)
            if i < 0:
                text.append(src[self.pos :])
                self.pos = len(src)
                break
            # a backslash right before {{ escapes it
            if i > 0 and src[i - 1] == "\\":
                text.append(src[self.pos : i - 1] + "{{")
                self.pos = i + 2
                continue
            text.append(src[self.pos : i])
            self.pos = i
            tag_start = i
            self.pos += 2
            if src.startswith("!", self.pos):
                self.skip_comment(tag_start)
                continue
            self.skip_ws()
            if src.startswith("/", self.pos):
                self.pos += 1
                word = self.read_name()
                self.expect_close()
                closer = "/" + word
                if closer in closers:
                    flush()
                    return nodes, closer
                raise self.error(f"unexpected closing tag {{{{/{word}}}}}", tag_start)
            block = False
            if src.startswith("#", self.pos):
                block = True
                self.pos += 1
            word_pos = self.pos
            word = self.read_name()
            if word == "or" and not block:
                self.expect_close()
                if "or" in closers:
                    flush()
                    return nodes, "or"
                raise self.error("{{or}} outside a {{#select}} block", tag_start)
            flush()
            if block:
                if word not in _BLOCKS:
                    raise self.error(f"unknown block tag '#{excerpt(word, 40)}'", word_pos)
                nodes.append(self.parse_block(word, tag_start, depth))
            elif word in _KEYWORDS:
                nodes.append(self.parse_tag(word, tag_start))
            else:
                self.skip_ws()
                if not src.startswith("}}", self.pos):
                    raise self.error(f"unknown tag '{excerpt(word, 40)}'", word_pos)
                self.pos += 2
                line, column = self.where(tag_start)
                nodes.append(InterpolationNode(word, line, column))
        flush()
        if closers:
            raise self.error(f"unterminated block: expected {{{{{closers[-1]}}}}} before the end", self.pos)
        return nodes, None

    def skip_comment(self, tag_start: int) -> None:
        src = self.src
        if src.startswith("!--", self.pos):
            end = src.find("--}}", self.pos)
            close_len = 4
        else:
            end = src.find("}}", self.pos)
            close_len = 2
        if end < 0:
            raise self.error("unterminated comment", tag_start)
        self.pos = end + close_len

    def parse_block(self, word: str, tag_start: int, depth: int) -> Node:
        line, column = self.where(tag_start)
        name, options = self.parse_arguments(word)
        if word == "select":
            self.check_options(options, set(), "#select")
            branches: list[list[Node]] = []
            while True:
                body, end = self.parse_sequence(depth + 1, ("or", "/select"))
                branches.append(body)
                if end == "/select":
                    break
            return SelectNode(name, None, branches, line, column)
        self.check_options(options, {"min", "max", "sep"}, "#repeat")
        lo = self.int_option(options, "min", 0, tag_start) if "min" in options else 0
        hi_raw = options.get("max")
        hi = None if hi_raw is None else self.int_option(options, "max", 0, tag_start)
        sep = self.str_option(options, "sep", tag_start) or ""
        if hi is not None and (hi < lo or hi < 1):
            raise self.error(f"repeat max={hi} must be at least 1 and at least min={lo}", tag_start)
        bound = hi if hi is not None else lo
        if bound > self.limits.max_repeat:
            raise self.error(f"repeat count {bound} is above the limit of {self.limits.max_repeat}", tag_start)
        body, _ = self.parse_sequence(depth + 1, ("/repeat",))
        return RepeatNode(name, lo, hi, sep, body, line, column)

    def parse_tag(self, word: str, tag_start: int) -> Node:
        line, column = self.where(tag_start)
        if word == "repeat":
            raise self.error("repeat is a block: write {{#repeat ...}}...{{/repeat}}", tag_start)
        name, options = self.parse_arguments(word)
        if word == "gen":
            self.check_options(options, {"regex", "stop", "max_tokens"}, "gen")
            regex = self.str_option(options, "regex", tag_start)
            stop_raw = options.get("stop")
            stop: list[str] | None
            if stop_raw is None:
                stop = None
            elif isinstance(stop_raw, str):
                stop = [stop_raw]
            elif isinstance(stop_raw, list) and stop_raw and all(isinstance(s, str) for s in stop_raw):
                stop = list(stop_raw)
            else:
                raise self.error("gen stop= must be a string or a list of strings", tag_start)
            if stop is not None and any(s == "" for s in stop):
                raise self.error("gen stop= must not be empty", tag_start)
            max_tokens = None
            if "max_tokens" in options:
                max_tokens = self.int_option(options, "max_tokens", 1, tag_start)
            return GenNode(name, regex, stop, max_tokens, line, column)
        if word == "select":
            self.check_options(options, {"options"}, "select")
            opts = options.get("options")
            if opts is None:
                raise self.error("select needs options=[...] (or use the {{#select}} block)", tag_start)
            if isinstance(opts, _Ref):
                return _PendingSelect(name, opts.name, line, column)  # type: ignore[return-value]
            if not isinstance(opts, list):
                raise self.error("select options= must be a list of strings or a variable", tag_start)
            return SelectNode(name, self.check_choices(opts, tag_start), None, line, column)
        if word == "json":
            self.check_options(options, {"schema", "whitespace"}, "json")
            schema = options.get("schema")
            ws = None
            if "whitespace" in options:
                ws = self.int_option(options, "whitespace", 0, tag_start)
            if schema is None:
                raise self.error("json needs schema={...} or schema=varname", tag_start)
            if isinstance(schema, _Ref):
                return _PendingJson(name, schema.name, ws, line, column)  # type: ignore[return-value]
            if not isinstance(schema, (dict, bool)):
                raise self.error("json schema= must be a JSON object or a variable", tag_start)
            return JsonNode(name, schema, ws, line, column)
        # grammar
        self.check_options(options, {"lark"}, "grammar")
        lark = options.get("lark")
        if isinstance(lark, _Ref):
            return _PendingGrammar(name, lark.name, line, column)  # type: ignore[return-value]
        if not isinstance(lark, str) or not lark.strip():
            raise self.error("grammar needs lark='...' or lark=varname", tag_start)
        return GrammarNode(name, lark, line, column)

    # -- arguments
    def parse_arguments(self, word: str) -> tuple[str | None, dict[str, Any]]:
        """Read ``'name' key=value ...`` up to and including the closing ``}}``."""
        name: str | None = None
        options: dict[str, Any] = {}
        self.option_pos = {}
        first = True
        while True:
            self.skip_ws()
            if self.src.startswith("}}", self.pos):
                self.pos += 2
                return name, options
            if self.pos >= len(self.src):
                raise self.error(f"unterminated {{{{{word} ...}}}} tag")
            start = self.pos
            if first and self.src[self.pos] in "'\"":
                name = self.read_string()
                if not name or name.startswith("#") or len(name) > _CAPTURE_NAME_MAX:
                    raise self.error("a capture name must be 1 to 128 characters, not starting with '#'", start)
                first = False
                continue
            first = False
            key = self.read_name()
            self.option_pos.setdefault(key, start)
            self.skip_ws()
            if not self.src.startswith("=", self.pos):
                raise self.error(f"expected '=' after option '{excerpt(key, 40)}'")
            self.pos += 1
            self.skip_ws()
            if key in options:
                raise self.error(f"option '{key}' given twice", start)
            options[key] = self.read_value()

    def read_value(self) -> Any:
        src = self.src
        if self.pos >= len(src):
            raise self.error("expected a value")
        c = src[self.pos]
        if c in "'\"":
            return self.read_string()
        if c == "[":
            return self.read_list()
        if c == "{":
            try:
                value, end = json.JSONDecoder().raw_decode(src, self.pos)
            except json.JSONDecodeError as e:
                raise self.error(f"invalid JSON object: {e.msg}", e.pos) from None
            self.pos = end
            return value
        m = re.compile(r"-?[0-9]+").match(src, self.pos)
        if m:
            self.pos = m.end()
            return int(m.group())
        word = self.read_name()
        if word in ("true", "false"):
            return word == "true"
        return _Ref(word)

    def read_list(self) -> list[Any]:
        self.pos += 1
        items: list[Any] = []
        while True:
            self.skip_ws()
            if self.src.startswith("]", self.pos):
                self.pos += 1
                return items
            if items:
                if not self.src.startswith(",", self.pos):
                    raise self.error("expected ',' or ']' in list")
                self.pos += 1
                self.skip_ws()
                if self.src.startswith("]", self.pos):  # trailing comma
                    self.pos += 1
                    return items
            if self.pos >= len(self.src) or self.src[self.pos] not in "'\"":
                raise self.error("list items must be quoted strings")
            items.append(self.read_string())

    _ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "'": "'", '"': '"'}

    def read_string(self) -> str:
        """A quoted string; escapes \\n \\t \\r \\\\ \\' \\" are decoded, other backslashes kept."""
        src = self.src
        quote = src[self.pos]
        start = self.pos
        self.pos += 1
        out: list[str] = []
        while self.pos < len(src):
            c = src[self.pos]
            if c == quote:
                self.pos += 1
                return "".join(out)
            if c == "\\" and self.pos + 1 < len(src):
                nxt = src[self.pos + 1]
                if nxt in self._ESCAPES:
                    out.append(self._ESCAPES[nxt])
                else:
                    out.append("\\" + nxt)
                self.pos += 2
                continue
            out.append(c)
            self.pos += 1
        raise self.error("unterminated string", start)

    def read_name(self) -> str:
        m = _NAME_RE.match(self.src, self.pos)
        if not m:
            found = self.src[self.pos : self.pos + 10] or "end of template"
            raise self.error(f"expected a name, found '{excerpt(found, 10)}'")
        self.pos = m.end()
        return m.group()

    def skip_ws(self) -> None:
        src = self.src
        while self.pos < len(src) and src[self.pos] in " \t\r\n":
            self.pos += 1

    def expect_close(self) -> None:
        self.skip_ws()
        if not self.src.startswith("}}", self.pos):
            raise self.error("expected '}}'")
        self.pos += 2

    # -- option checks
    def check_options(self, options: Mapping[str, Any], allowed: set[str], tag: str) -> None:
        for key in options:
            if key not in allowed:
                hint = ", ".join(sorted(allowed)) or "none"
                raise self.error(
                    f"unknown option '{excerpt(key, 40)}' for {tag} (allowed: {hint})", self.option_pos.get(key)
                )

    def int_option(self, options: Mapping[str, Any], key: str, minimum: int, pos: int) -> int:
        value = options.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise self.error(f"option {key}= must be an integer >= {minimum}", pos)
        return value

    def str_option(self, options: Mapping[str, Any], key: str, pos: int) -> str | None:
        value = options.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self.error(f"option {key}= must be a quoted string", pos)
        return value

    def check_choices(self, opts: Sequence[Any], pos: int) -> list[str]:
        if not opts:
            raise self.error("select needs at least one option", pos)
        if len(opts) > self.limits.max_choices:
            raise self.error(f"select has {len(opts)} options, above the limit of {self.limits.max_choices}", pos)
        if not all(isinstance(o, str) for o in opts):
            raise self.error("select options must be strings", pos)
        return list(opts)


# Slots whose value comes from a compile-time variable: resolved in ``GuidanceTemplate.resolve``.
@dataclass
class _PendingSelect:
    name: str | None
    variable: str
    line: int
    column: int


@dataclass
class _PendingJson:
    name: str | None
    variable: str
    whitespace: int | None
    line: int
    column: int


@dataclass
class _PendingGrammar:
    name: str | None
    variable: str
    line: int
    column: int


def _interpolated_text(value: Any, variable: str, line: int, column: int) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or value is None or isinstance(value, (int, float)):
        return json.dumps(value)
    raise TemplateError(f"variable '{excerpt(variable, 40)}' is not a string or number", line, column)


class GuidanceTemplate:
    """A parsed template with its compile-time variables resolved.

    Args:
        source: the template text.
        variables: compile-time values for interpolations and option references.
        limits: size and depth limits; defaults to :class:`~core.limits.Limits`.

    Raises:
        TemplateError: the template does not parse, or names a variable that is missing.
        LimitExceeded: the template is larger than ``limits.max_source_bytes``.
    """

    def __init__(
        self, source: str, variables: Mapping[str, Any] | None = None, limits: Limits | None = None
    ) -> None:
        if not isinstance(source, str):
            raise TypeError("template source must be a str")
        self.limits = limits or Limits()
        if len(source.encode("utf-8")) > self.limits.max_source_bytes:
            # the same answer as every other kind's source over the limit: 413 limit-exceeded
            raise LimitExceeded(f"template is larger than {self.limits.max_source_bytes} bytes", "max_source_bytes")
        self.source = source
        self.variables: dict[str, Any] = dict(variables or {})
        raw = _Parser(source, self.limits).parse()
        self.nodes: list[Node] = self._resolve(raw)
        self._check_names(self.nodes)

    # -- public surface
    @property
    def cache_key(self) -> str:
        """A stable hash of the source and the variables (same on every machine)."""
        payload = json.dumps([self.source, self.variables], ensure_ascii=False, default=str)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    def get_prefix_text(self) -> str:
        """The literal text before the first slot (interpolations included)."""
        out: list[str] = []
        for node in self.nodes:
            if isinstance(node, TextNode):
                out.append(node.text)
            else:
                break
        return "".join(out)

    def get_variable_sequence(self) -> list[GuidanceVariable]:
        """The slots in template order, depth first (slots inside blocks follow their block)."""
        out: list[GuidanceVariable] = []

        def walk(nodes: Sequence[Node], in_repeat: bool) -> None:
            for node in nodes:
                kind = _SLOT_TYPES.get(type(node))
                if kind is None:
                    continue
                assert not isinstance(node, (TextNode, InterpolationNode))
                out.append(GuidanceVariable(kind, node.name, node.line, node.column, node, in_repeat))
                if isinstance(node, SelectNode) and node.branches:
                    for branch in node.branches:
                        walk(branch, in_repeat)
                elif isinstance(node, RepeatNode):
                    walk(node.body, True)

        walk(self.nodes, False)
        return out

    # -- resolution of variables
    def _lookup(self, variable: str, line: int, column: int) -> Any:
        if variable not in self.variables:
            raise TemplateError(f"unknown variable '{excerpt(variable, 40)}'", line, column)
        return self.variables[variable]

    def _resolve(self, nodes: Sequence[Any]) -> list[Node]:
        out: list[Node] = []
        for node in nodes:
            resolved: Node
            if isinstance(node, InterpolationNode):
                value = self._lookup(node.variable, node.line, node.column)
                resolved = TextNode(_interpolated_text(value, node.variable, node.line, node.column))
            elif isinstance(node, _PendingSelect):
                value = self._lookup(node.variable, node.line, node.column)
                if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
                    raise TemplateError(
                        f"variable '{node.variable}' must be a non-empty list of strings for select",
                        node.line,
                        node.column,
                    )
                if len(value) > self.limits.max_choices:
                    raise TemplateError(
                        f"select has {len(value)} options, above the limit of {self.limits.max_choices}",
                        node.line,
                        node.column,
                    )
                resolved = SelectNode(node.name, list(value), None, node.line, node.column)
            elif isinstance(node, _PendingJson):
                value = self._lookup(node.variable, node.line, node.column)
                if isinstance(value, str):
                    try:
                        value = json.loads(value)
                    except json.JSONDecodeError as e:
                        raise TemplateError(
                            f"variable '{node.variable}' is not valid JSON: {e.msg}", node.line, node.column
                        ) from None
                if not isinstance(value, (dict, bool)):
                    raise TemplateError(
                        f"variable '{node.variable}' must be a JSON schema object", node.line, node.column
                    )
                resolved = JsonNode(node.name, value, node.whitespace, node.line, node.column)
            elif isinstance(node, _PendingGrammar):
                value = self._lookup(node.variable, node.line, node.column)
                if not isinstance(value, str) or not value.strip():
                    raise TemplateError(
                        f"variable '{node.variable}' must be a Lark grammar string", node.line, node.column
                    )
                resolved = GrammarNode(node.name, value, node.line, node.column)
            elif isinstance(node, SelectNode) and node.branches is not None:
                resolved = SelectNode(
                    node.name, None, [self._resolve(b) for b in node.branches], node.line, node.column
                )
            elif isinstance(node, RepeatNode):
                resolved = RepeatNode(
                    node.name, node.min, node.max, node.sep, self._resolve(node.body), node.line, node.column
                )
            else:
                resolved = node
            # merge adjacent text so literal runs are one piece
            if isinstance(resolved, TextNode) and out and isinstance(out[-1], TextNode):
                out[-1] = TextNode(out[-1].text + resolved.text)
            elif not (isinstance(resolved, TextNode) and resolved.text == ""):
                out.append(resolved)
        return out

    # -- capture names: unique within a scope (select branches are alternatives)
    def _check_names(self, nodes: Sequence[Node]) -> None:
        def names(seq: Sequence[Node]) -> dict[str, tuple[int, int]]:
            seen: dict[str, tuple[int, int]] = {}
            for node in seq:
                if isinstance(node, (TextNode, InterpolationNode)):
                    continue
                mine: dict[str, tuple[int, int]] = {}
                if node.name is not None:
                    mine[node.name] = (node.line, node.column)
                if isinstance(node, SelectNode) and node.branches is not None:
                    for branch in node.branches:
                        for k, v in names(branch).items():
                            if k in mine and k == node.name:
                                raise TemplateError(f"duplicate capture name '{excerpt(k, 40)}'", *v)
                            mine.setdefault(k, v)
                elif isinstance(node, RepeatNode):
                    for k, v in names(node.body).items():
                        if k in mine:
                            raise TemplateError(f"duplicate capture name '{excerpt(k, 40)}'", *v)
                        mine[k] = v
                for k, v in mine.items():
                    if k in seen:
                        raise TemplateError(f"duplicate capture name '{excerpt(k, 40)}'", *v)
                    seen[k] = v
            return seen

        names(nodes)
