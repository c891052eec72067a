"""Derivation depth: chains of references are measured before llguidance recurses through them.

The deepest legal source of each kind compiles, serves a mask and accepts a token; one level
more is refused with ``max_derivation_depth``; far deeper sources (which used to kill the process
with SIGSEGV inside the engine) are refused the same way.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import llguidance
import pytest

from core import GuidanceBackend, LimitExceeded, Limits, Tokenizer
from core.bitmask import allowed_tokens
from core.derivation import derivation_depth
from core.threads import LLGuidanceThreadPool, on_llguidance_thread, run_on_llguidance_thread

LIMIT = Limits().max_derivation_depth


def schema_chain(applicator: str, levels: int) -> dict[str, Any]:
    """``levels`` definitions, each reaching the next through ``applicator``."""
    defs: dict[str, Any] = {}
    for i in range(levels):
        ref = {"$ref": f"#/$defs/d{i + 1}"}
        defs[f"d{i}"] = {
            "ref": ref,
            "items": {"type": "array", "items": ref, "minItems": 1, "maxItems": 1},
            "properties": {
                "type": "object",
                "properties": {"a": ref},
                "required": ["a"],
                "additionalProperties": False,
            },
            "anyOf": {"anyOf": [ref, {"type": "null"}]},
            "allOf": {"allOf": [ref]},
        }[applicator]
    defs[f"d{levels}"] = {"type": "integer"}
    return {"$defs": defs, "$ref": "#/$defs/d0"}


def lark_chain(shape: str, levels: int) -> str:
    rules = [
        {"rule": f"r{i}: r{i + 1}", "alt": f'r{i}: r{i + 1} | "x{i}"', "seq": f'r{i}: "a" r{i + 1}'}[shape]
        for i in range(levels)
    ]
    return "start: r0\n" + "\n".join(rules) + f"\nr{levels}: /[0-9]+/\n"


# Each kind: (compile a chain of n levels, nodes per level, nodes besides the levels). A direct
# $ref is one node a level, the other applicators two (the subschema and the definition it names);
# the root and the leaf add two, Lark's start rule and the leaf one each; a template adds its own
# start rule and the slot's rule.
_Source = tuple[Callable[[GuidanceBackend, int], Any], int, int]
SOURCES: dict[str, _Source] = {
    **{
        f"schema {a}": (
            (lambda a: lambda b, n: b.compile_json_schema(schema_chain(a, n)))(a),
            1 if a == "ref" else 2,
            2,
        )
        for a in ("ref", "items", "properties", "anyOf", "allOf")
    },
    **{
        f"lark {s}": ((lambda s: lambda b, n: b.compile_grammar(lark_chain(s, n)))(s), 1, 2)
        for s in ("rule", "alt", "seq")
    },
    "template json slot": (
        lambda b, n: b.compile_template("{{json 'x' schema=s}}", variables={"s": schema_chain("ref", n)}),
        1,
        4,
    ),
    "template grammar slot": (
        lambda b, n: b.compile_template("{{grammar 'x' lark=g}}", variables={"g": lark_chain("rule", n)}),
        1,
        4,
    ),
}


def deepest_legal(kind: str) -> int:
    """The most levels of ``kind`` within the default limit."""
    _, per_level, extra = SOURCES[kind]
    return (LIMIT - extra) // per_level


@pytest.fixture(scope="module")
def backend(default_tokenizer: Tokenizer) -> GuidanceBackend:
    return GuidanceBackend(default_tokenizer, max_cache_size=4)


def test_a_chain_counts_its_nodes() -> None:
    assert derivation_depth(llguidance.LLMatcher.grammar_from_json_schema(schema_chain("ref", 10)), LIMIT) == 12
    assert derivation_depth(llguidance.LLMatcher.grammar_from_json_schema(schema_chain("items", 10)), LIMIT) == 22
    assert derivation_depth(lark_chain("alt", 10), LIMIT) == 12


def test_recursion_is_not_a_chain() -> None:
    tree = {
        "$defs": {
            "node": {"type": "object", "properties": {"kids": {"type": "array", "items": {"$ref": "#/$defs/node"}}}}
        },
        "$ref": "#/$defs/node",
    }
    assert derivation_depth(llguidance.LLMatcher.grammar_from_json_schema(tree), LIMIT) == 4
    assert derivation_depth('start: e\ne: t | e "+" t\nt: /[0-9]+/ | "(" e ")"\n', LIMIT) == 3


def test_embedded_grammars_add_to_the_chain() -> None:
    top = {
        "grammars": [
            {
                "lark_grammar": (
                    'start: a\na: @g1 | b\nb: %json {"$ref": "#/$defs/x", "$defs": {"x": {"type": "integer"}}}'
                )
            },
            {"name": "g1", "lark_grammar": "start: c\nc: /[0-9]/"},
        ]
    }
    # start -> a -> b -> the inline schema -> its $ref target
    assert derivation_depth(json.dumps(top), LIMIT) == 5


def test_a_rewrite_that_deepens_a_chain_is_measured_after_it(tiny_tokenizer: Tokenizer) -> None:
    # if/then becomes allOf: [anyOf: [not if, then]]: the chain root -> x -> a -> minLength's node
    # grows from 4 nodes to 5.
    schema = {
        "$defs": {"a": {"if": {"type": "string"}, "then": {"minLength": 2}}},
        "properties": {"x": {"$ref": "#/$defs/a"}},
    }
    with pytest.raises(LimitExceeded) as caught:
        GuidanceBackend(tiny_tokenizer, limits=Limits(max_derivation_depth=4)).compile_json_schema(schema)
    assert caught.value.limit == "max_derivation_depth"
    assert GuidanceBackend(tiny_tokenizer, limits=Limits(max_derivation_depth=5)).compile_json_schema(schema)


def test_a_hostile_depth_is_measured_without_python_recursion() -> None:
    assert derivation_depth(lark_chain("rule", 200_000), LIMIT) == LIMIT + 1


@pytest.mark.parametrize("kind", sorted(SOURCES))
def test_the_deepest_legal_source_compiles_masks_and_accepts(backend: GuidanceBackend, kind: str) -> None:
    program = SOURCES[kind][0](backend, deepest_legal(kind))
    state = program.create_state()
    row = backend.allocate_bitmask(1)
    state.fill_bitmask(row, 0)
    allowed = [int(t) for t in allowed_tokens(row[0], program.vocab_size)]
    assert allowed and allowed != [program.eos_token_id]
    assert state.accept_tokens([allowed[0]])
    state.fill_bitmask(row, 0)
    assert row.any()
    assert state.fork().tokens == [allowed[0]]


@pytest.mark.parametrize("kind", sorted(SOURCES))
def test_one_level_more_is_refused(backend: GuidanceBackend, kind: str) -> None:
    with pytest.raises(LimitExceeded) as caught:
        SOURCES[kind][0](backend, deepest_legal(kind) + 1)
    assert caught.value.limit == "max_derivation_depth"
    assert caught.value.status == 413


@pytest.mark.parametrize("kind", ["schema properties", "lark rule", "template json slot"])
def test_chains_that_used_to_kill_the_process_are_refused(backend: GuidanceBackend, kind: str) -> None:
    with pytest.raises(LimitExceeded, match="levels deep"):
        SOURCES[kind][0](backend, 3_000)  # a few thousand levels overflowed an 8 MiB stack


def test_grammars_are_built_on_engine_threads_with_the_stack_the_limits_ask(
    backend: GuidanceBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    import core.program
    import core.validation

    seen: list[tuple[bool, str]] = []
    make_root = core.program.CompiledGuidanceProgram._make_root
    build = core.validation.build

    def spy(self: Any) -> Any:
        seen.append((on_llguidance_thread(self.limits.llguidance_stack_bytes), threading.current_thread().name))
        return make_root(self)

    def spy_build(grammar: str, tokenizer: Any, limits: Any, **kwargs: Any) -> Any:
        seen.append((on_llguidance_thread(limits.llguidance_stack_bytes), threading.current_thread().name))
        return build(grammar, tokenizer, limits, **kwargs)

    monkeypatch.setattr(core.program.CompiledGuidanceProgram, "_make_root", spy)
    monkeypatch.setattr(core.validation, "build", spy_build)
    backend.compile_regex("[0-9]{3}-[a-z]+")
    assert seen and all(ok for ok, _ in seen), seen
    assert not on_llguidance_thread()  # the caller's own thread is not one


def test_an_engine_pool_sets_its_stack_only_while_it_starts_threads() -> None:
    before = threading.stack_size()
    pool = LLGuidanceThreadPool(1, "test-engine", 16 * 1024 * 1024)
    try:
        assert pool.submit(on_llguidance_thread, 16 * 1024 * 1024).result()
        assert not pool.submit(on_llguidance_thread, 64 * 1024 * 1024).result()
    finally:
        pool.shutdown()
    assert threading.stack_size() == before
    assert run_on_llguidance_thread(8 * 1024 * 1024, on_llguidance_thread, 8 * 1024 * 1024)
