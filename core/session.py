"""Per-request state: small and mutable, one per sequence being decoded.

:class:`GuidanceState` is the engine-neutral state (accept, validate, rollback, fork, masks,
captured variables); :class:`~core.grammar.GuidanceGrammar` wraps one for an inference engine. A
state sees its program only through
:class:`StateProgram` (what a state needs from it), which the compiled program implements.

EOS is handled here, not by llguidance's validation (which never validates EOS): EOS is allowed
exactly when the program is in an accepting state, and after EOS the state is terminated and the
mask allows EOS only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from time import perf_counter as _perf_counter
from time import thread_time as _thread_time
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import numpy as np
from numpy.typing import NDArray

from core.bitmask import allocate_bitmask, allowed_tokens
from core.errors import (
    EngineLimitReached,
    GuidanceError,
    InvalidTokens,
    LimitExceeded,
    TokenRejected,
    classify_llguidance_error,
    engine_failure,
)

if TYPE_CHECKING:
    import llguidance

    from core.bitmask import BitmaskView, BitmaskViews
    from core.captures import CaptureLayout
    from core.limits import Limits
    from core.shards import MatcherShards
    from core.stats import ProgramStats
    from core.tokenizers import Tokenizer
    from core.variables import VariableReader

__all__ = ["GuidanceState", "StateProgram"]

_T = TypeVar("_T")


def _spent(error: str) -> bool:
    """Whether a matcher stopped on an engine limit (not on a token the constraint refuses)."""
    return classify_llguidance_error(error) is not None


class StateProgram(Protocol):
    """What a state needs from its program; :class:`~core.program.CompiledGuidanceProgram` is one.

    Everything here is fixed when the program is built, except the three objects made to change
    while sessions run: the matcher shards, the bitmask views and the run-time figures.
    """

    @property
    def vocab_size(self) -> int:
        """The model's logits width (at least the tokenizer's)."""

    @property
    def mask_words(self) -> int:
        """Words of a mask row for :attr:`vocab_size`."""

    @property
    def ll_mask_words(self) -> int:
        """Words of a mask row as llguidance writes it (the tokenizer's vocabulary)."""

    @property
    def eos_token_ids(self) -> frozenset[int]:
        """The ids that end the text (any one of them)."""

    @property
    def exact_validation(self) -> bool:
        """Whether tokens must be validated by consuming them on a copy (``max_tokens`` lexemes)."""

    @property
    def limits(self) -> Limits:
        """The limits the program's matchers run under."""

    @property
    def tokenizer(self) -> Tokenizer:
        """The vocabulary."""

    @property
    def layout(self) -> CaptureLayout:
        """How to read llguidance's captures as variables."""

    @property
    def shards(self) -> MatcherShards:
        """The pristine matchers a state copies (and renews when their shared lexer ran out)."""

    @property
    def bitmask_views(self) -> BitmaskViews:
        """The checked view of the last bitmask filled."""

    @property
    def stats(self) -> ProgramStats:
        """Where a state reports the engine limits it meets and the shards it renews."""

    def variable_reader(self) -> VariableReader:
        """How the variables are read from captures and text."""

    def create_state(self) -> GuidanceState:
        """A new state at the start of the program."""


class _SpentMatcher(Exception):
    """An llguidance call left the matcher in its error state (internal: never leaves this module)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class GuidanceState:
    """The decoding state of one request against a compiled program (:class:`StateProgram`).

    Not thread-safe: one request, one caller at a time (the service serialises per session).

    What is read of a step (forced tokens, variables, partial values) is computed once per step,
    whichever of them a caller asks for and in whatever order, and kept until the state moves;
    the text is decoded incrementally, so reading a step costs the same at every length.
    """

    __slots__ = (
        "_data_bytes", "_data_tokens", "_eos", "_fast", "_forced", "_matcher", "_reads", "_root", "_terminated",
        "_vocab",
        "program", "shard", "tokens",
    )  # fmt: skip

    def __init__(self, program: StateProgram) -> None:
        self.program = program
        # copies of program constants for the one-token path (attribute chains cost here)
        self._vocab = program.vocab_size
        self._eos = program.eos_token_ids
        self._fast = not program.exact_validation
        self.shard = program.shards.deal()  # which of the program's matcher shards it copies
        self._root = program.shards.root(self.shard)  # the parser whose caches this state shares
        self._matcher: llguidance.LLMatcher = self._root.deep_copy()
        self._terminated = False
        self.tokens: list[int] = []
        # What this step's readers computed: the forced tokens (asked at most steps, kept as a
        # tuple: most are empty, and the empty tuple costs nothing), and the variables and partial
        # values; None once the state moves. Every change of the tokens goes through _advance,
        # rollback, reset or _recover, which clear them.
        self._forced: tuple[int, ...] | None = None
        self._reads: dict[Any, Any] | None = None
        # The bytes of tokens[:_data_tokens], decoded when first read and extended as tokens come.
        self._data_bytes = b""
        self._data_tokens = 0

    # -- advancing
    def check_tokens(self, tokens: Sequence[int]) -> None:
        """Raise :class:`InvalidTokens` or :class:`LimitExceeded` for ids no request may send."""
        limit = self.program.limits.max_tokens_per_accept
        if len(tokens) > limit:
            raise LimitExceeded(f"{len(tokens)} tokens in one call, over the limit of {limit}", "max_tokens_per_accept")
        vocab = self.program.vocab_size
        for i, t in enumerate(tokens):
            if type(t) is not int or not 0 <= t < vocab:  # noqa: E721 - bool is not a token
                raise InvalidTokens(f"token {t!r} at index {i} is not an id of this vocabulary (0..{vocab - 1})", i)

    def count_valid(self, tokens: Sequence[int]) -> int:
        """How many leading ``tokens`` the program allows from here, without advancing."""
        try:
            return self._count_valid(tokens)
        except _SpentMatcher:
            return self._after_llguidance_error(self._count_valid, tokens)

    def _count_valid(self, tokens: Sequence[int]) -> int:
        self.check_tokens(tokens)
        if not tokens or self._terminated:
            return 0
        ends = self._eos
        if self.program.exact_validation:
            return self._probe(tokens)
        n = int(self._matcher.validate_tokens(list(tokens)))
        if self._matcher.is_error():
            raise _SpentMatcher(self._matcher.get_error())
        for i in range(n):
            if tokens[i] in ends:
                return i + 1  # nothing follows an end token
        if n < len(tokens) and tokens[n] in ends:
            # llguidance does not validate EOS: it is allowed iff the prefix ends accepting.
            probe = self._matcher.deep_copy()
            if (n == 0 or probe.consume_tokens(list(tokens[:n]))) and probe.is_accepting():
                n += 1
            elif probe.is_error() and _spent(probe.get_error()):
                raise _SpentMatcher(probe.get_error())
        elif n < len(tokens):
            # validate_tokens stops silently where a lexer limit stops it: a refusal is confirmed
            # token by token on a copy, which reports such a limit (a refusal is rare: it is cheap).
            return self._probe(tokens)
        return n

    def _probe(self, tokens: Sequence[int]) -> int:
        """Count valid tokens by consuming them one by one on a copy (exact, slower)."""
        probe = self._matcher.deep_copy()
        ends = self._eos
        for i, t in enumerate(tokens):
            if t in ends:
                return i + 1 if probe.is_accepting() else i
            if not probe.consume_token(t):
                if _spent(probe.get_error()):
                    raise _SpentMatcher(probe.get_error())
                return i
        return len(tokens)

    def advance(self, tokens: Sequence[int]) -> None:
        """Accept ``tokens`` all or nothing.

        Raises:
            TokenRejected: a token is not allowed (``index`` says which); the state is unchanged.
            InvalidTokens: an id outside the vocabulary; the state is unchanged.
            EngineLimitReached: an llguidance limit was reached (see :meth:`_after_llguidance_error`);
                the state is unchanged.
        """
        try:
            self._advance(tokens)
        except _SpentMatcher:
            self._after_llguidance_error(self._advance, tokens)

    def _advance(self, tokens: Sequence[int]) -> None:
        if len(tokens) == 1 and self._fast and not self._terminated:
            # The decode loop's case, kept short: one sampled token.
            t = tokens[0]
            if type(t) is int and 0 <= t < self._vocab and t not in self._eos:  # noqa: E721
                m = self._matcher
                if m.try_consume_tokens([t]) != 1:  # a refused token leaves the matcher as it was
                    if m.is_error():
                        raise _SpentMatcher(m.get_error())
                    raise self._rejected(tokens, 0)
                self.tokens.append(t)
                self._forced = self._reads = None
                return
        n = self.count_valid(tokens)
        if n < len(tokens):
            raise self._rejected(tokens, n)
        if not tokens:
            return
        m = self._matcher
        body = list(tokens[:-1]) if tokens[-1] in self._eos else list(tokens)
        ok = m.consume_tokens(body) if body else True
        if ok and len(body) < len(tokens):
            ok = m.consume_token(tokens[-1])
            self._terminated = ok
        if not ok:
            error = m.get_error()
            if _spent(error):
                raise _SpentMatcher(error)
            self._recover(len(self.tokens))
            raise self._rejected(tokens, self._probe(tokens))
        self.tokens.extend(tokens)
        self._forced = self._reads = None

    def _rejected(self, tokens: Sequence[int], index: int) -> TokenRejected:
        bad = tokens[index]
        why = "the session is terminated" if self._terminated else "the constraint does not allow it here"
        return TokenRejected(f"token {bad} at index {index} rejected: {why}", index, bad)

    def accept_token(self, token: int) -> bool:
        """Accept one token; False (state unchanged) if the program forbids it."""
        return self.accept_tokens((token,))

    def accept_tokens(self, tokens: Sequence[int]) -> bool:
        """Accept ``tokens`` all or nothing; False (state unchanged) if any is forbidden."""
        try:
            self.advance(tokens)
        except (TokenRejected, InvalidTokens):
            return False
        return True

    def validate_tokens(self, tokens: Sequence[int]) -> list[int]:
        """The longest prefix of ``tokens`` the program would accept; the state does not move."""
        try:
            return list(tokens[: self.count_valid(tokens)])
        except InvalidTokens as e:
            return list(tokens[: e.index])

    def rollback(self, num_tokens: int) -> None:
        """Undo the last ``num_tokens`` accepted tokens (EOS included)."""
        if not 0 <= num_tokens <= len(self.tokens):
            raise ValueError(f"cannot roll back {num_tokens} of {len(self.tokens)} tokens")
        if num_tokens == 0:
            return
        keep = len(self.tokens) - num_tokens
        if self._terminated or not self._matcher.rollback(num_tokens):
            # EOS is not in llguidance's history, and max_tokens lexemes disable its rollback:
            # replay from the start instead (exact, linear in the tokens kept).
            self._recover(keep)
        else:
            self._forget_data(keep)
            del self.tokens[keep:]
            self._forced = self._reads = None

    def reset(self) -> None:
        """Back to the start of the program."""
        self._root = self.program.shards.root(self.shard)
        self._matcher = self._root.deep_copy()
        self._terminated = False
        self.tokens = []
        self._forced = self._reads = None
        self._data_bytes, self._data_tokens = b"", 0

    def fork(self) -> GuidanceState:
        """An independent copy of this state (for n > 1 sampling and beam search)."""
        other = GuidanceState.__new__(GuidanceState)
        other.program = self.program
        other._vocab, other._eos, other._fast, other.shard = self._vocab, self._eos, self._fast, self.shard
        other._root = self._root
        other._matcher = self._matcher.deep_copy()
        other._terminated = self._terminated
        other.tokens = list(self.tokens)
        other._forced = self._forced  # a tuple: shared as it is
        other._reads = None  # the copy's own reads: callers may keep what this state handed out
        other._data_bytes, other._data_tokens = self._data_bytes, self._data_tokens
        return other

    def _recover(self, keep: int) -> None:
        """Rebuild the matcher from the program by replaying the first ``keep`` tokens."""
        kept = self.tokens[:keep]
        root = self.program.shards.root(self.shard)
        m = root.deep_copy()
        terminated = bool(kept) and kept[-1] in self._eos
        body = kept[:-1] if terminated else kept
        if body and not m.consume_tokens(body):
            # llguidance 1.9.1 can refuse, when consumed in one call, tokens it accepted one at a
            # time with a mask computed before each (seen with a long `pattern` after its lexer
            # was rebuilt): replay the way they were accepted.
            m = root.deep_copy()
            if not self._replay_stepwise(m, body):
                raise self._failure(m.get_error(), "replaying the session's tokens")
        if terminated:
            m.consume_token(kept[-1])
        self._forget_data(keep)
        self._root = root
        self._matcher = m
        self._terminated = terminated
        self.tokens = kept
        self._forced = self._reads = None

    def _forget_data(self, keep: int) -> None:
        """Cut the decoded text to the first ``keep`` tokens (the tokens after them are going)."""
        if self._data_tokens > keep:
            # A token's bytes do not depend on its neighbours: the text is their concatenation.
            cut = len(self.program.tokenizer.decode_bytes(self.tokens[keep : self._data_tokens]))
            self._data_bytes = self._data_bytes[: len(self._data_bytes) - cut]
            self._data_tokens = keep

    def _replay_stepwise(self, m: llguidance.LLMatcher, tokens: Sequence[int]) -> bool:
        row = np.zeros(self.program.ll_mask_words, dtype=np.int32)
        for t in tokens:
            m.unsafe_compute_mask_ptr(int(row.ctypes.data), row.nbytes)
            if m.is_error() or not m.consume_token(t):
                return False
        return True

    def _after_llguidance_error(self, op: Callable[..., _T], *args: Any) -> _T:
        """Run ``op`` again after it left the matcher in llguidance's error state.

        The usual cause is the lexer that the sessions of one parser share running out of states
        or expressions: the parser is replaced (:meth:`~core.shards.MatcherShards.renew`), this
        state replays its tokens on the new one and ``op`` runs once more. If it fails again, the
        limit is this step's own: the state is put back as it was and the error raised
        (:class:`EngineLimitReached` naming the limit, or :class:`GrammarError`).
        """
        if self.program.shards.renew(self.shard, self._root):
            self.program.stats.note_shard_renewal()
        self._recover(len(self.tokens))
        try:
            return op(*args)
        except _SpentMatcher as e:
            self._recover(len(self.tokens))
            raise self._failure(e.message) from None

    def _failure(self, error: str, doing: str = "this step") -> GuidanceError:
        failure = engine_failure(error, doing)
        if isinstance(failure, EngineLimitReached):
            self.program.stats.note_engine_limit(failure.limit, failure.detail)
        return failure

    # -- reading
    def is_terminated(self) -> bool:
        """True after EOS, or when the program can accept nothing but EOS and has stopped."""
        return self._terminated

    @property
    def end_token(self) -> int | None:
        """The end token that terminated the state (one of the tokenizer's set), or None."""
        return self.tokens[-1] if self._terminated else None

    def is_accepting(self) -> bool:
        """True when the text so far is complete: EOS is allowed now."""
        return self._terminated or self._matcher.is_accepting()

    def _step_reads(self) -> dict[Any, Any]:
        reads = self._reads
        if reads is None:
            reads = self._reads = {}
        return reads

    def forced_tokens(self) -> list[int]:
        """Tokens the program forces next (fast-forward), canonical tokenization; may be empty.

        Computed once per step (a new list each call).
        """
        forced = self._forced
        if forced is None:
            try:
                forced = tuple(self._forced_tokens())
            except _SpentMatcher:
                forced = tuple(self._after_llguidance_error(self._forced_tokens))
            self._forced = forced
        return list(forced)

    def _forced_tokens(self) -> list[int]:
        if self._terminated:
            return []
        timed = self.program.stats.cpu_timed
        start = _thread_time() if timed else _perf_counter()
        forced = self._matcher.compute_ff_tokens()
        if self._matcher.is_error():
            raise _SpentMatcher(self._matcher.get_error())
        self._check_time(start, timed, "computing the forced tokens")
        return list(forced)

    def _check_time(self, start: float, timed: bool, doing: str) -> None:
        """Refuse a computation that took more than ``max_mask_ms`` of this thread's CPU time.

        ``timed``: ``start`` is this thread's CPU time (else the wall clock's, a bound above the
        CPU time: past the limit by it, the program's later computations are timed in CPU time).
        """
        limit = self.program.limits.max_mask_ms
        if not timed:
            if (_perf_counter() - start) * 1000 > limit:
                self.program.stats.cpu_timed = True
            return
        spent = (_thread_time() - start) * 1000
        if spent > limit:
            detail = (
                f"the constraint reached the engine limit max_mask_ms at {doing}: it took {spent:.0f} ms "
                f"of CPU time, above the limit of {limit} ms"
            )
            self.program.stats.note_engine_limit("max_mask_ms", detail)
            raise EngineLimitReached(detail, "max_mask_ms")

    def fill_bitmask(self, bitmask: NDArray[np.int32], index: int = 0) -> None:
        """Write the allowed next tokens into row ``index`` of ``bitmask``."""
        program = self.program
        views = program.bitmask_views
        view = views.current
        if view is None or view.array is not bitmask:
            view = views.view(bitmask)
        if not 0 <= index < view.rows:
            raise ValueError(f"row {index} outside a bitmask of {view.rows} rows")
        m = self._matcher
        stats = program.stats
        timed = stats.cpu_timed
        start = _thread_time() if timed else _perf_counter()
        m.unsafe_compute_mask_ptr(view.base + index * view.row_bytes, view.fill_bytes)
        if m.is_error() or timed or _perf_counter() - start > program.limits.max_mask_ms / 1000:
            try:
                if m.is_error():  # llguidance's mask of a stopped matcher allows EOS only: never serve it
                    self._after_llguidance_error(self._fill_row, view, index)
                self._check_time(start, timed, "a mask")
            except GuidanceError:
                bitmask[index] = 0
                raise
        if view.wide:
            bitmask[index, view.fill_bytes // 4 :] = 0

    def _fill_row(self, view: BitmaskView, index: int) -> None:
        m = self._matcher
        m.unsafe_compute_mask_ptr(view.base + index * view.row_bytes, view.fill_bytes)
        if m.is_error():
            raise _SpentMatcher(m.get_error())

    def get_allowed_tokens(self) -> list[int]:
        """The ids allowed next, ascending (convenience; masks are the fast path)."""
        row = allocate_bitmask(1, self.program.vocab_size)
        self.fill_bitmask(row, 0)
        return [int(t) for t in allowed_tokens(row[0], self.program.vocab_size)]

    @property
    def variables(self) -> dict[str, Any]:
        """Captured values of the slots completed so far (computed once per step; a new dict each call)."""
        return dict(self._variables())

    def _variables(self) -> dict[str, Any]:
        # llguidance records a capture once its parser has looked past the slot's end, which
        # computing the forced tokens does: without it the answer would depend on whether a mask
        # happened to be computed since the last token.
        self.forced_tokens()
        reads = self._step_reads()
        values: dict[str, Any] | None = reads.get("variables")
        if values is None:
            reader = self.program.variable_reader()
            data = self.data() if reader.needs_text else b""
            values = reads["variables"] = reader.values(self._matcher.get_captures(), data)
        return values

    def data(self) -> bytes:
        """The bytes of the accepted tokens (EOS excluded), decoded incrementally."""
        end = len(self.tokens) - 1 if self._terminated else len(self.tokens)
        if self._data_tokens > end:  # EOS was decoded: not after a rollback (see _forget_data)
            self._data_bytes, self._data_tokens = b"", 0
        if self._data_tokens < end:
            self._data_bytes += self.program.tokenizer.decode_bytes(self.tokens[self._data_tokens : end])
            self._data_tokens = end
        return self._data_bytes

    def partial_variables(self, *, parse_json: bool = False) -> dict[str, dict[str, Any]]:
        """Every capture so far, the ones being generated with their text so far.

        Computed only when called (nothing is tracked per token). Each name maps to
        ``{"value", "complete"}`` (plus ``complete_items`` for lists, and with ``parse_json`` a
        json slot's ``parsed`` value so far and ``final`` JSON pointers); see :mod:`core.partial`.
        """
        key = ("partial", parse_json)
        partial: dict[str, dict[str, Any]] | None = self._step_reads().get(key)
        if partial is None:
            complete = self._variables()  # the complete values, read the one way (forced tokens first)
            partial = self.program.variable_reader().partial(
                self._matcher.get_captures(),
                self.data(),
                parse_json=parse_json,
                complete=complete,
                terminated=self._terminated,
            )
            self._step_reads()[key] = partial
        return dict(partial)

    def text(self) -> str:
        """The text of the accepted tokens (EOS and control tokens excluded)."""
        body = self.tokens[:-1] if self._terminated else self.tokens
        return self.program.tokenizer.decode(body)
