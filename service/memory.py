"""Memory: giving freed memory back to the operating system, and the server-wide budget.

A ``POST /step`` answer is one buffer of up to ``max_step_answer_bytes``. glibc serves buffers
over its mmap threshold (dynamic, at most 32 MiB) with ``mmap`` and unmaps them when freed; smaller
ones come from the heap, whose freed pages it keeps for reuse up to its trim threshold (twice
the mmap threshold). That reuse is what keeps steady batches cheap (fresh pages must be faulted in
and cleared by the kernel), so nothing is trimmed on the request path; instead the periodic sweep calls
:func:`release_memory` when large answers were served since its last call, and an idle server's
RSS returns near its baseline (``docs/reliability.md``, measured there).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import time
from collections.abc import Callable

from service.errors import MemoryExhausted

__all__ = [
    "LARGE_ANSWER_BYTES",
    "RELEASED_TOKENS_TRIM",
    "MemoryBudget",
    "machine_memory_bytes",
    "release_memory",
    "resident_bytes",
]

# Answers at least this large mark the heap for a trim at the next sweep.
LARGE_ANSWER_BYTES = 1 << 20

# Session tokens closed since the last trim past which the sweep trims too: a session's history
# costs about 150 bytes a token in llguidance's rows and our list (a fork holds its own copy), so
# 100,000 tokens are some 15 MB of small blocks glibc would otherwise keep (measured in
# docs/reliability.md, "Memory by bytes").
RELEASED_TOKENS_TRIM = 100_000

_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:  # pragma: no cover - not a C library with a name (static builds)
        return None
    try:
        trim: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # pragma: no cover - musl, macOS: no malloc_trim
        return None
    return trim


def release_memory() -> bool:
    """Return the heap's free pages to the operating system (glibc ``malloc_trim(0)``).

    Returns:
        Whether the C library offers it (False: nothing done).
    """
    trim = _malloc_trim()
    if trim is None:  # pragma: no cover - see above
        return False
    trim(0)
    return True


def resident_bytes() -> int:
    """This process's resident set size, in bytes (0 where ``/proc`` is missing)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE_BYTES
    except (OSError, ValueError, IndexError):  # pragma: no cover - not Linux
        return 0


def machine_memory_bytes() -> int:
    """The memory this process may use: its cgroup's ``memory.max``, else the machine's RAM (0: unknown)."""
    sizes: list[int] = []
    try:
        with open("/sys/fs/cgroup/memory.max", encoding="ascii") as f:
            text = f.read().strip()
        if text.isdecimal():
            sizes.append(int(text))
    except OSError:
        pass
    try:
        sizes.append(os.sysconf("SC_PHYS_PAGES") * _PAGE_BYTES)
    except (OSError, ValueError, AttributeError):  # pragma: no cover - not POSIX
        pass
    return min(sizes, default=0)


class MemoryBudget:
    """The server-wide memory budget: new work is refused (503 ``memory-exhausted``) above it.

    What is measured is the process's resident set (``/proc/self/statm``, about 10 us to read):
    programs, sessions, lexers and buffers alike, whatever grew. Above the budget, freed heap
    pages are first given back (``malloc_trim``, at most once a second) and the set measured
    again, so memory already freed by closed sessions never refuses work.

    Args:
        max_bytes: the budget; 0 takes 80 % of :func:`machine_memory_bytes` (0 there too: no budget).
        retry_after: ``Retry-After`` of the refusal, in seconds.
        measure: reads the resident set (tests pass their own).
        release: gives freed memory back (tests pass their own).
    """

    def __init__(
        self,
        max_bytes: int,
        retry_after: int = 1,
        *,
        measure: Callable[[], int] = resident_bytes,
        release: Callable[[], bool] = release_memory,
    ) -> None:
        self.max_bytes = max_bytes or machine_memory_bytes() * 4 // 5
        self.retry_after = retry_after
        self._measure = measure
        self._release = release
        self._released_at = -1.0
        self.refused = 0

    def check(self) -> None:
        """Refuse new work while the resident set is above the budget.

        Raises:
            MemoryExhausted: still above it after giving freed memory back.
        """
        if not self.max_bytes:
            return
        used = self._measure()
        if used <= self.max_bytes:
            return
        now = time.monotonic()
        if now - self._released_at >= 1.0:
            self._released_at = now
            self._release()
            used = self._measure()
            if used <= self.max_bytes:
                return
        self.refused += 1
        raise MemoryExhausted(
            f"the server holds {used} bytes, above its memory budget of {self.max_bytes}: retry later "
            "or on another replica",
            self.retry_after,
        )

    def stats(self) -> dict[str, int]:
        """The budget, the resident set now and the refusals so far (``GET /stats``)."""
        return {"max_bytes": self.max_bytes, "resident_bytes": self._measure(), "refused": self.refused}
