"""What serving one program has measured and met: run-time figures, apart from the program.

A compiled program is immutable; what is learnt while its sessions run (what a mask costs, an
engine limit met, shards rebuilt) is kept in a :class:`ProgramStats` that the backend creates for
each program it builds. The backend reads it (to choose parallel fills, and for the first-mask
time the service's slow lane asks about); sessions report to it through their program.
"""

from __future__ import annotations

import threading

__all__ = ["ProgramStats"]

# Weight of the newest batch in the moving average of seconds per mask.
_NEWEST_WEIGHT = 0.2


class ProgramStats:
    """Run-time figures of one program; written from the threads that serve it (thread-safe).

    Args:
        first_mask_seconds: CPU seconds the program's first mask took at compile time (None:
            not measured).
    """

    __slots__ = ("_engine_limit", "_lock", "_mask_seconds", "_shard_renewals", "first_mask_seconds")

    def __init__(self, first_mask_seconds: float | None = None) -> None:
        self.first_mask_seconds = first_mask_seconds
        self._lock = threading.Lock()
        self._mask_seconds = 0.0
        self._engine_limit: dict[str, str] | None = None
        self._shard_renewals = 0

    @property
    def mask_seconds(self) -> float:
        """Recent seconds per mask in batched fills (a moving average; 0.0: none yet)."""
        return self._mask_seconds

    def note_mask_seconds(self, seconds: float) -> None:
        """Fold one batch's seconds per mask into :attr:`mask_seconds`."""
        with self._lock:
            old = self._mask_seconds
            self._mask_seconds = seconds if not old else (1 - _NEWEST_WEIGHT) * old + _NEWEST_WEIGHT * seconds

    @property
    def engine_limit(self) -> dict[str, str] | None:
        """The last llguidance limit a session met mid-generation, ``{limit, detail}`` (None: never)."""
        note = self._engine_limit
        return None if note is None else dict(note)

    def note_engine_limit(self, limit: str, detail: str) -> None:
        """Remember that a session reached an llguidance limit (new sessions are told)."""
        with self._lock:
            self._engine_limit = {"limit": limit, "detail": detail}

    @property
    def shard_renewals(self) -> int:
        """How many times a matcher shard was rebuilt because its shared lexer ran out."""
        return self._shard_renewals

    def note_shard_renewal(self) -> None:
        """Count one rebuilt shard."""
        with self._lock:
            self._shard_renewals += 1
