"""Compilation entry points: a constraint in, a validated llguidance grammar and capture layout out.

One function per kind of constraint (template, JSON schema, regex, Lark grammar, GBNF grammar,
choice, llguidance grammar object, structural tag, tools);
:func:`core.kinds.compile_spec` compiles a whole :class:`~core.spec.ProgramSpec` through the kinds'
registry, other engines' request forms first lowered to one of those (:mod:`core.forms`). Each gives a
:class:`CompiledSpec`: plain data that can cross a process (:mod:`core.workers`), from which a
program builds its tokenizer-bound matchers. The template language is written as Lark by
:mod:`core.template.lark`, JSON schemas are prepared by :mod:`core.jsonschema.prepare`, and every
grammar is checked by :mod:`core.validation`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import llguidance

from core.captures import CaptureLayout, passthrough_layout
from core.errors import GrammarError, LimitExceeded, SchemaError, TemplateError
from core.gbnf import convert_gbnf, dialect_hint
from core.jsonschema import DEFAULT_FORMAT_MODE, FormatMode, schema_grammar
from core.lark_text import lark_capture_names, lark_string
from core.limits import Limits
from core.llgrammar import llguidance_grammar
from core.regex_errors import regex_message
from core.structural_tag import structural_tag_grammar
from core.template import GuidanceTemplate
from core.template.lark import template_grammar
from core.tools import tool_request, tools_lark
from core.validation import check_size, require_valid

__all__ = [
    "CompiledSpec",
    "compile_choice",
    "compile_gbnf",
    "compile_json_schema",
    "compile_lark",
    "compile_llguidance",
    "compile_regex",
    "compile_structural_tag",
    "compile_template",
    "compile_tools",
]


@dataclass(frozen=True)
class CompiledSpec:
    """A compiled constraint before any matcher: what a program is built from.

    Attributes:
        grammar: llguidance's top-level grammar (JSON text), validated for the tokenizer it was
            compiled with; what ``llguidance.LLMatcher`` takes.
        layout: how to read its captures as variables.
        ignored: what the schema asks that is compiled as an annotation only
            (``format "path" at #/...``).
        matcher: the pristine matcher llguidance built to validate the grammar, for the program
            to keep as its first (None: built by the program; never crosses a process).
    """

    grammar: str
    layout: CaptureLayout
    ignored: tuple[str, ...] = ()
    matcher: llguidance.LLMatcher | None = field(default=None, compare=False, repr=False)

    def __getstate__(self) -> dict[str, Any]:
        # An LLMatcher cannot be pickled: a compile worker hands back the grammar, not its matcher.
        return {**self.__dict__, "matcher": None}


def compile_template(
    template: GuidanceTemplate, tokenizer: llguidance.LLTokenizer | None, limits: Limits
) -> CompiledSpec:
    """Compile a parsed template; errors carry line and column."""
    grammar, layout, ignored = template_grammar(template.nodes, tokenizer, limits)
    matcher = require_valid(
        grammar, tokenizer, limits, lambda message: TemplateError(f"template does not compile: {message}"), "template"
    )
    return CompiledSpec(grammar, layout, tuple(ignored), matcher)


def _checked(
    grammar: str,
    tokenizer: llguidance.LLTokenizer | None,
    limits: Limits,
    error: type[GrammarError],
    layout: CaptureLayout | None = None,
) -> CompiledSpec:
    matcher = require_valid(grammar, tokenizer, limits, error)
    return CompiledSpec(grammar, layout or CaptureLayout(), matcher=matcher)


def compile_regex(pattern: str, tokenizer: llguidance.LLTokenizer | None, limits: Limits) -> CompiledSpec:
    """A regex (Rust ``regex`` syntax: no lookarounds or backreferences) over the whole output."""
    if not isinstance(pattern, str):
        raise GrammarError("regex must be a string")
    check_size(pattern, "regex", limits)

    def invalid(message: str) -> GrammarError:
        detail, column = regex_message(pattern, message)
        return GrammarError(detail, column=column)

    grammar = llguidance.LLMatcher.grammar_from_regex(pattern)
    matcher = require_valid(grammar, tokenizer, limits, invalid)
    return CompiledSpec(grammar, CaptureLayout(), matcher=matcher)


def compile_lark(lark: str, tokenizer: llguidance.LLTokenizer | None, limits: Limits) -> CompiledSpec:
    """A Lark grammar in llguidance's dialect (``start`` rule, ``%json``, lexeme options), as
    ``guidance``'s ``ll_grammar()`` writes a program too; its ``name[capture]`` rules are variables.

    An error on text that looks like GBNF says so.
    """
    if not isinstance(lark, str) or not lark.strip():
        raise GrammarError("grammar must be a non-empty Lark string")
    check_size(lark, "grammar", limits)

    def invalid(message: str) -> GrammarError:
        hint = dialect_hint(lark, "grammar")
        return GrammarError(f"{hint}\n{message}" if hint else message)

    grammar = llguidance.LLMatcher.grammar_from_lark(lark)
    matcher = require_valid(grammar, tokenizer, limits, invalid)
    return CompiledSpec(grammar, passthrough_layout(lark_capture_names(lark)), matcher=matcher)


def compile_gbnf(gbnf: str, tokenizer: llguidance.LLTokenizer | None, limits: Limits) -> CompiledSpec:
    """A GBNF grammar (llama.cpp's), converted to Lark by llguidance's converter.

    Errors name the line of the GBNF text (and its column, for syntax errors).
    """
    converted = convert_gbnf(gbnf, limits)
    matcher = require_valid(converted.lark, tokenizer, limits, converted.error)
    return CompiledSpec(converted.lark, CaptureLayout(), matcher=matcher)


def compile_llguidance(
    grammar: Mapping[str, Any] | str, tokenizer: llguidance.LLTokenizer | None, limits: Limits
) -> CompiledSpec:
    """llguidance's top-level grammar object (``{"grammars": [...]}``), with llguidance's semantics."""
    text, names = llguidance_grammar(grammar)
    check_size(text, "llguidance grammar", limits)
    matcher = require_valid(text, tokenizer, limits, GrammarError)
    return CompiledSpec(text, passthrough_layout(names), matcher=matcher)


def compile_json_schema(
    schema: Mapping[str, Any] | bool | str,
    tokenizer: llguidance.LLTokenizer | None,
    limits: Limits,
    whitespace: int | None = None,
    formats: FormatMode = DEFAULT_FORMAT_MODE,
    whitespace_pattern: str | None = None,
) -> CompiledSpec:
    """A JSON schema, compact unless ``whitespace`` allows bounded whitespace (or
    ``whitespace_pattern`` gives its regex); ``format`` per ``formats``. An error names the place
    in the schema by its JSON pointer where it can tell (``pointer``)."""
    if isinstance(schema, str):
        check_size(schema, "JSON schema", limits)
        try:
            schema = json.loads(schema)
        except json.JSONDecodeError as e:
            raise SchemaError(f"JSON schema is not valid JSON: {e.msg} at {e.pos}") from None
    if not isinstance(schema, (Mapping, bool)):
        raise SchemaError("a JSON schema must be an object or a boolean")
    grammar, prepared, matcher = schema_grammar(schema, tokenizer, limits, whitespace, formats, whitespace_pattern)
    return CompiledSpec(grammar, CaptureLayout(), tuple(prepared.ignored), matcher)


def compile_choice(options: Sequence[str], tokenizer: llguidance.LLTokenizer | None, limits: Limits) -> CompiledSpec:
    """Exactly one of the given strings."""
    if isinstance(options, str) or not isinstance(options, Sequence) or not options:
        raise GrammarError("choice must be a non-empty list of strings")
    if not all(isinstance(o, str) for o in options):
        raise GrammarError("choice options must be strings")
    if len(options) > limits.max_choices:
        raise LimitExceeded(f"choice has {len(options)} options, above {limits.max_choices}", "max_choices")
    check_size("".join(options), "choice", limits)
    lark = "start: " + " | ".join(lark_string(o) for o in options) + "\n"
    return _checked(llguidance.LLMatcher.grammar_from_lark(lark), tokenizer, limits, GrammarError)


def compile_tools(
    tools: Any, options: Mapping[str, Any], tokenizer: llguidance.LLTokenizer | None, limits: Limits
) -> CompiledSpec:
    """OpenAI-style tools in a model family's format (``options``: ``tool_format``, ``tool_choice``,
    ``parallel_tool_calls``); variables ``tool_calls`` and ``content`` (see :mod:`core.tools`)."""
    request = tool_request(tools, options, limits)
    lark = tools_lark(request, tokenizer, limits)
    check_size(lark, "tools grammar", limits)
    layout = CaptureLayout(scope={"content": (), "tool_calls": ()})
    return _checked(llguidance.LLMatcher.grammar_from_lark(lark), tokenizer, limits, GrammarError, layout)


def compile_structural_tag(
    tag: Mapping[str, Any] | str, tokenizer: llguidance.LLTokenizer | None, limits: Limits
) -> CompiledSpec:
    """xgrammar's / vLLM's structural tag, older (``structures`` + ``triggers``) or newer (``format``)."""
    if isinstance(tag, str):
        check_size(tag, "structural tag", limits)
        try:
            tag = json.loads(tag)
        except json.JSONDecodeError as e:
            raise GrammarError(f"structural tag is not valid JSON: {e.msg} at {e.pos}") from None
    if not isinstance(tag, Mapping):
        raise GrammarError("a structural tag must be an object")
    grammar = structural_tag_grammar(tag, tokenizer, limits)
    check_size(grammar, "structural tag grammar", limits)
    return _checked(grammar, tokenizer, limits, GrammarError)
