"""Pipelining for :class:`~guidance_client.AsyncGrammarBatch`: asyncio needs nothing more.

With asyncio a worker pipelines with ``asyncio.create_task(batch.step(...))``; the sync side
(:mod:`guidance_client._sync.pipeline`) sends steps from a background thread instead.
"""

from __future__ import annotations

__all__ = ["AsyncPipeline"]


class AsyncPipeline:
    """Nothing to add for asyncio: a step is already a coroutine a worker can schedule."""

    async def aclose(self) -> None:
        """Nothing to stop (the sessions stay open)."""
