"""Compiled programs: immutable, shared by every session and every worker.

A :class:`CompiledGuidanceProgram` holds the llguidance grammar, how to read its captures, and its
vocabulary. Each session's state is a ``deep_copy`` of a pristine matcher of the program's
(:mod:`core.shards`), which shares llguidance's lexer and token caches: a mask computed for one
session makes the same state cheap for all others. What changes while sessions run is kept apart,
in objects made for it: the matcher shards (a cache, with its lock), the checked view of the last
bitmask filled (:class:`~core.bitmask.BitmaskViews`), and the run-time figures the backend reads
(:class:`~core.stats.ProgramStats`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING

import llguidance
import numpy as np
from numpy.typing import NDArray

from core.bitmask import BitmaskViews, mask_words
from core.captures import CaptureLayout
from core.compiler import CompiledSpec
from core.errors import GrammarError, refusal
from core.limits import Limits
from core.session import GuidanceState
from core.shards import MatcherShards
from core.spec import ProgramKind, ProgramSpec
from core.stats import ProgramStats
from core.template import Node
from core.variables import VariableReader

if TYPE_CHECKING:
    from core.tokenizers import Tokenizer

__all__ = ["CompiledGuidanceProgram"]

# What the cache counts for a program beyond its grammar text (the objects around it).
_OVERHEAD_BYTES = 4096


class CompiledGuidanceProgram:
    """An immutable compiled constraint for one vocabulary.

    Create sessions with :meth:`create_state`; the program itself is never advanced and is safe
    to share between threads. Its attributes are set once, when it is built (setting one later
    raises ``AttributeError``); the template's parsed nodes are computed on first use. It
    implements :class:`~core.session.StateProgram`, what a state needs from its program.

    Args:
        program_id: its content-hash id (:meth:`~core.spec.ProgramSpec.cache_key`).
        spec: what it was compiled from.
        compiled: the llguidance grammar and its capture layout.
        tokenizer: the vocabulary.
        limits: the limits its matchers run under.
        stats: where its sessions report what they meet (created and read by the backend).
        vocab_size: the model's logits width, when wider than the tokenizer's.
        shards: pristine matchers to deal sessions over, one per fill thread
            (:mod:`core.shards`); the first is built here, the others by :meth:`build_shards`.
        schedule_shards: runs the other shards' build in the background once the program is in
            use (see :class:`~core.shards.MatcherShards`); None: only :meth:`build_shards` builds them.
        shards_after: the state whose creation schedules that build.

    Raises:
        GrammarError: llguidance refuses the grammar.
        LimitExceeded: the grammar breaks one of llguidance's limits.
    """

    def __init__(
        self,
        program_id: str,
        spec: ProgramSpec,
        compiled: CompiledSpec,
        tokenizer: Tokenizer,
        limits: Limits,
        stats: ProgramStats,
        vocab_size: int | None = None,
        shards: int = 1,
        schedule_shards: Callable[[Callable[[], None]], object] | None = None,
        shards_after: int = 1,
    ) -> None:
        self.program_id = program_id
        self.spec = spec
        self.kind: ProgramKind = spec.kind
        self.grammar = compiled.grammar
        self.layout: CaptureLayout = compiled.layout
        #: What the constraint asks that is compiled as an annotation only (JSON schemas' formats).
        self.ignored: tuple[str, ...] = compiled.ignored
        self.tokenizer = tokenizer
        self.limits = limits
        self.stats = stats
        self.vocab_size = max(vocab_size or 0, tokenizer.vocab_size)
        self.mask_words = mask_words(self.vocab_size)
        self.eos_token_id = tokenizer.eos_token_id  # the primary end token
        self.eos_token_ids = frozenset(tokenizer.eos_token_ids)
        # llguidance writes the tokenizer's words; wider model vocabularies get zero words after.
        self.ll_mask_words = mask_words(tokenizer.ll.vocab_size)
        self._text_bytes = len(self.grammar.encode("utf-8")) + _OVERHEAD_BYTES
        # llguidance's validate_tokens does not count max_tokens past the first token: programs
        # that use it validate by consuming on a copy instead.
        self.exact_validation = "max_tokens=" in self.grammar
        # The matcher that validated the grammar, when the compile ran in this process (a pristine
        # one, built under the same limits): building it again would double the compile's cost.
        root = compiled.matcher if compiled.matcher is not None else self._make_root()
        if root.is_error():
            raise refusal(root.get_error()[:1000], GrammarError)
        self.shards = MatcherShards(
            root,
            self._make_root,
            shards,
            self.ll_mask_words,
            limits.llguidance_stack_bytes,
            schedule_shards,
            shards_after,
        )
        self.bitmask_views = BitmaskViews(self.mask_words, self.ll_mask_words)
        self._built = True

    def __setattr__(self, name: str, value: object) -> None:
        if "_built" in self.__dict__:
            raise AttributeError(f"a compiled program is immutable: cannot set {name!r}")
        object.__setattr__(self, name, value)

    @property
    def size_bytes(self) -> int:
        """What the program holds, for the cache's byte bound: the C heap its compile left
        allocated (measured, :attr:`~core.stats.ProgramStats.heap_bytes`), at least its grammar
        text and a fixed overhead. Set before the cache sees the program; fixed from then on."""
        return max(self._text_bytes, self.stats.heap_bytes)

    def __repr__(self) -> str:
        return f"<CompiledGuidanceProgram {self.program_id} kind={self.kind} vocab={self.vocab_size}>"

    def _make_root(self) -> llguidance.LLMatcher:
        return llguidance.LLMatcher(self.tokenizer.ll, self.grammar, log_level=0, limits=self.limits.parser_limits())

    def build_shards(self) -> None:
        """Build the matcher shards past the first (see :meth:`core.shards.MatcherShards.build`)."""
        self.shards.build()

    @functools.cached_property
    def _variable_reader(self) -> VariableReader:
        # Built on first use: a compile (perhaps in a worker process) hands back the grammar, not
        # the parsed template or tools.
        return VariableReader(self.spec, self.layout, self.limits)

    def variable_reader(self) -> VariableReader:
        """How its sessions' variables are read (see :mod:`core.variables`)."""
        return self._variable_reader

    def template_nodes(self) -> list[Node] | None:
        """The template's parsed nodes (templates only), for partial values."""
        return self._variable_reader.nodes

    # -- sessions
    def create_state(self) -> GuidanceState:
        """A new per-request state at the start of the program."""
        return GuidanceState(self)

    def fill_bitmask(self, state: GuidanceState, bitmask: NDArray[np.int32], index: int = 0) -> None:
        """Write the tokens allowed next for ``state`` into row ``index`` of ``bitmask``."""
        state.fill_bitmask(bitmask, index)

    def is_terminated(self, state: GuidanceState) -> bool:
        """Whether ``state`` has consumed EOS (or can accept nothing more)."""
        return state.is_terminated()
