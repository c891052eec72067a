"""What a tokenizer is made of, as the loaders build it: token bytes, special ids, encoders, LLTokenizer."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import llguidance

__all__ = ["TokenizerParts"]


@dataclass(frozen=True)
class TokenizerParts:
    """A vocabulary and its encoders, before it becomes a :class:`~core.tokenizers.Tokenizer`.

    Attributes:
        tokens: The bytes of every id, in id order (a special token's bytes are its name).
        eos_token_ids: The end tokens, the primary one first (each once; any of them ends a
            constraint).
        bos_token_id: The beginning-of-sequence id, or None.
        special_token_ids: Ids of control tokens (never produced by ``encoder``).
        ll: The ``llguidance.LLTokenizer`` over the same vocabulary.
        encoder: Text (valid UTF-8, no lone surrogates) to ids, as a continuation of a text:
            no control id, no space prefix, so that the ids' bytes are the text's.
        tokenize: The model's own tokenization of a whole text (a prompt) without BOS, as its
            tokenizer gives it (SentencePiece vocabularies add their space prefix); the flag says
            whether special-token text becomes the control token.
        tokenization: What identifies the encoders' rules beyond the tokens (a pre-tokenizer's
            pattern, a normalizer): part of the tokenizer's digest.
    """

    tokens: list[bytes]
    eos_token_ids: tuple[int, ...]
    bos_token_id: int | None
    special_token_ids: frozenset[int]
    ll: llguidance.LLTokenizer
    encoder: Callable[[str], list[int]]
    tokenize: Callable[[str, bool], list[int]]
    tokenization: bytes
