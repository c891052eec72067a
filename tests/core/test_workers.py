"""Compile workers: the same programs and errors as compiling in-process, crashes contained."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Iterator

import llguidance
import numpy as np
import pytest

from core import AsyncGuidanceBackend, CompileCrashed, GuidanceBackend, LimitExceeded, Limits, TemplateError, Tokenizer
from core.captures import CaptureLayout
from core.compiler import CompiledSpec
from core.kinds import compile_spec
from core.spec import ProgramSpec
from core.threads import on_llguidance_thread
from core.workers import CompileWorkers

_CRASH = "(crash)"


def crash_on_marker(spec: ProgramSpec, tokenizer: llguidance.LLTokenizer, limits: Limits) -> CompiledSpec:
    """A worker task that dies like a native crash would when the source is the marker."""
    if spec.source == _CRASH:
        os._exit(70)
    return compile_spec(spec, tokenizer, limits)


def report_thread(spec: ProgramSpec, tokenizer: llguidance.LLTokenizer, limits: Limits) -> CompiledSpec:
    """A worker task that reports whether it ran on an engine thread with the limits' stack."""
    return CompiledSpec(f"{on_llguidance_thread(limits.llguidance_stack_bytes)}:{os.getpid()}", CaptureLayout())


def _wait_dead(pid: int) -> None:
    """Until the process has exited: every thread gone (its main thread is a zombie until the
    others have exited, and its files stay open until then), or reaped."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii") as f:
                zombie = f.read().rsplit(")", 1)[1].split()[0] in "ZX"
            if zombie and len(os.listdir(f"/proc/{pid}/task")) <= 1:
                return
        except FileNotFoundError:
            return
        time.sleep(0.01)
    raise AssertionError(f"process {pid} did not exit")


@pytest.fixture()
def workers(tiny_tokenizer: Tokenizer) -> Iterator[CompileWorkers]:
    pool = CompileWorkers(2, Limits(), nice=5, task=crash_on_marker)
    yield pool
    pool.close()


def test_workers_compile_what_the_server_compiles(tiny_tokenizer: Tokenizer) -> None:
    local = GuidanceBackend(tiny_tokenizer)
    remote = GuidanceBackend(tiny_tokenizer, compile_processes=1)
    try:
        for spec in [
            ProgramSpec("json_schema", {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}),
            ProgramSpec(
                "template",
                "Name: {{gen 'name' regex='[a-z]+'}}"
                "{{#repeat 'xs' max=2}}{{select 'x' options=['yes','no']}}{{/repeat}}",
            ),
            ProgramSpec("regex", "[0-9]{2,4}"),
        ]:
            a, _ = local.compile(spec)
            b, _ = remote.compile(spec)
            assert a.program_id == b.program_id and a.grammar == b.grammar and a.layout == b.layout
            rows = local.allocate_bitmask(2)
            a.create_state().fill_bitmask(rows, 0)
            b.create_state().fill_bitmask(rows, 1)
            assert np.array_equal(rows[0], rows[1])
        assert remote.get_stats()["compile_workers"] == {
            "processes": 1,
            "running": 1,
            "warming": 0,
            "crashes": 0,
            "stopped": 0,
        }
    finally:
        remote.close()


def test_limits_are_enforced_in_the_workers(tiny_tokenizer: Tokenizer) -> None:
    backend = GuidanceBackend(
        tiny_tokenizer, compile_processes=1, limits=Limits(max_expansion=50, max_derivation_depth=5)
    )
    try:
        with pytest.raises(LimitExceeded) as e:
            backend.compile_regex("a{60}")
        assert e.value.limit == "max_expansion"
        chain: dict[str, object] = {"type": "integer"}
        for _ in range(8):
            chain = {"type": "object", "properties": {"x": chain}, "required": ["x"]}
        with pytest.raises(LimitExceeded) as e:
            backend.compile_json_schema(chain)
        assert e.value.limit == "max_derivation_depth"
        with pytest.raises(TemplateError) as t:
            backend.compile_template("ok\n  {{gen 'x' regex='('}}")
        assert (t.value.line, t.value.column) == (2, 3)
        assert backend.compile_regex("a{40}").kind == "regex"  # under the limit: compiles
    finally:
        backend.close()


def test_worker_compiles_run_on_an_engine_thread_with_the_limits_stack(tiny_tokenizer: Tokenizer) -> None:
    pool = CompileWorkers(1, Limits(), task=report_thread)
    try:
        flag, pid = pool.compile(ProgramSpec("regex", "a"), tiny_tokenizer).grammar.split(":")
        assert flag == "True" and int(pid) != os.getpid()
    finally:
        pool.close()


def test_a_worker_crash_fails_that_compile_only(workers: CompileWorkers, tiny_tokenizer: Tokenizer) -> None:
    assert workers.compile(ProgramSpec("regex", "a+"), tiny_tokenizer).grammar
    with pytest.raises(CompileCrashed) as e:
        workers.compile(ProgramSpec("regex", _CRASH), tiny_tokenizer)
    assert e.value.status == 422 and "exit code 70" in e.value.detail
    # Compiles alongside and after are served (a fresh worker replaces the dead one).
    results: list[object] = []

    def run(source: str) -> None:
        try:
            results.append(workers.compile(ProgramSpec("regex", source), tiny_tokenizer).grammar)
        except CompileCrashed as exc:
            results.append(exc)

    threads = [threading.Thread(target=run, args=(s,)) for s in ["b+", _CRASH, "c+", "d+"]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(isinstance(r, CompileCrashed) for r in results) == 1
    assert sum(isinstance(r, str) for r in results) == 3
    assert workers.stats()["crashes"] == 2
    assert workers.compile(ProgramSpec("regex", "e+"), tiny_tokenizer).grammar


def test_a_worker_killed_while_idle_is_replaced(workers: CompileWorkers, tiny_tokenizer: Tokenizer) -> None:
    workers.compile(ProgramSpec("regex", "a+"), tiny_tokenizer)
    for pid in workers.pids():
        os.kill(pid, 9)
        _wait_dead(pid)
    assert workers.compile(ProgramSpec("regex", "b+"), tiny_tokenizer).grammar


def test_a_crashing_input_is_remembered_and_the_backend_keeps_serving(tiny_tokenizer: Tokenizer) -> None:
    backend = GuidanceBackend(tiny_tokenizer, compile_processes=1)
    pool = CompileWorkers(1, backend.limits, task=crash_on_marker)
    backend._workers = pool  # the same pool type, with a task that can crash
    try:
        with pytest.raises(CompileCrashed):
            backend.compile_regex(_CRASH)
        with pytest.raises(CompileCrashed):  # the negative cache answers: no second crash
            backend.compile_regex(_CRASH)
        assert pool.stats()["crashes"] == 1
        assert backend.get_stats()["cache"]["negative_hits"] == 1
        assert backend.compile_regex("[a-z]+").create_state().accept_tokens(tiny_tokenizer.encode("ok"))
    finally:
        backend.close()


def test_single_flight_across_the_worker_path(tiny_tokenizer: Tokenizer) -> None:
    backend = GuidanceBackend(tiny_tokenizer, compile_processes=2)
    sent: list[ProgramSpec] = []
    real = backend._workers.compile  # type: ignore[union-attr]

    def counting(spec: ProgramSpec, tok: Tokenizer, cancel: threading.Event | None = None) -> CompiledSpec:
        sent.append(spec)
        return real(spec, tok, cancel)

    backend._workers.compile = counting  # type: ignore[union-attr,method-assign]
    try:
        results: list[object] = []
        threads = [threading.Thread(target=lambda: results.append(backend.compile_regex("[0-9]{3}"))) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(sent) == 1 and len({id(p) for p in results}) == 1

        async def many() -> list[object]:
            abackend = AsyncGuidanceBackend(backend, max_workers=2, nice=5)
            try:
                return list(await asyncio.gather(*(abackend.compile_regex("[a-z]{2}") for _ in range(10))))
            finally:
                abackend.executor.shutdown(wait=True)

        programs = asyncio.run(many())
        assert len(sent) == 2 and len({id(p) for p in programs}) == 1
    finally:
        backend.close()


def test_warm_starts_every_worker_with_the_vocabulary(tiny_tokenizer: Tokenizer) -> None:
    pool = CompileWorkers(2, Limits(), nice=5)
    try:
        pool.warm([tiny_tokenizer])
        assert pool.stats()["running"] == 2 and len(set(pool.pids())) == 2
        assert pool.compile(ProgramSpec("regex", "a+"), tiny_tokenizer).grammar
    finally:
        pool.close()


def test_workers_run_at_the_lower_priority_whichever_thread_starts_them(tiny_tokenizer: Tokenizer) -> None:
    from core.threads import LLGuidanceThreadPool

    base = os.getpriority(os.PRIO_PROCESS, os.getpid())
    pool = CompileWorkers(2, Limits(), nice=3)
    lowered = LLGuidanceThreadPool(1, "test-lowered", Limits().llguidance_stack_bytes, nice=5)
    try:
        pool.warm([tiny_tokenizer])  # started from this thread
        pool.close()
        pool = CompileWorkers(1, Limits(), nice=3)
        lowered.submit(pool.compile, ProgramSpec("regex", "a"), tiny_tokenizer).result()  # from a lowered one
        assert [os.getpriority(os.PRIO_PROCESS, pid) for pid in pool.pids()] == [min(19, base + 3)]
    finally:
        lowered.shutdown()
        pool.close()


def test_compiles_do_not_wait_for_workers_still_starting(tiny_tokenizer: Tokenizer) -> None:
    backend = GuidanceBackend(tiny_tokenizer, compile_processes=1)
    sent: list[ProgramSpec] = []
    workers = backend._workers
    assert workers is not None
    real = workers.compile

    def counting(spec: ProgramSpec, tok: Tokenizer, cancel: threading.Event | None = None) -> CompiledSpec:
        sent.append(spec)
        return real(spec, tok, cancel)

    workers.compile = counting  # type: ignore[method-assign]
    try:
        workers._warming = 1  # as while start_workers() runs
        assert backend.compile_regex("a+").kind == "regex" and sent == []  # compiled here
        workers._warming = 0
        assert backend.compile_regex("b+").kind == "regex" and len(sent) == 1
    finally:
        backend.close()
