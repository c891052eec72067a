"""Compile workers: the Python half of a compile, in separate processes at a lower OS priority.

A compile is schema rewrites and template compilation in Python (they hold the GIL), then
llguidance's validation, then the matcher's construction and a first mask (native, without the
GIL). In the server, the Python half competes with the event loop for the GIL and the native half
for the cores. A :class:`CompileWorkers` pool runs everything up to the validated grammar text in
worker processes (``nice``-d, so the scheduler prefers the server), and hands back a
:class:`~core.compiler.CompiledSpec`; the ``LLMatcher``, which cannot cross a process, is built
by the caller (measured in docs/benchmarks.md, "Isolation").

Each worker runs its compiles on an engine thread (:mod:`core.threads`) with the stack the limits
ask for, as the server would. A worker that dies mid-compile (a native crash, the OOM killer)
fails that compile alone with :class:`~core.errors.CompileCrashed`; the next compile starts a
fresh worker. Workers are started on first use with ``spawn`` (the server has threads: ``fork``
would copy their locks) and learn each vocabulary once, from its tokens.

A worker is the one place a compile can be stopped from outside: a compile past
``Limits.max_compile_ms`` of the worker's CPU time fails with
:class:`~core.errors.LimitExceeded`, and one whose callers have all gone (its ``cancel`` event
set) with :class:`CompileCancelled`; either way the worker is killed and the next compile starts
a fresh one. When every worker has been busy longer than ``heavy_after_seconds`` (a few heavy
compiles), a new compile gets a spare worker (up to as many again), so that a cheap compile does
not wait behind them.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

import llguidance

from core.compiler import CompiledSpec
from core.errors import CompileCancelled, CompileCrashed, GuidanceError, LimitExceeded, replica
from core.kinds import compile_spec
from core.limits import Limits
from core.threads import lower_priority, run_on_llguidance_thread
from core.tokenizers import Tokenizer, validation_tokenizer

if TYPE_CHECKING:
    from core.spec import ProgramSpec

__all__ = ["CompileTask", "CompileWorkers"]

# How often a waiting caller looks at its compile's CPU time and cancel event, in seconds.
_POLL_SECONDS = 0.02
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

CompileTask = Callable[["ProgramSpec", llguidance.LLTokenizer, Limits], CompiledSpec]
"""What a worker runs for one compile (:func:`core.kinds.compile_spec`; tests pass their own)."""


def _pack(exc: GuidanceError) -> tuple[type[GuidanceError], tuple[Any, ...], dict[str, Any]]:
    # Domain errors have their own __init__ signatures: rebuild them field by field, not by pickle's
    # call of the class with ``args``.
    return type(exc), exc.args, dict(exc.__dict__)


def _unpack(packed: tuple[type[GuidanceError], tuple[Any, ...], dict[str, Any]]) -> GuidanceError:
    return replica(*packed)


def _serve(conn: Connection, limits: Limits, level: int, task: CompileTask) -> None:
    """A worker's entry point: serve until the server closes the pipe (or goes away)."""
    # Interrupts are the server's to handle: it closes the pipe, and the worker then ends quietly.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A child starts at the nice value of the thread that started it: lower it to the level asked.
    current = os.getpriority(os.PRIO_PROCESS, 0) if hasattr(os, "getpriority") else level
    lower_priority(level - current, whole_process=True)
    try:
        _loop(conn, limits, task)
    except (EOFError, OSError):  # the server closed its end, or exited
        return


def _loop(conn: Connection, limits: Limits, task: CompileTask) -> None:
    """One request in, one answer out."""
    vocabularies: dict[str, llguidance.LLTokenizer] = {}
    stack = limits.llguidance_stack_bytes
    while True:
        digest, vocabulary, spec = conn.recv()
        if vocabulary is not None:
            vocabularies[digest] = validation_tokenizer(*vocabulary)
        if spec is None:  # only learning a vocabulary (warm-up)
            conn.send(("ok", None))
            continue
        try:
            answer: tuple[str, Any] = ("ok", run_on_llguidance_thread(stack, task, spec, vocabularies[digest], limits))
        except GuidanceError as e:
            answer = ("error", _pack(e))
        except Exception as e:  # a bug of ours: the server reports it as one (500)
            answer = ("bug", f"{type(e).__name__}: {str(e)[:500]}")
        conn.send(answer)


class _WorkerBug(RuntimeError):
    """An unexpected exception in a worker (our bug, not the input's): a 500, as in the server."""


class _Stopped(Exception):
    """A compile stopped from this side (its budget spent or its callers gone): ``reason`` says which."""

    def __init__(self, reason: str, cpu_seconds: float) -> None:
        super().__init__(reason)
        self.reason = reason
        self.cpu_seconds = cpu_seconds


