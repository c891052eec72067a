"""Limits added for reliability: the expansion pre-check, the first-mask budget, empty languages,
and the failed-compile (negative) cache."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core import GrammarError, GuidanceBackend, LimitExceeded, Tokenizer
from core.cache import ProgramCache
from core.expansion import expansion, expansion_above, regex_expansion
from core.limits import Limits


@pytest.mark.parametrize(
    ("pattern", "size"),
    [
        ("a{100000}", 100_000),
        ("(a{1000}){1000}", 1_000_000),
        ("x{2147483648}", 2_147_483_648),
        ("(?:ab){10}{10}", 200),
        ("(?P<x>abc){3}", 9),
        ("[ab]*a[ab]{20}", 1),  # classes are not literals
        ("[a-z]{100000}", 0),
        (r"\d{50}", 0),
        ("(ab|cd){20000}", 2),  # alternatives stay small for derivatives
        ("[a]{500}", 500),  # a one-character class is a literal
        ("abc", 3),
    ],
)
def test_regex_expansion(pattern: str, size: int) -> None:
    assert regex_expansion(pattern) == size


def test_expansion_reads_lark_json_and_top_level_grammars() -> None:
    assert expansion('start: "a"{10000} /b{3}/') == 10_003
    assert expansion('start: x ~ 5..70\nx: "ab"') == 70
    top = '{"grammars": [{"lark_grammar": "start: j\\nj: %json {\\"const\\": \\"zzzzzzzz\\"}"}]}'
    assert expansion(top) == 8
    assert (
        expansion('{"grammars": [{"json_schema": {"enum": ["x", "yyyyyy"], "description": "' + "d" * 99 + '"}}]}') == 6
    )
    assert expansion('{"grammars": [{"json_schema": {"pattern": "q{77}"}}]}') == 77


# Lark and regex pieces that sum, alternate, group and repeat, some of them written with escapes.
_PIECES = st.sampled_from(
    ['"ab"', '"{"', "/x{30}/", "/y{ 2,90}/", "/z\\{/", " | ", "(", ")", "{40}", "~ 30", "~ 2..60"]
    + ["a", "[b]", "\\n", "{", "}"]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_PIECES, max_size=12), st.integers(min_value=0, max_value=200))
def test_the_expansion_check_refuses_exactly_what_the_full_measure_does(pieces: list[str], limit: int) -> None:
    lark = "start: " + " ".join(pieces)
    schema = {"pattern": "".join(pieces), "enum": ["".join(pieces)]}
    top = [json.dumps({"grammars": [{"lark_grammar": lark}]}), json.dumps({"grammars": [{"json_schema": schema}]})]
    for grammar in (lark, *top):
        grown = expansion(grammar)
        assert expansion_above(grammar, limit) == (grown if grown > limit else None)


def test_the_expansion_check_is_inclusive_at_the_limit() -> None:
    assert expansion_above('start: "aaaa"', 4) is None
    assert expansion_above('start: "aaaaa"', 4) == 5
    assert expansion_above('{"grammars": [{"json_schema": {"pattern": "q{77}"}}]}', 76) == 77


def test_long_literals_and_repeats_are_refused_before_a_matcher_is_built(tiny_tokenizer: Tokenizer) -> None:
    backend = GuidanceBackend(tiny_tokenizer, limits=Limits(max_expansion=100))
    for compile_ in [
        lambda: backend.compile_regex("a{101}"),
        lambda: backend.compile_template("x" * 101),
        lambda: backend.compile_template("{{v}}", {"v": "y" * 101}),
        lambda: backend.compile_grammar('start: "a"{101}'),
        lambda: backend.compile_json_schema({"const": "z" * 101}),
        lambda: backend.compile_choice(["w" * 101]),
    ]:
        with pytest.raises(LimitExceeded) as info:
            compile_()
        assert info.value.limit == "max_expansion"
    assert backend.compile_regex("a{100}") is not None


def test_a_first_mask_over_budget_is_refused(default_tokenizer: Tokenizer) -> None:
    backend = GuidanceBackend(default_tokenizer, limits=Limits(max_first_mask_ms=1))
    with pytest.raises(LimitExceeded) as info:
        backend.compile_template("ab" * 10_000)  # about 0.1 s per mask
    assert info.value.limit == "max_first_mask_ms"
    program = GuidanceBackend(default_tokenizer).compile_regex("[a-z]+")
    assert program is not None


def test_an_empty_language_is_refused(tiny_tokenizer: Tokenizer) -> None:
    backend = GuidanceBackend(tiny_tokenizer)
    with pytest.raises(GrammarError, match="matches no text"):
        backend.compile_grammar('start: a\na: a "x"')
    with pytest.raises(GrammarError, match="matches no text"):
        backend.compile_json_schema({"$ref": "#"})


def test_the_first_mask_time_is_recorded(tiny_tokenizer: Tokenizer) -> None:
    backend = GuidanceBackend(tiny_tokenizer)
    program = backend.compile_regex("[a-z]+")
    seconds = backend.first_mask_seconds(program)
    assert seconds is not None and 0 <= seconds < 1


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_failed_compiles_are_remembered_for_the_ttl() -> None:
    clock = Clock()
    cache = ProgramCache(negative_ttl=10, negative_max_entries=2, clock=clock)
    calls = []

    def failing() -> object:
        calls.append(1)
        raise LimitExceeded("too big", "max_source_bytes")

    for _ in range(5):
        with pytest.raises(LimitExceeded) as info:
            cache.get_or_compile("k", failing)  # type: ignore[arg-type]
        assert info.value.limit == "max_source_bytes" and info.value.detail == "too big"
    assert len(calls) == 1
    stats = cache.stats()
    assert stats["negative_hits"] == 4 and stats["negative_entries"] == 1 and stats["compile_errors"] == 1
    clock.now = 10.0
    assert cache.stats()["negative_entries"] == 0  # expired: forgotten
    with pytest.raises(LimitExceeded):
        cache.get_or_compile("k", failing)  # type: ignore[arg-type]
    assert len(calls) == 2
    # Bounded: the oldest failures are forgotten first.
    for key in ("a", "b", "c"):
        with pytest.raises(LimitExceeded):
            cache.get_or_compile(key, failing)  # type: ignore[arg-type]
    assert cache.stats()["negative_entries"] == 2
    with pytest.raises(LimitExceeded):
        cache.get_or_compile("a", failing)  # type: ignore[arg-type]
    assert len(calls) == 6  # "a" was forgotten: compiled again, not a negative hit


def test_our_bugs_are_not_remembered() -> None:
    cache = ProgramCache()

    def broken() -> object:
        raise RuntimeError("a bug")

    for _ in range(2):
        with pytest.raises(RuntimeError):
            cache.get_or_compile("k", broken)  # type: ignore[arg-type]
    assert cache.stats()["negative_entries"] == 0
