"""What the C heap holds: the bytes a compile leaves behind, measured rather than guessed.

llguidance's grammars, lexers and token tables live in the C heap (Rust's allocator is the
system ``malloc``), where Python's own accounting cannot see them. glibc's ``mallinfo2`` says how
many bytes are allocated and not freed, over every arena and mapped block; its difference around
a compile is what the program holds (a 60,000-value ``enum``: about 9 MB, where its grammar text
is 0.35 MB). It counts every thread's allocations: a compile measured while other threads
allocate or free is charged their difference too (see docs/reliability.md, "Memory by bytes").
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable

__all__ = ["heap_bytes"]


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


@functools.cache
def _mallinfo2() -> Callable[[], _MallInfo2] | None:
    name = ctypes.util.find_library("c")
    if name is None:  # pragma: no cover - a static build
        return None
    try:
        fn = ctypes.CDLL(name).mallinfo2  # glibc 2.33 and later
    except (OSError, AttributeError):  # pragma: no cover - musl, macOS, an older glibc
        return None
    fn.restype = _MallInfo2
    fn.argtypes = []
    info: Callable[[], _MallInfo2] = fn
    return info


def heap_bytes() -> int | None:
    """Bytes allocated in the C heap and not freed (None: the C library cannot say)."""
    info = _mallinfo2()
    if info is None:  # pragma: no cover - see above
        return None
    got = info()
    return int(got.uordblks + got.hblkhd)
