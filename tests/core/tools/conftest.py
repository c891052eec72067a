"""Vocabularies and templates for the tool-call tests: tekken (embedded), and the families' real
vocabularies and chat templates from ``tests/vocabularies.py`` (skipped with the reason when that
helper or its archive is not available)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest

from core import GuidanceBackend, Tokenizer
from core.tokenizers import load_default_tokenizer


def _helper() -> Any:
    try:
        from tests import vocabularies
    except ImportError:
        pytest.skip("tests/vocabularies.py (real vocabularies and chat templates from llama.cpp) is not available")
    return vocabularies


@functools.cache
def _backend(name: str) -> GuidanceBackend:
    if name == "tekken":
        return GuidanceBackend(load_default_tokenizer())
    path = _helper().vocab_path(name)
    return GuidanceBackend(Tokenizer.from_gguf(name, path))


def backend_for(name: str) -> GuidanceBackend:
    """A backend on the vocabulary ``name`` (``tekken`` or a llama.cpp ``ggml-vocab`` name), built once."""
    if name != "tekken":
        _helper()
    try:
        return _backend(name)
    except Exception as e:  # a vocabulary llguidance cannot load (noted in docs/tools.md)
        if isinstance(e, pytest.skip.Exception):
            raise
        pytest.skip(f"vocabulary {name} does not load: {str(e)[:160]}")


def template_path(file_name: str) -> Path:
    """A chat template of llama.cpp's ``models/templates``."""
    return Path(_helper().templates_dir()) / file_name
