"""The token bitmask: the one wire format of the product, defined here once.

A mask for a vocabulary of ``V`` ids is ``ceil(V / 32)`` 32-bit words; bit ``t % 32`` of word
``t // 32`` set means token ``t`` is allowed; bits past ``V`` are 0. On the wire the words are
little-endian int32, in order (the layout of vLLM, xgrammar and llguidance). A batch is a
C-contiguous ``np.int32`` array of shape ``[batch, words]``, one row per sequence.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "allocate_bitmask",
    "allowed_tokens",
    "from_bytes",
    "mask_words",
    "pack_tokens",
    "to_bytes",
]

_WIRE = np.dtype("<i4")


def mask_words(vocab_size: int) -> int:
    """Number of int32 words in one mask row."""
    return (vocab_size + 31) // 32


def allocate_bitmask(batch_size: int, vocab_size: int) -> NDArray[np.int32]:
    """A ``[batch_size, mask_words]`` int32 array with every token allowed (``-1`` words)."""
    return np.full((batch_size, mask_words(vocab_size)), -1, dtype=np.int32)


def to_bytes(rows: NDArray[np.int32]) -> bytes:
    """Rows (or one row) as little-endian int32 bytes, row after row."""
    return np.ascontiguousarray(rows, dtype=_WIRE).tobytes()


def from_bytes(data: bytes | bytearray | memoryview, vocab_size: int) -> NDArray[np.int32]:
    """Parse wire bytes into a ``[n, mask_words]`` int32 array (no copy for aligned native input)."""
    words = mask_words(vocab_size)
    arr = np.frombuffer(data, dtype=_WIRE)
    if arr.size % words:
        raise ValueError(f"{len(data)} bytes is not a whole number of {words}-word masks")
    return arr.reshape(-1, words).astype(np.int32, copy=False)


def allowed_tokens(row: NDArray[np.int32], vocab_size: int) -> NDArray[np.int64]:
    """The ids whose bit is set in one mask row, ascending."""
    bits = np.unpackbits(np.ascontiguousarray(row, dtype=_WIRE).view(np.uint8), bitorder="little")
    return np.flatnonzero(bits[:vocab_size])


def pack_tokens(tokens: Iterable[int], vocab_size: int) -> NDArray[np.int32]:
    """One mask row allowing exactly ``tokens``."""
    bits = np.zeros(mask_words(vocab_size) * 32, dtype=np.uint8)
    ids = np.fromiter(tokens, dtype=np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
        raise ValueError("token id outside the vocabulary")
    bits[ids] = 1
    return np.packbits(bits, bitorder="little").view(_WIRE).astype(np.int32)
