"""The session store: one decoding request's state per id, with an idle TTL and a hard cap.

A session pairs a shared, immutable :class:`~core.program.CompiledGuidanceProgram` with its own
:class:`~core.session.GuidanceState` and an :class:`asyncio.Lock` that serialises the requests
on it. Accept and mask are microseconds of work and run inline on the event loop under that lock;
a batched step takes the locks of all its sessions (in id order), fills every mask in one
``GuidanceBackend.fill_next_token_bitmasks`` call, and releases them.

Policy (documented in the README):

* **Cap, refuse, never evict.** At ``max_sessions`` open sessions a new one is refused with
  429 ``too-many-sessions`` and ``Retry-After``; evicting a live request's state would make a
  worker's next mask wrong, a refusal is visible and retryable.
* **Idle TTL.** A session unused for ``ttl_seconds`` is closed (lazily on access, and by a
  periodic sweep). Its id is remembered in a bounded set so it answers 410 ``session-expired``
  rather than 404 ``session-not-found``: the client then replays the session elsewhere.
* Ids are random (``secrets.token_urlsafe``), never derived from content.
* **Owners.** Where API keys are on, a session belongs to the key that opened it (its
  ``owner``, see ``service/auth.py``); a lookup with another owner answers exactly what an unknown
  id answers (404), and never touches the session. Without keys every owner is None.
* **Slow lane.** A few programs make every mask slow (a long literal costs llguidance time
  quadratic in its length). Their sessions' work runs in :class:`SlowLane`, a small thread pool
  (llguidance drops the GIL while computing a mask), still under the session's lock, so one
  sender's expensive constraint never stalls the event loop every other session is served on.
"""

from __future__ import annotations

import asyncio
import secrets
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import TypeVar

from core.errors import LimitExceeded, SessionExpired, UnknownSession, excerpt
from core.program import CompiledGuidanceProgram
from core.session import GuidanceState
from core.threads import EngineThreadPool
from service.problems import TooManySessions

__all__ = ["Session", "SessionStore", "SlowLane", "check_history"]

_ID_BYTES = 16
T = TypeVar("T")


