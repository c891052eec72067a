"""The kinds of constraint, one entry each: how a spec of the kind compiles and what it accepts.

Everything else about kinds derives from :data:`KINDS`: the options the backend accepts per kind,
the compile dispatch (:func:`compile_spec`), the body fields only one kind takes (the service's
checks), the metrics' label set. The server's own kinds compile with a function of
:mod:`core.compiler`; other engines' request forms (``response_format``, ``structured_outputs``,
``ebnf``) are lowered by :mod:`core.forms` to a spec of one of those, compiled through its entry.
The names themselves are :data:`core.spec.PROGRAM_KINDS` (a ``Literal`` for the type checker); the
HTTP body's field for each kind is in ``service/schemas.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

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
from core.errors import GrammarError, LimitExceeded
from core.expansion import expansion_above
from core.forms import Lowering, lower_ebnf, lower_response_format, lower_structured_outputs
from core.jsonschema import DEFAULT_FORMAT_MODE, FORMAT_MODES
from core.limits import Limits
from core.reasoning import with_reasoning
from core.spec import PROGRAM_KINDS, ProgramKind
from core.template import GuidanceTemplate
from core.tools import TOOL_OPTIONS
from core.validation import check_size, require_valid

if TYPE_CHECKING:
    from core.spec import ProgramSpec

__all__ = ["KINDS", "Kind", "compile_spec"]

# The bounded whitespace a direct JSON schema's ``whitespace`` option may allow (openapi.yaml).
_MAX_WHITESPACE = 64

Compile = Callable[["ProgramSpec", "llguidance.LLTokenizer | None", Limits], CompiledSpec]


@dataclass(frozen=True)
class Kind:
    """One kind of constraint.

    Attributes:
        name: its name (the compile body's field).
        compile: compiles a spec of the kind (variables and options already checked).
        options: the options a spec of the kind may carry.
        variables: whether it takes compile-time variables.
        fields: the compile body's fields only this kind takes, passed to it as options.
    """

    name: ProgramKind
    compile: Compile
    options: frozenset[str] = frozenset()
    variables: bool = False
    fields: frozenset[str] = frozenset()


def _template(spec: ProgramSpec, ll: llguidance.LLTokenizer | None, limits: Limits) -> CompiledSpec:
    if not isinstance(spec.source, str):
        raise GrammarError("template must be a string")
    return compile_template(GuidanceTemplate(spec.source, spec.variables, limits), ll, limits)


def _json_schema(spec: ProgramSpec, ll: llguidance.LLTokenizer | None, limits: Limits) -> CompiledSpec:
    ws = spec.options.get("whitespace")
    if ws is not None and (not isinstance(ws, int) or isinstance(ws, bool) or not 0 <= ws <= _MAX_WHITESPACE):
        raise GrammarError(f"option whitespace must be an integer from 0 to {_MAX_WHITESPACE}")
    formats = spec.options.get("formats", DEFAULT_FORMAT_MODE)
    if formats not in FORMAT_MODES:
        raise GrammarError(f"option formats must be one of {', '.join(FORMAT_MODES)}")
    # Set by a form that lowers to a JSON schema (vLLM's whitespace_pattern), not a request option.
    pattern = spec.options.get("whitespace_pattern")
    if pattern is not None:
        check_size(pattern, "whitespace_pattern", limits)
    return compile_json_schema(spec.source, ll, limits, ws, formats, pattern)


def _form(lower: Lowering) -> Compile:
    """The compile of a request form: lowered to a spec of a base kind, compiled as that kind."""

    def compile_form(spec: ProgramSpec, ll: llguidance.LLTokenizer | None, limits: Limits) -> CompiledSpec:
        lowered = lower(spec.source, spec.options)
        return KINDS[lowered.kind].compile(lowered, ll, limits)

    return compile_form


_JSON_OPTIONS = frozenset({"whitespace", "formats"})

_ENTRIES = (
    Kind("template", _template, variables=True),
    Kind("json_schema", _json_schema, _JSON_OPTIONS),
    Kind("regex", lambda spec, ll, limits: compile_regex(spec.source, ll, limits)),
    Kind("grammar", lambda spec, ll, limits: compile_lark(spec.source, ll, limits)),
    Kind("gbnf", lambda spec, ll, limits: compile_gbnf(spec.source, ll, limits)),
    Kind("choice", lambda spec, ll, limits: compile_choice(spec.source, ll, limits)),
    Kind("llguidance", lambda spec, ll, limits: compile_llguidance(spec.source, ll, limits)),
    # Other engines' forms: the JSON options apply where the form asks for JSON (core.forms).
    Kind("response_format", _form(lower_response_format), _JSON_OPTIONS),
    Kind("structured_outputs", _form(lower_structured_outputs), _JSON_OPTIONS),
    Kind("ebnf", _form(lower_ebnf)),
    Kind("structural_tag", lambda spec, ll, limits: compile_structural_tag(spec.source, ll, limits)),
    Kind(
        "tools",
        lambda spec, ll, limits: compile_tools(spec.source, spec.options, ll, limits),
        TOOL_OPTIONS,
        fields=TOOL_OPTIONS,
    ),
)

#: Every kind by name, in :data:`~core.spec.PROGRAM_KINDS` order.
KINDS: Mapping[ProgramKind, Kind] = {k.name: k for k in _ENTRIES}
assert tuple(KINDS) == PROGRAM_KINDS, "core.spec.PROGRAM_KINDS and core.kinds.KINDS disagree"


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
    try:
        compiled = kind.compile(spec, tokenizer, limits)
        if spec.reasoning is not None:
            grammar, layout = with_reasoning(compiled.grammar, compiled.layout, spec.reasoning, tokenizer)
            matcher = require_valid(grammar, tokenizer, limits, GrammarError)
            compiled = replace(compiled, grammar=grammar, layout=layout, matcher=matcher)
    except RecursionError:
        raise LimitExceeded("the constraint is nested too deeply", "max_nesting_depth") from None
    grown = expansion_above(compiled.grammar, limits.max_expansion)
    if grown is not None:
        raise LimitExceeded(
            f"the constraint expands to a literal or repeat of about {grown} characters, above the limit "
            f"of {limits.max_expansion} (every mask would cost time quadratic in it)",
            "max_expansion",
        )
    return compiled
