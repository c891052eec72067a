"""Compile budgets in the worker processes: a CPU-time bound, cancellation, spare workers for cheap compiles."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import llguidance
import pytest

from core import GuidanceBackend, LimitExceeded, Limits, Tokenizer
from core.compiler import CompiledSpec
from core.errors import CompileCancelled
from core.kinds import compile_spec
from core.spec import ProgramSpec
from core.threads import LLGuidanceThreadPool
from core.workers import CompileWorkers

_SPIN = "(spin)"


def spin_on_marker(spec: ProgramSpec, tokenizer: llguidance.LLTokenizer, limits: Limits) -> CompiledSpec:
    """A worker task that burns CPU for a minute when the source is the marker (a heavy compile)."""
    if spec.source == _SPIN:
        end = time.monotonic() + 60
        while time.monotonic() < end:
            pass
    return compile_spec(spec, tokenizer, limits)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in "ZX"
    except FileNotFoundError:
        return False


def _busy_pids(pool: CompileWorkers, before: set[int]) -> set[int]:
    import multiprocessing

    return {p.pid for p in multiprocessing.active_children() if p.pid is not None} - before


@pytest.fixture()
def spinning(tiny_tokenizer: Tokenizer) -> Iterator[CompileWorkers]:
    pool = CompileWorkers(2, Limits(max_compile_ms=60_000), nice=5, task=spin_on_marker, heavy_after_seconds=0.3)
    yield pool
    pool.close()


def test_a_compile_past_its_cpu_budget_is_stopped_and_refused(tiny_tokenizer: Tokenizer) -> None:
    pool = CompileWorkers(1, Limits(max_compile_ms=300), nice=5, task=spin_on_marker)
    try:
        pool.warm([tiny_tokenizer])
        (pid,) = pool.pids()
        with pytest.raises(LimitExceeded) as e:
            pool.compile(ProgramSpec("regex", _SPIN), tiny_tokenizer)
        assert e.value.limit == "max_compile_ms"
        assert not _alive(pid)  # the worker was stopped, not left spinning
        assert pool.stats()["stopped"] == 1 and pool.stats()["running"] == 0
        compiled = pool.compile(ProgramSpec("regex", "[0-9]+"), tiny_tokenizer)  # a fresh worker serves the next
        assert compiled.grammar
    finally:
        pool.close()


def test_a_compile_whose_callers_have_gone_is_stopped(spinning: CompileWorkers, tiny_tokenizer: Tokenizer) -> None:
    import multiprocessing

    before = {p.pid for p in multiprocessing.active_children()}
    cancel = threading.Event()
    with ThreadPoolExecutor(1) as executor:
        running = executor.submit(spinning.compile, ProgramSpec("regex", _SPIN), tiny_tokenizer, cancel)
        deadline = time.monotonic() + 30
        while not spinning._busy and time.monotonic() < deadline:
            time.sleep(0.01)
        (pid,) = _busy_pids(spinning, before)
        cancel.set()
        with pytest.raises(CompileCancelled):
            running.result(timeout=30)
    assert not _alive(pid)
    assert spinning.stats()["stopped"] == 1


def test_a_cheap_compile_does_not_wait_behind_heavy_ones(spinning: CompileWorkers, tiny_tokenizer: Tokenizer) -> None:
    cancels = [threading.Event(), threading.Event()]
    with ThreadPoolExecutor(3) as executor:
        heavy: list[Future[CompiledSpec]] = [
            executor.submit(spinning.compile, ProgramSpec("regex", _SPIN), tiny_tokenizer, c) for c in cancels
        ]
        cheap = executor.submit(spinning.compile, ProgramSpec("regex", "[a-z]{3}"), tiny_tokenizer)
        assert cheap.result(timeout=45).grammar  # a spare worker took it
        assert not any(f.done() for f in heavy)  # while both heavy compiles still held their workers
        assert spinning.stats()["running"] == 2  # the spare was stopped once its compile was done
        for c in cancels:
            c.set()
        for f in heavy:
            with pytest.raises(CompileCancelled):
                f.result(timeout=30)


async def test_the_last_caller_leaving_cancels_the_compile_and_others_keep_it(tiny_tokenizer: Tokenizer) -> None:
    backend = GuidanceBackend(tiny_tokenizer, compile_processes=1, limits=Limits(max_compile_ms=60_000))
    backend._workers = CompileWorkers(1, backend.limits, nice=5, task=spin_on_marker)  # type: ignore[assignment]
    executor = LLGuidanceThreadPool(2, "test-compile", backend.limits.llguidance_stack_bytes)
    try:
        spec = ProgramSpec("regex", _SPIN)
        first = asyncio.ensure_future(backend.compile_async(spec, executor))
        second = asyncio.ensure_future(backend.compile_async(spec, executor))
        while not backend._workers._busy:  # type: ignore[union-attr]
            await asyncio.sleep(0.01)
        first.cancel()
        await asyncio.sleep(0.3)
        assert not second.done() and backend.get_stats()["compile_workers"]["stopped"] == 0  # one caller still waits
        second.cancel()
        for task in (first, second):
            with pytest.raises(asyncio.CancelledError):
                await task
        deadline = time.monotonic() + 30
        while backend.get_stats()["cache"]["compiles_cancelled"] == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        stats = backend.get_stats()
        assert stats["cache"]["compiles_cancelled"] == 1 and stats["compile_workers"]["stopped"] == 1
        assert stats["cache"]["negative_entries"] == 0  # a cancelled compile is not the input's fault
        program, cached = await backend.compile_async(ProgramSpec("regex", "[0-9]"), executor)
        assert not cached and program.kind == "regex"
    finally:
        executor.shutdown(wait=True)
        backend.close()


async def test_a_compile_not_started_when_its_callers_leave_never_runs(tiny_tokenizer: Tokenizer) -> None:
    backend = GuidanceBackend(tiny_tokenizer)
    executor = LLGuidanceThreadPool(1, "test-compile", backend.limits.llguidance_stack_bytes)
    gate = threading.Event()
    try:
        executor.submit(gate.wait, 30)  # the only thread is busy: the compile queues
        waiting = asyncio.ensure_future(backend.compile_async(ProgramSpec("regex", "[a-c]+"), executor))
        await asyncio.sleep(0.05)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        gate.set()
        stats = backend.get_stats()["cache"]
        assert stats["compiles_cancelled"] == 1 and stats["compiles"] == 0
        _, cached = await backend.compile_async(ProgramSpec("regex", "[a-c]+"), executor)  # the key was not stranded
        assert cached is False
    finally:
        executor.shutdown(wait=True)
        backend.close()


def test_the_cache_charges_a_program_what_its_compile_left_in_the_heap(tekken: Tokenizer) -> None:
    from core.heap import heap_bytes

    backend = GuidanceBackend(tekken)
    backend.compile_regex("[a-z]+")  # the first compile warms what every program shares
    before = heap_bytes()
    assert before is not None
    program = backend.compile_json_schema({"enum": list(range(60_000))})
    held = heap_bytes() - before  # type: ignore[operator]
    text = len(program.grammar.encode("utf-8"))
    # Its grammar text is about 0.35 MB; its matcher and lexer several MB more, all counted.
    assert program.size_bytes > 10 * text
    assert 0.5 * held <= program.size_bytes <= 1.5 * held
    assert backend.get_stats()["cache"]["bytes"] >= program.size_bytes


def test_shared_lexers_grow_no_further_than_their_byte_bound(tekken: Tokenizer) -> None:
    import random

    import numpy as np

    from core.heap import heap_bytes

    bound = 2 * 1024 * 1024
    backend = GuidanceBackend(tekken, limits=Limits(max_lexer_bytes=bound))
    # Each token walked can add lexer states that every session of the program then shares.
    programs = [backend.compile_regex("[ab]*a[ab]{14}"), backend.compile_regex("[ab]*b[ab]{14}")]
    rng = random.Random(7)
    row = backend.allocate_bitmask(1)
    before = heap_bytes()
    assert before is not None
    peak = 0
    for program in programs:
        states = [program.create_state() for _ in range(4)]
        for _ in range(1500):
            for state in states:
                state.fill_bitmask(row, 0)
                allowed = np.flatnonzero(np.unpackbits(row[0].view(np.uint8), bitorder="little"))
                choices = [int(t) for t in allowed if t < tekken.vocab_size and t not in program.eos_token_ids]
                state.advance([rng.choice(choices)])  # no session ever sees the limit
            peak = max(peak, heap_bytes() - before)  # type: ignore[operator]
            if program.stats.shard_renewals >= 2:
                break
        assert program.stats.shard_renewals >= 2  # the bound was met, and the lexer rebuilt
        del states
    # Two programs, each with at most its live lexer and the one its sessions were leaving, plus
    # the sessions' own histories: far below an unbounded walk (+838 MB for two such regexes).
    assert peak <= 2 * 2 * bound * 1.5 + 8 * 1024 * 1024, peak


def test_option_names_are_refused_before_the_program_is_keyed(tiny_tokenizer: Tokenizer) -> None:
    from core.errors import GrammarError

    backend = GuidanceBackend(tiny_tokenizer)
    with pytest.raises(GrammarError, match="unknown option"):
        backend.job(ProgramSpec("regex", "[a-z]", options={"whitespace": 2}))
    job = backend.job(ProgramSpec("json_schema", {"type": "integer"}, options={"whitespace": 2}))
    assert job.key == backend.program_id(job.spec)  # keyed once; the compile takes the job as it is
    program, cached = backend.compile(job)
    assert program.program_id == job.key and not cached
