"""The kinds of constraint, one entry each holding everything about the kind.

An entry (:class:`Kind`) says how a spec of the kind compiles, the type and meaning of its field
in the compile body, its typed options (:mod:`core.options`), whether it takes variables, and how
``guidance-server check`` reads it from a file. Everything else derives from :data:`KINDS`: the
options the backend accepts (:meth:`~core.options.KindOptions.check_names`), the compile dispatch
(:func:`compile_spec`), the HTTP body's fields and their checks (``service/schemas.py``), the check
command's file suffixes and ``--kind`` names (``service/check.py``), the metrics' label set. A new
kind is a new entry here and its name in :data:`core.spec.ProgramKind` (a ``Literal`` for the type
checker; an assertion below keeps the two equal). The worker package, which does not depend on the
server, keeps its own table of the kinds (``guidance_client.specs.KINDS``); a test holds it equal.

The server's own kinds compile with a function of :mod:`core.compiler`; other engines' request forms
(``response_format``, ``structured_outputs``, ``ebnf``) are lowered by :mod:`core.forms` to a spec of
one of those, compiled through its entry.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import llguidance

from core.compiler import (
    CompiledSpec,
    compile_choice,
    compile_gbnf,
    compile_json_schema,
    compile_lark,
    compile_llguidance,
    compile_regex,
    compile_structural_tag,
    compile_template,
    compile_tools,
)
from core.errors import GrammarError, LimitExceeded, compile_boundary
from core.expansion import expansion_above
from core.forms import Lowering, lower_ebnf, lower_response_format, lower_structured_outputs
from core.limits import Limits
from core.options import JsonSchemaOptions, KindOptions
from core.reasoning import with_reasoning
from core.spec import PROGRAM_KINDS, ProgramKind
from core.template import GuidanceTemplate
from core.tools import ToolsOptions
from core.validation import check_size, require_valid

if TYPE_CHECKING:
    from core.spec import ProgramSpec

__all__ = ["KINDS", "Kind", "check_options", "compile_spec"]

Compile = Callable[["ProgramSpec", "llguidance.LLTokenizer | None", Limits], CompiledSpec]


def _text(text: str) -> str:
    """A constraint file's text, less one final newline (editors add one)."""
    return text[:-2] if text.endswith("\r\n") else text.removesuffix("\n")


def _verbatim(text: str) -> str:
    """A grammar file's text as it is (a final newline is part of a grammar's layout)."""
    return text


def _lines(text: str) -> list[str]:
    """One option per line, blank lines left out."""
    return [line for line in (raw.rstrip("\r") for raw in text.split("\n")) if line]


def _json(text: str) -> Any:
    """A JSON document.

    Raises:
        json.JSONDecodeError: the text is not JSON.
    """
    return json.loads(text)


@dataclass(frozen=True, kw_only=True)
class Kind:
    """One kind of constraint: everything about it.

    Attributes:
        name: its name, also its field in the compile body.
        label: what it is called in prose (``"JSON schema"``).
        compile: compiles a spec of the kind (variables and option names already checked).
        source_type: the type of its field's value on the wire (a type expression; the HTTP
            schema's field is this or null).
        doc: what its field takes (the HTTP schema's description).
        options: its typed options model (its fields are the options a request may give).
        variables: whether it takes compile-time variables.
        body_fields: whether its options are also fields of the compile body of their own
            (``tools``' ``tool_format`` ...), beside the body's ``options``.
        suffixes: the constraint-file suffixes ``guidance-server check`` reads as this kind.
        aliases: other names ``guidance-server check --kind`` takes for it.
        read: how a constraint file's text becomes a source of the kind.
    """

    name: ProgramKind
    label: str
    compile: Compile
    source_type: Any
    doc: str
    options: type[KindOptions] = KindOptions
    variables: bool = False
    body_fields: bool = False
    suffixes: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    read: Callable[[str], Any] = _text

    @property
    def fields(self) -> frozenset[str]:
        """The compile body's fields only this kind takes (passed to it as options)."""
        return self.options.names() if self.body_fields else frozenset()


