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


def _seen(sessions: list[Session], log: list[tuple[int, list[bool]]]) -> int:
    """Engine work that records its thread and which locks were held while it ran."""
    log.append((threading.get_ident(), [s.lock.locked() for s in sessions]))
    return len(log)


async def test_uncontended_work_runs_inline_without_the_lock(
    engine: GuidanceBackend, program: CompiledGuidanceProgram
) -> None:
    clock = Clock()
    scheduler = Scheduler(engine, clock=clock)
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
    scheduler = Scheduler(engine)
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
    scheduler = Scheduler(engine)
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
    scheduler = Scheduler(engine, lane)
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
    scheduler = Scheduler(engine, lane)
    try:
        sessions = _sessions(program, 1)
        for _ in range(3):
            # A batch is never timed: only single-session calls count as strikes.
            await scheduler.run_batch(sessions, lambda: time.sleep(0.002))
        assert not lane.is_slow(program)
        for _ in range(3):
            await scheduler.run(sessions[0], lambda: time.sleep(0.002))
        assert lane.is_slow(program) and len(lane) == 1
    finally:
        scheduler.close()


async def test_fill_fills_the_rows_asked(engine: GuidanceBackend, program: CompiledGuidanceProgram) -> None:
    scheduler = Scheduler(engine)
    states = [program.create_state(), program.create_state()]
    assert states[1].accept_tokens(engine.tokenizer.encode("aaa"))
    bitmask = engine.allocate_bitmask(3)
    bitmask[:] = -1
    assert scheduler.fill(states, bitmask, [2, 0]) == {}
    for state, row in zip(states, (2, 0)):
        alone = engine.allocate_bitmask(1)
        state.fill_bitmask(alone, 0)
        assert (bitmask[row] == alone[0]).all()
    assert (bitmask[1] == -1).all()  # a row not asked for is left as it was
