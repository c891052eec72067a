"""Where engine work runs: inline without locks when uncontended, under the locks otherwise, the slow lane."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from core import CompiledGuidanceProgram, GuidanceBackend, Tokenizer
from service.scheduling import Scheduler, SlowLane
from service.sessions import Session, SessionStore

pytestmark = pytest.mark.asyncio


@pytest.fixture(scope="module")
def engine(default_tokenizer: Tokenizer) -> GuidanceBackend:
    return GuidanceBackend(default_tokenizer)


@pytest.fixture(scope="module")
def program(engine: GuidanceBackend) -> CompiledGuidanceProgram:
    return engine.compile_regex("a+")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _sessions(program: CompiledGuidanceProgram, n: int) -> list[Session]:
    store = SessionStore()
    return [store.create(program, "default") for _ in range(n)]


def _burn(seconds: float) -> None:
    """Engine work that costs ``seconds`` of this thread's CPU time."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def _seen(sessions: list[Session], log: list[tuple[int, list[bool]]]) -> int:
    """Engine work that records its thread and which locks were held while it ran."""
    log.append((threading.get_ident(), [s.lock.locked() for s in sessions]))
    return len(log)


async def test_uncontended_work_runs_inline_without_the_lock(
    engine: GuidanceBackend, program: CompiledGuidanceProgram
) -> None:
    clock = Clock()
    scheduler = Scheduler(clock=clock)
    (session,) = _sessions(program, 1)
    log: list[tuple[int, list[bool]]] = []
    clock.now = 2000.0
    assert await scheduler.run(session, lambda: _seen([session], log)) == 1
    assert log == [(threading.get_ident(), [False])]
    assert session.last_used == 2000.0  # used until the work ended
    assert scheduler.lane.calls == 0


async def test_contended_work_waits_for_the_lock_and_runs_under_it(
    engine: GuidanceBackend, program: CompiledGuidanceProgram
) -> None:
    scheduler = Scheduler()
    (session,) = _sessions(program, 1)
    log: list[tuple[int, list[bool]]] = []
    await session.lock.acquire()
    task = asyncio.create_task(scheduler.run(session, lambda: _seen([session], log)))
    await asyncio.sleep(0)
    assert not task.done() and log == []  # waiting for the holder
    session.lock.release()
    assert await task == 1
    assert log == [(threading.get_ident(), [True])]
    assert not session.lock.locked()


async def test_a_batch_runs_inline_unless_one_session_is_held(
    engine: GuidanceBackend, program: CompiledGuidanceProgram
) -> None:
    scheduler = Scheduler()
    sessions = _sessions(program, 3)
    log: list[tuple[int, list[bool]]] = []
    await scheduler.run_batch(sessions, lambda: _seen(sessions, log))
    assert log[-1][1] == [False, False, False]
    await sessions[1].lock.acquire()
    task = asyncio.create_task(scheduler.run_batch(sessions, lambda: _seen(sessions, log)))
    await asyncio.sleep(0)
    assert not task.done() and len(log) == 1
    sessions[1].lock.release()
    await task
    assert log[-1][1] == [True, True, True]  # every lock of the batch held while it ran
    assert not any(s.lock.locked() for s in sessions)


async def test_a_slow_programs_work_runs_in_the_lane_under_the_lock(
    engine: GuidanceBackend, program: CompiledGuidanceProgram
) -> None:
    lane = SlowLane(threshold_seconds=0.001, first_mask=lambda p: 1.0)  # every program measured slow
    scheduler = Scheduler(lane)
    try:
        sessions = _sessions(program, 2)
        log: list[tuple[int, list[bool]]] = []
        await scheduler.run(sessions[0], lambda: _seen(sessions[:1], log))
        await scheduler.run_batch(sessions, lambda: _seen(sessions, log))
        assert [held for _, held in log] == [[True], [True, True]]
        assert all(thread != threading.get_ident() for thread, _ in log)
        assert lane.calls == 2 and lane.is_slow(program)
    finally:
        scheduler.close()


async def test_inline_work_over_budget_moves_its_program_to_the_lane(default_tokenizer: Tokenizer) -> None:
    engine = GuidanceBackend(default_tokenizer)
    program = engine.compile_regex("b+")
    lane = SlowLane(threshold_seconds=0.001, strikes=3)
    scheduler = Scheduler(lane)
    try:
        sessions = _sessions(program, 1)
        for _ in range(3):
            # A batch is never a strike: only single-session calls count as strikes.
            await scheduler.run_batch(sessions, lambda: _burn(0.002))
        assert not lane.is_slow(program)
        # The first call over the budget by the clock arms CPU timing; three by CPU time are strikes.
        await scheduler.run(sessions[0], lambda: _burn(0.002))
        assert program.stats.cpu_timed and not lane.is_slow(program)
        for _ in range(3):
            await scheduler.run(sessions[0], lambda: _burn(0.002))
        assert lane.is_slow(program) and len(lane) == 1
    finally:
        scheduler.close()