def _template(spec: ProgramSpec, ll: llguidance.LLTokenizer | None, limits: Limits) -> CompiledSpec:
    if not isinstance(spec.source, str):
        raise GrammarError("template must be a string")
    return compile_template(GuidanceTemplate(spec.source, spec.variables, limits), ll, limits)


def _json_schema(spec: ProgramSpec, ll: llguidance.LLTokenizer | None, limits: Limits) -> CompiledSpec:
    options = JsonSchemaOptions.parse(spec.options, spec.kind)
    if options.whitespace_pattern is not None:
        check_size(options.whitespace_pattern, "whitespace_pattern", limits)
    return compile_json_schema(spec.source, ll, limits, options.whitespace, options.formats, options.whitespace_pattern)


def _form(lower: Lowering) -> Compile:
    """The compile of a request form: lowered to a spec of a base kind, compiled as that kind."""

    def compile_form(spec: ProgramSpec, ll: llguidance.LLTokenizer | None, limits: Limits) -> CompiledSpec:
        lowered = lower(spec.source, spec.options)
        return KINDS[lowered.kind].compile(lowered, ll, limits)

    return compile_form


_ENTRIES = (
    Kind(
        name="template",
        label="template",
        compile=_template,
        source_type=str,
        doc="A template (see the template language).",
        variables=True,
        suffixes=(".hbs", ".handlebars", ".txt"),
    ),
    Kind(
        name="json_schema",
        label="JSON schema",
        compile=_json_schema,
        source_type=dict[str, Any] | bool | str,
        doc="A JSON schema (object, boolean, or its JSON text).",
        options=JsonSchemaOptions,
        suffixes=(".json",),
        aliases=("json",),
        read=_json,
    ),
    Kind(
        name="regex",
        label="regex",
        compile=lambda spec, ll, limits: compile_regex(spec.source, ll, limits),
        source_type=str,
        doc="A regex the whole output must match.",
        suffixes=(".regex", ".re"),
    ),
    Kind(
        name="grammar",
        label="Lark grammar",
        compile=lambda spec, ll, limits: compile_lark(spec.source, ll, limits),
        source_type=str,
        doc="A Lark grammar (llguidance dialect).",
        suffixes=(".lark",),
        aliases=("lark",),
        read=_verbatim,
    ),
    Kind(
        name="gbnf",
        label="GBNF grammar",
        compile=lambda spec, ll, limits: compile_gbnf(spec.source, ll, limits),
        source_type=str,
        doc="A GBNF grammar (llama.cpp's `root ::= ...`), converted by llguidance.",
        suffixes=(".gbnf",),
        read=_verbatim,
    ),
    Kind(
        name="choice",
        label="choice list",
        compile=lambda spec, ll, limits: compile_choice(spec.source, ll, limits),
        source_type=list[str],
        doc="Exactly one of these strings.",
        suffixes=(".choices",),
        aliases=("choices",),
        read=_lines,
    ),
    Kind(
        name="llguidance",
        label="llguidance grammar",
        compile=lambda spec, ll, limits: compile_llguidance(spec.source, ll, limits),
        source_type=dict[str, Any] | str,
        doc="llguidance's top-level grammar object (or its JSON text), as llguidance and the `guidance` library "
        'write it: `{"grammars": [{"lark_grammar": "..."}, {"json_schema": {...}}]}`, with llguidance\'s semantics '
        "(a JSON schema's whitespace is what its `x-guidance` says).",
        read=_json,
    ),
    # Other engines' forms: the JSON options apply where the form asks for JSON (core.forms).
    Kind(
        name="response_format",
        label="response_format",
        compile=_form(lower_response_format),
        source_type=dict[str, Any],
        doc='OpenAI\'s `response_format`: `{"type": "text"}`, `{"type": "json_object"}` or '
        '`{"type": "json_schema", "json_schema": {"name", "schema", "strict"?, "description"?}}` (the Responses '
        "API's flat `text.format` too). The schema is enforced whatever `strict` says; JSON is compact unless "
        "`options.whitespace` allows some.",
        options=JsonSchemaOptions,
        read=_json,
    ),
    Kind(
        name="structured_outputs",
        label="structured_outputs",
        compile=_form(lower_structured_outputs),
        source_type=dict[str, Any],
        doc="vLLM's `structured_outputs`: exactly one of `json`, `regex`, `choice`, `grammar` (GBNF or "
        "Lark), `json_object`, `structural_tag` (either form, as the `structural_tag` kind takes it); with "
        "`whitespace_pattern`, `disable_any_whitespace`, `disable_additional_properties`. JSON is compact unless "
        "`whitespace_pattern` allows whitespace (vLLM allows any by default).",
        options=JsonSchemaOptions,
        read=_json,
    ),
    Kind(
        name="ebnf",
        label="EBNF grammar",
        compile=_form(lower_ebnf),
        source_type=str,
        doc="SGLang's `ebnf`: a GBNF grammar (the EBNF of SGLang's default backend), or Lark. SGLang's "
        "`json_schema` and `regex` are the kinds of those names.",
        read=_verbatim,
    ),
    Kind(
        name="structural_tag",
        label="structural tag",
        compile=lambda spec, ll, limits: compile_structural_tag(spec.source, ll, limits),
        source_type=dict[str, Any] | str,
        doc="xgrammar's / vLLM's structural tag (object or JSON text): the older `structures` + `triggers` "
        'form, or `{"type": "structural_tag", "format": {...}}` (docs/tools.md lists the formats).',
        read=_json,
    ),
    Kind(
        name="tools",
        label="tools list",
        compile=lambda spec, ll, limits: compile_tools(spec.source, spec.options, ll, limits),
        source_type=list[dict[str, Any]],
        doc="OpenAI's tools list, written in `tool_format`'s format; variables `tool_calls` "
        "(`[{name, arguments}]`) and `content`.",
        options=ToolsOptions,
        body_fields=True,
        read=_json,
    ),
)

