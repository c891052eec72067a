"""Fixtures shared by every test package (keep this file small and general)."""

from __future__ import annotations

import pytest
from hypothesis import settings

from core import Tokenizer, load_default_tokenizer

# Property tests check behaviour, never speed (speed lives in bench/): no per-example deadline,
# which a shared, loaded machine would turn into flaky failures.
settings.register_profile("default", deadline=None)
settings.load_profile("default")


@pytest.fixture(scope="session")
def default_tokenizer() -> Tokenizer:
    """The embedded default tokenizer (tekken, 131,072 ids), built once per test session."""
    return load_default_tokenizer()
