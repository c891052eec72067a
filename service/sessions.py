"""The session store: one decoding request's state per id, with an idle TTL and a hard cap.

A session pairs a shared, immutable :class:`~core.program.CompiledGuidanceProgram` with its own
:class:`~core.session.GuidanceState` and an :class:`asyncio.Lock` that serialises the requests
on it (a batched step holds the locks of all its sessions).

Policy (documented in the README):

* **Cap, refuse, never evict.** At ``max_sessions`` open sessions a new one is refused with
  429 ``too-many-sessions`` and ``Retry-After``; evicting a live request's state would make a
  worker's next mask wrong, a refusal is visible and retryable.
* **A quota per key.** Where keys are on, one key holds at most ``max_per_owner`` sessions (429
  past it, for that key only): one tenant cannot fill the cap and lock the others out.
* **Idle TTL.** A session unused for ``ttl_seconds`` is closed (lazily on access, and by a
  periodic sweep). Its id is remembered in a bounded set so it answers 410 ``session-expired``
  rather than 404 ``session-not-found``: the client then replays the session elsewhere.
* Ids are random (``secrets.token_urlsafe``), never derived from content.
* **Owners.** Where API keys are on, a session belongs to the key that opened it (its
  ``owner``, see ``service/auth.py``); a lookup with another owner answers exactly what an unknown
  id answers (404), and never touches the session. Without keys every owner is None.

Where a session's work runs (inline, under its lock, or in the slow lane) is
``service/scheduling.py``'s rule; who watches it is ``service/events.py``'s, reached through the
small :class:`EventSink` protocol so that this module needs neither.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from typing import Protocol

from core.errors import LimitExceeded, SessionExpired, UnknownSession, excerpt
from core.program import CompiledGuidanceProgram
from core.session import GuidanceState
from service.errors import TooManySessions

__all__ = ["EventSink", "Session", "SessionStore", "check_history"]

_ID_BYTES = 16


class EventSink(Protocol):
    """Where a watched session's changes go (``service.events.SessionChannel``)."""

    def changed(self, session: Session) -> None:
        """The session moved (an accept, a rollback): publish what changed."""

    def end(self, reason: str) -> None:
        """The session is closing (``reason``): publish the last event."""


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

    __slots__ = ("channel", "created", "id", "last_used", "lock", "owner", "program", "state", "tokenizer_name")

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
        # Set only while someone watches the session's events (service/events.py): the accept
        # paths publish when it is not None, and cost nothing more otherwise.
        self.channel: EventSink | None = None

    def publish(self) -> None:
        """Tell the session's watchers what changed (nothing to do, and no cost, when unwatched)."""
        if self.channel is not None:
            self.channel.changed(self)

    def end_events(self, reason: str) -> None:
        """Send watchers the last event (the session is closing)."""
        if self.channel is not None:
            self.channel.end(reason)
            self.channel = None