#: Every kind by name, in :data:`~core.spec.PROGRAM_KINDS` order.
KINDS: Mapping[ProgramKind, Kind] = {k.name: k for k in _ENTRIES}
assert tuple(KINDS) == PROGRAM_KINDS, "core.spec.PROGRAM_KINDS and core.kinds.KINDS disagree"


def check_options(spec: ProgramSpec) -> None:
    """Refuse an option the spec's kind does not take (before anything is compiled or looked up).

    Raises:
        GrammarError: an unknown option, all of them named.
    """
    KINDS[spec.kind].options.check_names(spec.options, spec.kind)


def compile_spec(spec: ProgramSpec, tokenizer: llguidance.LLTokenizer | None, limits: Limits) -> CompiledSpec:
    """The validated grammar of a program spec: every check of a compile short of the matcher.

    Runs in the server or in a compile worker (:mod:`core.workers`) alike; either way on an engine
    thread (:mod:`core.threads`), since llguidance's validation recurses natively.

    Raises:
        GuidanceError: the spec does not compile or breaks a limit.
    """
    kind = KINDS[spec.kind]
    if spec.variables and not kind.variables:
        raise GrammarError("variables apply to templates only")
    with compile_boundary():
        compiled = kind.compile(spec, tokenizer, limits)
        if spec.reasoning is not None:
            grammar, layout = with_reasoning(compiled.grammar, compiled.layout, spec.reasoning, tokenizer)
            matcher = require_valid(grammar, tokenizer, limits, GrammarError)
            compiled = replace(compiled, grammar=grammar, layout=layout, matcher=matcher)
    grown = expansion_above(compiled.grammar, limits.max_expansion)
    if grown is not None:
        raise LimitExceeded(
            f"the constraint expands to a literal or repeat of about {grown} characters, above the limit "
            f"of {limits.max_expansion} (every mask would cost time quadratic in it)",
            "max_expansion",
        )
    return compiled
