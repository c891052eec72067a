"""Foreign errors become the project's at one boundary (:mod:`core.errors`).

Each kind of foreign failure (llguidance's verdict on a grammar being compiled, a session matcher's
error state, ``RecursionError``, an engine limit met while compiling, an error copied between
threads or processes) maps to one class, code, status and limit name, and the compile paths give
exactly what the boundary gives.
"""

from __future__ import annotations

import pickle
from dataclasses import replace
from typing import Any

import pytest

import core.kinds
from core import GuidanceBackend, Limits, Tokenizer
from core.errors import (
    EngineLimitReached,
    ErrorMap,
    GrammarError,
    GuidanceError,
    InvalidTokens,
    LimitExceeded,
    SchemaError,
    TemplateError,
    TokenRejected,
    UnknownSession,
    compile_boundary,
    engine_failure,
    map_errors,
    refusal,
    replica,
)
from core.kinds import compile_spec
from core.spec import ProgramSpec

LIMIT_MESSAGE = "grammar size (number of symbols) too big (limit for this grammar: 50)"
PLAIN_MESSAGE = 'at 1(8): unknown name: "foo"'


def test_a_compile_verdict_that_reports_a_limit_is_limit_exceeded_naming_it() -> None:
    error = refusal(LIMIT_MESSAGE, GrammarError)
    assert type(error) is LimitExceeded
    assert (error.code, error.status, error.limit) == ("limit-exceeded", 413, "max_grammar_size")
    assert error.detail == f"constraint too complex: {LIMIT_MESSAGE}"
    assert refusal(LIMIT_MESSAGE, GrammarError, "reasoning").detail == f"reasoning too complex: {LIMIT_MESSAGE}"


def test_a_compile_verdict_that_reports_no_limit_is_the_kinds_own_error() -> None:
    error = refusal(PLAIN_MESSAGE, SchemaError)
    assert type(error) is SchemaError
    assert (error.code, error.status, error.detail) == ("schema-invalid", 400, PLAIN_MESSAGE)
    # A token id past the vocabulary mentions a range, but is the input's fault, not a limit.
    assert type(refusal("token range 0..100 exceeded", GrammarError)) is GrammarError


def test_a_session_verdict_that_reports_a_limit_is_engine_limit_reached() -> None:
    error = engine_failure("  lexer error: too many expressions constructed\n", "computing the mask")
    assert type(error) is EngineLimitReached
    assert (error.code, error.status, error.limit) == ("engine-limit", 413, "step_lexer_fuel")
    assert error.detail == (
        "the constraint reached the engine limit step_lexer_fuel at computing the mask: "
        "lexer error: too many expressions constructed"
    )


def test_a_session_verdict_that_reports_no_limit_is_a_grammar_error_cut_to_length() -> None:
    error = engine_failure("x" * 800)
    assert type(error) is GrammarError and error.detail == "x" * 500
    assert engine_failure("   ").detail == "the matcher stopped"


def test_a_recursion_error_while_compiling_is_the_nesting_limit() -> None:
    with pytest.raises(LimitExceeded) as info, compile_boundary():
        raise RecursionError("maximum recursion depth exceeded")
    assert type(info.value) is LimitExceeded
    assert (info.value.code, info.value.limit) == ("limit-exceeded", "max_nesting_depth")
    assert info.value.detail == "the constraint is nested too deeply"
    assert info.value.__suppress_context__


def test_an_engine_limit_met_while_compiling_is_the_constraints_limit() -> None:
    with pytest.raises(LimitExceeded) as info, compile_boundary():
        raise EngineLimitReached("the constraint reached the engine limit max_mask_ms at this step", "max_mask_ms")
    assert type(info.value) is LimitExceeded
    assert (info.value.code, info.value.status, info.value.limit) == ("limit-exceeded", 413, "max_mask_ms")
    assert info.value.detail == "the constraint reached the engine limit max_mask_ms at this step"


def test_the_compile_boundary_lets_our_errors_and_our_bugs_through_unchanged() -> None:
    raised = SchemaError("bad", pointer="/type")
    with pytest.raises(SchemaError) as info, compile_boundary():
        raise raised
    assert info.value is raised
    with pytest.raises(KeyError), compile_boundary():
        raise KeyError("a bug of ours stays a bug (a 500)")


