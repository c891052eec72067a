"""The wire format, defined once in ``guidance_client.wire``: every form round-trips.

The writer halves (:func:`step_header`, :func:`dense_step_answer`, :func:`blocks_step_answer`,
:func:`encode_blocks`) are what the server sends with; the reader halves (:func:`read_step`,
:func:`decode_blocks`) what the client parses with.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numpy.typing import NDArray

from guidance_client.wire import (
    BLOCK_WORDS,
    MaskEncoding,
    allowed_tokens,
    blocks_per_row,
    blocks_step_answer,
    decode_blocks,
    dense_step_answer,
    encode_blocks,
    mask_words,
    pack_tokens,
    read_step,
    step_header,
    step_request,
    to_bytes,
)
from service.schemas import StepRequest

_ROWS = st.integers(1, 5000).flatmap(
    lambda v: st.tuples(st.just(v), st.lists(st.sets(st.integers(0, v - 1), max_size=40), min_size=1, max_size=6))
)


def _rows(vocab: int, rows_ids: list[set[int]]) -> NDArray[np.int32]:
    return np.stack([pack_tokens(ids, vocab) for ids in rows_ids])


def test_bit_t_of_word_t_div_32_little_endian() -> None:
    row = pack_tokens([0, 31, 33], 64)
    assert row.tolist() == [np.int32(-2147483647), 2]
    assert to_bytes(row) == bytes([1, 0, 0, 0x80, 2, 0, 0, 0])
    assert allowed_tokens(row, 64).tolist() == [0, 31, 33]
    assert mask_words(32) == 1 and mask_words(33) == 2 and mask_words(131072) == 4096


@given(_ROWS)
def test_block_sparse_form_keeps_exactly_the_blocks_with_set_bits(case: tuple[int, list[set[int]]]) -> None:
    vocab, rows_ids = case
    rows = _rows(vocab, rows_ids)
    bitmap, blocks = encode_blocks(rows)
    per_row = blocks_per_row(rows.shape[1])
    assert bitmap.size % 4 == 0 and blocks.shape[1] == BLOCK_WORDS
    # a block is present exactly when one of its 2,048 token ids is allowed
    span = BLOCK_WORDS * 32
    expected = [bool(ids & set(range(b * span, (b + 1) * span))) for ids in rows_ids for b in range(per_row)]
    present = np.unpackbits(bitmap, bitorder="little")[: len(expected)].astype(bool).tolist()
    assert present == expected and not np.unpackbits(bitmap, bitorder="little")[len(expected) :].any()
    assert blocks.shape[0] == sum(expected)
    data = b"\0" * 8 + bitmap.tobytes() + blocks.astype("<i4").tobytes()
    assert np.array_equal(decode_blocks(data, 8, rows.shape[0], rows.shape[1], BLOCK_WORDS), rows)


def _answer(vocab: int, statuses: list[dict[str, Any]], rows: NDArray[np.int32], encoding: MaskEncoding) -> bytes:
    """A step answer written with the writers the server uses (``service/routes/step.py``)."""
    head = json.dumps(step_header(rows.shape[1], vocab, rows.shape[0], statuses, encoding)).encode()
    if encoding == "blocks":
        return blocks_step_answer(head, rows).tobytes()
    buf, masks = dense_step_answer(head, rows.shape[0], rows.shape[1])
    masks[:] = rows  # the server fills the view in place
    return buf.tobytes()


@pytest.mark.parametrize("encoding", ["dense", "blocks"])
@given(case=_ROWS, session_id=st.text(max_size=12))
def test_step_answer_round_trips(encoding: MaskEncoding, case: tuple[int, list[set[int]]], session_id: str) -> None:
    vocab, rows_ids = case
    rows = _rows(vocab, rows_ids)
    statuses = [{"session_id": session_id + str(i), "row": i, "rows": 1, "status": "ok"} for i in range(len(rows))]
    data = _answer(vocab, statuses, rows, encoding)
    (length,) = np.frombuffer(data[:4], dtype="<u4")
    assert length % 4 == 0 and data[4 + length - 1 : 4 + length] in (b" ", b"}")  # header padded to 4 bytes
    header, masks = read_step(data)
    assert header["sessions"] == statuses and header["vocab_size"] == vocab
    assert header["rows"] == rows.shape[0] and header["mask_words"] == rows.shape[1]
    assert header.get("mask_encoding", "dense") == encoding
    assert masks.dtype == np.int32 and np.array_equal(masks, rows)


def test_dense_answer_masks_are_little_endian_words_after_the_header() -> None:
    rows = _rows(100, [{0, 33}, {99}])
    data = _answer(100, [], rows, "dense")
    (length,) = np.frombuffer(data[:4], dtype="<u4")
    assert data[4 + length :] == to_bytes(rows)  # the masks region is exactly the rows' wire bytes


def test_a_truncated_or_foreign_answer_is_refused() -> None:
    rows = _rows(100, [{1, 2}, {99}])
    data = _answer(100, [], rows, "dense")
    assert np.array_equal(read_step(data)[1], rows)
    for bad in (data[:-4], data[:2], b'{"not": "a step"}', b"\x02\0\0\0{}"):
        with pytest.raises(ValueError):
            read_step(bad)


@given(
    st.lists(
        st.tuples(
            st.text(max_size=10),
            st.lists(st.integers(0, 2**31 - 1), max_size=4),
            st.lists(st.integers(0, 9), max_size=3),
        ),
        max_size=5,
    ),
    st.booleans(),
    st.sampled_from(["dense", "blocks"]),
    st.booleans(),
)
def test_step_request_is_the_json_the_server_parses(
    items: list[tuple[str, list[int], list[int]]], variables: bool, encoding: MaskEncoding, forced: bool
) -> None:
    body = step_request(items, variables, encoding, forced)
    parsed = StepRequest.model_validate_json(body)  # the server's own model of the request
    assert [(s.session_id, s.tokens, s.draft_tokens or []) for s in parsed.sessions] == [
        (sid, tokens, draft) for sid, tokens, draft in items
    ]
    assert (parsed.variables, parsed.mask_encoding, parsed.forced_tokens) == (variables, encoding, forced)
