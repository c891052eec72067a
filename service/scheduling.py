"""Where the engine work of sessions runs: inline on the event loop, in the slow lane, in fill threads.

Engine work is an :data:`EngineWork`: a plain synchronous callable (accept tokens, fill a mask,
fork, read a state) that runs to its end without ever awaiting, never a coroutine. Every route
hands its work for one session, or for a batch, to the :class:`Scheduler`, which applies one rule:

* **Uncontended and cheap: inline, no lock.** When no other request holds any of the sessions and
  none of their programs is slow, the work runs at once on the event loop. It cannot await, so no
  other request can start on those sessions before it ends: the sessions' locks would guard
  nothing, and taking an uncontended :class:`asyncio.Lock` costs about as much as a cheap mask.
* **Otherwise under the locks.** The sessions' locks are taken (a batch takes them in id order, so
  two batches sharing sessions cannot deadlock), then the work runs inline, or in the slow lane
  when a session's program is slow.
* **The slow lane** (:class:`SlowLane`) is a small thread pool for the few programs whose every
  mask is slow (a long literal costs llguidance time quadratic in its length): llguidance drops
  the GIL while it computes, so one sender's expensive constraint never stalls the event loop that
  every other session is served on. The work still runs under its sessions' locks.
* **Batched fills** (:meth:`Scheduler.fill`) go to the backend, which fills a costly batch's
  masks in parallel threads (see ``GuidanceBackend.fill_next_token_bitmasks``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np
from numpy.typing import NDArray

from core.backend import GuidanceBackend
from core.errors import GuidanceError
from core.program import CompiledGuidanceProgram
from core.session import GuidanceState
from core.threads import EngineThreadPool
from service.sessions import Session

__all__ = ["EngineWork", "Scheduler", "SlowLane"]

T = TypeVar("T")

EngineWork = Callable[[], T]
"""Engine work on sessions: a synchronous callable that never awaits (run inline or in a thread)."""


class SlowLane:
    """Which programs are slow, and the thread pool their sessions' work runs in.

    A program is slow when its first mask, measured by its compile (``first_mask``), took longer
    than ``threshold_seconds``, or when its calls run inline did ``strikes`` times (or once by ten
    times the budget): one call preempted on a busy machine must not move a cheap program off
    the event loop. A slow program stays slow while it lives.

    Args:
        threshold_seconds: the inline budget of one call.
        workers: threads of the pool.
        first_mask: the first-mask time of a program, when known.
        strikes: inline calls over the budget that make a program slow.
    """

    def __init__(
        self,
        threshold_seconds: float = 0.005,
        workers: int = 1,
        first_mask: Callable[[CompiledGuidanceProgram], float | None] = lambda program: None,
        strikes: int = 3,
    ) -> None:
        self.threshold = threshold_seconds
        self.strikes = strikes
        self.workers = workers
        self._strikes: weakref.WeakKeyDictionary[CompiledGuidanceProgram, int] = weakref.WeakKeyDictionary()
        self._first_mask = first_mask
        self._slow: weakref.WeakSet[CompiledGuidanceProgram] = weakref.WeakSet()
        self._pool: EngineThreadPool | None = None
        self.calls = 0

    def is_slow(self, program: CompiledGuidanceProgram) -> bool:
        """Whether ``program``'s sessions are served off the event loop."""
        if program in self._slow:
            return True
        first = self._first_mask(program)
        if first is not None and first > self.threshold:
            self._slow.add(program)
            return True
        return False

    def __len__(self) -> int:
        return len(self._slow)

    def inline(self, program: CompiledGuidanceProgram, work: EngineWork[T]) -> T:
        """``work()`` on the event loop, timed: calls over the budget count as strikes against ``program``."""
        start = time.perf_counter()
        try:
            return work()
        finally:
            elapsed = time.perf_counter() - start
            if elapsed > self.threshold:
                strikes = self._strikes.get(program, 0) + 1
                self._strikes[program] = strikes
                if strikes >= self.strikes or elapsed > 10 * self.threshold:
                    self._slow.add(program)

    async def run(self, program: CompiledGuidanceProgram, work: EngineWork[T]) -> T:
        """``work()`` in the pool, for sessions of ``program`` whose locks the caller holds."""
        if self._pool is None:
            self._pool = EngineThreadPool(self.workers, "guidance-slow", program.limits.engine_stack_bytes)
        self.calls += 1
        future = asyncio.get_running_loop().run_in_executor(self._pool, work)
        cancelled = False
        while True:
            try:
                result = await asyncio.shield(future)
                break
            except asyncio.CancelledError:
                if future.done():
                    raise
                # The caller went away (a client disconnect): the thread still works on the
                # state, so the caller's locks stay held until it is done.
                cancelled = True
        if cancelled:
            raise asyncio.CancelledError
        return result

    def close(self) -> None:
        """Stop the pool (a call running finishes; queued ones are cancelled)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)


def _by_id(session: Session) -> str:
    return session.id


class Scheduler:
    """Runs the engine work of sessions, one or a batch, by the rule of the module documentation.

    Args:
        engine: the backend whose fills :meth:`fill` runs.
        lane: the slow lane (a default one, told the backend's first-mask times, when None).
        clock: the session store's clock (a single session counts as used until its work ends).
    """

    def __init__(
        self, engine: GuidanceBackend, lane: SlowLane | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.engine = engine
        self.lane = lane if lane is not None else SlowLane(first_mask=engine.first_mask_seconds)
        self._clock = clock

    async def run(self, session: Session, work: EngineWork[T]) -> T:
        """``work()`` on one session; inline calls are timed (a program that is slow inline moves to the lane).

        The session counts as used until the work ends: its idle time starts then, not when the
        request arrived (a slow request never expires its own session).
        """
        try:
            return await self._run((session,), work, timed=True)
        finally:
            session.last_used = self._clock()

    async def run_batch(self, sessions: Sequence[Session], work: EngineWork[T]) -> T:
        """``work()`` on every session of a batch at once (a ``/step``)."""
        return await self._run(sessions, work, timed=False)

    async def _run(self, sessions: Sequence[Session], work: EngineWork[T], timed: bool) -> T:
        lane = self.lane
        slow = self._slow_program(sessions)
        if slow is None and not any(s.lock.locked() for s in sessions):
            return lane.inline(sessions[0].program, work) if timed else work()
        async with contextlib.AsyncExitStack() as stack:
            for s in sorted(sessions, key=_by_id):
                await stack.enter_async_context(s.lock)
            slow = self._slow_program(sessions)  # may have become slow while this waited
            if slow is not None:
                return await lane.run(slow, work)
            return lane.inline(sessions[0].program, work) if timed else work()

    def _slow_program(self, sessions: Sequence[Session]) -> CompiledGuidanceProgram | None:
        is_slow = self.lane.is_slow
        for s in sessions:
            if is_slow(s.program):
                return s.program
        return None

    def fill(
        self, states: Sequence[GuidanceState], bitmask: NDArray[np.int32], rows: Sequence[int]
    ) -> dict[int, GuidanceError]:
        """Fill row ``rows[i]`` of ``bitmask`` with the mask of ``states[i]``, in parallel where it pays.

        Returns:
            The states whose mask failed (an engine limit), by position; their rows are zero.
        """
        return self.engine.fill_next_token_bitmasks(states, bitmask, rows)

    def close(self) -> None:
        """Stop the slow lane's threads."""
        self.lane.close()
