"""Hugging Face ``tokenizer.json``: parsed and encoded by llguidance itself.

llguidance reads the file (the Rust ``tokenizers`` crate; no Python ``tokenizers`` at run time),
so its ``LLTokenizer`` and the encoder agree by construction. What this module adds: the end tokens
and BOS (from the model's configuration files, or found among the added tokens), spelling
special-token text with ordinary tokens, and checking the file before anything is sized by its
largest id.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import llguidance
import tokenizers

from core.errors import LimitExceeded, TokenizerError, UnknownTokenizer, excerpt
from core.tokenizers.ends import (
    BOS_CANDIDATES,
    EOS_CANDIDATES,
    candidate_tokens,
    checked_end_tokens,
    config_bos,
    config_end_tokens,
)
from core.tokenizers.parts import TokenizerParts

__all__ = ["MAX_VOCAB_SIZE", "hf_file_parts", "hf_parts"]

#: Largest vocabulary accepted from a ``tokenizer.json`` (real ones stay below 300,000 ids).
MAX_VOCAB_SIZE: Final = 1 << 21


def hf_parts(
    tokenizer_json: str | bytes,
    *,
    quote: bool,
    tokenizer_config: Mapping[str, Any] | None = None,
    generation_config: Mapping[str, Any] | None = None,
    eos_token_ids: Sequence[int] | None = None,
    max_vocab_size: int | None = None,
) -> TokenizerParts:
    """The parts of a tokenizer from the text of a Hugging Face ``tokenizer.json``.

    See :meth:`Tokenizer.from_hf_json <core.tokenizers.Tokenizer.from_hf_json>` for what is read
    and how text is encoded. ``quote``: whether errors may quote the input (False for files:
    their content is the server's, not the caller's, to echo).
    """

    def show(text: str) -> str:
        return f": {excerpt(text)!r}" if quote else ""

    if isinstance(tokenizer_json, (bytes, bytearray, memoryview)):
        try:
            text = bytes(tokenizer_json).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise TokenizerError(f"tokenizer.json is not UTF-8: {exc}") from None
    elif isinstance(tokenizer_json, str):
        text = tokenizer_json
    else:
        raise TypeError(f"tokenizer_json must be str or bytes, not {type(tokenizer_json).__name__}")
    text = text.lstrip("\ufeff \t\r\n")
    try:
        spec = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise TokenizerError(f"tokenizer.json is not valid JSON ({excerpt(str(exc))}){show(text)}") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("model"), dict):
        raise TokenizerError(f'a tokenizer.json is a JSON object with a "model" object{show(text)}')
    added = _added_tokens(spec)
    vocab_size = _hf_vocab_size(spec["model"], added)
    if max_vocab_size is not None and vocab_size > max_vocab_size:
        # Before llguidance sizes its tables (and we ours) by the largest id.
        raise LimitExceeded(
            f"the tokenizer's largest id is {vocab_size - 1}, above the limit of {max_vocab_size} ids",
            "max_vocab_size",
        )
    by_content = {content: token_id for token_id, content in added}
    added_ids = {token_id for token_id, _ in added}
    if eos_token_ids is None:
        eos_token_ids = config_end_tokens(tokenizer_config, generation_config, by_content)
        if not eos_token_ids:
            eos_token_ids = candidate_tokens(EOS_CANDIDATES, by_content)
            if not eos_token_ids:
                raise TokenizerError(
                    "no end token found: the tokenizer.json has none of the added tokens "
                    + ", ".join(EOS_CANDIDATES)
                    + "; name them (eos_token_ids, or a generation_config.json)"
                )
    ends = checked_end_tokens(eos_token_ids, vocab_size, added_ids)
    bos_token_id = config_bos(tokenizer_config, generation_config, by_content)
    if bos_token_id is None:
        found = candidate_tokens(BOS_CANDIDATES, by_content)
        bos_token_id = found[0] if found else None

    try:
        ll = llguidance.LLTokenizer(text, eos_token=list(ends))
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # pyo3 panics derive from BaseException
        raise TokenizerError(f"llguidance cannot load this tokenizer.json: {excerpt(str(exc))}") from None
    if ll.vocab_size != vocab_size:
        raise TokenizerError(
            f"the ids of this tokenizer.json are not contiguous: its largest id is "
            f"{vocab_size - 1} but it defines {ll.vocab_size} tokens"
        )
    tokens = [ll.decode_bytes([i]) for i in range(vocab_size)]
    special_list: list[int] = []
    for token_id in range(vocab_size):
        if ll.is_special_token(token_id):
            if token_id in added_ids:
                special_list.append(token_id)
            else:
                # llguidance marks its special tokens with a leading 0xFF byte, so it also
                # takes an ordinary token starting with 0xFF (the byte 0xFF itself) as special
                # and decodes it without that byte. 0xFF never occurs in UTF-8 text.
                tokens[token_id] = b"\xff" + tokens[token_id]
    specials = frozenset(special_list)
    plain = _plain_spellings(ll, tokens, specials)

    def encode(text: str) -> list[int]:
        ids = ll.tokenize_str(text)
        if specials.isdisjoint(ids):
            return ids
        out: list[int] = []
        for token_id in ids:
            if token_id in specials:
                out.extend(plain.get(token_id, (token_id,)))
            else:
                out.append(token_id)
        if b"".join([tokens[i] for i in out]) == text.encode("utf-8"):
            return out
        # An added token that swallowed surrounding spaces (lstrip/rstrip): spell it all.
        fallback = ll.greedy_tokenize(text)
        if specials.isdisjoint(fallback):
            return fallback
        return out

    model = _model_tokenizer(text)
    model_lock = threading.Lock()

    def tokenize(text: str, special: bool) -> list[int]:
        with model_lock:  # the flag is the tokenizer's, not the call's
            model.encode_special_tokens = not special
            ids: list[int] = model.encode(text, add_special_tokens=False).ids
        return ids

    return TokenizerParts(
        tokens=tokens,
        eos_token_ids=ends,
        bos_token_id=bos_token_id,
        special_token_ids=specials,
        ll=ll,
        encoder=encode,
        tokenize=tokenize,
        # The file itself: its normaliser, pre-tokeniser, merges and added tokens are the rules.
        tokenization=b"tokenizer.json\0" + hashlib.sha256(text.encode("utf-8")).digest(),
    )


def hf_file_parts(path: str | os.PathLike[str], *, eos_token_ids: Sequence[int] | None = None) -> TokenizerParts:
    """The parts of a tokenizer from a Hugging Face ``tokenizer.json`` file.

    The model's ``tokenizer_config.json`` and ``generation_config.json``, when they sit beside it,
    give the end tokens and BOS (as a model directory has them).

    Args:
        path: The file.
        eos_token_ids: The end tokens, replacing those the files name.

    Returns:
        The parts of the tokenizer.

    Raises:
        UnknownTokenizer: The file does not exist.
        TokenizerError: It cannot be read or is not a valid ``tokenizer.json``.
    """
    file = Path(path)
    data = _read(file)
    configs: list[dict[str, Any] | None] = []
    for config_name in ("tokenizer_config.json", "generation_config.json"):
        config_file = file.with_name(config_name)
        if not config_file.is_file():
            configs.append(None)
            continue
        try:
            config = json.loads(_read(config_file))
        except (ValueError, RecursionError):
            raise TokenizerError(f"{config_name} beside {excerpt(os.fspath(path))!r} is not valid JSON") from None
        if not isinstance(config, dict):
            raise TokenizerError(f"{config_name} beside {excerpt(os.fspath(path))!r} is not a JSON object")
        configs.append(config)
    return hf_parts(
        data, quote=False, tokenizer_config=configs[0], generation_config=configs[1], eos_token_ids=eos_token_ids
    )


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise UnknownTokenizer(f"no tokenizer file {excerpt(os.fspath(path))!r}") from None
    except OSError as exc:
        raise TokenizerError(f"cannot read tokenizer file {excerpt(os.fspath(path))!r}: {exc.strerror}") from None


def _model_tokenizer(text: str) -> tokenizers.Tokenizer:
    """Hugging Face's own ``tokenizers`` over the file: the model's tokenization of a prompt, with
    its normalizer (SentencePiece's space prefix, which llguidance leaves out) and its handling of
    added tokens, exactly."""
    try:
        return tokenizers.Tokenizer.from_str(text)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # a pyo3 panic derives from BaseException
        raise TokenizerError(f"the tokenizers library cannot load this tokenizer.json: {excerpt(str(exc))}") from None


def _added_tokens(spec: dict[str, Any]) -> list[tuple[int, str]]:
    raw = spec.get("added_tokens") or []
    if not isinstance(raw, list):
        raise TokenizerError('"added_tokens" of a tokenizer.json must be a list')
    out: list[tuple[int, str]] = []
    for index, entry in enumerate(raw):
        token_id = entry.get("id") if isinstance(entry, dict) else None
        content = entry.get("content") if isinstance(entry, dict) else None
        if not isinstance(token_id, int) or not _is_id(token_id) or not isinstance(content, str):
            raise TokenizerError(
                f'"added_tokens" entry {index} of the tokenizer.json needs a non-negative '
                'integer "id" and a string "content"'
            )
        out.append((token_id, content))
    return out


def _hf_vocab_size(model: dict[str, Any], added: list[tuple[int, str]]) -> int:
    vocab = model.get("vocab")
    if isinstance(vocab, dict):
        ids = list(vocab.values())
        if not all(_is_id(i) for i in ids):
            raise TokenizerError('the "vocab" of a tokenizer.json maps tokens to integer ids')
    elif isinstance(vocab, list):  # Unigram: [[piece, score], ...], id = position
        ids = [len(vocab) - 1] if vocab else []
    else:
        raise TokenizerError('the "model" of a tokenizer.json needs a "vocab"')
    ids.extend(token_id for token_id, _ in added)
    if not ids:
        raise TokenizerError("the tokenizer.json defines no tokens")
    largest = max(ids)
    if largest >= MAX_VOCAB_SIZE:
        raise TokenizerError(f"token id {largest} is too large (at most {MAX_VOCAB_SIZE - 1})")
    return int(largest) + 1


def _is_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _plain_spellings(
    ll: llguidance.LLTokenizer, tokens: Sequence[bytes], specials: frozenset[int]
) -> dict[int, tuple[int, ...]]:
    """For each special token, non-special ids whose bytes spell its text (greedy)."""
    out: dict[int, tuple[int, ...]] = {}
    for token_id in specials:
        try:
            text = tokens[token_id].decode("utf-8")
        except UnicodeDecodeError:
            continue
        if not text:
            continue
        spelled = ll.greedy_tokenize(text)
        if specials.isdisjoint(spelled) and b"".join(tokens[i] for i in spelled) == tokens[token_id]:
            out[token_id] = tuple(spelled)
    return out
