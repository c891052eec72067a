"""What the inference-server engine tests share: a real server on loopback, the reference masks."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from guidance_client import GuidanceClient
from tests import server as test_server

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


@pytest.fixture(scope="module")
def server_url(server: test_server.Server) -> str:
    """The URL of the engine tests' one server (``server`` in tests/engines/conftest.py)."""
    return server.url


@pytest.fixture
def client(server_url: str) -> Iterator[GuidanceClient]:
    """A client of that server, closed after the test."""
    with GuidanceClient(server_url) as c:
        yield c


def reference_allowed(grammar: Any) -> NDArray[np.bool_]:
    """The ids a remote grammar allows next, as ``[VOCAB]`` bools, from the server's mask."""
    row = np.zeros((1, grammar.mask_words), dtype=np.int32)
    grammar.fill_next_token_bitmask(row, 0)
    bits = np.unpackbits(row.astype("<i4").view(np.uint8), bitorder="little").astype(bool)
    return bits[:VOCAB]
