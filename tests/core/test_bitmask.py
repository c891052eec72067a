"""The wire format of masks: layout, little-endian bytes, round trips."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from core import GuidanceBackend, allowed_tokens, mask_words
from core.bitmask import allocate_bitmask, from_bytes, pack_tokens, to_bytes


def test_layout_bit_t_of_word_t_div_32() -> None:
    row = pack_tokens([0, 31, 32, 69], 70)
    assert row.shape == (3,) and row.dtype == np.int32
    assert row[0] == np.int32(-2147483647)  # bits 0 and 31
    assert row[1] == 1 and row[2] == 1 << 5
    assert to_bytes(row)[:4] == bytes([1, 0, 0, 0x80])  # little-endian


@given(st.integers(1, 300).flatmap(lambda v: st.tuples(st.just(v), st.sets(st.integers(0, v - 1)))))
def test_pack_unpack_and_wire_round_trip(case: tuple[int, set[int]]) -> None:
    vocab, ids = case
    row = pack_tokens(ids, vocab)
    assert row.shape == (mask_words(vocab),)
    assert allowed_tokens(row, vocab).tolist() == sorted(ids)
    back = from_bytes(to_bytes(row), vocab)
    assert back.shape == (1, mask_words(vocab)) and np.array_equal(back[0], row)


def test_allocate_allows_everything() -> None:
    bm = allocate_bitmask(2, 33)
    assert bm.shape == (2, 2) and (bm == -1).all()


def test_bits_past_the_vocabulary_are_zero(tiny_backend: GuidanceBackend) -> None:
    vocab = tiny_backend.tokenizer.vocab_size
    assert vocab % 32, "the tiny vocabulary must not be a multiple of 32 for this test"
    bitmask = np.full((1, mask_words(vocab)), -1, dtype=np.int32)
    tiny_backend.compile_regex("(?s:.*)").create_state().fill_bitmask(bitmask, 0)
    assert allowed_tokens(bitmask[0], mask_words(vocab) * 32).max() < vocab


@given(
    st.integers(1, 5000).flatmap(
        lambda v: st.tuples(st.just(v), st.lists(st.sets(st.integers(0, v - 1), max_size=40), min_size=1, max_size=6))
    )
)
def test_block_sparse_form_keeps_exactly_the_blocks_with_set_bits(case: tuple[int, list[set[int]]]) -> None:
    from core.bitmask import BLOCK_WORDS, blocks_per_row, encode_blocks
    from service.client import _decode_blocks  # the client's reader (numpy only)

    vocab, rows_ids = case
    rows = np.stack([pack_tokens(ids, vocab) for ids in rows_ids])
    bitmap, blocks = encode_blocks(rows)
    per_row = blocks_per_row(rows.shape[1])
    assert bitmap.size % 4 == 0 and blocks.shape[1] == BLOCK_WORDS
    # a block is present exactly when one of its 2,048 token ids is allowed
    expected = [
        bool(ids & set(range(b * BLOCK_WORDS * 32, (b + 1) * BLOCK_WORDS * 32))) for ids in rows_ids for b in range(per_row)
    ]
    present = np.unpackbits(bitmap, bitorder="little")[: len(expected)].astype(bool).tolist()
    assert present == expected and not np.unpackbits(bitmap, bitorder="little")[len(expected) :].any()
    assert blocks.shape[0] == sum(expected)
    wire = b"\0" * 8 + bitmap.tobytes() + blocks.astype("<i4").tobytes()
    assert np.array_equal(_decode_blocks(wire, 8, rows.shape[0], rows.shape[1], BLOCK_WORDS), rows)