def test_a_converters_exception_becomes_the_error_its_mapping_makes() -> None:
    mapping: ErrorMap = {
        KeyError: lambda e: SchemaError(f"key {e}"),
        LookupError: lambda e: GrammarError(f"lookup {e}"),
    }
    with pytest.raises(GuidanceError) as info, map_errors(mapping):
        raise KeyError("x")
    assert type(info.value) is SchemaError and info.value.detail == "key 'x'"  # the first match wins
    assert info.value.__suppress_context__
    with pytest.raises(GrammarError, match="lookup"), map_errors(mapping):
        raise IndexError("y")
    with pytest.raises(ValueError), map_errors(mapping):
        raise ValueError("not mapped: a bug of ours stays a bug")


def test_converter_exceptions_reach_the_client_as_grammar_errors(tiny_tokenizer: Tokenizer) -> None:
    backend = GuidanceBackend(tiny_tokenizer)
    with pytest.raises(GrammarError) as syntax:
        backend.compile(ProgramSpec("gbnf", 'root ::= "a" ('))
    assert type(syntax.value) is GrammarError and "GBNF syntax error at line 1" in syntax.value.detail
    with pytest.raises(GrammarError) as unknown:
        backend.compile(ProgramSpec("gbnf", "root ::= missing"))
    assert type(unknown.value) is GrammarError and "missing" in unknown.value.detail
    with pytest.raises(SchemaError) as schema:
        backend.compile_json_schema({"type": "string", "pattern": "(?<=a)b"})
    assert schema.value.extra.get("pointer") == "/pattern"


ERRORS: list[GuidanceError] = [
    GrammarError("bad grammar"),
    SchemaError("bad schema (at #/type)", pointer="/type"),
    TemplateError("bad slot", 3, 7),
    LimitExceeded("too big", "max_source_bytes"),
    EngineLimitReached("engine limit", "step_lexer_fuel"),
    InvalidTokens("id 99999 out of range", 2),
    TokenRejected("token refused", 1, 42),
    UnknownSession("no such session"),
]


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: type(e).__name__)
def test_a_replica_is_a_fresh_error_with_every_field(error: GuidanceError) -> None:
    packed: tuple[type[GuidanceError], tuple[Any, ...], dict[str, Any]] = pickle.loads(
        pickle.dumps((type(error), error.args, dict(error.__dict__)))
    )
    copy = replica(*packed)
    assert copy is not error
    assert type(copy) is type(error) and copy.__dict__ == error.__dict__
    assert (copy.code, copy.status, str(copy), copy.to_dict()) == (
        error.code,
        error.status,
        str(error),
        error.to_dict(),
    )


def test_a_limit_refused_by_the_compiler_is_what_the_boundary_gives(tiny_tokenizer: Tokenizer) -> None:
    backend = GuidanceBackend(tiny_tokenizer, limits=Limits(max_grammar_size=50))
    schema = {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(30)}}
    with pytest.raises(LimitExceeded) as info:
        backend.compile_json_schema(schema)
    expected = refusal(LIMIT_MESSAGE, SchemaError)
    assert isinstance(expected, LimitExceeded)
    assert (type(info.value), info.value.detail, info.value.limit) == (type(expected), expected.detail, expected.limit)


def test_a_grammar_refused_by_the_compiler_is_the_kinds_error(tiny_tokenizer: Tokenizer) -> None:
    with pytest.raises(GrammarError) as info:
        GuidanceBackend(tiny_tokenizer).compile_grammar("start: foo")
    assert type(info.value) is GrammarError and "unknown name" in info.value.detail


def test_a_recursion_error_in_a_kinds_compile_is_the_nesting_limit(
    tiny_tokenizer: Tokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    def recurse(*_: object) -> Any:
        raise RecursionError("maximum recursion depth exceeded")

    kinds = dict(core.kinds.KINDS)
    kinds["regex"] = replace(kinds["regex"], compile=recurse)
    monkeypatch.setattr(core.kinds, "KINDS", kinds)
    with pytest.raises(LimitExceeded) as info:
        compile_spec(ProgramSpec("regex", "a+"), tiny_tokenizer.ll, Limits())
    assert (type(info.value), info.value.limit) == (LimitExceeded, "max_nesting_depth")
