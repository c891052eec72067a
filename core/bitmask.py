"""The token bitmask on the engine side: the layout, an all-allowed batch, and checked views.

The layout is the product's one wire format, defined once in :mod:`guidance_client.wire` (a
numpy-only module of the worker package, which the server installs with it): ``ceil(V / 32)``
int32 words per row, bit ``t % 32`` of word ``t // 32`` set when token ``t`` is allowed,
little-endian on the wire, and the block-sparse form of a batch. Every platform the server
supports is little-endian, so an array's memory is already the wire's bytes: masks are written
in place and sent as they are. Its functions are re-exported here so engine-side code keeps one
import; :func:`allocate_bitmask` and the views (where llguidance writes a row) are the engine's own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from guidance_client.wire import (
    BLOCK_WORDS,
    allowed_tokens,
    blocks_per_row,
    decode_blocks,
    encode_blocks,
    from_bytes,
    mask_words,
    pack_tokens,
    to_bytes,
)

__all__ = [
    "BLOCK_WORDS",
    "BitmaskView",
    "BitmaskViews",
    "allocate_bitmask",
    "allowed_tokens",
    "blocks_per_row",
    "decode_blocks",
    "encode_blocks",
    "from_bytes",
    "mask_words",
    "pack_tokens",
    "to_bytes",
]


def allocate_bitmask(batch_size: int, vocab_size: int) -> NDArray[np.int32]:
    """A ``[batch_size, mask_words]`` int32 array with every token allowed (``-1`` words)."""
    return np.full((batch_size, mask_words(vocab_size)), -1, dtype=np.int32)


@dataclass(frozen=True)
class BitmaskView:
    """A checked bitmask and where its rows are in memory.

    Attributes:
        array: the caller's array (held, so numpy cannot resize it while the address is in use).
        base: the address of its first word.
        rows: its number of rows.
        row_bytes: bytes from one row to the next.
        fill_bytes: bytes llguidance writes per row (the tokenizer's words).
        wide: whether rows are wider than that (a model vocabulary past the tokenizer's): the
            words after ``fill_bytes`` are zeroed by the caller.
    """

    array: NDArray[np.int32]
    base: int
    rows: int
    row_bytes: int
    fill_bytes: int
    wide: bool


class BitmaskViews:
    """The checked view of the last bitmask one program filled: engines reuse one array.

    A mutable cache, shared by every session of a program. The view is kept in one attribute
    assigned atomically (:attr:`current`), so threads filling different arrays never mix up
    addresses; at worst they check their arrays again.

    Args:
        words: words per row the program's masks need (the model's vocabulary).
        fill_words: words llguidance writes per row (the tokenizer's vocabulary).
    """

    __slots__ = ("current", "fill_words", "words")

    def __init__(self, words: int, fill_words: int) -> None:
        self.words = words
        self.fill_words = fill_words
        #: The last view made (read it first: the common case is the same array again).
        self.current: BitmaskView | None = None

    def view(self, bitmask: NDArray[np.int32]) -> BitmaskView:
        """The view of ``bitmask``, checked once and remembered.

        Raises:
            ValueError: not a C-contiguous, writeable 2-D ``np.int32`` array wide enough.
        """
        view = self.current
        if view is not None and view.array is bitmask:
            return view
        if not isinstance(bitmask, np.ndarray) or bitmask.dtype != np.int32 or bitmask.ndim != 2:
            raise ValueError("bitmask must be a 2-D np.int32 array")
        if not bitmask.flags["C_CONTIGUOUS"] or not bitmask.flags["WRITEABLE"]:
            raise ValueError("bitmask must be C-contiguous and writeable")
        if bitmask.shape[1] < self.words:
            raise ValueError(f"bitmask rows have {bitmask.shape[1]} words, need {self.words}")
        view = BitmaskView(
            bitmask,
            int(bitmask.ctypes.data),
            bitmask.shape[0],
            bitmask.shape[1] * 4,
            self.fill_words * 4,
            bitmask.shape[1] > self.fill_words,
        )
        self.current = view
        return view

    def forget(self, bitmask: NDArray[np.int32]) -> None:
        """Stop remembering ``bitmask``, so a per-request buffer's memory is given back when its
        request ends rather than when the program next fills another array."""
        view = self.current
        if view is not None and view.array is bitmask:
            self.current = None
