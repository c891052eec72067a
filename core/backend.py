"""The backend: compiles constraints into cached programs and fills batches of masks.

:class:`GuidanceBackend` is synchronous and thread-safe; its :meth:`~GuidanceBackend.compile_async`
runs a compile on an executor the caller owns (the server's, as vLLM's structured-output manager
owns its compile executor over plain backends), so an event loop never blocks.
:class:`AsyncGuidanceBackend` binds a backend to an executor of its own for library users. Both
share the per-kind ``compile_*`` methods (:class:`KindCompilers`); single flight is the cache's
(:mod:`core.cache`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np
from numpy.typing import NDArray

from core.bitmask import allocate_bitmask
from core.cache import ProgramCache
from core.compiler import CompiledSpec
from core.errors import GrammarError, GuidanceError, LimitExceeded, compile_boundary
from core.heap import heap_bytes
from core.kinds import check_options, compile_spec
from core.limits import Limits
from core.program import CompiledGuidanceProgram
from core.session import GuidanceState
from core.spec import ProgramKind, ProgramSpec, spec_from_kwargs
from core.stats import ProgramStats
from core.threads import LLGuidanceThreadPool, run_on_llguidance_thread
from core.tokenizers import Tokenizer, load_default_tokenizer, load_tokenizer
from core.workers import CompileWorkers

__all__ = ["AsyncGuidanceBackend", "CompileJob", "GuidanceBackend", "KindCompilers"]


_EMPTY_LANGUAGE = "the constraint matches no text at all (a rule without a base case, or a cyclic $ref?)"


def _fill_group(
    group: Sequence[tuple[int, GuidanceState, int]], bitmask: NDArray[np.int32]
) -> dict[int, GuidanceError]:
    """Fill each ``(position, state, row)``; a state that fails gets a zero row and its error."""
    failed: dict[int, GuidanceError] = {}
    for i, st, r in group:
        try:
            st.fill_bitmask(bitmask, r)
        except GuidanceError as e:
            failed[i] = e
    return failed


def _allows_more_than(row: NDArray[np.int32], tokens: Iterable[int]) -> bool:
    """Whether a mask row allows any token other than ``tokens``."""
    words = row.view(np.uint32).copy()
    for token in tokens:
        word, bit = divmod(token, 32)
        words[word] &= ~np.uint32(1 << bit)
    return bool(words.any())


R = TypeVar("R")


@dataclass(frozen=True)
class CompileJob:
    """A compile, checked and keyed, not run yet (:meth:`GuidanceBackend.job`).

    Attributes:
        key: the program id it will have (its cache key).
        spec: what to compile.
        tokenizer: the vocabulary.
    """

    key: str
    spec: ProgramSpec
    tokenizer: Tokenizer


class KindCompilers(Generic[R]):
    """The per-kind ``compile_*`` methods, written once over :meth:`_compile_spec`.

    :class:`GuidanceBackend` returns programs (``R`` is the program), :class:`AsyncGuidanceBackend`
    awaitables of them.
    """

    def _compile_spec(self, spec: ProgramSpec, tokenizer: Tokenizer | None) -> R:
        raise NotImplementedError

    def _compile_kind(
        self,
        kind: ProgramKind,
        source: Any,
        variables: Mapping[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
        tokenizer: Tokenizer | None = None,
        reasoning: str | Mapping[str, Any] | None = None,
    ) -> R:
        return self._compile_spec(spec_from_kwargs(kind, source, variables, options, reasoning), tokenizer)

    def compile_template(
        self, template_str: str, variables: Mapping[str, Any] | None = None, *, tokenizer: Tokenizer | None = None
    ) -> R:
        """Compile a template with its compile-time variables.

        Args:
            template_str: the template text (see the README's template language).
            variables: values for its interpolations and named options.
            tokenizer: the vocabulary (default: the backend's).
        """
        return self._compile_kind("template", template_str, variables, None, tokenizer)

    def compile_json_schema(
        self,
        schema: Mapping[str, Any] | bool | str,
        *,
        whitespace: int | None = None,
        tokenizer: Tokenizer | None = None,
    ) -> R:
        """Compile a JSON schema (compact output unless ``whitespace`` allows up to N spaces)."""
        options = {"whitespace": whitespace} if whitespace else None
        return self._compile_kind("json_schema", schema, None, options, tokenizer)

    def compile_regex(self, pattern: str, *, tokenizer: Tokenizer | None = None) -> R:
        """Compile a regex that the whole output must match."""
        return self._compile_kind("regex", pattern, tokenizer=tokenizer)

    def compile_grammar(self, lark: str, *, tokenizer: Tokenizer | None = None) -> R:
        """Compile a Lark grammar (llguidance dialect)."""
        return self._compile_kind("grammar", lark, tokenizer=tokenizer)

    def compile_choice(self, options: Sequence[str], *, tokenizer: Tokenizer | None = None) -> R:
        """Compile a choice of exactly one of ``options``."""
        return self._compile_kind("choice", list(options), tokenizer=tokenizer)

    def compile_structural_tag(
        self,
        tag: Mapping[str, Any] | str,
        *,
        reasoning: str | Mapping[str, Any] | None = None,
        tokenizer: Tokenizer | None = None,
    ) -> R:
        """Compile an xgrammar/vLLM structural tag (``structures`` + ``triggers``, or ``format``)."""
        return self._compile_kind("structural_tag", tag, tokenizer=tokenizer, reasoning=reasoning)

    def compile_tools(
        self,
        tools: Sequence[Mapping[str, Any]],
        tool_format: str,
        *,
        tool_choice: str | Mapping[str, Any] = "auto",
        parallel_tool_calls: bool = True,
        reasoning: str | Mapping[str, Any] | None = None,
        tokenizer: Tokenizer | None = None,
    ) -> R:
        """Compile OpenAI-style ``tools`` in a model family's format (variables ``tool_calls``, ``content``)."""
        options = {"tool_format": tool_format, "tool_choice": tool_choice, "parallel_tool_calls": parallel_tool_calls}
        return self._compile_kind("tools", list(tools), None, options, tokenizer, reasoning)


class GuidanceBackend(KindCompilers[CompiledGuidanceProgram]):
    """Compiles templates, JSON schemas, regexes, Lark grammars and choices into programs.

    Args:
        tokenizer: a :class:`~core.tokenizers.Tokenizer`, a tokenizer name or ``tokenizer.json``
            path, or None for the embedded default (Mistral tekken, 131,072 ids).
        vocab_size: the model's logits width, when wider than the tokenizer (extra ids are never
            allowed).
        max_cache_size: most programs kept in the LRU cache.
        max_cache_bytes: most bytes kept in the cache (see :class:`~core.cache.ProgramCache`).
        cache_probation_share: the share of the cache that programs used once compete for
            (see :class:`~core.cache.ProgramCache`; 1.0: a plain LRU).
        negative_cache_ttl: seconds a failed compile is remembered (its repeat fails at once).
        negative_cache_entries: most failed compiles remembered.
        limits: compile and run limits; defaults to :class:`~core.limits.Limits`.
        num_threads: threads filling one batch of masks (:meth:`fill_next_token_bitmasks`); 1,
            the default, fills in a plain loop. With more, each program keeps that many matcher
            shards (see :mod:`core.shards`) and a batch of costly masks is filled one thread per
            shard. Cheap masks gain little from threads and are filled in a loop.
        parallel_min_batch: the fewest states a batch filled in parallel has (with
            ``num_threads`` > 1); smaller batches are filled in a loop.
        parallel_min_mask_seconds: the least a mask of the batch's programs has recently cost,
            on average, for the batch to be filled in parallel. Below it, waking a thread and
            passing the GIL back and forth after every mask costs more than the threads save
            (measured in docs/benchmarks.md, "Parallel fills").
        compile_processes: worker processes for the Python half of compiles (schema rewrites,
            template compilation, llguidance's validation; see :mod:`core.workers`); 0, the
            default, compiles wholly on the calling thread.
        compile_nice: how much lower the compile workers' OS priority is than this process's.
    """

    def __init__(
        self,
        tokenizer: Tokenizer | str | None = None,
        vocab_size: int | None = None,
        max_cache_size: int = 256,
        *,
        max_cache_bytes: int = 256 * 1024 * 1024,
        cache_probation_share: float = 0.2,
        negative_cache_ttl: float = 60.0,
        negative_cache_entries: int = 1024,
        limits: Limits | None = None,
        num_threads: int | None = None,
        parallel_min_batch: int = 8,
        parallel_min_mask_seconds: float = 100e-6,
        compile_processes: int = 0,
        compile_nice: int = 10,
    ) -> None:
        if tokenizer is None:
            tokenizer = load_default_tokenizer()
        elif isinstance(tokenizer, str):
            tokenizer = load_tokenizer(tokenizer)
        self.tokenizer: Tokenizer = tokenizer
        self.vocab_size = max(vocab_size or 0, tokenizer.vocab_size)
        self.limits = limits or Limits()
        self.cache = ProgramCache(
            max_cache_size,
            max_cache_bytes,
            negative_ttl=negative_cache_ttl,
            negative_max_entries=negative_cache_entries,
            probation_share=cache_probation_share,
        )
        self._num_threads = max(num_threads or 1, 1)
        self.parallel_min_batch = parallel_min_batch
        self.parallel_min_mask_seconds = parallel_min_mask_seconds
        self._fill_pool: LLGuidanceThreadPool | None = None
        self._workers = CompileWorkers(compile_processes, self.limits, nice=compile_nice) if compile_processes else None

    # -- compiling
    def job(self, spec: ProgramSpec, tokenizer: Tokenizer | None = None) -> CompileJob:
        """Check ``spec``'s option names and give it its program id, without compiling.

        Raises:
            GrammarError: an option the kind does not take.
        """
        tok = tokenizer or self.tokenizer
        check_options(spec)
        return CompileJob(self.program_id(spec, tok), spec, tok)

    def compile(
        self, spec: ProgramSpec | CompileJob, tokenizer: Tokenizer | None = None
    ) -> tuple[CompiledGuidanceProgram, bool]:
        """Compile ``spec`` (or take it from the cache); returns ``(program, cached)``."""
        job = spec if isinstance(spec, CompileJob) else self.job(spec, tokenizer)
        return self.cache.get_or_compile(job.key, lambda: self._compile_now(job, None))

    async def compile_async(
        self, spec: ProgramSpec | CompileJob, executor: Executor, tokenizer: Tokenizer | None = None
    ) -> tuple[CompiledGuidanceProgram, bool]:
        """:meth:`compile` on ``executor`` (its threads need the engine stack, see :mod:`core.threads`),
        awaited: concurrent calls for one program share one compile, with threads' calls too.

        A caller that is cancelled stops waiting; when every caller of a compile has gone, the
        compile is stopped (in a worker process) or never started, and ends with
        :class:`~core.errors.CompileCancelled`.
        """
        job = spec if isinstance(spec, CompileJob) else self.job(spec, tokenizer)
        return await self.cache.get_or_compile_async(job.key, lambda cancel: self._compile_now(job, cancel), executor)

    def _compile_spec(self, spec: ProgramSpec, tokenizer: Tokenizer | None) -> CompiledGuidanceProgram:
        return self.compile(spec, tokenizer)[0]

    def _compile_now(self, job: CompileJob, cancel: threading.Event | None) -> CompiledGuidanceProgram:
        # llguidance builds grammars recursively: on a thread whose stack fits the limits (core.threads)
        return run_on_llguidance_thread(self.limits.llguidance_stack_bytes, self._build, job, cancel)

    def start_workers(self, tokenizers: Sequence[Tokenizer] = ()) -> None:
        """Start the compile workers in the background and teach them ``tokenizers`` (and this
        backend's own), so that the first compiles do not pay for it; until they are all up,
        compiles run on the calling threads. No-op without workers."""
        workers = self._workers
        if workers is None:
            return
        known = [self.tokenizer, *(t for t in tokenizers if t is not self.tokenizer)]
        unique = list({t.digest: t for t in known}.values())
        threading.Thread(target=workers.warm, args=(unique,), name="guidance-compile-warm", daemon=True).start()

    def program_id(self, spec: ProgramSpec, tokenizer: Tokenizer | None = None) -> str:
        """The content-hash id ``spec`` has for a vocabulary (equal across machines)."""
        tok = tokenizer or self.tokenizer
        vocab = max(self.vocab_size, tok.vocab_size) if tok is self.tokenizer else tok.vocab_size
        return spec.cache_key(f"{tok.digest}:{vocab}")

    def _build(self, job: CompileJob, cancel: threading.Event | None) -> CompiledGuidanceProgram:
        key, spec, tok = job.key, job.spec, job.tokenizer
        limits = self.limits
        heap_before = heap_bytes()
        compiled = self._compile_grammar(spec, tok, cancel)
        vocab = self.vocab_size if tok is self.tokenizer else None
        stats = ProgramStats()
        # The other shards are built when the program gets its second session (its third state,
        # after the probe below): in a burst of one-off programs, each used by one session at
        # most, none pays for them.
        program = CompiledGuidanceProgram(
            key,
            spec,
            compiled,
            tok,
            limits,
            stats,
            vocab,
            shards=self._num_threads,
            schedule_shards=self._build_in_background,
            shards_after=3,
        )
        # Compute the first mask here, on the compile thread: it warms the caches every session
        # shares, and measures what a mask of this program costs before any request pays it.
        row = allocate_bitmask(1, program.vocab_size)
        state = program.create_state()
        # CPU time of this thread, not the clock: the mask runs here, and compile threads run at a
        # lower priority, so under load the clock would count the time others had the cores.
        mask_start = time.thread_time()
        try:
            with compile_boundary():
                state.fill_bitmask(row, 0)
        except GrammarError:
            raise GrammarError(_EMPTY_LANGUAGE) from None
        first_mask = time.thread_time() - mask_start
        program.bitmask_views.forget(row)  # the compile's own row: not kept alive by the program
        if first_mask * 1000 > limits.max_first_mask_ms:
            raise LimitExceeded(
                f"the constraint's first mask took {first_mask * 1000:.0f} ms, above the limit of "
                f"{limits.max_first_mask_ms} ms",
                "max_first_mask_ms",
            )
        if not state.is_accepting() and not _allows_more_than(row[0], program.eos_token_ids):
            # Nothing but EOS, and EOS is not allowed either: the language is empty (a rule that
            # only recurses, a cyclic $ref). Every session would be stuck at its first step.
            raise GrammarError(_EMPTY_LANGUAGE)
        stats.first_mask_seconds = first_mask  # before anyone else can see the program
        heap_after = heap_bytes()
        if heap_before is not None and heap_after is not None:
            # What the matcher, its lexer after the first mask, and the grammar hold: the cache's
            # charge for the program (core.heap; other threads' traffic meanwhile is counted too).
            stats.heap_bytes = max(0, heap_after - heap_before)
        return program

    def _build_in_background(self, build: Callable[[], None]) -> None:
        self._pool_for_fills().submit(build)

    def _compile_grammar(
        self, spec: ProgramSpec, tok: Tokenizer, cancel: threading.Event | None = None
    ) -> CompiledSpec:
        # In a worker process when there are some (its Python holds another GIL); the matcher and
        # the first mask are built by the caller either way: an LLMatcher cannot cross processes.
        # Until the workers are up (a few seconds after launch), here rather than wait for them.
        workers = self._workers
        if workers is not None and not workers.warming:
            return workers.compile(spec, tok, cancel)
        return compile_spec(spec, tok.ll, self.limits)

    def first_mask_seconds(self, program: CompiledGuidanceProgram) -> float | None:
        """CPU seconds ``program``'s first mask took at its compile (None: not measured)."""
        return program.stats.first_mask_seconds

    def get_program(self, program_id: str) -> CompiledGuidanceProgram | None:
        """A cached program by id, or None if it was never compiled here or was evicted."""
        return self.cache.get(program_id)

    # -- masks
    def allocate_bitmask(self, batch_size: int) -> NDArray[np.int32]:
        """An int32 ``[batch_size, ceil(vocab_size / 32)]`` array for this backend's vocabulary."""
        return allocate_bitmask(batch_size, self.vocab_size)

    def allocate_token_bitmask(self, batch_size: int) -> NDArray[np.int32]:
        """:meth:`allocate_bitmask` under the name vLLM, xgrammar and llguidance give it."""
        return allocate_bitmask(batch_size, self.vocab_size)

    def fill_next_token_bitmasks(
        self, states: Sequence[GuidanceState], bitmask: NDArray[np.int32], rows: Sequence[int] | None = None
    ) -> dict[int, GuidanceError]:
        """Fill row ``rows[i]`` (default ``i``) of ``bitmask`` with the mask of ``states[i]``.

        With ``num_threads`` > 1, a batch of at least ``parallel_min_batch`` states whose masks
        have recently cost at least ``parallel_min_mask_seconds`` each is filled in parallel: the
        states are grouped by matcher shard and the shards filled one thread each (llguidance
        drops the GIL while it computes a mask). Otherwise, a plain loop. All states must share
        the bitmask's width.

        Returns:
            The states whose mask could not be computed (an engine limit reached at this step),
            by position in ``states``: their rows are zero; every other row is filled. Usually empty.
        """
        if not states:
            return {}
        rows = list(range(len(states))) if rows is None else list(rows)
        words = states[0].program.mask_words
        if bitmask.dtype != np.int32 or bitmask.ndim != 2 or not bitmask.flags["C_CONTIGUOUS"]:
            raise ValueError("bitmask must be a C-contiguous 2-D np.int32 array")
        if bitmask.shape[1] != words or any(s.program.mask_words != words for s in states):
            raise ValueError("every state's vocabulary must match the bitmask width")
        if len(rows) != len(states) or max(rows) >= bitmask.shape[0] or min(rows) < 0:
            raise ValueError("row outside the bitmask")
        work = list(zip(range(len(states)), states, rows))
        threads = self._num_threads
        if threads == 1:  # nothing to choose: no timing either
            return _fill_group(work, bitmask)
        stats = {s.program.stats for s in states}
        start = time.perf_counter()
        if (
            len(states) < self.parallel_min_batch
            or sum(p.mask_seconds for p in stats) / len(stats) < self.parallel_min_mask_seconds
        ):
            failed = _fill_group(work, bitmask)
            per_mask = (time.perf_counter() - start) / len(states)
        else:
            failed = self._fill_parallel(work, bitmask, threads)
            per_mask = (time.perf_counter() - start) * threads / len(states)  # about what a loop would take
        for p in stats:
            p.note_mask_seconds(per_mask)
        return failed

    def _fill_parallel(
        self, work: Sequence[tuple[int, GuidanceState, int]], bitmask: NDArray[np.int32], threads: int
    ) -> dict[int, GuidanceError]:
        groups: list[list[tuple[int, GuidanceState, int]]] = [[] for _ in range(threads)]
        for item in work:
            groups[item[1].shard % threads].append(item)
        pool = self._pool_for_fills()
        futures = [pool.submit(_fill_group, g, bitmask) for g in groups[1:] if g]
        try:
            failed = _fill_group(groups[0], bitmask)
        finally:
            others = [f.result() for f in futures]  # every thread is done with the bitmask
        for more in others:
            failed.update(more)
        return failed

    def _pool_for_fills(self) -> LLGuidanceThreadPool:
        """The threads of parallel fills (and of building matcher shards), started on first use."""
        pool = self._fill_pool
        if pool is None:
            pool = self._fill_pool = LLGuidanceThreadPool(
                self._num_threads - 1, "guidance-fill", self.limits.llguidance_stack_bytes
            )
        return pool

    # -- housekeeping
    def get_stats(self) -> dict[str, Any]:
        """Cache figures and the tokenizer in use, as plain JSON-ready values."""
        stats: dict[str, Any] = {
            "cache": self.cache.stats(),
            "tokenizer": self.tokenizer.name,
            "vocab_size": self.vocab_size,
        }
        if self._workers is not None:
            stats["compile_workers"] = self._workers.stats()
        return stats

    def clear_cache(self) -> None:
        """Drop every cached program."""
        self.cache.clear()

    def close(self) -> None:
        """Stop the threads of parallel fills (started on first use; a later fill restarts them)
        and the compile workers (later compiles fail)."""
        pool, self._fill_pool = self._fill_pool, None
        if pool is not None:
            pool.shutdown(wait=True)
        if self._workers is not None:
            self._workers.close()


class AsyncGuidanceBackend(KindCompilers[Awaitable[CompiledGuidanceProgram]]):
    """A :class:`GuidanceBackend` bound to a compile executor, for event loops.

    Compiles run off the loop on the executor; concurrent compiles of one program are one
    (the cache's single flight). Everything else is the backend's own: use :attr:`backend`.

    Args:
        backend: the synchronous backend to wrap (or None to build one from ``kwargs``).
        max_workers: compile threads (bounded: extra compiles queue), when no ``executor`` is given.
        nice: how much lower the compile threads' OS priority is than the event loop's (Linux
            sets it per thread; elsewhere it is ignored). They build matchers and first masks
            without the GIL: the scheduler then gives the cores to the event loop first.
        executor: compile threads owned by the caller (with the engine stack, see
            :class:`~core.threads.LLGuidanceThreadPool`); :meth:`close` then leaves them running.
        kwargs: passed to :class:`GuidanceBackend` when ``backend`` is None.
    """

    def __init__(
        self,
        backend: GuidanceBackend | None = None,
        *,
        max_workers: int = 2,
        nice: int = 0,
        executor: Executor | None = None,
        **kwargs: Any,
    ) -> None:
        self.backend = backend or GuidanceBackend(**kwargs)
        self._owned = executor is None
        self.executor: Executor = executor or LLGuidanceThreadPool(
            max_workers, "guidance-compile", self.backend.limits.llguidance_stack_bytes, nice=nice
        )

    @property
    def tokenizer(self) -> Tokenizer:
        return self.backend.tokenizer

    @property
    def limits(self) -> Limits:
        return self.backend.limits

    async def compile(
        self, spec: ProgramSpec, tokenizer: Tokenizer | None = None
    ) -> tuple[CompiledGuidanceProgram, bool]:
        """Compile off the event loop (see :meth:`GuidanceBackend.compile_async`)."""
        return await self.backend.compile_async(spec, self.executor, tokenizer)

    async def _compile_spec(self, spec: ProgramSpec, tokenizer: Tokenizer | None) -> CompiledGuidanceProgram:
        return (await self.compile(spec, tokenizer))[0]

    def get_program(self, program_id: str) -> CompiledGuidanceProgram | None:
        """A cached program by id, or None."""
        return self.backend.get_program(program_id)

    def allocate_bitmask(self, batch_size: int) -> NDArray[np.int32]:
        """See :meth:`GuidanceBackend.allocate_bitmask`."""
        return self.backend.allocate_bitmask(batch_size)

    def get_stats(self) -> dict[str, Any]:
        """See :meth:`GuidanceBackend.get_stats`."""
        return self.backend.get_stats()

    def clear_cache(self) -> None:
        """See :meth:`GuidanceBackend.clear_cache`."""
        self.backend.clear_cache()

    def close(self) -> None:
        """Stop the compile threads if they are this object's (running compiles finish) and the backend."""
        if self._owned:
            self.executor.shutdown(wait=False, cancel_futures=True)
        self.backend.close()
