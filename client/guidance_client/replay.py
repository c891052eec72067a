"""What a remote grammar keeps to survive losing its session, and the batched step's plan, without I/O.

A :class:`GrammarState` holds a grammar's spec, program, session and the tokens accepted so far:
enough to rebuild the session on any replica (replay). A :class:`StepPlan` is one batched step
with replay: which grammars still need an answer. The clients (:mod:`guidance_client._async.client`
and the sync module generated from it) add the I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from guidance_client.errors import RemoteError
from guidance_client.protocol import GONE, ProgramInfo, StepResult, StepStatus

__all__ = ["GrammarState", "StepPlan"]


class GrammarState:
    """What a remote grammar keeps locally: the spec, the program, the session, the tokens.

    Enough to rebuild the session anywhere (replay). The remote grammars add a client.

    Attributes:
        spec: the compile body of the program.
        program: the compiled program's description.
        session_id: the server-side session.
        tokens: tokens accepted so far.
    """

    def __init__(
        self,
        spec: Mapping[str, Any],
        program: ProgramInfo,
        session_id: str,
        tokens: Sequence[int] = (),
        terminated: bool = False,
        variables: Mapping[str, Any] | None = None,
    ) -> None:
        self.spec = dict(spec)
        self.program = program
        self.session_id = session_id
        self.tokens = list(tokens)
        self._terminated = terminated
        self._variables = dict(variables or {})
        self._partial: dict[str, Any] = {}
        self._lost = False

    @property
    def vocab_size(self) -> int:
        """The program's vocabulary size."""
        return self.program.vocab_size

    @property
    def mask_words(self) -> int:
        """Words in one mask row."""
        return self.program.mask_words

    def is_terminated(self) -> bool:
        """True once EOS has been accepted."""
        return self._terminated

    def get_variable_values(self, partial: bool = False) -> dict[str, Any]:
        """The values captured so far, by name.

        With ``partial``, every capture so far as ``{name: {"value", "complete", ...}}`` (the
        ones still being generated with their text so far), as of the last call that asked the
        server for them: an accept of a grammar with ``partial = True``, or a step of a batch
        made with ``variables="partial"``.
        """
        return dict(self._partial) if partial else dict(self._variables)

    def _update(self, terminated: bool, variables: Mapping[str, Any], partial: Mapping[str, Any] | None = None) -> None:
        self._terminated = terminated
        self._variables = dict(variables)
        if partial is not None:
            self._partial = dict(partial)

    def _reopened(self, info: ProgramInfo) -> None:
        assert info.session_id is not None
        self.program, self.session_id, self._lost = info, info.session_id, False


class StepPlan:
    """A batched step with replay: which grammars still need an answer.

    A step goes out for every pending grammar; answers for sessions the server lost (unknown or
    expired: a restarted or different replica) mark those grammars lost and pending again, so
    they are replayed and stepped alone. Tokens are applied exactly once per grammar.
    """

    def __init__(
        self,
        grammars: Sequence[GrammarState],
        tokens: Sequence[Sequence[int]],
        bitmask: NDArray[np.int32] | None,
    ) -> None:
        if len(tokens) != len(grammars):
            raise ValueError(f"{len(tokens)} token lists for {len(grammars)} grammars")
        self.grammars = grammars
        self.tokens = [[int(t) for t in ts] for ts in tokens]
        self.bitmask = bitmask
        self.pending = list(range(len(grammars)))
        self.statuses: list[StepStatus | None] = [None] * len(grammars)

    def items(self) -> list[tuple[Any, ...]]:
        """The step's ``(session_id, tokens)`` for the pending grammars."""
        return [(self.grammars[i].session_id, self.tokens[i]) for i in self.pending]

    def lost(self) -> list[int]:
        """The pending grammars that need a replay before the step."""
        return [i for i in self.pending if self.grammars[i]._lost]

    def fail_all(self) -> None:
        """The step failed as a whole: replay every pending grammar before the next try."""
        for i in self.pending:
            self.grammars[i]._lost = True

    def apply(self, result: StepResult) -> None:
        """Take the answers; raise for a retry if some sessions were gone (they stay pending)."""
        still: list[int] = []
        masks = result.masks
        words = masks.shape[1]
        if self.bitmask is not None and self.bitmask.shape[1] < words:
            raise ValueError(f"bitmask rows have {self.bitmask.shape[1]} words, the masks have {words}")
        done_rows: list[int] = []
        done_src: list[int] = []
        for i, st in zip(self.pending, result.statuses):
            g = self.grammars[i]
            if st.status == "error" and st.error is not None and st.error.get("code") in GONE:
                g._lost = True
                still.append(i)
                continue
            if st.status == "ok":
                g.tokens.extend(self.tokens[i])
            if st.status != "error":
                g._terminated = st.terminated
                if st.variables is not None:
                    g._variables = dict(st.variables)
                if st.partial is not None:
                    g._partial = dict(st.partial)
            self.statuses[i] = st
            done_rows.append(i)
            done_src.append(st.row)
        if self.bitmask is not None and done_rows:
            n = len(done_rows)
            if done_rows == done_src == list(range(n)):  # the usual step: one contiguous copy
                self.bitmask[:n, :words] = masks[:n]
                self.bitmask[:n, words:] = 0
            else:
                self.bitmask[done_rows, :words] = masks[done_src]
                self.bitmask[done_rows, words:] = 0
        self.pending = still
        if still:
            raise RemoteError(404, {"code": "session-not-found", "detail": "sessions lost; replaying"})

    def result(self) -> list[StepStatus]:
        """Every grammar's status, in order (once nothing is pending)."""
        assert not self.pending
        return [st for st in self.statuses if st is not None]
