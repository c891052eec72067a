"""The wire format of the constraint server, defined once (the server imports it from here).

**Masks.** A mask for a vocabulary of ``V`` ids is ``ceil(V / 32)`` 32-bit words; bit ``t % 32``
of word ``t // 32`` set means token ``t`` is allowed; bits past ``V`` are 0. On the wire the
words are little-endian int32, in order (the layout of vLLM, xgrammar and llguidance). A batch is
a C-contiguous ``np.int32`` array of shape ``[batch, words]``, one row per sequence.

**Block-sparse masks.** Most masks of a structured constraint allow a handful of tokens, so most
of a 16 KiB tekken row is zeros. Each row is cut into blocks of :data:`BLOCK_WORDS` words (the
last one padded with zeros); a bitmap says which blocks hold a set bit, and only those go::

    bitmap   ceil(rows * blocks_per_row / 8) bytes, zero-padded to a multiple of 4; bit ``k``
             (little-endian bit order, row-major: ``k = row * blocks_per_row + block``) set
             means that block is present
    blocks   the present blocks in that order, ``BLOCK_WORDS`` little-endian int32 each

A block absent from the bitmap is all zeros.

**``POST /step``.** The request is JSON (:func:`step_request`)::

    {"sessions": [{"session_id": "...", "tokens": [17], "draft_tokens": [5, 9]}, ...],
     "variables": false, "mask_encoding": "dense", "forced_tokens": true}

The answer (media type :data:`STEP_MEDIA_TYPE`) is binary, little-endian (:func:`step_header`,
:func:`dense_step_answer` and :func:`blocks_step_answer` write it, :func:`read_step` reads it)::

    uint32 H                      length of the header
    H bytes                       UTF-8 JSON header, padded with spaces to a multiple of 4 bytes
    masks                         dense: rows x mask_words int32; or block-sparse as above

The header is ``{"mask_words", "vocab_size", "rows", "sessions": [status, ...]}``, plus
``"mask_encoding": "blocks"`` and ``"block_words"`` when block-sparse. Everything here needs
numpy only.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "BLOCK_WORDS",
    "MASK_MEDIA_TYPE",
    "MaskEncoding",
    "STEP_MEDIA_TYPE",
    "WIRE_DTYPE",
    "allowed_tokens",
    "blocks_per_row",
    "blocks_step_answer",
    "decode_blocks",
    "dense_step_answer",
    "dense_step_masks",
    "encode_blocks",
    "frame_dense_step",
    "from_bytes",
    "mask_words",
    "pack_tokens",
    "read_step",
    "step_frame",
    "step_header",
    "step_request",
    "to_bytes",
]

WIRE_DTYPE = np.dtype("<i4")
"""Mask words on the wire: little-endian int32."""

BLOCK_WORDS = 64
"""Words per block of the block-sparse encoding (256 bytes, 2,048 token ids)."""

STEP_MEDIA_TYPE = "application/vnd.guidance.step"
"""The media type of a ``/step`` answer."""

MASK_MEDIA_TYPE = "application/octet-stream"
"""The media type of one session's mask (``GET /sessions/{id}/mask``): its words, raw."""

MaskEncoding = Literal["dense", "blocks"]
"""How ``/step`` sends masks: packed rows, or block-sparse."""

_HEADER_LENGTH = struct.Struct("<I")


# -- mask layout -------------------------------------------------------------------------------


def mask_words(vocab_size: int) -> int:
    """Number of int32 words in one mask row."""
    return (vocab_size + 31) // 32


def to_bytes(rows: NDArray[np.int32]) -> bytes:
    """Rows (or one row) as little-endian int32 bytes, row after row."""
    return np.ascontiguousarray(rows, dtype=WIRE_DTYPE).tobytes()


def from_bytes(data: bytes | bytearray | memoryview, vocab_size: int) -> NDArray[np.int32]:
    """Parse wire bytes into a ``[n, mask_words]`` int32 array (no copy for aligned native input)."""
    words = mask_words(vocab_size)
    arr = np.frombuffer(data, dtype=WIRE_DTYPE)
    if arr.size % words:
        raise ValueError(f"{len(data)} bytes is not a whole number of {words}-word masks")
    return arr.reshape(-1, words).astype(np.int32, copy=False)


