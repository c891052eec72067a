"""What serving one program has measured and met: run-time figures, apart from the program.

A compiled program is immutable; what is learnt while its sessions run (what a mask costs, an
engine limit met, shards rebuilt) is kept in a :class:`ProgramStats` that the backend creates for
each program it builds. The backend reads it (to choose parallel fills, and for the first-mask
time the service's slow lane asks about); sessions report to it through their program.
"""

from __future__ import annotations

import threading

__all__ = ["ProgramStats"]


class ProgramStats:
    """Run-time figures of one program; written from the threads that serve it (thread-safe).

    Args:
        first_mask_seconds: CPU seconds the program's first mask took at compile time (None:
            not measured).
        newest_weight: the weight of the newest batch in the moving average of seconds per mask
            (1.0: the last batch only).

    Attributes:
        first_mask_seconds: as above.
        heap_bytes: what the compile left allocated in the C heap (its matcher, lexer, grammar;
            0: not measured), see :mod:`core.heap`.
    """

    __slots__ = (
        "_engine_limit",
        "_lock",
        "_mask_seconds",
        "_newest_weight",
        "_shard_renewals",
        "cpu_timed",
        "first_mask_seconds",
        "heap_bytes",
    )

    def __init__(self, first_mask_seconds: float | None = None, *, newest_weight: float = 0.2) -> None:
        if not 0 < newest_weight <= 1:
            raise ValueError("newest_weight must be in (0, 1]")
        self.first_mask_seconds = first_mask_seconds
        self.heap_bytes = 0
        # Whether its sessions time each mask in CPU time (``Limits.max_mask_ms``): reading a
        # thread's CPU clock costs about as much as a cheap mask, so a program is timed by the
        # wall clock until one of its masks takes longer than the limit by it, or its caller
        # asks (the service does for programs it serves off the event loop).
        self.cpu_timed = False
        self._newest_weight = newest_weight
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
            old, w = self._mask_seconds, self._newest_weight
            self._mask_seconds = seconds if not old else (1 - w) * old + w * seconds

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
