"""The backend: content-addressed programs, the LRU cache, single flight, batched masks."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import numpy as np
import pytest

from core import (
    AsyncGuidanceBackend,
    GrammarError,
    GuidanceBackend,
    LimitExceeded,
    Limits,
    SchemaError,
    TemplateError,
    Tokenizer,
)
from core.spec import ProgramSpec


def test_program_ids_are_content_hashes(tiny_tokenizer: Tokenizer) -> None:
    a = GuidanceBackend(tiny_tokenizer).compile_regex("[0-9]+")
    b = GuidanceBackend(tiny_tokenizer).compile_regex("[0-9]+")
    assert a.program_id == b.program_id  # same on every replica
    assert a is not b
    c = GuidanceBackend(tiny_tokenizer).compile_regex("[0-9]*")
    assert c.program_id != a.program_id
    t1 = GuidanceBackend(tiny_tokenizer).compile_template("{{x}}", {"x": "1"})
    t2 = GuidanceBackend(tiny_tokenizer).compile_template("{{x}}", {"x": "2"})
    assert t1.program_id != t2.program_id


def test_cache_hits_misses_and_lru_eviction(tiny_tokenizer: Tokenizer) -> None:
    backend = GuidanceBackend(tiny_tokenizer, max_cache_size=2)
    p1 = backend.compile_regex("a+")
    assert backend.compile_regex("a+") is p1
    backend.compile_regex("b+")
    backend.compile_regex("a+")  # a+ is now most recent
    backend.compile_regex("c+")  # evicts b+
    stats = backend.get_stats()["cache"]
    assert stats["hits"] == 2 and stats["misses"] == 3 and stats["evictions"] == 1
    assert stats["entries"] == 2 and stats["compiles"] == 3
    assert backend.get_program(p1.program_id) is p1
    b_id = backend.program_id(ProgramSpec("regex", "b+"))
    assert backend.get_program(b_id) is None
    backend.clear_cache()
    assert backend.get_stats()["cache"]["entries"] == 0


def test_evicted_program_keeps_serving_live_sessions(tiny_tokenizer: Tokenizer) -> None:
    backend = GuidanceBackend(tiny_tokenizer, max_cache_size=1)
    state = backend.compile_regex("[a-z]+!").create_state()
    backend.compile_regex("other")
    assert backend.get_stats()["cache"]["evictions"] == 1
    assert state.accept_tokens(tiny_tokenizer.encode("ok!") + [tiny_tokenizer.eos_token_id])


def test_cache_is_bounded_in_bytes(tiny_tokenizer: Tokenizer) -> None:
    backend = GuidanceBackend(tiny_tokenizer, max_cache_size=100, max_cache_bytes=10_000)
    for i in range(5):
        backend.compile_choice([f"option-{i}-" + "x" * 2000])
    stats = backend.get_stats()["cache"]
    assert stats["bytes"] <= 10_000 and stats["entries"] < 5 and stats["evictions"] > 0


def test_failed_compiles_raise_domain_errors_and_count(tiny_backend: GuidanceBackend) -> None:
    with pytest.raises(GrammarError):
        tiny_backend.compile_regex("(?<=a)b")
    with pytest.raises(GrammarError):
        tiny_backend.compile_grammar("start: undefined_rule")
    with pytest.raises(SchemaError, match="not"):
        tiny_backend.compile_json_schema({"type": "integer", "not": {"multipleOf": 3}})
    with pytest.raises(SchemaError):
        tiny_backend.compile_json_schema("{not json")
    with pytest.raises(GrammarError):
        tiny_backend.compile_choice([])
    with pytest.raises(TemplateError):
        tiny_backend.compile_template("{{gen 'a' regex='(a'}}")
    assert tiny_backend.get_stats()["cache"]["compile_errors"] == 6


def test_pathological_constraints_cost_a_clear_error(tiny_tokenizer: Tokenizer) -> None:
    backend = GuidanceBackend(tiny_tokenizer, limits=Limits(max_source_bytes=1000, max_nesting_depth=10))
    with pytest.raises(LimitExceeded):
        backend.compile_regex("a" * 2000)
    deep: dict[str, object] = {"type": "object"}
    for _ in range(20):
        deep = {"type": "object", "properties": {"a": deep}}
    with pytest.raises(LimitExceeded):
        backend.compile_json_schema(deep)


def test_concurrent_compiles_of_one_program_run_once(tiny_tokenizer: Tokenizer) -> None:
    backend = GuidanceBackend(tiny_tokenizer)
    calls = []
    real = backend._compile_grammar

    def slow(spec: ProgramSpec, tok: Tokenizer) -> object:
        calls.append(spec)
        time.sleep(0.1)
        return real(spec, tok)

    backend._compile_grammar = slow  # type: ignore[assignment,method-assign]
    results = []
    threads = [threading.Thread(target=lambda: results.append(backend.compile_regex("[0-9]{3}"))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len({id(p) for p in results}) == 1


async def test_async_backend_single_flight_off_the_loop(tiny_tokenizer: Tokenizer) -> None:
    abackend = AsyncGuidanceBackend(GuidanceBackend(tiny_tokenizer), max_workers=2)
    real = abackend.backend._compile_grammar
    calls = []

    def slow(spec: ProgramSpec, tok: Tokenizer) -> object:
        calls.append(spec)
        time.sleep(0.2)
        return real(spec, tok)

    abackend.backend._compile_grammar = slow  # type: ignore[assignment,method-assign]
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    programs = await asyncio.gather(*(abackend.compile_regex("[a-z]{2}") for _ in range(10)))
    task.cancel()
    assert len(calls) == 1 and len({id(p) for p in programs}) == 1
    assert ticks >= 5  # the loop kept running while the compile ran in a thread
    again = await abackend.compile_template("x{{gen 'y' regex='[0-9]'}}")
    assert (await abackend.compile_template("x{{gen 'y' regex='[0-9]'}}")) is again
    abackend.close()


def test_batched_fill_equals_per_state_fill(tekken: Tokenizer) -> None:
    backend = GuidanceBackend(tekken)
    program = backend.compile_json_schema(
        {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "integer"}}, "required": ["a", "b"]}
    )
    texts = ['{"a":"', '{"a":"hello', '{"a":"x","b":', '{"a":"x","b":12', "", '{"']
    states = []
    for t in texts:
        s = program.create_state()
        assert s.accept_tokens(tekken.encode(t)), t
        states.append(s)
    batched = backend.allocate_bitmask(len(states))
    backend.fill_next_token_bitmasks(states, batched)
    for i, s in enumerate(states):
        single = backend.allocate_bitmask(1)
        s.fill_bitmask(single, 0)
        assert np.array_equal(single[0], batched[i])


def test_parallel_fill_over_matcher_shards_equals_the_loop(tekken: Tokenizer, monkeypatch: pytest.MonkeyPatch) -> None:
    import core.backend

    threads_used: set[str] = set()
    fill_group = core.backend._fill_group

    def spy(group: Any, bitmask: Any) -> Any:
        threads_used.add(threading.current_thread().name)
        return fill_group(group, bitmask)

    monkeypatch.setattr(core.backend, "_fill_group", spy)
    serial = GuidanceBackend(tekken)
    parallel = GuidanceBackend(tekken, num_threads=2, parallel_min_mask_seconds=0.0)  # these masks are cheap
    schema = {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "integer"}}, "required": ["a", "b"]}
    texts = ['{"a":"', '{"a":"hello', '{"a":"x","b":', '{"a":"x","b":12', "", '{"', '{"a":"x","b":1}', '{"a":"é']
    texts = texts * 3  # 24 states: above the batch size that goes parallel
    expected = serial.allocate_bitmask(len(texts))
    serial_states = []
    for t in texts:
        s = serial.compile_json_schema(schema).create_state()
        assert s.accept_tokens(tekken.encode(t))
        serial_states.append(s)
    serial.fill_next_token_bitmasks(serial_states, expected)

    program = parallel.compile_json_schema(schema)
    assert program.shards.count == 2
    program.build_shards()  # the backend started it in the background; this waits for it
    states = [program.create_state() for _ in texts]
    assert {s.shard for s in states} == {0, 1}  # dealt over both shards
    for s, t in zip(states, texts):
        assert s.accept_tokens(tekken.encode(t))
    got = parallel.allocate_bitmask(len(texts) + 2)
    rows = [len(texts) + 1 - i for i in range(len(texts))]  # out of order, two rows untouched
    threads_used.clear()
    parallel.fill_next_token_bitmasks(states, got, rows)
    assert len(threads_used) == 2  # this thread and one fill thread
    for i, r in enumerate(rows):
        assert np.array_equal(got[r], expected[i]), texts[i]
    assert (got[[0, 1]] == -1).all()
    fork = states[1].fork()
    assert fork.shard == states[1].shard
    states[1].reset()
    assert states[1].shard == fork.shard
    parallel.close()


def test_wider_model_vocabulary_has_zero_tail(tiny_tokenizer: Tokenizer) -> None:
    backend = GuidanceBackend(tiny_tokenizer, vocab_size=1000)
    program = backend.compile_regex("(?s:.*)")
    assert program.vocab_size == 1000 and program.mask_words == 32
    bitmask = backend.allocate_bitmask(1)
    program.create_state().fill_bitmask(bitmask, 0)
    words_used = (tiny_tokenizer.vocab_size + 31) // 32
    assert not bitmask[0, words_used:].any()
    assert bitmask[0, :words_used].any()