class SessionStore:
    """Sessions by id, bounded in number and idle time.

    Not thread-safe: used from the event loop only.

    Args:
        max_sessions: most open sessions; at the cap :meth:`create` raises ``TooManySessions``.
        ttl_seconds: idle time after which a session is closed.
        expired_ids_remembered: how many expired ids still answer ``SessionExpired``.
        retry_after: seconds to suggest in a 429.
        max_tokens: most tokens one session may accept (see :func:`check_history`).
        max_per_owner: most open sessions of one owner (one API key); None: no quota but the
            cap. Sessions without an owner (no keys configured) only meet the cap.
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
        max_per_owner: int | None = None,
    ) -> None:
        self.max_sessions = max_sessions
        self.max_per_owner = max_per_owner
        self._owned: Counter[int] = Counter()
        self.max_tokens = max_tokens
        self.ttl_seconds = ttl_seconds
        self.expired_ids_remembered = expired_ids_remembered
        self.retry_after = retry_after
        self._clock = clock
        self._sessions: dict[str, Session] = {}
        self._expired: OrderedDict[str, int | None] = OrderedDict()  # expired id -> its owner
        # Tokens of the sessions closed since the sweep last gave memory back (see service/memory.py).
        self.tokens_released = 0
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
            TooManySessions: the cap, or ``owner``'s quota, is reached (expired sessions are swept first).
        """
        quota = self.max_per_owner if owner is not None else None
        held = 0 if owner is None else self._owned[owner]
        if len(self._sessions) >= self.max_sessions or (quota is not None and held >= quota):
            self.sweep()
            if len(self._sessions) >= self.max_sessions:
                self.refused += 1
                raise TooManySessions(
                    f"{len(self._sessions)} sessions are open, the limit is {self.max_sessions}; "
                    "close finished sessions (DELETE) or retry later",
                    self.retry_after,
                )
            held = 0 if owner is None else self._owned[owner]
            if quota is not None and held >= quota:
                self.refused += 1
                raise TooManySessions(
                    f"this key holds {held} open sessions, its limit is {quota}; "
                    "close finished sessions (DELETE) or retry later",
                    self.retry_after,
                )
        session_id = secrets.token_urlsafe(_ID_BYTES)
        while session_id in self._sessions:  # pragma: no cover - 128 random bits
            session_id = secrets.token_urlsafe(_ID_BYTES)
        session = Session(session_id, program, state or program.create_state(), tokenizer_name, self._clock(), owner)
        self._sessions[session_id] = session
        if owner is not None:
            self._owned[owner] += 1
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

    def delete(self, session_id: str, owner: int | None = None) -> None:
        """Close a session of ``owner`` now (its id then answers 404)."""
        session = self._sessions.get(session_id)
        if session is None or session.owner != owner:
            raise self._missing(session_id, owner)
        self._remove(session)
        self.deleted += 1
        self.tokens_released += len(session.state.tokens)
        session.end_events("deleted")

    def sweep(self) -> int:
        """Close every session idle for longer than the TTL; returns how many."""
        deadline = self._clock() - self.ttl_seconds
        stale = [s for s in self._sessions.values() if s.last_used < deadline and not s.lock.locked()]
        for session in stale:
            self._expire(session)
        return len(stale)

    def clear(self) -> None:
        """Close every session (shutdown)."""
        for session in self._sessions.values():
            session.end_events("shutdown")
        self._sessions.clear()
        self._owned.clear()

    def peek(self, session_id: str) -> Session | None:
        """The live session ``session_id`` of any owner, not marked used (watching is not use)."""
        session = self._sessions.get(session_id)
        if session is not None and self._clock() - session.last_used > self.ttl_seconds and not session.lock.locked():
            self._expire(session)
            return None
        return session

    def sessions(self) -> list[Session]:
        """Every live session (for listing)."""
        return list(self._sessions.values())

    def stats(self) -> dict[str, int | float]:
        """Session figures for ``/stats``."""
        return {
            "active": len(self._sessions),
            # what the sessions hold grows with their histories (a fork holds its own copy)
            "tokens_held": sum(len(s.state.tokens) for s in self._sessions.values()),
            "created": self.created,
            "expired": self.expired,
            "deleted": self.deleted,
            "refused": self.refused,
            "max_sessions": self.max_sessions,
            "ttl_seconds": self.ttl_seconds,
        }

    def _remove(self, session: Session) -> None:
        del self._sessions[session.id]
        if session.owner is not None:
            self._owned[session.owner] -= 1
            if not self._owned[session.owner]:
                del self._owned[session.owner]

    def _expire(self, session: Session) -> None:
        self._remove(session)
        self.expired += 1
        self.tokens_released += len(session.state.tokens)
        session.end_events("expired")
        if self.expired_ids_remembered:
            self._expired[session.id] = session.owner
            while len(self._expired) > self.expired_ids_remembered:
                self._expired.popitem(last=False)

    def _missing(self, session_id: str, owner: int | None) -> UnknownSession:
        if session_id in self._expired and self._expired[session_id] == owner:
            return SessionExpired(f"session {excerpt(session_id, 64)} expired after {self.ttl_seconds:g} s idle")
        return UnknownSession(f"no session {excerpt(session_id, 64)}")
