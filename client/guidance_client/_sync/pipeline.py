"""Pipelining for :class:`~guidance_client.GrammarBatch`: a step sent from a background thread."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
from numpy.typing import NDArray

from guidance_client.protocol import StepStatus

__all__ = ["Pipeline"]


class Pipeline:
    """:meth:`submit`: a batch's step in the background, so the round trip overlaps the forward pass."""

    _pool: ThreadPoolExecutor | None = None

    def step(self, tokens: Sequence[Sequence[int]], bitmask: NDArray[np.int32] | None = None) -> list[StepStatus]:
        raise NotImplementedError  # the batch's own step

    def submit(self, tokens: Sequence[Sequence[int]], bitmask: NDArray[np.int32]) -> Future[list[StepStatus]]:
        """:meth:`step` in the background; do not read ``bitmask`` before the future is done."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="guidance-step")
        return self._pool.submit(self.step, [list(t) for t in tokens], bitmask)

    def close(self) -> None:
        """Stop the background sender (the sessions stay open)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
