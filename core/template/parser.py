"""Template text to nodes: the parser of the template language, errors with line and column.

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

:func:`parse` gives the nodes of :mod:`core.template.nodes` plus, where an option names a
compile-time variable, a pending node (:class:`PendingSelect`, :class:`PendingJson`,
:class:`PendingGrammar`) that :class:`~core.template.template.GuidanceTemplate` resolves. Every
error is a :class:`~core.errors.TemplateError` with a 1-based line and column.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from core.errors import TemplateError, excerpt
from core.jsonschema.prepare import MAX_WHITESPACE
from core.limits import Limits
from core.template.nodes import (
    GenNode,
    GrammarNode,
    InterpolationNode,
    JsonNode,
    Node,
    RepeatNode,
    SelectNode,
    TextNode,
)

__all__ = ["ParsedNode", "PendingGrammar", "PendingJson", "PendingSelect", "parse"]


# Slots whose value comes from a compile-time variable, resolved by ``GuidanceTemplate``.
@dataclass
class PendingSelect:
    """``{{select options=varname}}``: the options are the variable's list of strings."""

    name: str | None
    variable: str
    line: int
    column: int


@dataclass
class PendingJson:
    """``{{json schema=varname}}``: the schema is the variable's object (or its JSON text)."""

    name: str | None
    variable: str
    whitespace: int | None
    line: int
    column: int


@dataclass
class PendingGrammar:
    """``{{grammar lark=varname}}``: the grammar is the variable's Lark text."""

    name: str | None
    variable: str
    line: int
    column: int


#: What the parser gives: a node, or a slot waiting for a compile-time variable. Blocks hold
#: parsed nodes too until they are resolved.
ParsedNode = Node | PendingSelect | PendingJson | PendingGrammar


def parse(source: str, limits: Limits) -> list[ParsedNode]:
    """Parse template text into nodes; variables are not resolved yet.

    Raises:
        TemplateError: the text does not parse (unknown tag, bad option, unterminated block...),
            or its blocks nest deeper than ``limits.max_nesting_depth``.
    """
    return _Parser(source, limits).parse()


_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")
_INT_RE = re.compile(r"-?[0-9]+")
_KEYWORDS = {"gen", "select", "json", "grammar", "repeat", "or"}
_BLOCKS = {"select", "repeat"}
# Part of the language (the README says so), not a resource limit: a name is at most this long.
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
    def parse(self) -> list[ParsedNode]:
        nodes, end = self.parse_sequence(depth=0, closers=())
        if end is not None:  # pragma: no cover - closers=() never ends early
            raise self.error(f"unexpected {{{{{end}}}}}")
        return nodes

    def parse_sequence(self, depth: int, closers: tuple[str, ...]) -> tuple[list[ParsedNode], str | None]:
        """Parse nodes until EOF or one of ``closers`` (``or``, ``/select``...); return which ended it."""
        if depth > self.limits.max_nesting_depth:
            raise self.error(f"blocks nested deeper than {self.limits.max_nesting_depth} levels")
        nodes: list[ParsedNode] = []
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
            branches: list[list[ParsedNode]] = []
            while True:
                body, end = self.parse_sequence(depth + 1, ("or", "/select"))
                branches.append(body)
                if end == "/select":
                    break
            # Blocks hold parsed nodes until GuidanceTemplate resolves their variables.
            return SelectNode(name, None, cast(list[list[Node]], branches), line, column)
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
        return RepeatNode(name, lo, hi, sep, cast(list[Node], body), line, column)

    def parse_tag(self, word: str, tag_start: int) -> ParsedNode:
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
                return PendingSelect(name, opts.name, line, column)
            if not isinstance(opts, list):
                raise self.error("select options= must be a list of strings or a variable", tag_start)
            return SelectNode(name, self.check_choices(opts, tag_start), None, line, column)
        if word == "json":
            self.check_options(options, {"schema", "whitespace"}, "json")
            schema = options.get("schema")
            ws = None
            if "whitespace" in options:
                ws = self.int_option(options, "whitespace", 0, tag_start, MAX_WHITESPACE)
            if schema is None:
                raise self.error("json needs schema={...} or schema=varname", tag_start)
            if isinstance(schema, _Ref):
                return PendingJson(name, schema.name, ws, line, column)
            if not isinstance(schema, (dict, bool)):
                raise self.error("json schema= must be a JSON object or a variable", tag_start)
            return JsonNode(name, schema, ws, line, column)
        # grammar
        self.check_options(options, {"lark"}, "grammar")
        lark = options.get("lark")
        if isinstance(lark, _Ref):
            return PendingGrammar(name, lark.name, line, column)
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
                    raise self.error(
                        f"a capture name must be 1 to {_CAPTURE_NAME_MAX} characters, not starting with '#'", start
                    )
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
        m = _INT_RE.match(src, self.pos)
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

    def int_option(
        self, options: Mapping[str, Any], key: str, minimum: int, pos: int, maximum: int | None = None
    ) -> int:
        value = options.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise self.error(f"option {key}= must be an integer >= {minimum}", pos)
        if maximum is not None and value > maximum:
            raise self.error(f"option {key}= must be an integer from {minimum} to {maximum}", pos)
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
