"""The token bitmask: the one wire format of the product, defined here once.

A mask for a vocabulary of ``V`` ids is ``ceil(V / 32)`` 32-bit words; bit ``t % 32`` of word
``t // 32`` set means token ``t`` is allowed; bits past ``V`` are 0. On the wire the words are
little-endian int32, in order (the layout of vLLM, xgrammar and llguidance). A batch is a
C-contiguous ``np.int32`` array of shape ``[batch, words]``, one row per sequence.

Batches can also travel block-sparse (:func:`encode_blocks`): most masks of a structured
constraint allow a handful of tokens, so most of a 16 KiB tekken row is zeros. Each row is cut
into blocks of ``BLOCK_WORDS`` words (the last one padded with zeros); a bitmap says which
blocks hold a set bit, and only those blocks are sent::

    bitmap   ceil(rows * blocks_per_row / 8) bytes, zero-padded to a multiple of 4; bit ``k``
             (little-endian bit order, row-major: ``k = row * blocks_per_row + block``) set
             means that block is present
    blocks   the present blocks in that order, ``BLOCK_WORDS`` little-endian int32 each

A block absent from the bitmap is all zeros.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "BLOCK_WORDS",
    "allocate_bitmask",
    "allowed_tokens",
    "blocks_per_row",
    "encode_blocks",
    "from_bytes",
    "mask_words",
    "pack_tokens",
    "to_bytes",
]

_WIRE = np.dtype("<i4")

BLOCK_WORDS = 64  # 256 bytes, 2,048 token ids


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


def blocks_per_row(words: int) -> int:
    """Blocks of :data:`BLOCK_WORDS` words in one row of ``words`` words."""
    return (words + BLOCK_WORDS - 1) // BLOCK_WORDS


def encode_blocks(rows: NDArray[np.int32]) -> tuple[NDArray[np.uint8], NDArray[np.int32]]:
    """The block-sparse form of ``[n, words]`` rows: ``(bitmap, blocks)``, see the module docs.

    ``bitmap`` is already padded to a multiple of 4 bytes; ``blocks`` is ``[present, BLOCK_WORDS]``.
    """
    n, words = rows.shape
    per_row = blocks_per_row(words)
    if words != per_row * BLOCK_WORDS:
        padded = np.zeros((n, per_row * BLOCK_WORDS), dtype=np.int32)
        padded[:, :words] = rows
        rows = padded
    blocks = np.ascontiguousarray(rows, dtype=np.int32).reshape(-1, BLOCK_WORDS)
    # OR of each block's 32 uint64 halves: one pass over the batch
    present = np.bitwise_or.reduce(blocks.view(np.uint64), axis=1) != 0
    bitmap = np.packbits(present, bitorder="little")
    bitmap = np.concatenate([bitmap, np.zeros(-bitmap.size % 4, dtype=np.uint8)])
    return bitmap, blocks[present]