class SlowLane:
    """Where the engine work of a session runs: inline on the event loop, or in a thread pool.

    A program is slow when its first mask, measured by its compile (``first_mask``), took longer
    than ``threshold_seconds``, or when its calls run inline did ``strikes`` times (or once by ten
    times the budget): one call preempted on a busy machine must not move a cheap program off
    the event loop. A slow program stays slow while it lives.

    Args:
        threshold_seconds: the inline budget of one call.
        strikes: inline calls over the budget that make a program slow.
        workers: threads of the pool.
        first_mask: the first-mask time of a program, when known.
        clock: the session store's clock (marks sessions used when their work ends).
    """

    def __init__(
        self,
        threshold_seconds: float = 0.005,
        workers: int = 1,
        first_mask: Callable[[CompiledGuidanceProgram], float | None] = lambda program: None,
        clock: Callable[[], float] = time.monotonic,
        strikes: int = 3,
    ) -> None:
        self.threshold = threshold_seconds
        self.strikes = strikes
        self._strikes: weakref.WeakKeyDictionary[CompiledGuidanceProgram, int] = weakref.WeakKeyDictionary()
        self._clock = clock
        self.workers = workers
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

    async def run(self, session: Session, fn: Callable[[], T]) -> T:
        """``fn()`` (engine work on ``session``) under the session's lock, inline or in the pool.

        The session counts as used until the work ends: its idle time starts then, not when the
        request arrived (a slow request never expires its own session).
        """
        program = session.program
        if not session.lock.locked() and not self.is_slow(program):
            # No other request holds the session, and inline work runs to its end without
            # awaiting: no other request can start on the session meanwhile, so no lock is taken
            # (an uncontended asyncio lock cost about as much as a cheap mask).
            try:
                return self._inline(program, fn)
            finally:
                session.last_used = self._clock()
        async with session.lock:
            try:
                return await self.run_locked(program, fn)
            finally:
                session.last_used = self._clock()

    async def run_locked(self, program: CompiledGuidanceProgram, fn: Callable[[], T]) -> T:
        """``fn()`` for sessions of ``program`` whose locks the caller holds."""
        if self.is_slow(program):
            if self._pool is None:
                self._pool = EngineThreadPool(self.workers, "guidance-slow", program.limits.engine_stack_bytes)
            self.calls += 1
            future = asyncio.get_running_loop().run_in_executor(self._pool, fn)
            cancelled = False
            while True:
                try:
                    result = await asyncio.shield(future)
                    break
                except asyncio.CancelledError:
                    if future.done():
                        raise
                    # The caller went away (a client disconnect): the thread still works on the
                    # state, so the lock is held until it is done.
                    cancelled = True
            if cancelled:
                raise asyncio.CancelledError
            return result
        return self._inline(program, fn)

    def _inline(self, program: CompiledGuidanceProgram, fn: Callable[[], T]) -> T:
        """``fn()`` on the event loop, timed: calls over the budget count as strikes."""
        start = time.perf_counter()
        try:
            return fn()
        finally:
            elapsed = time.perf_counter() - start
            if elapsed > self.threshold:
                strikes = self._strikes.get(program, 0) + 1
                self._strikes[program] = strikes
                if strikes >= self.strikes or elapsed > 10 * self.threshold:
                    self._slow.add(program)

    def close(self) -> None:
        """Stop the pool (a call running finishes; queued ones are cancelled)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)


def check_history(state: GuidanceState, count: int, limit: int) -> None:
    """Refuse ``count`` more tokens for a state whose history would then pass ``limit`` (413).

    A session's memory grows with every token it accepts (its token list, llguidance's parser
    rows); ``max_session_tokens`` bounds it. Checked before the state moves.
    """
    if len(state.tokens) + count > limit:
        raise LimitExceeded(
            f"the session has accepted {len(state.tokens)} tokens; {count} more would pass the limit of {limit}",
            "max_session_tokens",
        )


class Session:
    """One open session: a program, its decoding state, and the lock serialising requests on it."""

    __slots__ = ("created", "id", "last_used", "lock", "owner", "program", "state", "tokenizer_name")

    def __init__(
        self,
        session_id: str,
        program: CompiledGuidanceProgram,
        state: GuidanceState,
        tokenizer_name: str,
        now: float,
        owner: int | None = None,
    ) -> None:
        self.id = session_id
        self.owner = owner
        self.program = program
        self.state = state
        self.tokenizer_name = tokenizer_name
        self.lock = asyncio.Lock()
        self.created = now
        self.last_used = now


class SessionStore:
    """Sessions by id, bounded in number and idle time.

    Not thread-safe: used from the event loop only.

    Args:
        max_sessions: most open sessions; at the cap :meth:`create` raises ``TooManySessions``.
        ttl_seconds: idle time after which a session is closed.
        expired_ids_remembered: how many expired ids still answer ``SessionExpired``.
        retry_after: seconds to suggest in a 429.
        max_tokens: most tokens one session may accept (see :func:`check_history`).
        clock: a monotonic clock (tests may pass their own).
    """

    def __init__(
        self,
        max_sessions: int = 10_000,
        ttl_seconds: float = 600.0,
        expired_ids_remembered: int = 100_000,
        retry_after: int = 1,
        clock: Callable[[], float] = time.monotonic,
        max_tokens: int = 131_072,
    ) -> None:
        self.max_sessions = max_sessions
        self.max_tokens = max_tokens
        self.ttl_seconds = ttl_seconds
        self.expired_ids_remembered = expired_ids_remembered
        self.retry_after = retry_after
        self._clock = clock
        self._sessions: dict[str, Session] = {}
        self._expired: OrderedDict[str, int | None] = OrderedDict()  # expired id -> its owner
        self.created = 0
        self.expired = 0
        self.deleted = 0
        self.refused = 0

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._sessions

    def create(
        self,
        program: CompiledGuidanceProgram,
        tokenizer_name: str,
        state: GuidanceState | None = None,
        owner: int | None = None,
    ) -> Session:
        """Open a session on ``program`` (from its start, or at ``state``), belonging to ``owner``.

        Raises:
            TooManySessions: the cap is reached (expired sessions are swept first).
        """
        if len(self._sessions) >= self.max_sessions:
            self.sweep()
            if len(self._sessions) >= self.max_sessions:
                self.refused += 1
                raise TooManySessions(
                    f"{len(self._sessions)} sessions are open, the limit is {self.max_sessions}; "
                    "close finished sessions (DELETE) or retry later",
                    self.retry_after,
                )
        session_id = secrets.token_urlsafe(_ID_BYTES)
        while session_id in self._sessions:  # pragma: no cover - 128 random bits
            session_id = secrets.token_urlsafe(_ID_BYTES)
        session = Session(session_id, program, state or program.create_state(), tokenizer_name, self._clock(), owner)
        self._sessions[session_id] = session
        self.created += 1
        return session

    def get(self, session_id: str, owner: int | None = None) -> Session:
        """The live session ``session_id`` of ``owner``, marked as used now.

        Raises:
            SessionExpired: it was closed for idleness (410).
            UnknownSession: no such session, or another owner's (404).
        """
        session = self._sessions.get(session_id)
        now = self._clock()
        if session is None or session.owner != owner:
            raise self._missing(session_id, owner)
        if now - session.last_used > self.ttl_seconds and not session.lock.locked():
            self._expire(session)
            raise self._missing(session_id, owner)
        session.last_used = now
        return session

    def get_many(self, session_ids: Iterable[str], owner: int | None = None) -> list[Session]:
        """Live sessions by id, in the order given (for a batched step); raises like :meth:`get`."""
        return [self.get(i, owner) for i in session_ids]

    def delete(self, session_id: str, owner: int | None = None) -> None:
        """Close a session of ``owner`` now (its id then answers 404)."""
        session = self._sessions.get(session_id)
        if session is None or session.owner != owner:
            raise self._missing(session_id, owner)
        del self._sessions[session_id]
        self.deleted += 1

    def sweep(self) -> int:
        """Close every session idle for longer than the TTL; returns how many."""
        deadline = self._clock() - self.ttl_seconds
        stale = [s for s in self._sessions.values() if s.last_used < deadline and not s.lock.locked()]
        for session in stale:
            self._expire(session)
        return len(stale)

    def clear(self) -> None:
        """Close every session (shutdown)."""
        self._sessions.clear()

    def stats(self) -> dict[str, int | float]:
        """Session figures for ``/stats``."""
        return {
            "active": len(self._sessions),
            "created": self.created,
            "expired": self.expired,
            "deleted": self.deleted,
            "refused": self.refused,
            "max_sessions": self.max_sessions,
            "ttl_seconds": self.ttl_seconds,
        }

    def _expire(self, session: Session) -> None:
        del self._sessions[session.id]
        self.expired += 1
        if self.expired_ids_remembered:
            self._expired[session.id] = session.owner
            while len(self._expired) > self.expired_ids_remembered:
                self._expired.popitem(last=False)

    def _missing(self, session_id: str, owner: int | None) -> UnknownSession:
        if session_id in self._expired and self._expired[session_id] == owner:
            return SessionExpired(f"session {excerpt(session_id, 64)} expired after {self.ttl_seconds:g} s idle")
        return UnknownSession(f"no session {excerpt(session_id, 64)}")
