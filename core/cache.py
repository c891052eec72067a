"""The program cache: an LRU keyed by content hash, bounded in entries and bytes, thread-safe.

Concurrent compiles of one key are done once (single flight): the first caller compiles, the
others wait for its result. Failed compiles are not cached here.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from core.program import CompiledGuidanceProgram

__all__ = ["ProgramCache"]


class ProgramCache:
    """LRU of compiled programs.

    Args:
        max_entries: most programs kept.
        max_bytes: most bytes kept, by each program's ``size_bytes`` estimate (grammar text plus
            a fixed overhead; llguidance's lazily grown lexer caches are not counted).
    """

    def __init__(self, max_entries: int = 256, max_bytes: int = 256 * 1024 * 1024) -> None:
        if max_entries < 1 or max_bytes < 1:
            raise ValueError("cache bounds must be positive")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, CompiledGuidanceProgram] = OrderedDict()
        self._inflight: dict[str, Future[CompiledGuidanceProgram]] = {}
        self._lock = threading.Lock()
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self.compiles = 0
        self.compile_errors = 0
        self.compile_seconds = 0.0

    def get(self, key: str) -> CompiledGuidanceProgram | None:
        """The cached program, or None; counts neither a hit nor a miss."""
        with self._lock:
            program = self._items.get(key)
            if program is not None:
                self._items.move_to_end(key)
            return program

    def lookup(self, key: str) -> CompiledGuidanceProgram | None:
        """Like :meth:`get`, counting a hit when found (a miss is counted by the compile)."""
        with self._lock:
            program = self._items.get(key)
            if program is not None:
                self._items.move_to_end(key)
                self.hits += 1
            return program

    def get_or_compile(
        self, key: str, compile_fn: Callable[[], CompiledGuidanceProgram]
    ) -> tuple[CompiledGuidanceProgram, bool]:
        """The program for ``key``, compiling it once if needed; returns ``(program, cached)``."""
        with self._lock:
            program = self._items.get(key)
            if program is not None:
                self._items.move_to_end(key)
                self.hits += 1
                return program, True
            waiting = self._inflight.get(key)
            if waiting is None:
                self.misses += 1
                mine: Future[CompiledGuidanceProgram] = Future()
                self._inflight[key] = mine
        if waiting is not None:
            return waiting.result(), True
        start = time.perf_counter()
        try:
            program = compile_fn()
        except BaseException as e:
            with self._lock:
                self.compile_errors += 1
                del self._inflight[key]
            mine.set_exception(e)
            raise
        with self._lock:
            self.compiles += 1
            self.compile_seconds += time.perf_counter() - start
            del self._inflight[key]
            self._put(key, program)
        mine.set_result(program)
        return program, False

    def _put(self, key: str, program: CompiledGuidanceProgram) -> None:
        self._items[key] = program
        self.bytes += program.size_bytes
        while self._items and (len(self._items) > self.max_entries or self.bytes > self.max_bytes):
            if len(self._items) == 1:
                break  # always keep the newest program, even if it alone is over the byte bound
            _, old = self._items.popitem(last=False)
            self.bytes -= old.size_bytes
            self.evictions += 1

    def clear(self) -> None:
        """Drop every program (live sessions keep theirs)."""
        with self._lock:
            self._items.clear()
            self.bytes = 0

    def __len__(self) -> int:
        return len(self._items)

    def stats(self) -> dict[str, Any]:
        """Counters for ``get_stats()``."""
        with self._lock:
            return {
                "entries": len(self._items),
                "bytes": self.bytes,
                "max_entries": self.max_entries,
                "max_bytes": self.max_bytes,
                "hits": self.hits,
                "misses": self.misses,
                "evictions": self.evictions,
                "compiles": self.compiles,
                "compile_errors": self.compile_errors,
                "compile_seconds_total": round(self.compile_seconds, 6),
            }