async def test_waiting_is_not_cost_a_cheap_program_that_waits_stays_inline(default_tokenizer: Tokenizer) -> None:
    # Time spent off the CPU (the GIL held by another thread, a preempted core: a sleep here)
    # is not the program's: only CPU time counts against it.
    engine = GuidanceBackend(default_tokenizer)
    program = engine.compile_regex("c+")
    lane = SlowLane(threshold_seconds=0.001, strikes=1)
    scheduler = Scheduler(lane)
    try:
        (session,) = _sessions(program, 1)
        for _ in range(3):
            await scheduler.run(session, lambda: time.sleep(0.01))
        assert program.stats.cpu_timed  # the clock said over: timed in CPU time since
        assert not lane.is_slow(program) and lane.calls == 0
    finally:
        scheduler.close()


async def test_a_new_programs_first_calls_run_in_the_lane_then_inline(default_tokenizer: Tokenizer) -> None:
    engine = GuidanceBackend(default_tokenizer)
    program = engine.compile_regex("d+")
    lane = SlowLane(threshold_seconds=0.05, probation=2)
    scheduler = Scheduler(lane)
    try:
        (session,) = _sessions(program, 1)
        log: list[tuple[int, list[bool]]] = []
        for _ in range(3):
            await scheduler.run(session, lambda: _seen([session], log))
        here = threading.get_ident()
        assert [thread == here for thread, _ in log] == [False, False, True]
        assert lane.calls == 2
    finally:
        scheduler.close()


async def test_a_batch_estimated_past_the_budget_runs_in_the_lane(
    engine: GuidanceBackend, program: CompiledGuidanceProgram
) -> None:
    scheduler = Scheduler(SlowLane(threshold_seconds=0.005))
    try:
        sessions = _sessions(program, 4)
        log: list[tuple[int, list[bool]]] = []
        cheap = scheduler.batch_seconds(sessions, rows=4, tokens=4, history=False)
        await scheduler.run_batch(sessions, lambda: _seen(sessions, log), seconds=cheap)
        # 340 sessions of 4,096 tokens: estimated far past the inline budget.
        heavy = scheduler.batch_seconds(sessions, rows=340, tokens=340 * 4096, history=False)
        await scheduler.run_batch(sessions, lambda: _seen(sessions, log), seconds=heavy)
        assert cheap <= scheduler.inline_seconds < heavy
        assert log[0] == (threading.get_ident(), [False] * 4)
        assert log[1][0] != threading.get_ident() and log[1][1] == [True] * 4  # in the lane, under the locks
        assert scheduler.lane.calls == 1
    finally:
        scheduler.close()


async def test_one_tenants_queued_slow_work_does_not_queue_another_tenants(
    engine: GuidanceBackend, program: CompiledGuidanceProgram
) -> None:
    lane = SlowLane(threshold_seconds=0.001, workers=2, first_mask=lambda p: 1.0)
    scheduler = Scheduler(lane)
    release = threading.Event()
    attacker = _sessions(program, 3)
    (victim,) = _sessions(program, 1)
    try:
        blocked = [asyncio.create_task(scheduler.run(s, release.wait, "attacker")) for s in attacker]
        await asyncio.sleep(0.01)
        # The attacker's three calls hold one thread between them; the victim's runs at once.
        assert await asyncio.wait_for(scheduler.run(victim, lambda: "served", "victim"), 10) == "served"
        assert not any(t.done() for t in blocked)
    finally:
        release.set()
        await asyncio.gather(*blocked)
        scheduler.close()


async def test_tenants_take_turns_in_a_one_thread_lane(
    engine: GuidanceBackend, program: CompiledGuidanceProgram
) -> None:
    lane = SlowLane(threshold_seconds=0.001, workers=1, first_mask=lambda p: 1.0)
    scheduler = Scheduler(lane)
    order: list[str] = []
    gate = threading.Event()

    def work(name: str) -> None:
        gate.wait()
        order.append(name)

    try:
        sessions = _sessions(program, 5)
        tasks = [asyncio.create_task(scheduler.run(s, lambda: work("a"), "a")) for s in sessions[:4]]
        await asyncio.sleep(0.01)
        tasks.append(asyncio.create_task(scheduler.run(sessions[4], lambda: work("b"), "b")))
        await asyncio.sleep(0.01)
        gate.set()
        await asyncio.gather(*tasks)
        assert order == ["a", "b", "a", "a", "a"]  # b waited for the call running, not for a's queue
    finally:
        scheduler.close()


async def test_a_call_cancelled_before_its_turn_leaves_the_queue(
    engine: GuidanceBackend, program: CompiledGuidanceProgram
) -> None:
    lane = SlowLane(threshold_seconds=0.001, workers=1, first_mask=lambda p: 1.0)
    scheduler = Scheduler(lane)
    gate = threading.Event()
    ran: list[int] = []
    try:
        first, second = _sessions(program, 2)
        running = asyncio.create_task(scheduler.run(first, gate.wait, "a"))
        await asyncio.sleep(0.01)
        queued = asyncio.create_task(scheduler.run(second, lambda: ran.append(1), "a"))
        await asyncio.sleep(0.01)
        queued.cancel()
        with pytest.raises(asyncio.CancelledError):
            await queued
        assert not second.lock.locked()
        gate.set()
        await running
        assert ran == [] and lane.calls == 1
    finally:
        gate.set()
        scheduler.close()
