"""Applying a step's masks to logits on the worker, without a per-token Python loop.

A structured constraint's masks mostly allow a handful of tokens (a JSON key, a digit, a
closing brace), sometimes nearly all of them (free text inside a string). Turning a packed
``[rows, mask_words]`` mask into a ``[rows, vocab]`` boolean array and calling ``masked_fill``
costs the same either way, and on a CPU worker it is the one part of the constraint that no
pipelining hides. So each row takes the cheaper of two routes:

- **sparse** (few nonzero words): the allowed ids are read from the nonzero words only; the row
  is then set to ``-inf`` in one fill and its allowed logits written back (a gather, a fill and a
  scatter of a few values);
- **dense** (many nonzero words): the row's *disallowed* bits are unpacked into a boolean row and
  ``masked_fill`` sets them to ``-inf``.

:class:`MaskPlan` decides and extracts, with numpy only; :func:`apply_numpy` applies a plan to a
numpy array (llama.cpp); the torch version is in :mod:`guidance_client.transformers`. Token ids
at or past the mask's vocabulary, or past its words (a model whose embedding is padded beyond its
tokenizer), are never allowed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = ["DENSE_WORDS_FRACTION", "MaskPlan", "apply_numpy"]

DENSE_WORDS_FRACTION = 0.125
"""A row whose nonzero words exceed this share of its words takes the dense route."""


@dataclass(frozen=True)
class MaskPlan:
    """Which logits to keep, per row, split into sparse and dense rows.

    Attributes:
        sparse_rows: rows (of the logits) taking the sparse route.
        keep_rows: for each allowed id of a sparse row, its row; ``keep_ids`` the id.
        keep_ids: the allowed ids of the sparse rows (aligned with ``keep_rows``).
        dense_rows: rows taking the dense route.
        dense_disallowed: ``[len(dense_rows), width]`` bool, True where the logit goes to -inf.
        empty_rows: rows (of the masks) that allow no token at all.
    """

    sparse_rows: NDArray[np.int64]
    keep_rows: NDArray[np.int64]
    keep_ids: NDArray[np.int64]
    dense_rows: NDArray[np.int64]
    dense_disallowed: NDArray[np.bool_]
    empty_rows: NDArray[np.int64]

    @classmethod
    def build(
        cls,
        masks: NDArray[np.int32],
        vocab_size: int,
        width: int,
        rows: NDArray[np.int64] | None = None,
        dense_fraction: float = DENSE_WORDS_FRACTION,
    ) -> MaskPlan:
        """Plan applying ``masks`` (``[n, words]`` int32) to ``n`` rows of logits ``width`` wide.

        Args:
            masks: one packed mask per constrained row.
            vocab_size: the masks' vocabulary (bits at or past it are ignored).
            width: the logits' last dimension (the model's vocabulary, maybe padded).
            rows: the logits row of each mask (default: ``0..n-1``).
            dense_fraction: see :data:`DENSE_WORDS_FRACTION`.
        """
        n, words = masks.shape
        rows = np.arange(n, dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
        limit = min(vocab_size, width, words * 32)
        used = masks[:, : (limit + 31) // 32]
        nonzero = used != 0  # [n, words] bool: 1/32 of the size of a token-level boolean
        counts = nonzero.sum(axis=1)
        dense = counts > dense_fraction * used.shape[1]
        empty = counts == 0
        sparse_idx = np.flatnonzero(~dense)
        dense_idx = np.flatnonzero(dense)

        # Sparse rows: unpack only their nonzero words into 32 bits each.
        r, w = np.nonzero(nonzero[sparse_idx])
        picked = np.ascontiguousarray(used[sparse_idx[r], w], dtype="<i4")
        bits = np.unpackbits(picked.view(np.uint8), bitorder="little").reshape(-1, 32)
        k, b = np.nonzero(bits)
        ids = w[k].astype(np.int64) * 32 + b
        ok = ids < limit
        keep_rows = rows[sparse_idx[r[k]]][ok]

        # Dense rows: the complement's bits, so masked_fill needs no negation pass.
        if dense_idx.size:
            inverted = np.invert(used[dense_idx]).astype("<i4", copy=False)
            disallowed = np.unpackbits(inverted.view(np.uint8), axis=1, bitorder="little", count=min(width, limit + 31))
            if disallowed.shape[1] < width:  # ids past the masks' words: never allowed
                disallowed = np.pad(disallowed, ((0, 0), (0, width - disallowed.shape[1])), constant_values=1)
            disallowed[:, limit:] = 1
            dense_disallowed = disallowed.view(np.bool_)
        else:
            dense_disallowed = np.zeros((0, width), dtype=np.bool_)
        return cls(
            sparse_rows=rows[sparse_idx],
            keep_rows=keep_rows,
            keep_ids=ids[ok],
            dense_rows=rows[dense_idx],
            dense_disallowed=dense_disallowed,
            empty_rows=np.flatnonzero(empty),
        )


def apply_numpy(scores: NDArray[np.floating], plan: MaskPlan) -> None:
    """Set the disallowed logits of ``scores`` (``[rows, width]``, in place) to ``-inf``."""
    if plan.sparse_rows.size:
        keep = scores[plan.keep_rows, plan.keep_ids]
        scores[plan.sparse_rows] = -np.inf
        scores[plan.keep_rows, plan.keep_ids] = keep
    for i, row in enumerate(plan.dense_rows):
        scores[row, plan.dense_disallowed[i]] = -np.inf
