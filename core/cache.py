"""The program cache: a segmented LRU keyed by content hash, bounded in entries and bytes, thread-safe.

Scan resistance: a new program enters a *probation* segment (a fifth of the entries); a program
used again while there moves to the *protected* segment (the rest). Evictions take probation's
least recently used first, so a burst of programs compiled once and never used again (a tenant's
stream of one-off schemas) only churns probation and cannot push out the programs in steady use.
When protected is full, its least recently used program drops back to probation's front, where
one more use saves it. (Segmented LRU, Karedla et al. 1994; the main region of W-TinyLFU.)

Concurrent compiles of one key are done once (single flight), here and nowhere else: the first
caller compiles, the others wait for its result. A thread waits on the flight's future
(:meth:`ProgramCache.get_or_compile`), an event loop awaits the same future
(:meth:`ProgramCache.get_or_compile_async`). A flight whose callers have all gone (cancelled
requests) sets its ``cancel`` event, which the compile watches (:mod:`core.workers` stops its
worker); a thread's wait is never given up. Failed compiles (a
:class:`~core.errors.GuidanceError`: the input's fault) are remembered briefly in a small
negative cache keyed by the same content hash, so repeating a bad input costs a dictionary
lookup, not another compile.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from typing import Any

from core.errors import CompileCancelled, GuidanceError, replica
from core.program import CompiledGuidanceProgram

__all__ = ["Flight", "ProgramCache"]


def _clone(exc: GuidanceError) -> GuidanceError:
    """A fresh copy of a remembered error (raising one object from many threads mixes tracebacks)."""
    return replica(type(exc), exc.args, exc.__dict__)


@dataclass(frozen=True)
class Flight:
    """A compile of one key in progress, which callers of :meth:`ProgramCache.join` share.

    Attributes:
        key: the program's content hash.
        future: the program, or the compile's exception, once the flight lands.
        leader: whether this caller started the flight, and so must run it
            (:meth:`ProgramCache.fly`); the others only wait for :attr:`future`.
    """

    key: str
    future: Future[CompiledGuidanceProgram]
    leader: bool
    waiting: _Waiting = field(compare=False)

    @property
    def cancel(self) -> threading.Event:
        """Set when every caller of the flight has gone: the compile may stop."""
        return self.waiting.cancel


class _Waiting:
    """How many callers wait for one flight; the last to leave sets ``cancel``."""

    def __init__(self) -> None:
        self.count = 0
        self.cancel = threading.Event()
        self.lock = threading.Lock()

    def come(self) -> None:
        with self.lock:
            self.count += 1

    def leave(self) -> bool:
        """One caller gives up; True (and ``cancel`` set) when it was the last."""
        with self.lock:
            self.count -= 1
            if self.count:
                return False
        self.cancel.set()
        return True


class ProgramCache:
    """Segmented LRU of compiled programs (see the module docstring).

    Args:
        max_entries: most programs kept (probation and protected together).
        max_bytes: most bytes kept, by each program's ``size_bytes`` estimate (grammar text plus
            a fixed overhead; llguidance's lazily grown lexer caches are not counted).
        negative_ttl: seconds a failed compile is remembered (0: not at all).
        negative_max_entries: most failed compiles remembered (oldest forgotten first).
        clock: a monotonic clock (tests may pass their own).
        probation_share: the share of ``max_entries`` that new programs compete for (at least one
            entry); a program used twice is kept in the rest.
    """

    def __init__(
        self,
        max_entries: int = 256,
        max_bytes: int = 256 * 1024 * 1024,
        *,
        negative_ttl: float = 60.0,
        negative_max_entries: int = 1024,
        clock: Callable[[], float] = time.monotonic,
        probation_share: float = 0.2,
    ) -> None:
        if max_entries < 1 or max_bytes < 1:
            raise ValueError("cache bounds must be positive")
        if negative_ttl < 0 or negative_max_entries < 0:
            raise ValueError("negative cache bounds must not be negative")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.negative_ttl = negative_ttl
        self.negative_max_entries = negative_max_entries
        self._clock = clock
        self._failed: OrderedDict[str, tuple[float, GuidanceError]] = OrderedDict()
        self.negative_hits = 0
        if not 0 < probation_share <= 1:
            raise ValueError("probation_share must be in (0, 1]")
        # Protected holds what is left; with a single entry there is no room for it (plain LRU).
        self.max_protected = max(0, min(max_entries - 1, max_entries - round(max_entries * probation_share)))
        self._probation: OrderedDict[str, CompiledGuidanceProgram] = OrderedDict()  # probation, LRU first
        self._protected: OrderedDict[str, CompiledGuidanceProgram] = OrderedDict()
        self.promotions = 0
        self.demotions = 0
        self._inflight: dict[str, Flight] = {}
        self._lock = threading.Lock()
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self.compiles = 0
        self.compile_errors = 0
        self.compiles_cancelled = 0
        self.compile_seconds = 0.0

    def get(self, key: str) -> CompiledGuidanceProgram | None:
        """The cached program, or None; counts neither a hit nor a miss (but is a use of it)."""
        with self._lock:
            return self._touch(key)

    def _touch(self, key: str) -> CompiledGuidanceProgram | None:
        """A use of ``key``: most recent in protected, promoted there from probation."""
        program = self._protected.get(key)
        if program is not None:
            self._protected.move_to_end(key)
            return program
        program = self._probation.get(key)
        if program is None:
            return None
        if not self.max_protected:
            self._probation.move_to_end(key)
            return program
        del self._probation[key]
        self._protected[key] = program
        self.promotions += 1
        while len(self._protected) > self.max_protected:
            old_key, old = self._protected.popitem(last=False)
            self._probation[old_key] = old  # most recent of probation: one more use saves it
            self.demotions += 1
        return program

    def segment(self, key: str) -> str | None:
        """``"protected"``, ``"probation"`` or None: where ``key`` is (for tests and operators)."""
        with self._lock:
            if key in self._protected:
                return "protected"
            return "probation" if key in self._probation else None

    def _failure(self, key: str) -> GuidanceError | None:
        entry = self._failed.get(key)
        if entry is None:
            return None
        if self._clock() >= entry[0]:
            del self._failed[key]
            return None
        self.negative_hits += 1
        return _clone(entry[1])

    def _purge_failures(self) -> None:
        # Entries are kept in insertion order and share one TTL: the expired ones are in front.
        now = self._clock()
        while self._failed:
            key, (deadline, _) = next(iter(self._failed.items()))
            if deadline > now:
                break
            del self._failed[key]

    def _remember_failure(self, key: str, exc: GuidanceError) -> None:
        if not self.negative_ttl or not self.negative_max_entries:
            return
        self._purge_failures()
        self._failed.pop(key, None)
        self._failed[key] = (self._clock() + self.negative_ttl, _clone(exc))
        while len(self._failed) > self.negative_max_entries:
            self._failed.popitem(last=False)

    def join(self, key: str) -> CompiledGuidanceProgram | Flight:
        """The cached program for ``key`` (a hit), or the flight compiling it.

        A new flight is this caller's to run (``leader``, a miss); one already in the air is
        shared (counted as neither: its leader counted the miss).

        Raises:
            GuidanceError: a recent compile of ``key`` failed (a copy of its error).
        """
        with self._lock:
            program = self._touch(key)
            if program is not None:
                self.hits += 1
                return program
            failed = self._failure(key)
            if failed is not None:
                raise failed
            flying = self._inflight.get(key)
            # A flight every caller left is ending with CompileCancelled: a newcomer starts afresh.
            if flying is not None and not flying.cancel.is_set():
                flying.waiting.come()
                return Flight(key, flying.future, False, flying.waiting)
            self.misses += 1
            future: Future[CompiledGuidanceProgram] = Future()
            # Running from the start: a waiter giving up cannot cancel the future others share.
            future.set_running_or_notify_cancel()
            flight = Flight(key, future, True, _Waiting())
            flight.waiting.come()
            self._inflight[key] = flight
            return flight

    def fly(self, flight: Flight, compile_fn: Callable[[], CompiledGuidanceProgram]) -> CompiledGuidanceProgram:
        """Run a flight this caller leads: compile, keep the program, and land the flight.

        A failure lands it too (every waiter gets the error) and, when it is the input's fault,
        is remembered in the negative cache.
        """
        if not flight.leader:
            raise ValueError("only the leader of a flight runs it")
        key = flight.key
        start = time.perf_counter()
        try:
            program = compile_fn()
        except BaseException as e:
            with self._lock:
                if isinstance(e, CompileCancelled):
                    self.compiles_cancelled += 1
                else:
                    self.compile_errors += 1
                self._land(flight)
                if isinstance(e, GuidanceError):
                    self._remember_failure(key, e)
            flight.future.set_exception(e)
            raise
        with self._lock:
            self.compiles += 1
            self.compile_seconds += time.perf_counter() - start
            self._land(flight)
            self._put(key, program)
        flight.future.set_result(program)
        return program

    def _land(self, flight: Flight) -> None:
        """Forget ``flight`` (under the lock), unless a newer flight of its key replaced it."""
        if self._inflight.get(flight.key) is flight:
            del self._inflight[flight.key]

    def abort(self, flight: Flight, exc: BaseException) -> None:
        """Land a flight whose compile never ran (its pool was closed): its waiters get ``exc``.

        Nothing is counted or remembered: the input was never tried.
        """
        with self._lock:
            self._land(flight)
            if isinstance(exc, CompileCancelled):
                self.compiles_cancelled += 1
        flight.future.set_exception(exc)

    def get_or_compile(
        self, key: str, compile_fn: Callable[[], CompiledGuidanceProgram]
    ) -> tuple[CompiledGuidanceProgram, bool]:
        """The program for ``key``, compiling it once if needed; returns ``(program, cached)``.

        ``cached`` is true for a hit and for a flight joined (someone else compiled it). A
        thread's wait is never given up: its flight is not cancelled while it waits.
        """
        got = self.join(key)
        if not isinstance(got, Flight):
            return got, True
        if not got.leader:
            return got.future.result(), True
        return self.fly(got, compile_fn), False

    async def get_or_compile_async(
        self,
        key: str,
        compile_fn: Callable[[threading.Event], CompiledGuidanceProgram],
        executor: Executor,
    ) -> tuple[CompiledGuidanceProgram, bool]:
        """:meth:`get_or_compile` for an event loop: the compile runs on ``executor``.

        ``compile_fn`` gets the flight's ``cancel`` event. A caller that is cancelled leaves the
        flight; when the last one leaves, the event is set (a compile not started yet never runs)
        and the compile ends with :class:`~core.errors.CompileCancelled`, remembered by nobody.

        Raises:
            RuntimeError: ``executor`` is shut down.
        """
        got = self.join(key)
        if not isinstance(got, Flight):
            return got, True
        run: Future[CompiledGuidanceProgram] | None = None
        if got.leader:
            try:
                run = executor.submit(self.fly, got, lambda: compile_fn(got.cancel))
            except RuntimeError as e:  # the executor is shut down
                self.abort(got, e)
                raise
        try:
            # Shielded: one caller giving up does not cancel the future the others await.
            return await asyncio.shield(asyncio.wrap_future(got.future)), not got.leader
        except asyncio.CancelledError:
            if got.waiting.leave() and run is not None and run.cancel():
                self.abort(got, CompileCancelled("every caller of this compile has gone"))
            raise

    def _put(self, key: str, program: CompiledGuidanceProgram) -> None:
        self._probation[key] = program
        self.bytes += program.size_bytes
        while len(self._probation) + len(self._protected) > self.max_entries or self.bytes > self.max_bytes:
            # Probation's oldest first; protected's only when probation holds nothing else.
            if len(self._probation) > 1:
                _, old = self._probation.popitem(last=False)
            elif self._protected:
                _, old = self._protected.popitem(last=False)
            else:
                break  # always keep the newest program, even if it alone is over the byte bound
            self.bytes -= old.size_bytes
            self.evictions += 1

    def clear(self) -> None:
        """Drop every program (live sessions keep theirs) and every remembered failure."""
        with self._lock:
            self._probation.clear()
            self._protected.clear()
            self._failed.clear()
            self.bytes = 0

    def stats(self) -> dict[str, Any]:
        """Counters for ``get_stats()``."""
        with self._lock:
            self._purge_failures()
            return {
                "entries": len(self._probation) + len(self._protected),
                "protected_entries": len(self._protected),
                "probation_entries": len(self._probation),
                "bytes": self.bytes,
                "max_entries": self.max_entries,
                "max_protected_entries": self.max_protected,
                "promotions": self.promotions,
                "demotions": self.demotions,
                "max_bytes": self.max_bytes,
                "hits": self.hits,
                "misses": self.misses,
                "evictions": self.evictions,
                "compiles": self.compiles,
                "compile_errors": self.compile_errors,
                "compiles_cancelled": self.compiles_cancelled,
                "compile_seconds_total": round(self.compile_seconds, 6),
                "negative_entries": len(self._failed),
                "negative_hits": self.negative_hits,
                "negative_ttl_seconds": self.negative_ttl,
            }
