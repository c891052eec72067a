"""The token bitmask on the engine side: the layout, and an all-allowed batch to fill.

The layout is the product's one wire format, defined once in :mod:`guidance_client.wire` (a
numpy-only module of the worker package, which the server installs with it): ``ceil(V / 32)``
int32 words per row, bit ``t % 32`` of word ``t // 32`` set when token ``t`` is allowed,
little-endian on the wire, and the block-sparse form of a batch. Its functions are re-exported
here so engine-side code keeps one import; only :func:`allocate_bitmask` is the engine's own.
"""

from __future__ import annotations

import numpy as np
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
from numpy.typing import NDArray

__all__ = [
    "BLOCK_WORDS",
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
