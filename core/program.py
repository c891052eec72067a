"""Compiled programs: immutable, shared by every session and every worker.

A :class:`CompiledGuidanceProgram` holds the llguidance grammar and a pristine matcher; each
session's state is a ``deep_copy`` of it, which shares llguidance's lexer and token caches, so a
mask computed for one session makes the same state cheap for all others.

Those shared caches are locked inside llguidance: masks of copies of one matcher do not compute
in parallel (two threads took 1.0 to 1.5x the time of one). A program made for ``lanes`` threads
therefore keeps one pristine matcher per lane, each with caches of its own, and deals its
sessions over the lanes in turn; a batch's masks are then filled one thread per lane.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import llguidance
import numpy as np
from numpy.typing import NDArray

from core.bitmask import mask_words
from core.captures import CaptureLayout
from core.compiler import CompiledSpec
from core.errors import GrammarError
from core.limits import Limits
from core.template import GuidanceTemplate, Node
from core.threads import run_on_engine_thread

if TYPE_CHECKING:
    from core.session import GuidanceState
    from core.tokenizers import Tokenizer

__all__ = ["CompiledGuidanceProgram", "ProgramKind", "ProgramSpec"]

ProgramKind = Literal["template", "json_schema", "regex", "grammar", "choice"]
PROGRAM_KINDS: tuple[ProgramKind, ...] = ("template", "json_schema", "regex", "grammar", "choice")

# Bumped whenever compilation changes meaning, so stale ids never alias new programs.
_COMPILER_VERSION = 2


@dataclass(frozen=True)
class ProgramSpec:
    """What a program is compiled from: everything that determines its masks.

    Attributes:
        kind: one of ``template``, ``json_schema``, ``regex``, ``grammar``, ``choice``.
        source: the template text, schema (object or JSON text), regex, Lark text, or list of choices.
        variables: compile-time variables (templates only).
        options: kind-specific options: ``whitespace`` (int) for JSON schemas.
    """

    kind: ProgramKind
    source: Any
    variables: Mapping[str, Any] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)

    def cache_key(self, tokenizer_fingerprint: str) -> str:
        """A content hash: equal on every machine for the same spec and vocabulary."""
        # Key order is kept, not sorted: llguidance fixes object properties to a schema's order,
        # so schemas differing only in order are different programs. JSON parsers keep order, so
        # the same request still hashes alike on every replica.
        payload = json.dumps(
            [_COMPILER_VERSION, self.kind, self.source, dict(self.variables), dict(self.options), tokenizer_fingerprint],
            ensure_ascii=False,
            separators=(",", ":"),
            default=str,
        )
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:32]

    def to_dict(self) -> dict[str, Any]:
        """The spec as a compile request body (what a client replays)."""
        out: dict[str, Any] = {self.kind: self.source}
        if self.variables:
            out["variables"] = dict(self.variables)
        if self.options:
            out["options"] = dict(self.options)
        return out


class CompiledGuidanceProgram:
    """An immutable compiled constraint for one vocabulary.

    Create sessions with :meth:`create_state`; the program itself is never advanced and is safe
    to share between threads.
    """

    def __init__(
        self,
        program_id: str,
        spec: ProgramSpec,
        compiled: CompiledSpec,
        tokenizer: Tokenizer,
        limits: Limits,
        compile_ms: float,
        vocab_size: int | None = None,
        lanes: int = 1,
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
        self.compile_ms = compile_ms
        self.vocab_size = max(vocab_size or 0, tokenizer.vocab_size)
        self.mask_words = mask_words(self.vocab_size)
        self.eos_token_id = tokenizer.eos_token_id
        # llguidance writes the tokenizer's words; wider model vocabularies get zero words after.
        self.ll_mask_words = mask_words(tokenizer.ll.vocab_size)
        root = self._make_root()
        if root.is_error():
            raise GrammarError(root.get_error()[:1000])
        # One pristine matcher per lane. The first is built here; the others by add_lanes(), which
        # the backend runs in the background after the compile: until then sessions take lane 0.
        self.lanes = max(lanes, 1)
        self._roots = [root]
        self._lanes_lock = threading.Lock()
        self._deal = itertools.count()
        # Recent seconds per mask in batched fills (a moving average), for choosing parallel fills.
        self.mask_seconds = 0.0
        self.size_bytes = len(self.grammar.encode("utf-8")) + 4096
        # llguidance's validate_tokens does not count max_tokens past the first token: programs
        # that use it validate by consuming on a copy instead.
        self.exact_validation = "max_tokens=" in self.grammar
        self._bitmask_view: BitmaskView | None = None
        # The last llguidance limit a session of this program reached mid-generation (None: never),
        # and how many times a lane's parser was rebuilt because its shared lexer ran out.
        self.engine_limit: dict[str, str] | None = None
        self.lane_renewals = 0
        self._template_nodes: list[Node] | None = None

    def __repr__(self) -> str:
        return f"<CompiledGuidanceProgram {self.program_id} kind={self.kind} vocab={self.vocab_size}>"

    # -- sessions
    def _make_root(self) -> llguidance.LLMatcher:
        return llguidance.LLMatcher(self.tokenizer.ll, self.grammar, log_level=0, limits=self.limits.parser_limits())

    def next_lane(self) -> int:
        """The lane of a new session: the lanes built so far, in turn."""
        built = len(self._roots)
        return next(self._deal) % built if built > 1 else 0

    def add_lanes(self) -> None:
        """Build the parsers of the lanes past the first and warm their caches with a first mask.

        Idempotent and thread-safe; it costs about what the compile did, so the backend runs it
        off the request path.
        """
        with self._lanes_lock:
            row = np.zeros(self.ll_mask_words, dtype=np.int32)
            while len(self._roots) < self.lanes:
                root = self._make_root()
                root.deep_copy().unsafe_compute_mask_ptr(int(row.ctypes.data), row.nbytes)
                self._roots.append(root)

    def new_matcher(self, lane: int = 0) -> llguidance.LLMatcher:
        """A fresh matcher at the start of the program (shares the caches of its lane)."""
        return self._roots[lane].deep_copy()

    def lane_root(self, lane: int) -> llguidance.LLMatcher:
        """The pristine matcher whose caches the sessions of ``lane`` share."""
        return self._roots[lane]

    def renew_lane(self, lane: int, spent: llguidance.LLMatcher) -> None:
        """Replace ``lane``'s parser when it is still ``spent``, whose shared lexer ran out.

        Deep copies of one matcher share its lexer, and the lexer's states and expressions only
        grow: a program in long use can exhaust ``max_lexer_states`` for every session at once
        (measured: about 20 random walks of a schema with a long ``pattern``). Sessions that meet
        the error rebuild on the new parser by replaying their tokens (``GuidanceState``).
        """
        with self._lanes_lock:
            if lane < len(self._roots) and self._roots[lane] is spent:
                self._roots[lane] = run_on_engine_thread(self.limits.engine_stack_bytes, self._make_root)
                self.lane_renewals += 1

    def note_engine_limit(self, limit: str, detail: str) -> None:
        """Remember that a session of this program reached an llguidance limit (for new sessions)."""
        self.engine_limit = {"limit": limit, "detail": detail}

    def note_mask_seconds(self, seconds: float) -> None:
        """Fold one batch's seconds per mask into :attr:`mask_seconds`."""
        self.mask_seconds = seconds if not self.mask_seconds else 0.8 * self.mask_seconds + 0.2 * seconds

    def template_nodes(self) -> list[Node] | None:
        """The template's parsed nodes (templates only; parsed again on first use, for partial values)."""
        if self.kind != "template":
            return None
        if self._template_nodes is None:
            self._template_nodes = GuidanceTemplate(self.spec.source, self.spec.variables, self.limits).nodes
        return self._template_nodes

    def create_state(self) -> GuidanceState:
        """A new per-request state at the start of the program."""
        from core.session import GuidanceState

        return GuidanceState(self)

    # -- masks
    def fill_bitmask(self, state: GuidanceState, bitmask: NDArray[np.int32], index: int = 0) -> None:
        """Write the tokens allowed next for ``state`` into row ``index`` of ``bitmask``."""
        state.fill_bitmask(bitmask, index)

    def is_terminated(self, state: GuidanceState) -> bool:
        """Whether ``state`` has consumed EOS (or can accept nothing more)."""
        return state.is_terminated()

    def bitmask_view(self, bitmask: NDArray[np.int32]) -> BitmaskView:
        """Check a caller's bitmask once and remember its address (engines reuse one array).

        The view is kept in one attribute assigned atomically, so threads sharing this program
        with different arrays never mix up addresses; the reference held also stops numpy from
        resizing the array under us.
        """
        view = self._bitmask_view
        if view is not None and view.array is bitmask:
            return view
        if not isinstance(bitmask, np.ndarray) or bitmask.dtype != np.int32 or bitmask.ndim != 2:
            raise ValueError("bitmask must be a 2-D np.int32 array")
        if not bitmask.flags["C_CONTIGUOUS"] or not bitmask.flags["WRITEABLE"]:
            raise ValueError("bitmask must be C-contiguous and writeable")
        if bitmask.shape[1] < self.mask_words:
            raise ValueError(f"bitmask rows have {bitmask.shape[1]} words, need {self.mask_words}")
        view = BitmaskView(
            bitmask,
            int(bitmask.ctypes.data),
            bitmask.shape[0],
            bitmask.shape[1] * 4,
            self.ll_mask_words * 4,
            bitmask.shape[1] > self.ll_mask_words,
        )
        self._bitmask_view = view
        return view

    def forget_bitmask(self, bitmask: NDArray[np.int32]) -> None:
        """Stop remembering ``bitmask`` (see :meth:`bitmask_view`), so a per-request buffer's
        memory is given back when its request ends rather than when this program next fills
        another array."""
        view = self._bitmask_view
        if view is not None and view.array is bitmask:
            self._bitmask_view = None


@dataclass(frozen=True)
class BitmaskView:
    """A validated bitmask and where its rows are in memory."""

    array: NDArray[np.int32]
    base: int
    rows: int
    row_bytes: int
    fill_bytes: int
    wide: bool


def spec_from_kwargs(kind: ProgramKind, source: Any, variables: Mapping[str, Any] | None, options: Mapping[str, Any] | None) -> ProgramSpec:
    """Build a :class:`ProgramSpec`, normalising a few shapes (list choices, options dict)."""
    if kind not in PROGRAM_KINDS:
        raise ValueError(f"unknown program kind {kind!r}")
    if kind == "choice" and isinstance(source, Sequence) and not isinstance(source, str):
        source = list(source)
    return ProgramSpec(kind, source, dict(variables or {}), dict(options or {}))
