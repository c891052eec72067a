"""Threads with a known stack for the engine work that recurses natively.

llguidance builds a grammar (``validate_grammar``, the ``LLMatcher`` constructor) by recursion on
the calling thread's stack, a few kilobytes per level of derivation (:mod:`core.derivation`).
A thread's stack is whatever created it chose: 8 MiB for a main thread here, less elsewhere. So
grammar building always runs on threads made here, whose stack is sized from the limits
(:attr:`core.limits.Limits.llguidance_stack_bytes`). Masks, accepts and forks do not recurse per level
(their stack does not grow with the depth; docs/reliability.md) and run where their caller is.

``threading.stack_size`` is process-wide; it is set only while one of these pools starts a thread,
under a lock, and put back at once.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

__all__ = ["LLGuidanceThreadPool", "lower_priority", "on_llguidance_thread", "run_on_llguidance_thread"]

_T = TypeVar("_T")

_stack_lock = threading.Lock()
_local = threading.local()
_shared: dict[int, LLGuidanceThreadPool] = {}
_shared_lock = threading.Lock()


def _mark(stack_bytes: int, nice: int = 0) -> None:
    _local.stack_bytes = stack_bytes
    lower_priority(nice)


def lower_priority(nice: int, *, whole_process: bool = False) -> None:
    """Lower the calling thread's OS priority by ``nice`` (at most to 19; 0: unchanged).

    On Linux a thread has its own nice value (``setpriority`` on its thread id), so a pool's
    threads can yield the cores to the event loop's thread; elsewhere this lowers the whole
    process's, so there it is applied only with ``whole_process`` (a compile worker's own process).
    Raising the value back needs privileges: threads lowered here stay lowered.
    """
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    linux = sys.platform.startswith("linux")
    if not linux and not whole_process:
        return
    who = threading.get_native_id() if linux and not whole_process else 0
    try:
        current = os.getpriority(os.PRIO_PROCESS, who)
        os.setpriority(os.PRIO_PROCESS, who, min(19, current + nice))
    except OSError:  # not permitted in some sandboxes: run at the normal priority
        pass


def on_llguidance_thread(stack_bytes: int = 0) -> bool:
    """Whether the calling thread is one of the engine's, with a stack of at least ``stack_bytes``."""
    return getattr(_local, "stack_bytes", -1) >= stack_bytes


class LLGuidanceThreadPool(ThreadPoolExecutor):
    """A thread pool whose threads have a stack of ``stack_bytes``.

    Args:
        max_workers: most threads.
        thread_name_prefix: names of its threads.
        stack_bytes: stack of each thread (address space reserved; pages are used as touched).
        nice: how much lower each thread's OS priority is (see :func:`lower_priority`).
    """

    def __init__(self, max_workers: int, thread_name_prefix: str, stack_bytes: int, nice: int = 0) -> None:
        super().__init__(
            max_workers=max_workers,
            thread_name_prefix=thread_name_prefix,
            initializer=_mark,
            initargs=(stack_bytes, nice),
        )
        self.stack_bytes = stack_bytes

    def submit(self, fn: Callable[..., _T], /, *args: Any, **kwargs: Any) -> Future[_T]:
        # ThreadPoolExecutor starts its threads inside submit(), lazily.
        with _stack_lock:
            previous = threading.stack_size(self.stack_bytes)
            try:
                return super().submit(fn, *args, **kwargs)
            finally:
                threading.stack_size(previous)


def run_on_llguidance_thread(stack_bytes: int, fn: Callable[..., _T], *args: Any) -> _T:
    """Run ``fn(*args)`` on an engine thread of at least ``stack_bytes`` and wait for its result.

    Inline when the caller already is one (a compile worker, a fill thread); otherwise on a small
    shared pool per stack size, started on first use.
    """
    if on_llguidance_thread(stack_bytes):
        return fn(*args)
    with _shared_lock:
        pool = _shared.get(stack_bytes)
        if pool is None:
            pool = _shared[stack_bytes] = LLGuidanceThreadPool(2, "guidance-llguidance", stack_bytes)
    return pool.submit(fn, *args).result()
