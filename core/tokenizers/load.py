"""Tokenizers by name: the embedded default (loaded once per process), or a file's path."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from core.errors import TokenizerError, UnknownTokenizer, excerpt
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


def load_tokenizer(spec: str, *, eos_token_ids: Sequence[int] | None = None) -> Tokenizer:
    """Resolve a tokenizer name or path.

    Args:
        spec: ``"default"`` or ``"tekken"`` for the embedded default; otherwise the path of a
            GGUF file (``*.gguf``) or of a Hugging Face ``tokenizer.json`` (named after the file's
            stem; ``tokenizer_config.json`` and ``generation_config.json`` beside it are read),
            or of a model directory holding a ``tokenizer.json`` (named after the directory).
        eos_token_ids: The end tokens, replacing the file's own (not for the default).

    Returns:
        The tokenizer (the default is shared; a file is loaded anew on each call).

    Raises:
        UnknownTokenizer: Neither a known name nor an existing file.
        TokenizerError: The file is not a valid tokenizer.
    """
    if spec in DEFAULT_TOKENIZER_NAMES:
        if eos_token_ids is not None:
            raise TokenizerError("the embedded default tokenizer's end tokens cannot be replaced")
        return load_default_tokenizer()
    path = Path(spec)
    try:
        if spec and path.is_dir() and (path / "tokenizer.json").is_file():
            return Tokenizer.from_hf_file(path.resolve().name, path / "tokenizer.json", eos_token_ids=eos_token_ids)
        found = bool(spec) and path.is_file()
    except (OSError, ValueError):  # e.g. a name too long for the file system
        found = False
    if found and path.suffix.lower() == ".gguf":
        return Tokenizer.from_gguf(path.stem, path, eos_token_ids=eos_token_ids)
    if found:
        return Tokenizer.from_hf_file(path.stem, path, eos_token_ids=eos_token_ids)
    raise UnknownTokenizer(
        f"unknown tokenizer {excerpt(spec)!r}: expected "
        + " or ".join(repr(n) for n in DEFAULT_TOKENIZER_NAMES)
        + ", or the path of a GGUF file, a tokenizer.json or a model directory"
    )


@functools.cache
def _load_tekken(path: Path) -> Tokenizer:
    return Tokenizer("tekken", read_tekken(path))
