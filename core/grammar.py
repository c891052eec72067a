"""The per-request object an inference engine plugs in, shaped like vLLM's ``StructuredOutputGrammar``.

:class:`GuidanceGrammar` wraps one :class:`~core.session.GuidanceState` with the names engines
call (``accept_tokens``, ``fill_next_token_bitmask``, ``rollback`` ...) and the seed's own
(``accept_token``, ``accept_token_text``, ``create_state``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from core.session import GuidanceState, StateProgram

if TYPE_CHECKING:
    from core.tokenizers import Tokenizer

__all__ = ["GuidanceGrammar"]


class GuidanceGrammar:
    """The per-request object an inference engine plugs in (vLLM ``StructuredOutputGrammar`` shape).

    Args:
        program: the compiled program (:class:`~core.program.CompiledGuidanceProgram`).
        tokenizer: the tokenizer the engine uses; must be the program's vocabulary (optional).
        state: a state of ``program`` to wrap, where it is (shared, not copied: the grammar and
            whoever else holds the state move together); None: a fresh state at the start.

    Raises:
        ValueError: ``tokenizer`` is another vocabulary, or ``state`` belongs to another program.
    """

    def __init__(
        self, program: StateProgram, tokenizer: Tokenizer | None = None, state: GuidanceState | None = None
    ) -> None:
        if tokenizer is not None and tokenizer.digest != program.tokenizer.digest:
            raise ValueError("the program was compiled for another vocabulary")
        if state is not None and state.program is not program:
            raise ValueError("the state belongs to another program")
        self.program = program
        self.state = program.create_state() if state is None else state

    def create_state(self) -> GuidanceState:
        """A fresh :class:`GuidanceState` of the same program, at its start.

        Independent of this grammar's own state (which :meth:`fork` copies instead).
        """
        return self.program.create_state()

    def accept_token(self, token_id: int) -> bool:
        """Advance by one token; False, with nothing changed, if it is not allowed."""
        return self.state.accept_token(token_id)

    def accept_tokens(self, tokens: Sequence[int]) -> bool:
        """Advance by ``tokens``; False, with nothing changed, if any is not allowed."""
        return self.state.accept_tokens(tokens)

    def accept_token_text(self, text: str) -> bool:
        """Advance by ``text``, encoded with the program's tokenizer; all or nothing.

        The text is split into tokens the way the tokenizer's own encoder splits it, which may
        differ from the tokens a model sampled for the same text (a model can spell a word in
        several ways). So this is for tests and for text forced on the model, not for replaying
        what a model generated: pass those tokens to :meth:`accept_tokens`.

        Returns:
            True when every token was accepted; False, with nothing changed, otherwise.

        Raises:
            LimitExceeded: the text is more tokens than ``max_tokens_per_accept``.
        """
        return self.state.accept_tokens(self.program.tokenizer.encode(text))

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

    def get_variable_values(self, partial: bool = False, *, parse_json: bool = False) -> dict[str, Any]:
        """The values captured so far, by name.

        Args:
            partial: also the slots still being generated: each name then maps to
                ``{"value": ..., "complete": bool}`` (see :meth:`GuidanceState.partial_variables`).
            parse_json: with ``partial``, a json slot also gets its value parsed so far.
        """
        if partial:
            return self.state.partial_variables(parse_json=parse_json)
        return self.state.variables

    def fork(self) -> GuidanceGrammar:
        """An independent copy at the same position."""
        return GuidanceGrammar(self.program, state=self.state.fork())
