"""Giving freed memory back to the operating system after large answers.

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
from collections.abc import Callable

__all__ = ["LARGE_ANSWER_BYTES", "release_memory"]

# Answers at least this large mark the heap for a trim at the next sweep.
LARGE_ANSWER_BYTES = 1 << 20


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