class _Worker:
    """One worker process, its pipe and the vocabularies it knows."""

    def __init__(self, context: Any, limits: Limits, nice: int, task: CompileTask) -> None:
        self.conn, child = multiprocessing.Pipe()
        # ``nice`` below the process's own priority (its main thread's), whichever thread starts it
        base = os.getpriority(os.PRIO_PROCESS, os.getpid()) if hasattr(os, "getpriority") else 0
        level = min(19, base + nice)
        self.process = context.Process(
            target=_serve, args=(child, limits, level, task), name="guidance-compile-worker", daemon=True
        )
        self.process.start()
        child.close()  # so that our end reads EOF when the worker dies
        self.known: set[str] = set()

    def learn(self, tokenizer: Tokenizer) -> None:
        if tokenizer.digest not in self.known:
            self.conn.send((tokenizer.digest, tokenizer.vocabulary(), None))
            self.known.add(tokenizer.digest)
            self.conn.recv()

    def cpu_seconds(self) -> float:
        """CPU time the worker process has used (the clock where /proc is missing)."""
        try:  # every thread's user and system time (fields 14 and 15), in clock ticks
            with open(f"/proc/{self.process.pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / _TICKS
        except (OSError, ValueError, IndexError):  # pragma: no cover - not Linux
            return time.monotonic()

    def compile(
        self, spec: ProgramSpec, tokenizer: Tokenizer, budget: float, cancel: threading.Event | None
    ) -> CompiledSpec:
        self.learn(tokenizer)  # seconds for a large vocabulary, and not the input's doing: not in its budget
        start = self.cpu_seconds()
        self.conn.send((tokenizer.digest, None, spec))
        while not self.conn.poll(_POLL_SECONDS):
            if cancel is not None and cancel.is_set():
                raise _Stopped("cancelled", self.cpu_seconds() - start)
            spent = self.cpu_seconds() - start
            if spent > budget:
                raise _Stopped("budget", spent)
        status, value = self.conn.recv()
        if status == "ok":
            assert isinstance(value, CompiledSpec)
            return value
        if status == "error":
            raise _unpack(value)
        raise _WorkerBug(f"compile worker failed: {value}")

    def kill(self) -> None:
        """Stop the worker now, mid-compile."""
        self.process.kill()
        self.process.join()
        self.conn.close()

    def stop(self) -> None:
        self.conn.close()
        self.process.join(timeout=1)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()


class CompileWorkers:
    """A pool of compile worker processes; :meth:`compile` is blocking and thread-safe.

    Args:
        processes: most workers (each compile takes one; callers beyond that wait).
        limits: the limits every compile is checked against.
        nice: how much lower than this process's the workers' OS priority is (0: the same).
        task: what a worker runs for one compile (a module-level function: it is pickled by name).
    """

    def __init__(
        self,
        processes: int,
        limits: Limits,
        *,
        nice: int = 10,
        task: CompileTask = compile_spec,
        spare: int | None = None,
        heavy_after_seconds: float = 1.0,
    ) -> None:
        if processes < 1:
            raise ValueError("processes must be at least 1")
        self.processes = processes
        self.spare = processes if spare is None else spare
        self.heavy_after_seconds = heavy_after_seconds
        self._busy: dict[int, float] = {}  # id of a busy worker -> when its compile started
        self.limits = limits
        self.nice = nice
        self._task = task
        self._context = multiprocessing.get_context("spawn")
        # A process starts at the nice value of the thread that starts it, and compile threads run
        # lowered (core.threads): workers are started from this thread, made now, at our priority.
        self._launcher = ThreadPoolExecutor(1, thread_name_prefix="guidance-compile-launcher")
        self._launcher.submit(int).result()
        self._idle: queue.LifoQueue[_Worker] = queue.LifoQueue()
        self._lock = threading.Lock()
        self._started = 0
        self._closed = False
        self._warming = 0
        self.crashes = 0
        self.restarts = 0
        self.stopped = 0  # compiles stopped from outside: their budget spent, or their callers gone

    def _new_worker(self) -> _Worker:
        return self._launcher.submit(_Worker, self._context, self.limits, self.nice, self._task).result()

    def _heavy(self) -> bool:
        """Whether every worker is busy, each with a compile older than ``heavy_after_seconds``."""
        old = time.monotonic() - self.heavy_after_seconds
        return len(self._busy) >= self._started and all(t < old for t in self._busy.values())

    def _acquire(self, cancel: threading.Event | None = None) -> _Worker:
        worker: _Worker | None = None
        while True:
            if cancel is not None and cancel.is_set():
                raise CompileCancelled("every caller of this compile has gone")
            start = False
            with self._lock:
                if self._closed:
                    raise RuntimeError("compile workers are closed")
                try:
                    worker = self._idle.get_nowait()
                except queue.Empty:
                    worker = None
                    if self._started < self.processes or (
                        self._started < self.processes + self.spare and self._heavy()
                    ):
                        self._started += 1  # the slot is ours; the process starts outside the lock
                        start = True
            if start:
                try:
                    return self._new_worker()
                except BaseException:
                    with self._lock:
                        self._started -= 1
                    raise
            if worker is None:
                try:  # a while, then look again: the busy workers may have turned heavy meanwhile
                    worker = self._idle.get(timeout=self.heavy_after_seconds / 4)
                except queue.Empty:
                    continue
            break
        # An idle worker has nothing to say: a readable pipe is the EOF of one that died (killed
        # from outside) while idle. Replace it rather than fail a compile it never saw.
        if worker.conn.poll(0) or not worker.process.is_alive():
            worker.stop()
            self.restarts += 1
            worker = self._new_worker()
        return worker

    def compile(self, spec: ProgramSpec, tokenizer: Tokenizer, cancel: threading.Event | None = None) -> CompiledSpec:
        """Everything of a compile up to the validated grammar, in a worker.

        Args:
            spec: what to compile.
            tokenizer: the vocabulary.
            cancel: set when nobody waits for this compile any more: the worker is stopped.

        Raises:
            GuidanceError: the constraint does not compile or breaks a limit (as in the server).
            LimitExceeded: the compile used more than ``max_compile_ms`` of the worker's CPU time.
            CompileCancelled: ``cancel`` was set before the compile ended.
            CompileCrashed: the worker died during this compile (a fresh one serves the next).
        """
        worker = self._acquire(cancel)
        with self._lock:
            self._busy[id(worker)] = time.monotonic()
        try:
            result = worker.compile(spec, tokenizer, self.limits.max_compile_ms / 1000, cancel)
        except _Stopped as e:
            worker.kill()
            self._discard(worker)
            with self._lock:
                self.stopped += 1
            if e.reason == "cancelled":
                raise CompileCancelled("every caller of this compile has gone") from None
            limit = self.limits.max_compile_ms
            raise LimitExceeded(
                f"the compile took more than {limit} ms of CPU time (stopped at {e.cpu_seconds * 1000:.0f} ms)",
                "max_compile_ms",
            ) from None
        except (EOFError, OSError):
            self._discard(worker)
            with self._lock:
                self.crashes += 1
            code = worker.process.exitcode
            raise CompileCrashed(
                f"the compile worker stopped during this compile (exit code {code}); other compiles are not affected"
            ) from None
        except (GuidanceError, _WorkerBug):  # answered in full: the worker is ready for the next
            self._release(worker)
            raise
        except BaseException:  # interrupted mid-exchange: its answer may still come, so not reused
            self._discard(worker)
            raise
        self._release(worker)
        return result

    def _discard(self, worker: _Worker) -> None:
        worker.stop()
        with self._lock:
            self._busy.pop(id(worker), None)
            self._started -= 1

    def warm(self, tokenizers: Sequence[Tokenizer]) -> None:
        """Start every worker and teach it ``tokenizers`` (blocking; a few seconds per worker).

        Meanwhile :attr:`warming` is true (callers may compile elsewhere rather than wait).
        """
        with self._lock:
            self._warming += 1
        try:
            self._warm(tokenizers)
        finally:
            with self._lock:
                self._warming -= 1

    @property
    def warming(self) -> bool:
        """Whether :meth:`warm` is still starting workers."""
        return self._warming > 0

    def _warm(self, tokenizers: Sequence[Tokenizer]) -> None:
        for _ in range(self.processes):
            with self._lock:
                if self._closed or self._started >= self.processes:
                    return
                self._started += 1
            worker: _Worker | None = None
            try:
                worker = self._new_worker()
                for tokenizer in tokenizers:
                    worker.learn(tokenizer)
            except (EOFError, OSError, RuntimeError):  # a worker that died, or closed meanwhile
                if worker is not None:
                    worker.stop()
                with self._lock:
                    self._started -= 1
                return
            self._release(worker)

    def _release(self, worker: _Worker) -> None:
        with self._lock:
            self._busy.pop(id(worker), None)
            closed = self._closed
            surplus = self._started > self.processes  # a spare, started for heavy compiles
            if surplus and not closed:
                self._started -= 1
        if closed or surplus:
            worker.stop()
        else:
            self._idle.put(worker)

    def pids(self) -> list[int]:
        """Process ids of the idle workers (for tests and operators)."""
        with self._idle.mutex:
            return [w.process.pid for w in self._idle.queue if w.process.pid is not None]

    def close(self) -> None:
        """Stop the idle workers; busy ones stop when their compile ends."""
        with self._lock:
            self._closed = True
        self._launcher.shutdown(wait=False)
        while True:
            try:
                worker = self._idle.get_nowait()
            except queue.Empty:
                break
            worker.stop()

    def stats(self) -> dict[str, int]:
        """Workers started and running, whether they are still starting (1) and crashes seen."""
        with self._lock:
            return {
                "processes": self.processes,
                "running": self._started,
                "warming": int(self._warming > 0),
                "crashes": self.crashes,
                "stopped": self.stopped,
            }
