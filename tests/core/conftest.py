"""Fixtures for the engine's tests: a tiny synthetic vocabulary for speed, tekken for realism."""

from __future__ import annotations

import pytest

from core import GuidanceBackend, Tokenizer, load_default_tokenizer
from tests.core.helpers import make_tiny_tokenizer


@pytest.fixture(scope="session")
def tiny_tokenizer() -> Tokenizer:
    return make_tiny_tokenizer()


@pytest.fixture()
def tiny_backend(tiny_tokenizer: Tokenizer) -> GuidanceBackend:
    return GuidanceBackend(tiny_tokenizer, max_cache_size=32)


@pytest.fixture(scope="session")
def tekken() -> Tokenizer:
    return load_default_tokenizer()


@pytest.fixture(scope="session")
def tekken_backend(tekken: Tokenizer) -> GuidanceBackend:
    return GuidanceBackend(tekken)
