"""Packed masks on torch tensors (``guidance_client.torch_masks``), against a per-id Python oracle."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed: this tier runs in .ci/engines-serving")

from guidance_client.torch_masks import _unpack_numpy, _unpack_torch, allow_only, apply_masks, unpack  # noqa: E402


def oracle(masks: np.ndarray, width: int) -> np.ndarray:
    out = np.zeros((masks.shape[0], width), dtype=bool)
    for r in range(masks.shape[0]):
        for t in range(min(width, masks.shape[1] * 32)):
            out[r, t] = (int(masks[r, t // 32]) >> (t % 32)) & 1 == 1
    return out


@pytest.mark.parametrize("width", [64, 70, 96, 100])  # equal to, within and past the masks' bits
def test_unpack_both_ways_match_the_oracle(width: int) -> None:
    rng = np.random.default_rng(5)
    masks = rng.integers(-(2**31), 2**31, size=(3, 3), dtype=np.int64).astype(np.int32)
    masks[1] = -1  # every bit, the sign bit included
    masks[2] = 0
    expected = oracle(masks, width)
    assert np.array_equal(unpack(masks, width).numpy(), expected)
    assert np.array_equal(unpack(torch.from_numpy(masks), width).numpy(), expected)
    # The device path (shifts on the logits' device), run on the CPU here.
    got = _unpack_torch(masks, torch.device("cpu")).numpy()[:, :width]
    assert np.array_equal(got, expected[:, : got.shape[1]])
    assert np.array_equal(_unpack_numpy(masks).numpy(), _unpack_torch(masks, torch.device("cpu")).numpy())


def test_apply_masks_rows_subset_and_whole_batch() -> None:
    rng = np.random.default_rng(6)
    masks = rng.integers(-(2**31), 2**31, size=(2, 2), dtype=np.int64).astype(np.int32)
    logits = torch.randn((4, 64))
    original = logits.clone()
    apply_masks(logits, [3, 1], masks)
    allowed = oracle(masks, 64)
    for k, row in enumerate([3, 1]):
        a = torch.from_numpy(allowed[k])
        assert torch.isneginf(logits[row][~a]).all() and torch.equal(logits[row][a], original[row][a])
    assert torch.equal(logits[0], original[0]) and torch.equal(logits[2], original[2])
    whole = torch.randn((2, 64))
    kept = whole.clone()
    apply_masks(whole, [0, 1], masks)
    assert torch.equal(torch.isfinite(whole), torch.from_numpy(allowed))
    assert torch.equal(whole[torch.from_numpy(allowed)], kept[torch.from_numpy(allowed)])
    with pytest.raises(ValueError, match="2 rows for 1 masks"):
        apply_masks(whole, [0, 1], masks[:1])


def test_allow_only() -> None:
    row = np.full(3, -1, dtype=np.int32)
    allow_only(row, [0, 31, 33, 95, 96, -1])  # 96 and -1 are past the row: skipped
    assert np.flatnonzero(oracle(row[None, :], 96)[0]).tolist() == [0, 31, 33, 95]