def allowed_tokens(row: NDArray[np.int32], vocab_size: int) -> NDArray[np.int64]:
    """The ids whose bit is set in one mask row, ascending."""
    bits = np.unpackbits(np.ascontiguousarray(row, dtype=WIRE_DTYPE).view(np.uint8), bitorder="little")
    return np.flatnonzero(bits[:vocab_size])


def pack_tokens(tokens: Iterable[int], vocab_size: int) -> NDArray[np.int32]:
    """One mask row allowing exactly ``tokens``."""
    bits = np.zeros(mask_words(vocab_size) * 32, dtype=np.uint8)
    ids = np.fromiter(tokens, dtype=np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
        raise ValueError("token id outside the vocabulary")
    bits[ids] = 1
    return np.packbits(bits, bitorder="little").view(WIRE_DTYPE).astype(np.int32)


# -- block-sparse masks ------------------------------------------------------------------------


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


def decode_blocks(
    data: bytes | memoryview, offset: int, rows: int, words: int, block_words: int = BLOCK_WORDS
) -> NDArray[np.int32]:
    """Block-sparse masks starting at ``data[offset:]`` as dense ``[rows, words]`` int32."""
    per_row = -(-words // block_words)
    n_bits = rows * per_row
    n_bytes = (n_bits + 7) // 8
    bitmap = np.frombuffer(data, dtype=np.uint8, count=n_bytes, offset=offset)
    present = np.unpackbits(bitmap, count=n_bits, bitorder="little").view(bool)
    blocks = np.frombuffer(data, dtype=WIRE_DTYPE, offset=offset + n_bytes + (-n_bytes % 4)).reshape(-1, block_words)
    if blocks.shape[0] != int(np.count_nonzero(present)):
        raise ValueError("block-sparse masks: the bitmap and the blocks disagree")
    out = np.empty((rows, per_row * block_words), dtype=np.int32)
    view = out.reshape(-1, block_words)
    view[~present] = 0
    view[present] = blocks
    return out[:, :words]


# -- POST /step --------------------------------------------------------------------------------


def step_request(
    items: Sequence[tuple[Any, ...]],
    variables: bool | str = False,
    mask_encoding: MaskEncoding = "dense",
    forced_tokens: bool = True,
) -> bytes:
    """A ``/step`` request body; ``items`` are ``(session_id, tokens[, draft_tokens])``.

    ``variables``: ``True`` for each session's captured values, ``"partial"`` for those and the
    partial values of every capture (``StepStatus.partial``).
    """
    # Written by hand (one is built for every decoding step): ids are JSON-quoted, tokens ints.
    dumps = json.dumps
    parts = []
    for item in items:
        tokens = ",".join([str(int(t)) for t in item[1]])
        entry = f'{{"session_id":{dumps(item[0])},"tokens":[{tokens}]'
        if len(item) > 2 and item[2]:
            draft = ",".join([str(int(t)) for t in item[2]])
            entry += f',"draft_tokens":[{draft}]'
        parts.append(entry + "}")
    flag = '"partial"' if variables == "partial" else "true" if variables else "false"
    extra = "" if mask_encoding == "dense" else f',"mask_encoding":"{mask_encoding}"'  # defaults left out
    if not forced_tokens:
        extra += ',"forced_tokens":false'
    return f'{{"sessions":[{",".join(parts)}],"variables":{flag}{extra}}}'.encode()


def step_frame(header: bytes, mask_bytes: int) -> tuple[NDArray[np.uint8], int]:
    """A ``/step`` answer buffer with its length-prefixed header written.

    Args:
        header: the header, serialized as UTF-8 JSON (padded here).
        mask_bytes: the size of the masks that follow.

    Returns:
        The uninitialized buffer (``np.empty``: the caller writes every mask byte) and the offset
        where the masks go.
    """
    header += b" " * (-len(header) % 4)
    offset = 4 + len(header)
    buf = np.empty(offset + mask_bytes, dtype=np.uint8)
    buf[:offset] = np.frombuffer(_HEADER_LENGTH.pack(len(header)) + header, dtype=np.uint8)
    return buf, offset


def step_header(
    words: int, vocab_size: int, rows: int, sessions: list[dict[str, Any]], mask_encoding: MaskEncoding = "dense"
) -> dict[str, Any]:
    """The header of a ``/step`` answer (to serialize as JSON for the writers below)."""
    header: dict[str, Any] = {"mask_words": words, "vocab_size": vocab_size, "rows": rows, "sessions": sessions}
    if mask_encoding == "blocks":
        header["mask_encoding"] = "blocks"
        header["block_words"] = BLOCK_WORDS
    return header


def dense_step_answer(header: bytes, rows: int, words: int) -> tuple[NDArray[np.uint8], NDArray[np.int32]]:
    """A dense ``/step`` answer with its header written, and its masks to fill in place.

    Args:
        header: the serialized :func:`step_header`.
        rows: mask rows.
        words: words per row.

    Returns:
        The answer buffer and a ``[rows, words]`` int32 view of its mask region: filling the view
        writes the answer (no copy). The buffer is ``np.empty``: every row must be written. The
        view is native int32, the wire's order on the little-endian hosts the server runs on.
    """
    buf, offset = step_frame(header, rows * words * 4)
    return buf, buf[offset:].view(np.int32).reshape(rows, words)


def dense_step_masks(header_room: int, rows: int, words: int) -> tuple[NDArray[np.uint8], NDArray[np.int32]]:
    """A buffer for a dense ``/step`` answer whose header is written after its masks.

    Args:
        header_room: bytes kept before the masks for the length word and the header (a multiple
            of 4, at least what :func:`frame_dense_step` will be given plus 4).
        rows: mask rows.
        words: words per row.

    Returns:
        The buffer (``np.empty``: every row must be written) and a ``[rows, words]`` int32 view
        of its mask region; then :func:`frame_dense_step` writes the header and gives the answer.
    """
    if header_room % 4:
        raise ValueError("header_room must be a multiple of 4")
    buf = np.empty(header_room + rows * words * 4, dtype=np.uint8)
    return buf, buf[header_room:].view(np.int32).reshape(rows, words)


def frame_dense_step(buf: NDArray[np.uint8], header: bytes, header_room: int) -> NDArray[np.uint8] | None:
    """Write ``header`` just before the masks of a :func:`dense_step_masks` buffer.

    Returns:
        The answer: the tail of ``buf`` from its length word (no copy); None when the padded
        header does not fit in ``header_room``.
    """
    header += b" " * (-len(header) % 4)
    start = header_room - 4 - len(header)
    if start < 0:
        return None
    buf[start:header_room] = np.frombuffer(_HEADER_LENGTH.pack(len(header)) + header, dtype=np.uint8)
    return buf[start:]


def blocks_step_answer(header: bytes, masks: NDArray[np.int32]) -> NDArray[np.uint8]:
    """A block-sparse ``/step`` answer: the serialized :func:`step_header`, then ``masks`` encoded."""
    bitmap, blocks = encode_blocks(masks)
    buf, offset = step_frame(header, bitmap.nbytes + blocks.nbytes)
    buf[offset : offset + bitmap.nbytes] = bitmap
    buf[offset + bitmap.nbytes :] = blocks.astype(WIRE_DTYPE, copy=False).view(np.uint8).reshape(-1)
    return buf


def read_step(content: bytes | memoryview) -> tuple[dict[str, Any], NDArray[np.int32]]:
    """A ``/step`` answer's header and its masks, dense ``[rows, mask_words]`` int32 either way.

    Dense masks are a read-only view of ``content`` (no copy).

    Raises:
        ValueError: the answer is not a well-formed step answer.
    """
    try:
        (length,) = _HEADER_LENGTH.unpack_from(content, 0)
        header = json.loads(bytes(content[4 : 4 + length]))
        words = int(header["mask_words"])
        rows = int(header["rows"])
        if header.get("mask_encoding", "dense") == "blocks":
            masks = decode_blocks(content, 4 + length, rows, words, int(header["block_words"]))
        else:
            masks = np.frombuffer(content, dtype=WIRE_DTYPE, offset=4 + length).reshape(rows, words)
    except (struct.error, KeyError, TypeError) as e:
        raise ValueError(f"not a step answer: {e!r}") from e
    return header, masks
