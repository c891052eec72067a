"""The backend: compiles constraints into cached programs and fills batches of masks.

:class:`GuidanceBackend` is synchronous and thread-safe; :class:`AsyncGuidanceBackend` runs
compiles in a bounded thread pool (llguidance drops the GIL while it builds a grammar) so an event
loop never blocks, and merges concurrent compiles of the same program into one.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from core.bitmask import allocate_bitmask
from core.cache import Flight, ProgramCache
from core.compiler import CompiledSpec
from core.kinds import check_options, compile_spec
from core.errors import GrammarError, GuidanceError, LimitExceeded
from core.limits import Limits
from core.program import CompiledGuidanceProgram
from core.session import GuidanceState
from core.spec import ProgramKind, ProgramSpec, spec_from_kwargs
from core.stats import ProgramStats
from core.threads import EngineThreadPool, run_on_engine_thread
from core.tokenizers import Tokenizer, load_default_tokenizer, load_tokenizer
from core.workers import CompileWorkers

__all__ = ["AsyncGuidanceBackend", "GuidanceBackend"]


_EMPTY_LANGUAGE = "the constraint matches no text at all (a rule without a base case, or a cyclic $ref?)"


def _fill_group(group: Sequence[tuple[int, GuidanceState, int]], bitmask: NDArray[np.int32]) -> dict[int, GuidanceError]:
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


class GuidanceBackend:
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
        self._fill_pool: EngineThreadPool | None = None
        self._workers = CompileWorkers(compile_processes, self.limits, nice=compile_nice) if compile_processes else None

    # -- compiling
    def compile(self, spec: ProgramSpec, tokenizer: Tokenizer | None = None) -> tuple[CompiledGuidanceProgram, bool]:
        """Compile ``spec`` (or take it from the cache); returns ``(program, cached)``."""
        tok = tokenizer or self.tokenizer
        key = self._checked_key(spec, tok)
        return self.cache.get_or_compile(key, lambda: self._compile_now(key, spec, tok))

    def _checked_key(self, spec: ProgramSpec, tok: Tokenizer) -> str:
        check_options(spec)
        return self.program_id(spec, tok)

    def _compile_now(self, key: str, spec: ProgramSpec, tok: Tokenizer) -> CompiledGuidanceProgram:
        # llguidance builds grammars recursively: on a thread whose stack fits the limits (core.threads)
        return run_on_engine_thread(self.limits.engine_stack_bytes, self._build, key, spec, tok)

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

    def _build(self, key: str, spec: ProgramSpec, tok: Tokenizer) -> CompiledGuidanceProgram:
        limits = self.limits
        compiled = self._compile_grammar(spec, tok)
        vocab = self.vocab_size if tok is self.tokenizer else None
        stats = ProgramStats()
        # The other shards are built when the program gets its second session (its third state,
        # after the probe below): in a burst of one-off programs, each used by one session at
        # most, none pays for them.
        program = CompiledGuidanceProgram(
            key, spec, compiled, tok, limits, stats, vocab,
            shards=self._num_threads, schedule_shards=self._build_in_background, shards_after=3,
        )
        # Compute the first mask here, on the compile thread: it warms the caches every session
        # shares, and measures what a mask of this program costs before any request pays it.
        row = allocate_bitmask(1, program.vocab_size)
        state = program.create_state()
        # CPU time of this thread, not the clock: the mask runs here, and compile threads run at a
        # lower priority, so under load the clock would count the time others had the cores.
        mask_start = time.thread_time()
        try:
            state.fill_bitmask(row, 0)
        except LimitExceeded as e:
            raise LimitExceeded(e.detail, e.limit) from None
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
        return program

    def _build_in_background(self, build: Callable[[], None]) -> None:
        self._pool_for_fills().submit(build)

    def _compile_grammar(self, spec: ProgramSpec, tok: Tokenizer) -> CompiledSpec:
        # In a worker process when there are some (its Python holds another GIL); the matcher and
        # the first mask are built by the caller either way: an LLMatcher cannot cross processes.
        # Until the workers are up (a few seconds after launch), here rather than wait for them.
        workers = self._workers
        if workers is not None and not workers.warming:
            return workers.compile(spec, tok)
        return compile_spec(spec, tok.ll, self.limits)

    def first_mask_seconds(self, program: CompiledGuidanceProgram) -> float | None:
        """CPU seconds ``program``'s first mask took at its compile (None: not measured)."""
        return program.stats.first_mask_seconds

    def _compile_kind(
        self,
        kind: ProgramKind,
        source: Any,
        variables: Mapping[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
        tokenizer: Tokenizer | None = None,
        reasoning: str | Mapping[str, Any] | None = None,
    ) -> CompiledGuidanceProgram:
        return self.compile(spec_from_kwargs(kind, source, variables, options, reasoning), tokenizer)[0]

    def compile_template(
        self, template_str: str, variables: Mapping[str, Any] | None = None, *, tokenizer: Tokenizer | None = None
    ) -> CompiledGuidanceProgram:
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
    ) -> CompiledGuidanceProgram:
        """Compile a JSON schema (compact output unless ``whitespace`` allows up to N spaces)."""
        options = {"whitespace": whitespace} if whitespace else None
        return self._compile_kind("json_schema", schema, None, options, tokenizer)

    def compile_regex(self, pattern: str, *, tokenizer: Tokenizer | None = None) -> CompiledGuidanceProgram:
        """Compile a regex that the whole output must match."""
        return self._compile_kind("regex", pattern, tokenizer=tokenizer)

    def compile_grammar(self, lark: str, *, tokenizer: Tokenizer | None = None) -> CompiledGuidanceProgram:
        """Compile a Lark grammar (llguidance dialect)."""
        return self._compile_kind("grammar", lark, tokenizer=tokenizer)

    def compile_choice(self, options: Sequence[str], *, tokenizer: Tokenizer | None = None) -> CompiledGuidanceProgram:
        """Compile a choice of exactly one of ``options``."""
        return self._compile_kind("choice", list(options), tokenizer=tokenizer)

    def compile_structural_tag(
        self, tag: Mapping[str, Any] | str, *, reasoning: str | Mapping[str, Any] | None = None,
        tokenizer: Tokenizer | None = None,
    ) -> CompiledGuidanceProgram:
        """Compile an xgrammar/vLLM structural tag (``structures`` + ``triggers``, or ``format``)."""
        return self._compile_kind("structural_tag", tag, tokenizer=tokenizer, reasoning=reasoning)

    def compile_tools(
        self, tools: Sequence[Mapping[str, Any]], tool_format: str, *, tool_choice: str | Mapping[str, Any] = "auto",
        parallel_tool_calls: bool = True, reasoning: str | Mapping[str, Any] | None = None,
        tokenizer: Tokenizer | None = None,
    ) -> CompiledGuidanceProgram:
        """Compile OpenAI-style ``tools`` in a model family's format (variables ``tool_calls``, ``content``)."""
        options = {"tool_format": tool_format, "tool_choice": tool_choice, "parallel_tool_calls": parallel_tool_calls}
        return self._compile_kind("tools", list(tools), None, options, tokenizer, reasoning)

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

    def _pool_for_fills(self) -> EngineThreadPool:
        """The threads of parallel fills (and of building matcher shards), started on first use."""
        pool = self._fill_pool
        if pool is None:
            pool = self._fill_pool = EngineThreadPool(
                self._num_threads - 1, "guidance-fill", self.limits.engine_stack_bytes
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


class AsyncGuidanceBackend:
    """:class:`GuidanceBackend` for event loops: compiles run in a bounded pool, single flight.

    Args:
        backend: the synchronous backend to wrap (or None to build one from ``kwargs``).
        max_workers: compile threads (bounded: extra compiles queue).
        nice: how much lower the compile threads' OS priority is than the event loop's (Linux
            sets it per thread; elsewhere it is ignored). They build matchers and first masks
            without the GIL: the scheduler then gives the cores to the event loop first.
        kwargs: passed to :class:`GuidanceBackend` when ``backend`` is None.
    """

    def __init__(
        self, backend: GuidanceBackend | None = None, *, max_workers: int = 2, nice: int = 0, **kwargs: Any
    ) -> None:
        self.backend = backend or GuidanceBackend(**kwargs)
        self._pool = EngineThreadPool(
            max_workers, "guidance-compile", self.backend.limits.engine_stack_bytes, nice=nice
        )
        self.max_workers = max_workers

    @property
    def tokenizer(self) -> Tokenizer:
        return self.backend.tokenizer

    @property
    def limits(self) -> Limits:
        return self.backend.limits

    async def compile(self, spec: ProgramSpec, tokenizer: Tokenizer | None = None) -> tuple[CompiledGuidanceProgram, bool]:
        """Compile off the event loop; concurrent calls for one program share one compile.

        The flight is the cache's own (:meth:`~core.cache.ProgramCache.join`): callers on threads
        and on event loops wait for the same compile.
        """
        backend = self.backend
        tok = tokenizer or backend.tokenizer
        key = backend._checked_key(spec, tok)
        got = backend.cache.join(key)
        if not isinstance(got, Flight):
            return got, True
        if not got.leader:
            return await asyncio.shield(asyncio.wrap_future(got.future)), True
        loop = asyncio.get_running_loop()
        compile_now = functools.partial(backend._compile_now, key, spec, tok)
        try:
            run = loop.run_in_executor(self._pool, backend.cache.fly, got, compile_now)
        except RuntimeError as e:  # the pool is closed
            backend.cache.abort(got, e)
            raise
        try:
            # Shielded: a caller that gives up does not stop the compile others may be waiting for.
            return await asyncio.shield(run), False
        except asyncio.CancelledError:
            if run.cancelled():  # the pool dropped the compile before it ran (it is closing)
                backend.cache.abort(got, RuntimeError("the compile pool was closed"))
            raise

    async def _compile_kind(
        self, kind: ProgramKind, source: Any, variables: Mapping[str, Any] | None = None,
        options: Mapping[str, Any] | None = None, tokenizer: Tokenizer | None = None,
        reasoning: str | Mapping[str, Any] | None = None,
    ) -> CompiledGuidanceProgram:
        return (await self.compile(spec_from_kwargs(kind, source, variables, options, reasoning), tokenizer))[0]

    async def compile_template(
        self, template_str: str, variables: Mapping[str, Any] | None = None, *, tokenizer: Tokenizer | None = None
    ) -> CompiledGuidanceProgram:
        """Async :meth:`GuidanceBackend.compile_template`."""
        return await self._compile_kind("template", template_str, variables, None, tokenizer)

    async def compile_json_schema(
        self, schema: Mapping[str, Any] | bool | str, *, whitespace: int | None = None,
        tokenizer: Tokenizer | None = None,
    ) -> CompiledGuidanceProgram:
        """Async :meth:`GuidanceBackend.compile_json_schema`."""
        options = {"whitespace": whitespace} if whitespace else None
        return await self._compile_kind("json_schema", schema, None, options, tokenizer)

    async def compile_regex(self, pattern: str, *, tokenizer: Tokenizer | None = None) -> CompiledGuidanceProgram:
        """Async :meth:`GuidanceBackend.compile_regex`."""
        return await self._compile_kind("regex", pattern, tokenizer=tokenizer)

    async def compile_grammar(self, lark: str, *, tokenizer: Tokenizer | None = None) -> CompiledGuidanceProgram:
        """Async :meth:`GuidanceBackend.compile_grammar`."""
        return await self._compile_kind("grammar", lark, tokenizer=tokenizer)

    async def compile_choice(self, options: Sequence[str], *, tokenizer: Tokenizer | None = None) -> CompiledGuidanceProgram:
        """Async :meth:`GuidanceBackend.compile_choice`."""
        return await self._compile_kind("choice", list(options), tokenizer=tokenizer)

    async def compile_structural_tag(
        self, tag: Mapping[str, Any] | str, *, reasoning: str | Mapping[str, Any] | None = None,
        tokenizer: Tokenizer | None = None,
    ) -> CompiledGuidanceProgram:
        """Async :meth:`GuidanceBackend.compile_structural_tag`."""
        return await self._compile_kind("structural_tag", tag, tokenizer=tokenizer, reasoning=reasoning)

    async def compile_tools(
        self, tools: Sequence[Mapping[str, Any]], tool_format: str, *, tool_choice: str | Mapping[str, Any] = "auto",
        parallel_tool_calls: bool = True, reasoning: str | Mapping[str, Any] | None = None,
        tokenizer: Tokenizer | None = None,
    ) -> CompiledGuidanceProgram:
        """Async :meth:`GuidanceBackend.compile_tools`."""
        options = {"tool_format": tool_format, "tool_choice": tool_choice, "parallel_tool_calls": parallel_tool_calls}
        return await self._compile_kind("tools", list(tools), None, options, tokenizer, reasoning)

    def start_workers(self, tokenizers: Sequence[Tokenizer] = ()) -> None:
        """See :meth:`GuidanceBackend.start_workers`."""
        self.backend.start_workers(tokenizers)

    def get_program(self, program_id: str) -> CompiledGuidanceProgram | None:
        """A cached program by id, or None."""
        return self.backend.get_program(program_id)

    def first_mask_seconds(self, program: CompiledGuidanceProgram) -> float | None:
        """See :meth:`GuidanceBackend.first_mask_seconds`."""
        return self.backend.first_mask_seconds(program)

    def allocate_bitmask(self, batch_size: int) -> NDArray[np.int32]:
        """See :meth:`GuidanceBackend.allocate_bitmask`."""
        return self.backend.allocate_bitmask(batch_size)

    def allocate_token_bitmask(self, batch_size: int) -> NDArray[np.int32]:
        """See :meth:`GuidanceBackend.allocate_token_bitmask`."""
        return self.backend.allocate_bitmask(batch_size)

    def get_stats(self) -> dict[str, Any]:
        """See :meth:`GuidanceBackend.get_stats`."""
        return self.backend.get_stats()

    def clear_cache(self) -> None:
        """See :meth:`GuidanceBackend.clear_cache`."""
        self.backend.clear_cache()

    def close(self) -> None:
        """Stop the compile pool (running compiles finish) and the fill threads."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.backend.close()
