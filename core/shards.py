"""Matcher shards: the pristine llguidance matchers that a program's sessions are dealt over.

Each session's matcher is a ``deep_copy`` of a pristine one and shares its lexer and token
caches, so a mask computed for one session makes the same state cheap for all the others. Those
shared caches are locked inside llguidance: masks of copies of one matcher do not compute in
parallel (measured in docs/benchmarks.md, "Parallel fills"). A program filled by several threads
therefore keeps one pristine matcher per thread, a *shard* with caches of its own, and deals its
sessions over the shards in turn; a batch's masks are then filled one thread per shard
(:meth:`core.backend.GuidanceBackend.fill_next_token_bitmasks`).

The shards are an inherently mutable cache: the shards past the first are built off the request
path once the program is in use (its ``build_after``-th state: a one-off program, the most common
kind in a burst of new schemas, never pays for them), and a shard whose shared lexer ran out is
replaced. :class:`MatcherShards` is their one owner, and its lock the only one they need.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable

import llguidance
import numpy as np

from core.threads import run_on_llguidance_thread

__all__ = ["MatcherShards"]


class MatcherShards:
    """The pristine matchers of one program, one per fill thread (thread-safe).

    Args:
        first: the first shard's matcher, built by the compile.
        make: builds another pristine matcher (it recurses natively: it runs on an engine thread).
        count: how many shards the program wants (one per fill thread).
        fill_words: words of a mask row as llguidance writes it (to warm a new shard's caches).
        stack_bytes: stack of the engine thread a shard is rebuilt on
            (:attr:`core.limits.Limits.llguidance_stack_bytes`).
        schedule: runs :meth:`build` in the background (e.g. a thread pool's ``submit``), called
            once, when the ``build_after``-th state is dealt; None: :meth:`build` is called by hand.
        build_after: how many states the program deals before its other shards are worth building.
    """

    def __init__(
        self,
        first: llguidance.LLMatcher,
        make: Callable[[], llguidance.LLMatcher],
        count: int,
        fill_words: int,
        stack_bytes: int,
        schedule: Callable[[Callable[[], None]], object] | None = None,
        build_after: int = 1,
    ) -> None:
        self.count = max(count, 1)
        self._schedule = schedule if self.count > 1 else None
        self._build_at = max(build_after, 1) - 1
        self._make = make
        self._fill_words = fill_words
        self._stack_bytes = stack_bytes
        self._roots = [first]
        self._lock = threading.Lock()
        self._deal = itertools.count()

    def deal(self) -> int:
        """The shard of a new session: the shards built so far, in turn."""
        n = next(self._deal)
        built = len(self._roots)  # before the build is scheduled: it may finish at once
        if n == self._build_at and self._schedule is not None:
            self._schedule(self.build)
        return n % built if built > 1 else 0

    @property
    def built(self) -> int:
        """How many shards exist so far (the first from the start; the others once built)."""
        return len(self._roots)

    def root(self, shard: int) -> llguidance.LLMatcher:
        """The pristine matcher whose caches the sessions of ``shard`` share."""
        return self._roots[shard]

    def build(self) -> None:
        """Build the shards past the first and warm their caches with a first mask.

        Idempotent; it costs about what the compile did, so the backend runs it off the request
        path. Until it is done, new sessions are dealt over the shards built so far.
        """
        with self._lock:
            row = np.zeros(self._fill_words, dtype=np.int32)
            while len(self._roots) < self.count:
                root = self._make()
                root.deep_copy().unsafe_compute_mask_ptr(int(row.ctypes.data), row.nbytes)
                self._roots.append(root)

    def renew(self, shard: int, spent: llguidance.LLMatcher) -> bool:
        """Replace ``shard``'s matcher when it is still ``spent``, whose shared lexer ran out.

        Deep copies of one matcher share its lexer, and the lexer's states and expressions only
        grow: a program in long use can exhaust ``max_lexer_states`` for every session at once.
        Sessions that meet the error rebuild on the new matcher by replaying their tokens
        (:class:`~core.session.GuidanceState`).

        Returns:
            Whether this call replaced it (False: another session already had).
        """
        with self._lock:
            if shard < len(self._roots) and self._roots[shard] is spent:
                self._roots[shard] = run_on_llguidance_thread(self._stack_bytes, self._make)
                return True
            return False
