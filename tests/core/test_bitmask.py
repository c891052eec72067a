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
