"""What the inference-server engine tests share besides their fixtures (tests/engines/conftest.py): the
vocabulary's size and EOS, the specs the plugins' walks constrain, and the reference masks."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

VOCAB = 131_072
"""The server's default tokenizer (tekken): the vocabulary the tests' logits cover."""

EOS = 2
"""Tekken's end-of-sequence id."""

SCHEMA = {
    "type": "object",
    "properties": {"ok": {"type": "boolean"}, "n": {"enum": [1, 2, 3]}},
    "required": ["ok", "n"],
    "additionalProperties": False,
}
"""A JSON schema of short instances: what the plugins' walks constrain."""

REGEX = r"[0-9]{1,3}(\.[0-9]{1,2})?"
"""A regex of short texts, beside ``SCHEMA``."""


def reference_allowed(grammar: Any) -> NDArray[np.bool_]:
    """The ids a remote grammar allows next, as ``[VOCAB]`` bools, from the server's mask."""
    row = np.zeros((1, grammar.mask_words), dtype=np.int32)
    grammar.fill_next_token_bitmask(row, 0)
    bits = np.unpackbits(row.astype("<i4").view(np.uint8), bitorder="little").astype(bool)
    return bits[:VOCAB]
