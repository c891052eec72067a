"""Fixtures shared by every test package (keep this file small and general)."""

from __future__ import annotations

import pytest

from core import Tokenizer, load_default_tokenizer


@pytest.fixture(scope="session")
def default_tokenizer() -> Tokenizer:
    """The embedded default tokenizer (tekken, 131,072 ids), built once per test session."""
    return load_default_tokenizer()
