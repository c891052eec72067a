"""Applying masks to logits (:mod:`guidance_client.logits`) against a token-by-token oracle."""

from __future__ import annotations

import numpy as np
import pytest

from guidance_client.logits import MaskPlan, apply_numpy
from guidance_client.wire import pack_tokens


def oracle(scores: np.ndarray, allowed: list[np.ndarray], rows: np.ndarray) -> np.ndarray:
    out = scores.copy()
    for ids, r in zip(allowed, rows):
        for t in range(out.shape[1]):
            if t not in set(ids.tolist()):
                out[r, t] = -np.inf
    return out


@pytest.mark.parametrize("width", [300, 320, 333, 400])
@pytest.mark.parametrize("seed", range(4))
def test_apply_numpy_keeps_exactly_the_allowed_logits(width: int, seed: int) -> None:
    vocab = 320 - 7  # a vocabulary that ends inside a word
    rng = np.random.default_rng(seed)
    sizes = [0, 1, 2, 17, 150, vocab - 3, vocab]
    allowed = [rng.choice(vocab, size=k, replace=False) for k in sizes]
    masks = np.stack([pack_tokens(a, vocab) for a in allowed])
    rows = rng.permutation(len(sizes) + 1)[: len(sizes)]  # one logits row stays unconstrained
    scores = rng.standard_normal((len(sizes) + 1, width)).astype(np.float32)
    expected = oracle(scores, [a[a < width] for a in allowed], rows)
    plan = MaskPlan.build(masks, vocab, width, rows)
    apply_numpy(scores, plan)
    np.testing.assert_array_equal(scores, expected)
    assert plan.sparse_rows.size and plan.dense_rows.size
    assert sorted(plan.empty_rows.tolist()) == [0]


def test_few_allowed_tokens_need_no_full_boolean_row() -> None:
    vocab = 131_072
    masks = np.stack([pack_tokens([5, 70_000], vocab), pack_tokens(range(0, vocab, 2), vocab)])
    plan = MaskPlan.build(masks, vocab, vocab)
    assert plan.sparse_rows.tolist() == [0] and plan.dense_rows.tolist() == [1]
    assert plan.keep_ids.tolist() == [5, 70_000]
    assert plan.dense_disallowed.shape == (1, vocab)  # only the dense row is unpacked


def test_the_package_and_the_llamacpp_adapter_import_no_engine() -> None:
    import subprocess
    import sys

    code = (
        "import sys, guidance_client, guidance_client.llamacpp, guidance_client.logits; "
        "print(sorted(m for m in ('torch', 'transformers', 'llama_cpp') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
