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
from core.cache import Flight
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
    one = GuidanceBackend(tiny_tokenizer).compile_choice(["option-x-" + "x" * 2000]).size_bytes
    bound = 3 * one
    backend = GuidanceBackend(tiny_tokenizer, max_cache_size=100, max_cache_bytes=bound)
    for i in range(5):
        backend.compile_choice([f"option-{i}-" + "x" * 2000])
    stats = backend.get_stats()["cache"]
    assert stats["bytes"] <= bound and stats["entries"] < 5 and stats["evictions"] > 0


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

    def slow(spec: ProgramSpec, tok: Tokenizer, cancel: Any = None) -> object:
        calls.append(spec)
        time.sleep(0.1)
        return real(spec, tok, cancel)

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

    def slow(spec: ProgramSpec, tok: Tokenizer, cancel: Any = None) -> object:
        calls.append(spec)
        time.sleep(0.2)
        return real(spec, tok, cancel)

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
    schema = {
        "type": "object",
        "properties": {"a": {"type": "string"}, "b": {"type": "integer"}},
        "required": ["a", "b"],
    }
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
    program.build_shards()  # now, rather than when the program gets its second session
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


def _gated_compiles(backend: GuidanceBackend) -> tuple[list[ProgramSpec], threading.Event, threading.Event]:
    """Make ``backend``'s compiles wait for a signal: (specs compiled, started, release)."""
    real = backend._compile_grammar
    calls: list[ProgramSpec] = []
    started, release = threading.Event(), threading.Event()

    def gated(spec: ProgramSpec, tok: Tokenizer, cancel: Any = None) -> Any:
        calls.append(spec)
        started.set()
        assert release.wait(30)
        return real(spec, tok, cancel)

    backend._compile_grammar = gated  # type: ignore[method-assign]
    return calls, started, release


async def test_threads_and_event_loops_wait_for_the_same_compile(tiny_tokenizer: Tokenizer) -> None:
    abackend = AsyncGuidanceBackend(GuidanceBackend(tiny_tokenizer), max_workers=2)
    backend = abackend.backend
    calls, started, release = _gated_compiles(backend)
    spec = ProgramSpec("regex", "[a-z]{3}")
    from_thread: list[tuple[Any, bool]] = []
    leader = threading.Thread(target=lambda: from_thread.append(backend.compile(spec)))
    leader.start()
    assert await asyncio.to_thread(started.wait, 30)
    joined = asyncio.gather(*(abackend.compile(spec) for _ in range(3)))
    await asyncio.sleep(0)  # the joiners are waiting on the thread's flight
    release.set()
    answers = await joined
    await asyncio.to_thread(leader.join, 30)
    assert len(calls) == 1
    program, cached = from_thread[0]
    assert cached is False
    assert all(p is program and c is True for p, c in answers)  # a joined flight counts as cached
    stats = backend.get_stats()["cache"]
    assert stats["misses"] == 1 and stats["compiles"] == 1 and stats["hits"] == 0
    assert await abackend.compile(spec) == (program, True)
    assert backend.get_stats()["cache"]["hits"] == 1
    abackend.close()


async def test_an_event_loop_leads_and_threads_join(tiny_tokenizer: Tokenizer) -> None:
    abackend = AsyncGuidanceBackend(GuidanceBackend(tiny_tokenizer), max_workers=1)
    backend = abackend.backend
    calls, started, release = _gated_compiles(backend)
    spec = ProgramSpec("regex", "[0-9]{2}")
    join = backend.cache.join
    followers: list[Flight] = []
    both_joined = threading.Event()

    def spy(key: str) -> Any:
        got = join(key)
        if isinstance(got, Flight) and not got.leader:
            followers.append(got)
            if len(followers) == 2:
                both_joined.set()
        return got

    backend.cache.join = spy  # type: ignore[method-assign]
    leading = asyncio.ensure_future(abackend.compile(spec))
    assert await asyncio.to_thread(started.wait, 30)
    joiners = asyncio.gather(*(asyncio.to_thread(backend.compile, spec) for _ in range(2)))
    assert await asyncio.to_thread(both_joined.wait, 30)  # both threads wait on the loop's flight
    release.set()
    program, cached = await leading
    assert cached is False and len(calls) == 1
    for answer in await joiners:
        assert answer == (program, True)
    abackend.close()


async def test_a_failed_flight_fails_every_waiter_and_is_remembered(tiny_tokenizer: Tokenizer) -> None:
    abackend = AsyncGuidanceBackend(GuidanceBackend(tiny_tokenizer), max_workers=2)
    calls, started, release = _gated_compiles(abackend.backend)
    bad = ProgramSpec("regex", "(unclosed")
    leading = asyncio.ensure_future(abackend.compile(bad))
    assert await asyncio.to_thread(started.wait, 30)
    joiner = asyncio.ensure_future(abackend.compile(bad))
    await asyncio.sleep(0)
    release.set()
    for outcome in await asyncio.gather(leading, joiner, return_exceptions=True):
        assert isinstance(outcome, GrammarError), outcome
    with pytest.raises(GrammarError):
        await abackend.compile(bad)  # from the negative cache: not compiled again
    assert len(calls) == 1
    stats = abackend.get_stats()["cache"]
    assert stats["compile_errors"] == 1 and stats["negative_hits"] == 1
    abackend.close()


async def test_a_compile_after_close_fails_without_stranding_its_key(tiny_tokenizer: Tokenizer) -> None:
    abackend = AsyncGuidanceBackend(GuidanceBackend(tiny_tokenizer))
    abackend.close()
    with pytest.raises(RuntimeError):
        await abackend.compile_regex("[a-z]+")
    # The flight it opened was landed: the same key still compiles (a stranded one would hang).
    program, cached = await asyncio.to_thread(abackend.backend.compile, ProgramSpec("regex", "[a-z]+"))
    assert cached is False and program.kind == "regex"


async def test_compile_template_takes_the_seed_keyword_names(tiny_tokenizer: Tokenizer) -> None:
    abackend = AsyncGuidanceBackend(GuidanceBackend(tiny_tokenizer))
    backend = abackend.backend
    by_name = backend.compile_template(template_str="n={{n}}{{gen 'x' regex='[0-9]'}}", variables={"n": "7"})
    by_position = backend.compile_template("n={{n}}{{gen 'x' regex='[0-9]'}}", {"n": "7"})
    assert by_name is by_position
    assert (
        await abackend.compile_template(template_str="n={{n}}{{gen 'x' regex='[0-9]'}}", variables={"n": "7"})
        is by_name
    )
    state = by_name.create_state()
    assert state.accept_tokens(tiny_tokenizer.encode("n="))
    assert not state.accept_tokens(tiny_tokenizer.encode("8"))  # the variable's value is literal text
    assert state.accept_tokens(tiny_tokenizer.encode("74") + [tiny_tokenizer.eos_token_id])
    assert state.variables == {"x": "4"}
    abackend.close()


def test_allocate_token_bitmask_is_allocate_bitmask(tiny_tokenizer: Tokenizer) -> None:
    backend = GuidanceBackend(tiny_tokenizer, vocab_size=1000)
    abackend = AsyncGuidanceBackend(backend)
    for allocate in (backend.allocate_token_bitmask, abackend.allocate_bitmask):
        bitmask = allocate(3)
        expected = backend.allocate_bitmask(3)
        assert bitmask.dtype == np.int32 and bitmask.shape == expected.shape == (3, 32)
        assert np.array_equal(bitmask, expected)
    abackend.close()
