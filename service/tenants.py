"""What one API key may learn of another's work: which programs each key has compiled.

Programs are content-addressed and shared by every key (compiling a constraint twice is waste),
so the cache itself must not become a way to read another tenant's requests: a ``program_id`` is
a hash anyone can compute from a guessed spec (a template with a guessed e-mail address as a
variable, say). So, where API keys are on:

* ``POST /compile`` answers ``cached`` for the asking key: ``true`` only when this key compiled
  (or opened) the program before. A program only another key compiled is answered as a compile:
  ``cached: false``, the ``compile_ms`` of the compile that built it, and the answer waits out that
  time, so neither the answer nor its timing tells that someone else asked first.
* ``POST /sessions {"program_id"}`` opens only programs the key itself compiled on this replica;
  another key's program answers 404 ``program-not-found``, exactly as one never compiled (the
  client re-sends the spec, which costs a compile answer, not a compile).

Without keys every request is the same tenant and the cache answers as it is. The memory is
bounded (least recently used (key, program) pairs are forgotten first); forgetting only makes a
key's own program look new to it once more.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict

__all__ = ["KeyPrograms"]


class KeyPrograms:
    """The programs each key has compiled, and what each compile cost.

    Not thread-safe: used from the event loop only.

    Args:
        capacity: most (key, program) pairs remembered, and most compile times.
    """

    def __init__(self, capacity: int = 65_536) -> None:
        self.capacity = capacity
        self._seen: OrderedDict[tuple[int, str], None] = OrderedDict()
        self._compile_ms: OrderedDict[str, float] = OrderedDict()

    def knows(self, owner: int | None, program_id: str) -> bool:
        """Whether ``owner`` may use ``program_id`` by its id (always, without keys)."""
        return owner is None or (owner, program_id) in self._seen

    def note(self, owner: int | None, program_id: str) -> None:
        """``owner`` compiled (or opened with its spec) ``program_id``."""
        if owner is None:
            return
        self._seen[(owner, program_id)] = None
        self._seen.move_to_end((owner, program_id))
        while len(self._seen) > self.capacity:
            self._seen.popitem(last=False)

    async def answer(self, owner: int | None, program_id: str, cached: bool, compile_ms: float) -> tuple[bool, float]:
        """What ``POST /compile`` tells ``owner``: ``(cached, compile_ms)`` as seen by that key alone.

        Args:
            owner: the asking key (None: no keys configured).
            program_id: the program compiled.
            cached: whether the cache held it (or a concurrent compile built it).
            compile_ms: how long this request took to get it.
        """
        if not cached:
            self._compile_ms[program_id] = compile_ms
            self._compile_ms.move_to_end(program_id)
            while len(self._compile_ms) > self.capacity:
                self._compile_ms.popitem(last=False)
        if owner is None or not cached or (owner, program_id) in self._seen:
            self.note(owner, program_id)
            return cached, compile_ms
        self.note(owner, program_id)
        built_ms = self._compile_ms.get(program_id, compile_ms)
        if built_ms > compile_ms:
            await asyncio.sleep((built_ms - compile_ms) / 1000)
        return False, max(built_ms, compile_ms)
