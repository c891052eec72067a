"""Hugging Face ``tokenizer.json``: parsed and encoded by llguidance itself.

llguidance reads the file (the Rust ``tokenizers`` crate; no Python ``tokenizers`` at run time),
so its ``LLTokenizer`` and the encoder agree by construction. What this module adds: finding EOS
and BOS among the added tokens, spelling special-token text with ordinary tokens, and checking
the file before anything is sized by its largest id.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import llguidance

from core.errors import LimitExceeded, TokenizerError, UnknownTokenizer, excerpt
from core.tokenizers.parts import TokenizerParts

__all__ = ["BOS_CANDIDATES", "EOS_CANDIDATES", "MAX_VOCAB_SIZE", "hf_file_parts", "hf_parts"]

#: Added tokens taken as EOS of a ``tokenizer.json``, in order of preference.
EOS_CANDIDATES: Final = (
    "</s>",
    "<|endoftext|>",
    "<|im_end|>",
    "<|end_of_text|>",
    "<eos>",
    "<|eot_id|>",
    "<|end|>",
    "<end_of_turn>",
)
#: Added tokens taken as BOS of a ``tokenizer.json``, in order of preference (BOS is optional).
BOS_CANDIDATES: Final = ("<s>", "<|begin_of_text|>", "<bos>", "<|startoftext|>")

#: Largest vocabulary accepted from a ``tokenizer.json`` (real ones stay below 300,000 ids).
MAX_VOCAB_SIZE: Final = 1 << 21


def hf_parts(tokenizer_json: str | bytes, *, quote: bool, max_vocab_size: int | None = None) -> TokenizerParts:
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
        raise TokenizerError(
            f"tokenizer.json is not valid JSON ({excerpt(str(exc))}){show(text)}"
        ) from None
    if not isinstance(spec, dict) or not isinstance(spec.get("model"), dict):
        raise TokenizerError(
            f'a tokenizer.json is a JSON object with a "model" object{show(text)}'
        )
    added = _added_tokens(spec)
    vocab_size = _hf_vocab_size(spec["model"], added)
    if max_vocab_size is not None and vocab_size > max_vocab_size:
        # Before llguidance sizes its tables (and we ours) by the largest id.
        raise LimitExceeded(
            f"the tokenizer's largest id is {vocab_size - 1}, above the limit of {max_vocab_size} ids",
            "max_vocab_size",
        )
    by_content = {content: token_id for token_id, content in added}
    eos_name = next((c for c in EOS_CANDIDATES if c in by_content), None)
    if eos_name is None:
        raise TokenizerError(
            "no EOS token found: the tokenizer.json has none of the added tokens "
            + ", ".join(EOS_CANDIDATES)
        )
    eos_token_id = by_content[eos_name]
    bos_name = next((c for c in BOS_CANDIDATES if c in by_content), None)
    bos_token_id = None if bos_name is None else by_content[bos_name]

    try:
        ll = llguidance.LLTokenizer(text, eos_token=eos_token_id)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # pyo3 panics derive from BaseException
        raise TokenizerError(
            f"llguidance cannot load this tokenizer.json: {excerpt(str(exc))}"
        ) from None
    if ll.vocab_size != vocab_size:
        raise TokenizerError(
            f"the ids of this tokenizer.json are not contiguous: its largest id is "
            f"{vocab_size - 1} but it defines {ll.vocab_size} tokens"
        )
    tokens = [ll.decode_bytes([i]) for i in range(vocab_size)]
    added_ids = {token_id for token_id, _ in added}
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
    if tokens[eos_token_id] != eos_name.encode() or eos_token_id not in specials:
        raise TokenizerError(
            f"the EOS token {eos_name!r} does not have id {eos_token_id} as the file says"
        )
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

    return TokenizerParts(
        tokens=tokens,
        eos_token_id=eos_token_id,
        bos_token_id=bos_token_id,
        special_token_ids=specials,
        ll=ll,
        encoder=encode,
    )


def hf_file_parts(path: str | os.PathLike[str]) -> TokenizerParts:
    """The parts of a tokenizer from a Hugging Face ``tokenizer.json`` file.

    Args:
        path: The file.

    Returns:
        The parts of the tokenizer.

    Raises:
        UnknownTokenizer: The file does not exist.
        TokenizerError: It cannot be read or is not a valid ``tokenizer.json``.
    """
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise UnknownTokenizer(f"no tokenizer file {excerpt(os.fspath(path))!r}") from None
    except OSError as exc:
        raise TokenizerError(
            f"cannot read tokenizer file {excerpt(os.fspath(path))!r}: {exc.strerror}"
        ) from None
    return hf_parts(data, quote=False)


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
