"""Where the engine work of sessions runs: inline on the event loop, or in the slow lane.

Engine work is an :data:`EngineWork`: a plain synchronous callable (accept tokens, fill masks,
fork, read a state, a whole ``/step`` batch) that runs to its end without ever awaiting, never a
coroutine. The use cases (``service/operations/``) hand their work for one session, or for a
batch, to the :class:`Scheduler`, which applies one rule:

* **Inline only when bounded and cheap.** Work runs on the event loop only when what it may cost
  is known to be small: its programs are proven (past their probation, never slow) and, for a
  batch or a read of a whole history, its estimated cost (rows x the programs' recent seconds
  per mask, tokens and history read x :data:`TOKEN_SECONDS`) is within the inline budget.
  Everything else goes to the slow lane. llguidance's own fuel bounds most of a mask's work;
  what it does not bound (:attr:`core.limits.Limits.max_mask_ms`) is refused by ``core`` after
  the fact, and a new program's first calls run in the lane, so that the first of them to be
  slow never stalls the loop.
* **Uncontended: no lock.** When no other request holds any of the sessions, inline work runs at
  once: it cannot await, so no other request can start on those sessions before it ends, and
  taking an uncontended :class:`asyncio.Lock` costs about as much as a cheap mask. Otherwise the
  sessions' locks are taken (a batch takes them in id order, so two batches sharing sessions
  cannot deadlock) and the work runs under them, inline or in the lane.
* **Costs are CPU time.** Strikes against a program are counted in the running thread's CPU
  time (:func:`time.thread_time`): time spent waiting for the GIL or for a core is not the
  program's, and never marks a cheap program slow. (Inline, the cheaper wall clock comes first:
  a call over the budget by it only arms CPU timing for the program's next calls.)
* **The slow lane** (:class:`SlowLane`) is a thread pool the service owns, fair between tenants
  (an API key, or a client address where keys are off): each tenant's calls queue apart, the
  tenant served longest ago goes first, and one tenant holds at most all threads but one (one thread is always free
  for another tenant's work when there are two or more). So one
  tenant's slow programs or heavy batches never queue another's work. llguidance drops the GIL
  while it computes, so the event loop keeps serving every other session meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from core.program import CompiledGuidanceProgram
from core.threads import LLGuidanceThreadPool
from service.sessions import Session

__all__ = ["TOKEN_SECONDS", "EngineWork", "Scheduler", "SlowLane", "Tenant"]

T = TypeVar("T")

EngineWork = Callable[[], T]
"""Engine work on sessions: a synchronous callable that never awaits (run inline or in a thread)."""

Tenant = Hashable
"""Whose work it is, for the slow lane's fairness: an API key's owner id, or a client address."""

TOKEN_SECONDS = 2e-6
"""Estimated CPU seconds per token accepted or read back (variables decode the whole history):
about 1.4 us measured per token accepted in a batch (340 sessions of 4,096 tokens: 2 s), with margin."""


_NOBODY = object()  # no tenant can start a call now (None is a tenant: an unknown client)


@dataclass(eq=False)
class _Job(Generic[T]):
    work: EngineWork[T]
    programs: Sequence[CompiledGuidanceProgram]
    single: bool
    tenant: Tenant
    done: asyncio.Future[T]
    started: bool = False
    cpu: float = field(default=0.0)


class SlowLane:
    """Which programs run off the event loop, and the fair thread pool their work runs in.

    A program is slow when its first mask, measured by its compile (``first_mask``), took longer
    than ``threshold_seconds``, or when its calls did ``strikes`` times (or once by ten times the
    budget), in CPU time: one call preempted on a busy machine does not move a cheap program off
    the event loop. A slow program stays slow while it lives. A new program is on probation for
    its first ``probation`` calls: they run in the lane, timed there, and it runs inline after.

    Args:
        threshold_seconds: the inline budget of one call, in CPU seconds.
        workers: threads of the pool.
        first_mask: the first-mask time of a program, when known (default: what its compile
            measured, ``program.stats.first_mask_seconds``).
        strikes: calls over the budget that make a program slow.
        probation: calls of a new program run in the lane before it may run inline.
        executor: the pool (the service's own; one of ``workers`` threads is made on first use
            when None).
    """

    def __init__(
        self,
        threshold_seconds: float = 0.005,
        workers: int = 1,
        first_mask: Callable[[CompiledGuidanceProgram], float | None] | None = None,
        strikes: int = 3,
        probation: int = 0,
        executor: Executor | None = None,
    ) -> None:
        self.threshold = threshold_seconds
        self.strikes = strikes
        self.workers = workers
        self.probation = probation
        self._strikes: weakref.WeakKeyDictionary[CompiledGuidanceProgram, int] = weakref.WeakKeyDictionary()
        self._proven: weakref.WeakKeyDictionary[CompiledGuidanceProgram, int] = weakref.WeakKeyDictionary()
        self._first_mask = first_mask if first_mask is not None else _first_mask
        self._slow: weakref.WeakSet[CompiledGuidanceProgram] = weakref.WeakSet()
        self._pool = executor
        self._own_pool = executor is None
        self._queues: dict[Tenant, deque[_Job[Any]]] = {}
        self._running: dict[Tenant, int] = {}
        # When each tenant with calls queued or running was last served (dropped when it has none).
        self._last_served: dict[Tenant, int] = {}
        self._served = 0
        self.calls = 0

    def is_slow(self, program: CompiledGuidanceProgram) -> bool:
        """Whether ``program``'s sessions are served off the event loop (slow, or on probation).

        Such a program's masks are timed in CPU time (``max_mask_ms``, see ``ProgramStats.cpu_timed``).
        """
        if program in self._slow:
            return True
        first = self._first_mask(program)
        if first is not None and first > self.threshold:
            self._add_slow(program)
            return True
        if self.probation > 0 and self._proven.get(program, 0) < self.probation:
            program.stats.cpu_timed = True
            return True
        return False

    def _add_slow(self, program: CompiledGuidanceProgram) -> None:
        self._slow.add(program)
        program.stats.cpu_timed = True

    def _prove(self, program: CompiledGuidanceProgram) -> None:
        proven = self._proven[program] = self._proven.get(program, 0) + 1
        if proven == self.probation and program not in self._slow:
            program.stats.cpu_timed = False  # cheap so far: timed by the wall clock first

    def __len__(self) -> int:
        return len(self._slow)

    def note(self, program: CompiledGuidanceProgram, cpu_seconds: float) -> None:
        """Count one call of ``program`` that took ``cpu_seconds``: a strike when over the budget."""
        if cpu_seconds > self.threshold:
            strikes = self._strikes.get(program, 0) + 1
            self._strikes[program] = strikes
            if strikes >= self.strikes or cpu_seconds > 10 * self.threshold:
                self._add_slow(program)
        elif self.probation:
            self._prove(program)

    def note_batch(self, programs: Sequence[CompiledGuidanceProgram], cpu_seconds: float) -> None:
        """Count a batch that took ``cpu_seconds`` per session: a call proving its programs when
        under the budget, never a strike (a batch's cost is its size's, not one program's)."""
        if self.probation and cpu_seconds <= self.threshold:
            for program in programs:
                self._prove(program)

    def inline(self, programs: Sequence[CompiledGuidanceProgram], work: EngineWork[T], single: bool = True) -> T:
        """``work()`` on the event loop, timed (see :meth:`note`, :meth:`note_batch`).

        Reading the thread's CPU clock twice costs about 2 us, a cheap call about 10: a program
        is timed by the wall clock (a bound above its CPU time) until a call takes longer than
        the budget by it, and in CPU time from then on (``ProgramStats.cpu_timed``, which its
        masks share). A batch is timed by the wall clock: it only ever proves its programs.
        """
        if single and programs[0].stats.cpu_timed:
            start = time.thread_time()
            try:
                return work()
            finally:
                self.note(programs[0], time.thread_time() - start)
        start = time.perf_counter()
        try:
            return work()
        finally:
            elapsed = time.perf_counter() - start
            if single and elapsed > self.threshold:
                programs[0].stats.cpu_timed = True  # not yet a strike: the clock counts waits too
            else:
                self._account(programs, single, elapsed)

    def _account(self, programs: Sequence[CompiledGuidanceProgram], single: bool, cpu: float) -> None:
        if single:
            self.note(programs[0], cpu)
        else:
            self.note_batch(list(dict.fromkeys(programs)), cpu / max(1, len(programs)))

    async def run(
        self,
        programs: Sequence[CompiledGuidanceProgram],
        work: EngineWork[T],
        tenant: Tenant = None,
        single: bool = True,
    ) -> T:
        """``work()`` in the pool, in ``tenant``'s turn, for sessions whose locks the caller holds.

        ``programs``: the program of each session the work is on (one, unless a batch), whose
        record the call's CPU time goes to. A caller cancelled before its turn leaves the queue;
        once started, the work runs to its end and the caller waits for it (the thread works on
        the sessions the caller holds).
        """
        job: _Job[T] = _Job(work, programs, single, tenant, asyncio.get_running_loop().create_future())
        self._queues.setdefault(tenant, deque()).append(job)
        self._dispatch()
        cancelled = False
        while True:
            try:
                result = await asyncio.shield(job.done)
                break
            except asyncio.CancelledError:
                if job.done.done():
                    raise
                if not job.started:
                    self._drop(job)
                    raise
                cancelled = True
        if cancelled:
            raise asyncio.CancelledError
        return result

    def _drop(self, job: _Job[Any]) -> None:
        queue = self._queues.get(job.tenant)
        if queue is not None:
            with contextlib.suppress(ValueError):
                queue.remove(job)
            if not queue:
                del self._queues[job.tenant]
                if job.tenant not in self._running:
                    self._last_served.pop(job.tenant, None)
        job.done.cancel()

    def _dispatch(self) -> None:
        """Start queued calls while threads are free: the tenant served longest ago first, none
        holding every thread."""
        cap = max(1, self.workers - 1)  # one thread kept for the next tenant to come
        last = self._last_served
        while sum(self._running.values()) < self.workers:
            ready = [t for t in self._queues if self._running.get(t, 0) < cap]
            if not ready:
                return
            tenant = min(ready, key=lambda t: last.get(t, -1))
            queue = self._queues[tenant]
            job = queue.popleft()
            if not queue:
                del self._queues[tenant]
            self._served += 1
            last[tenant] = self._served
            self._start(job)

    def _start(self, job: _Job[Any]) -> None:
        if self._pool is None:
            stack = max(p.limits.llguidance_stack_bytes for p in job.programs) if job.programs else 0
            self._pool = LLGuidanceThreadPool(self.workers, "guidance-slow", stack)
        job.started = True
        self.calls += 1
        self._running[job.tenant] = self._running.get(job.tenant, 0) + 1
        future = asyncio.wrap_future(self._pool.submit(_timed, job))
        future.add_done_callback(lambda f: self._finish(job, f))

    def _finish(self, job: _Job[Any], future: asyncio.Future[Any]) -> None:
        left = self._running[job.tenant] - 1
        if left:
            self._running[job.tenant] = left
        else:
            del self._running[job.tenant]
            if job.tenant not in self._queues:
                self._last_served.pop(job.tenant, None)
        if job.programs:
            self._account(job.programs, job.single, job.cpu)
        if not job.done.done():
            if future.cancelled():
                job.done.cancel()
            elif (error := future.exception()) is not None:
                job.done.set_exception(error)
            else:
                job.done.set_result(future.result())
        self._dispatch()

    def close(self) -> None:
        """Stop the pool (a call running finishes; queued ones are cancelled)."""
        for queue in self._queues.values():
            for job in queue:
                job.done.cancel()
        self._queues.clear()
        if self._pool is not None and self._own_pool:
            self._pool.shutdown(wait=False, cancel_futures=True)


def _first_mask(program: CompiledGuidanceProgram) -> float | None:
    return program.stats.first_mask_seconds


def _timed(job: _Job[T]) -> T:
    start = time.thread_time()
    try:
        return job.work()
    finally:
        job.cpu = time.thread_time() - start


def _by_id(session: Session) -> str:
    return session.id


class Scheduler:
    """Runs the engine work of sessions, one or a batch, by the rule of the module documentation.

    Args:
        lane: the slow lane (a default one, one thread and no probation, when None).
        clock: the session store's clock (a single session counts as used until its work ends).
        inline_seconds: the most a batch, or a read of a whole history, may be estimated to cost
            and still run inline (the lane's budget when None).
    """

    def __init__(
        self,
        lane: SlowLane | None = None,
        clock: Callable[[], float] = time.monotonic,
        inline_seconds: float | None = None,
    ) -> None:
        self.lane = lane if lane is not None else SlowLane()
        self._clock = clock
        self.inline_seconds = self.lane.threshold if inline_seconds is None else inline_seconds

    async def run(self, session: Session, work: EngineWork[T], tenant: Tenant = None, *, history: bool = False) -> T:
        """``work()`` on one session; inline calls are timed (a program slow inline moves to the lane).

        ``history``: the work reads the session's whole history (variables, text), so its cost
        grows with it. The session counts as used until the work ends: its idle time starts
        then, not when the request arrived (a slow request never expires its own session).
        """
        heavy = history and len(session.state.tokens) * TOKEN_SECONDS > self.inline_seconds
        try:
            return await self._run((session,), work, tenant, True, heavy)
        finally:
            session.last_used = self._clock()

    def batch_seconds(self, sessions: Sequence[Session], rows: int, tokens: int, history: bool) -> float:
        """The estimated CPU seconds of a batch: ``rows`` masks, ``tokens`` accepted, histories read."""
        programs = {s.program for s in sessions}  # usually one: each read once
        per_mask = max((p.stats.mask_seconds for p in programs), default=0.0)
        read = sum(len(s.state.tokens) for s in sessions) if history else 0
        return rows * per_mask + (tokens + read) * TOKEN_SECONDS

    async def run_batch(
        self, sessions: Sequence[Session], work: EngineWork[T], tenant: Tenant = None, *, seconds: float = 0.0
    ) -> T:
        """``work()`` on every session of a batch at once (a ``/step``), estimated to cost ``seconds``."""
        return await self._run(sessions, work, tenant, False, seconds > self.inline_seconds)

    async def _run(
        self, sessions: Sequence[Session], work: EngineWork[T], tenant: Tenant, single: bool, heavy: bool
    ) -> T:
        lane = self.lane
        programs = [s.program for s in sessions]
        if not heavy and not self._any_slow(sessions) and not any(s.lock.locked() for s in sessions):
            return lane.inline(programs, work, single)
        async with contextlib.AsyncExitStack() as stack:
            for s in sorted(sessions, key=_by_id):
                await stack.enter_async_context(s.lock)
            if heavy or self._any_slow(sessions):  # a program may have become slow while this waited
                return await lane.run(programs, work, tenant, single)
            return lane.inline(programs, work, single)

    def _any_slow(self, sessions: Sequence[Session]) -> bool:
        is_slow = self.lane.is_slow
        if len(sessions) == 1:
            return is_slow(sessions[0].program)
        return any(is_slow(p) for p in {s.program for s in sessions})

    def close(self) -> None:
        """Stop the slow lane's queue (the pool is its owner's to stop)."""
        self.lane.close()
