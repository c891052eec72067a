"""Tokenizers by name: the embedded default (loaded once per process) or a ``tokenizer.json`` path."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Final

from core.errors import UnknownTokenizer, excerpt
from core.tokenizers.tekken import TEKKEN_FILE, read_tekken
from core.tokenizers.tokenizer import Tokenizer

__all__ = ["DEFAULT_TOKENIZER_NAMES", "load_default_tokenizer", "load_tokenizer"]

#: Names :func:`load_tokenizer` resolves to the embedded default.
DEFAULT_TOKENIZER_NAMES: Final = ("default", "tekken")


def load_default_tokenizer() -> Tokenizer:
    """The embedded default tokenizer, Mistral tekken (131,072 ids, EOS 2, BOS 1).

    Built on first call (about a second) and shared for the life of the process.
    """
    return _load_tekken(TEKKEN_FILE)


def load_tokenizer(spec: str) -> Tokenizer:
    """Resolve a tokenizer name or path.

    Args:
        spec: ``"default"`` or ``"tekken"`` for the embedded default; otherwise the path of a
            Hugging Face ``tokenizer.json`` (named after the file's stem), or of a directory
            holding one (named after the directory).

    Returns:
        The tokenizer (the default is shared; a file is loaded anew on each call).

    Raises:
        UnknownTokenizer: Neither a known name nor an existing file.
        TokenizerError: The file is not a valid ``tokenizer.json``.
    """
    if spec in DEFAULT_TOKENIZER_NAMES:
        return load_default_tokenizer()
    path = Path(spec)
    try:
        if spec and path.is_dir() and (path / "tokenizer.json").is_file():
            return Tokenizer.from_hf_file(path.resolve().name, path / "tokenizer.json")
        found = bool(spec) and path.is_file()
    except (OSError, ValueError):  # e.g. a name too long for the file system
        found = False
    if found:
        return Tokenizer.from_hf_file(path.stem, path)
    raise UnknownTokenizer(
        f"unknown tokenizer {excerpt(spec)!r}: expected "
        + " or ".join(repr(n) for n in DEFAULT_TOKENIZER_NAMES)
        + ", or the path of a tokenizer.json"
    )


@functools.cache
def _load_tekken(path: Path) -> Tokenizer:
    return Tokenizer("tekken", read_tekken(path))
