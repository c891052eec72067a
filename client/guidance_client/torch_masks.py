"""Token masks on torch tensors: the wire's packed int32 rows applied to a batch's logits.

Needs torch (an engine's, never a dependency of this package). The packed rows travel to the
logits' device as they are (``mask_words`` int32 per row, 16 KB for 131,072 ids) and are unpacked
there, so a GPU does the work in a few kernels with no per-element Python. On a CPU the unpacking
is numpy's ``unpackbits`` (one byte per id), cheaper than torch's shifts.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch
from numpy.typing import NDArray

__all__ = ["allow_only", "apply_masks", "unpack"]

_SHIFTS: dict[torch.device, torch.Tensor] = {}


def _shifts(device: torch.device) -> torch.Tensor:
    shifts = _SHIFTS.get(device)
    if shifts is None:
        shifts = _SHIFTS[device] = torch.arange(32, dtype=torch.int32, device=device)
    return shifts


def unpack(masks: torch.Tensor | NDArray[np.int32], width: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """``[rows, width]`` bools on ``device``: True where the packed int32 ``masks`` allow the id.

    Bit ``t % 32`` of word ``t // 32`` is id ``t`` (the wire's layout). Ids past the masks' last
    word are not allowed; bits past ``width`` are dropped.
    """
    device = torch.device(device)
    rows = masks.shape[0]
    allowed = _unpack_numpy(masks) if device.type == "cpu" else _unpack_torch(masks, device)
    have = allowed.shape[1]
    if have >= width:
        return allowed[:, :width]
    pad = torch.zeros((rows, width - have), dtype=torch.bool, device=allowed.device)
    return torch.cat([allowed, pad], dim=1)


def _unpack_numpy(masks: torch.Tensor | NDArray[np.int32]) -> torch.Tensor:
    packed = masks.numpy() if isinstance(masks, torch.Tensor) else np.asarray(masks)
    # Little-endian words, little-endian bits: byte b of word w holds ids 32w + 8b ... + 7.
    words = np.ascontiguousarray(packed, dtype="<i4")
    return torch.from_numpy(np.unpackbits(words.view(np.uint8), axis=1, bitorder="little").view(np.bool_))


def _unpack_torch(masks: torch.Tensor | NDArray[np.int32], device: torch.device) -> torch.Tensor:
    packed = torch.as_tensor(masks, dtype=torch.int32).to(device, non_blocking=True)
    return ((packed.unsqueeze(-1) >> _shifts(device)) & 1).bool().reshape(packed.shape[0], -1)


def apply_masks(logits: torch.Tensor, rows: Sequence[int], masks: torch.Tensor | NDArray[np.int32]) -> torch.Tensor:
    """Set ``logits[rows[i], t]`` to ``-inf`` wherever ``masks[i]`` does not allow id ``t``.

    In place; returns ``logits``. ``masks`` holds one packed row per entry of ``rows``.
    """
    if not rows:
        return logits
    if len(rows) != masks.shape[0]:
        raise ValueError(f"{len(rows)} rows for {masks.shape[0]} masks")
    forbidden = ~unpack(masks, logits.shape[1], logits.device)
    if list(rows) == list(range(logits.shape[0])):  # the whole batch: no gather, no scatter
        return logits.masked_fill_(forbidden, float("-inf"))
    index = torch.as_tensor(list(rows), dtype=torch.long, device=logits.device)
    logits.index_copy_(0, index, logits.index_select(0, index).masked_fill_(forbidden, float("-inf")))
    return logits


def allow_only(row: NDArray[np.int32], tokens: Iterable[int]) -> None:
    """Make the packed mask ``row`` allow ``tokens`` and nothing else (ids past it are skipped)."""
    row[:] = 0
    for t in tokens:
        if 0 <= t < row.shape[0] * 32:
            row[t // 32] |= np.int32(np.uint32(1 << (t % 32)).view(np.int32))
