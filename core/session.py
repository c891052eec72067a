"""Per-request state: small and mutable, one per sequence being decoded.

:class:`GuidanceState` is the engine-neutral state (accept, validate, rollback, fork, masks,
captured variables). :class:`GuidanceGrammar` is the object an inference engine plugs in, shaped
like vLLM's ``StructuredOutputGrammar``.

EOS is handled here, not by llguidance's validation (which never validates EOS): EOS is allowed
exactly when the program is in an accepting state, and after EOS the state is terminated and the
mask allows EOS only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from core.bitmask import allocate_bitmask, allowed_tokens
from core.errors import GrammarError, InvalidTokens, LimitExceeded, TokenRejected

if TYPE_CHECKING:
    import llguidance

    from core.program import CompiledGuidanceProgram
    from core.tokenizers import Tokenizer

__all__ = ["GuidanceGrammar", "GuidanceState"]


class GuidanceState:
    """The decoding state of one request against a :class:`CompiledGuidanceProgram`.

    Not thread-safe: one request, one caller at a time (the service serialises per session).
    """

    __slots__ = ("_eos", "_fast", "_matcher", "_terminated", "_vocab", "lane", "program", "tokens")

    def __init__(self, program: CompiledGuidanceProgram) -> None:
        self.program = program
        # copies of program constants for the one-token path (attribute chains cost here)
        self._vocab = program.vocab_size
        self._eos = program.eos_token_id
        self._fast = not program.exact_validation
        self.lane = program.next_lane()  # which of the program's parallel lanes computes its masks
        self._matcher: llguidance.LLMatcher = program.new_matcher(self.lane)
        self._terminated = False
        self.tokens: list[int] = []

    # -- advancing
    def check_tokens(self, tokens: Sequence[int]) -> None:
        """Raise :class:`InvalidTokens` or :class:`LimitExceeded` for ids no request may send."""
        limit = self.program.limits.max_tokens_per_accept
        if len(tokens) > limit:
            raise LimitExceeded(f"{len(tokens)} tokens in one call, above the limit of {limit}", "max_tokens_per_accept")
        vocab = self.program.vocab_size
        for i, t in enumerate(tokens):
            if type(t) is not int or not 0 <= t < vocab:  # noqa: E721 - bool is not a token
                raise InvalidTokens(f"token {t!r} at index {i} is not an id of this vocabulary (0..{vocab - 1})", i)

    def count_valid(self, tokens: Sequence[int]) -> int:
        """How many leading ``tokens`` the program allows from here, without advancing."""
        self.check_tokens(tokens)
        if not tokens or self._terminated:
            return 0
        eos = self.program.eos_token_id
        if self.program.exact_validation:
            return self._probe(tokens)
        n = int(self._matcher.validate_tokens(list(tokens)))
        if eos in tokens[:n]:
            return tokens.index(eos) + 1  # nothing follows EOS
        if n < len(tokens) and tokens[n] == eos:
            # llguidance does not validate EOS: it is allowed iff the prefix ends accepting.
            probe = self._matcher.deep_copy()
            if (n == 0 or probe.consume_tokens(list(tokens[:n]))) and probe.is_accepting():
                n += 1
        return n

    def _probe(self, tokens: Sequence[int]) -> int:
        """Count valid tokens by consuming them one by one on a copy (exact, slower)."""
        probe = self._matcher.deep_copy()
        eos = self.program.eos_token_id
        for i, t in enumerate(tokens):
            if t == eos:
                return i + 1 if probe.is_accepting() else i
            if not probe.consume_token(t):
                return i
        return len(tokens)

    def advance(self, tokens: Sequence[int]) -> None:
        """Accept ``tokens`` all or nothing.

        Raises:
            TokenRejected: a token is not allowed (``index`` says which); the state is unchanged.
            InvalidTokens: an id outside the vocabulary; the state is unchanged.
        """
        if len(tokens) == 1 and self._fast and not self._terminated:
            # The decode loop's case, kept short: one sampled token.
            t = tokens[0]
            if type(t) is int and 0 <= t < self._vocab and t != self._eos:  # noqa: E721
                m = self._matcher
                if m.try_consume_tokens([t]) != 1:  # a refused token leaves the matcher as it was
                    if m.is_error():
                        error = m.get_error()
                        self._recover(len(self.tokens))
                        raise self._failure(error)
                    raise self._rejected(tokens, 0)
                self.tokens.append(t)
                return
        n = self.count_valid(tokens)
        if n < len(tokens):
            raise self._rejected(tokens, n)
        if not tokens:
            return
        m = self._matcher
        eos = self.program.eos_token_id
        body = list(tokens[:-1]) if tokens[-1] == eos else list(tokens)
        ok = m.consume_tokens(body) if body else True
        if ok and len(body) < len(tokens):
            ok = m.consume_token(eos)
            self._terminated = ok
        if not ok:
            error = m.get_error()
            self._recover(len(self.tokens))
            if "satisfy" not in error:
                raise self._failure(error)
            raise self._rejected(tokens, self._probe(tokens))
        self.tokens.extend(tokens)

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
            del self.tokens[keep:]

    def reset(self) -> None:
        """Back to the start of the program."""
        self._matcher = self.program.new_matcher(self.lane)
        self._terminated = False
        self.tokens = []

    def fork(self) -> GuidanceState:
        """An independent copy of this state (for n > 1 sampling and beam search)."""
        other = GuidanceState.__new__(GuidanceState)
        other.program = self.program
        other._vocab, other._eos, other._fast, other.lane = self._vocab, self._eos, self._fast, self.lane
        other._matcher = self._matcher.deep_copy()
        other._terminated = self._terminated
        other.tokens = list(self.tokens)
        return other

    def _recover(self, keep: int) -> None:
        """Rebuild the matcher from the program by replaying the first ``keep`` tokens."""
        kept = self.tokens[:keep]
        m = self.program.new_matcher(self.lane)
        eos = self.program.eos_token_id
        terminated = bool(kept) and kept[-1] == eos
        body = kept[:-1] if terminated else kept
        if body and not m.consume_tokens(body):  # pragma: no cover - replaying accepted tokens
            raise RuntimeError("replay of accepted tokens failed: " + m.get_error()[:300])
        if terminated:
            m.consume_token(eos)
        self._matcher = m
        self._terminated = terminated
        self.tokens = kept

    @staticmethod
    def _failure(error: str) -> Exception:
        message = error[:500] or "the matcher stopped"
        lowered = message.lower()
        if "too complex" in lowered or "fuel" in lowered or "limit" in lowered:
            return LimitExceeded(f"constraint too complex at this step: {message}", "parser")
        return GrammarError(message)

    # -- reading
    def is_terminated(self) -> bool:
        """True after EOS, or when the program can accept nothing but EOS and has stopped."""
        return self._terminated

    def is_accepting(self) -> bool:
        """True when the text so far is complete: EOS is allowed now."""
        return self._terminated or self._matcher.is_accepting()

    def forced_tokens(self) -> list[int]:
        """Tokens the program forces next (fast-forward), canonical tokenization; may be empty."""
        if self._terminated:
            return []
        return list(self._matcher.compute_ff_tokens())

    def fill_bitmask(self, bitmask: NDArray[np.int32], index: int = 0) -> None:
        """Write the allowed next tokens into row ``index`` of ``bitmask``."""
        view = self.program._bitmask_view
        if view is None or view.array is not bitmask:
            view = self.program.bitmask_view(bitmask)
        if not 0 <= index < view.rows:
            raise ValueError(f"row {index} outside a bitmask of {view.rows} rows")
        self._matcher.unsafe_compute_mask_ptr(view.base + index * view.row_bytes, view.fill_bytes)
        if view.wide:
            bitmask[index, view.fill_bytes // 4 :] = 0

    def get_allowed_tokens(self) -> list[int]:
        """The ids allowed next, ascending (convenience; masks are the fast path)."""
        row = allocate_bitmask(1, self.program.vocab_size)
        self.fill_bitmask(row, 0)
        return [int(t) for t in allowed_tokens(row[0], self.program.vocab_size)]

    @property
    def matcher(self) -> llguidance.LLMatcher:
        """The llguidance matcher (for batched fills); do not advance it directly."""
        return self._matcher

    @property
    def variables(self) -> dict[str, Any]:
        """Captured values of the slots completed so far."""
        if not self._terminated:
            # llguidance records a capture once its parser has looked past the slot's end, which
            # computing the forced tokens does: without it the answer would depend on whether a
            # mask happened to be computed since the last token.
            self._matcher.compute_ff_tokens()
        return self.program.layout.values(self._matcher.get_captures())

    def text(self) -> str:
        """The text of the accepted tokens (EOS and control tokens excluded)."""
        eos = self.program.eos_token_id
        body = self.tokens[:-1] if self._terminated and self.tokens and self.tokens[-1] == eos else self.tokens
        return self.program.tokenizer.decode(body)


class GuidanceGrammar:
    """The per-request object an inference engine plugs in (vLLM ``StructuredOutputGrammar`` shape).

    Args:
        program: the compiled program.
        tokenizer: the tokenizer the engine uses; must be the program's vocabulary (optional).
    """

    def __init__(self, program: CompiledGuidanceProgram, tokenizer: Tokenizer | None = None) -> None:
        if tokenizer is not None and tokenizer.fingerprint != program.tokenizer.fingerprint:
            raise ValueError("the program was compiled for another vocabulary")
        self.program = program
        self.state = program.create_state()

    def accept_tokens(self, tokens: Sequence[int]) -> bool:
        """Advance by ``tokens``; False, with nothing changed, if any is not allowed."""
        return self.state.accept_tokens(tokens)

    def validate_tokens(self, tokens: Sequence[int]) -> list[int]:
        """The longest allowed prefix of ``tokens``, without advancing."""
        return self.state.validate_tokens(tokens)

    def rollback(self, num_tokens: int) -> None:
        """Undo the last ``num_tokens`` tokens."""
        self.state.rollback(num_tokens)

    def fill_next_token_bitmask(self, bitmask: NDArray[np.int32], idx: int = 0) -> None:
        """Write the allowed next tokens into row ``idx`` of an int32 ``[batch, words]`` array."""
        self.state.fill_bitmask(bitmask, idx)

    def is_terminated(self) -> bool:
        """True once EOS has been accepted."""
        return self.state.is_terminated()

    def reset(self) -> None:
        """Back to the start of the program."""
        self.state.reset()

    def get_variable_values(self) -> dict[str, Any]:
        """The values captured so far, by name."""
        return self.state.variables

    def fork(self) -> GuidanceGrammar:
        """An independent copy at the same position."""
        other = GuidanceGrammar.__new__(GuidanceGrammar)
        other.program = self.program
        other.state = self.state.fork()
        return other
