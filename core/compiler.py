"""Compilation entry points: a constraint in, a validated llguidance grammar and capture layout out.

One function per kind of constraint (template, JSON schema, regex, Lark grammar, choice,
structural tag, tools)
(:func:`core.kinds.compile_spec` compiles a whole spec through the kinds' registry). Each gives a
:class:`CompiledSpec`: plain data that can cross a process (:mod:`core.workers`), from which a
program builds its tokenizer-bound matchers. The template language is written as Lark by
:mod:`core.template.lark`, JSON schemas are prepared by :mod:`core.jsonschema.prepare`, and every
grammar is checked by :mod:`core.validation`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import llguidance

from core.captures import CaptureLayout
from core.errors import GrammarError, LimitExceeded, SchemaError, TemplateError
from core.lark_text import lark_string
from core.limits import Limits
from core.jsonschema import DEFAULT_FORMAT_MODE, FormatMode, format_hint, prepare_json_schema
from core.template import GuidanceTemplate
from core.structural_tag import structural_tag_grammar
from core.template.lark import template_grammar
from core.tools import tool_request, tools_lark
from core.validation import check_size, require_valid, trimmed

__all__ = [
    "CompiledSpec",
    "compile_choice",
    "compile_json_schema",
    "compile_lark",
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
    """

    grammar: str
    layout: CaptureLayout
    ignored: tuple[str, ...] = ()


def compile_template(
    template: GuidanceTemplate, tokenizer: llguidance.LLTokenizer | None, limits: Limits
) -> CompiledSpec:
    """Compile a parsed template; errors carry line and column."""
    grammar, layout = template_grammar(template.nodes, tokenizer, limits)
    require_valid(
        grammar, tokenizer, limits, lambda message: TemplateError(f"template does not compile: {message}"), "template"
    )
    return CompiledSpec(grammar, layout)


def _checked(
    grammar: str,
    tokenizer: llguidance.LLTokenizer | None,
    limits: Limits,
    error: type[GrammarError],
    layout: CaptureLayout | None = None,
) -> CompiledSpec:
    require_valid(grammar, tokenizer, limits, error)
    return CompiledSpec(grammar, layout or CaptureLayout())


def compile_regex(pattern: str, tokenizer: llguidance.LLTokenizer | None, limits: Limits) -> CompiledSpec:
    """A regex (Rust ``regex`` syntax: no lookarounds or backreferences) over the whole output."""
    if not isinstance(pattern, str):
        raise GrammarError("regex must be a string")
    check_size(pattern, "regex", limits)
    return _checked(llguidance.LLMatcher.grammar_from_regex(pattern), tokenizer, limits, GrammarError)


def compile_lark(lark: str, tokenizer: llguidance.LLTokenizer | None, limits: Limits) -> CompiledSpec:
    """A Lark grammar in llguidance's dialect (``start`` rule, ``%json``, lexeme options)."""
    if not isinstance(lark, str) or not lark.strip():
        raise GrammarError("grammar must be a non-empty Lark string")
    check_size(lark, "grammar", limits)
    return _checked(
        llguidance.LLMatcher.grammar_from_lark(lark), tokenizer, limits, GrammarError, CaptureLayout(passthrough=True)
    )


def compile_json_schema(
    schema: Mapping[str, Any] | bool | str,
    tokenizer: llguidance.LLTokenizer | None,
    limits: Limits,
    whitespace: int | None = None,
    formats: FormatMode = DEFAULT_FORMAT_MODE,
) -> CompiledSpec:
    """A JSON schema, compact unless ``whitespace`` allows bounded whitespace; ``format`` per ``formats``."""
    if isinstance(schema, str):
        check_size(schema, "JSON schema", limits)
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
        raise SchemaError(trimmed(str(e))) from None
    try:
        compiled = _checked(grammar, tokenizer, limits, SchemaError)
    except SchemaError as e:
        raise SchemaError(format_hint(e.detail)) from None
    return replace(compiled, ignored=tuple(ignored))


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
