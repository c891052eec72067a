"""Tokenizers: register an uploaded file, list what is loaded, encode and decode text.

The routes parse the request (query, body) and answer; the limits, the work kept off the event
loop and the one-upload-at-a-time rule live here. Who may upload is decided before the body is
read (:mod:`service.admission`).
"""

from __future__ import annotations

import asyncio

from core.errors import LimitExceeded
from core.tokenizers import Tokenizer
from service.schemas import TokenizerInfo, TokenizerList
from service.settings import Settings
from service.tokenizers import TokenizerRegistry, upload_key

__all__ = ["detokenize", "list_tokenizers", "register_tokenizer", "tokenize", "tokenizer_info"]

# Texts longer than this are encoded in a thread rather than on the event loop.
_INLINE_CHARS = 16_384


def tokenizer_info(name: str, tok: Tokenizer) -> TokenizerInfo:
    """What the API says of a tokenizer registered as ``name``."""
    return TokenizerInfo(
        tokenizer=name,
        digest=tok.digest,
        vocab_size=tok.vocab_size,
        eos_token_ids=list(tok.eos_token_ids),
        bos_token_id=tok.bos_token_id,
    )


def list_tokenizers(tokenizers: TokenizerRegistry) -> TokenizerList:
    """Every name tokenizers are registered under (aliases included)."""
    return TokenizerList(tokenizers=[tokenizer_info(name, tok) for name, tok in tokenizers.items()])


async def register_tokenizer(
    tokenizers: TokenizerRegistry, settings: Settings, name: str, data: bytes, eos_token_ids: list[int] | None
) -> tuple[TokenizerInfo, bool]:
    """Register the file ``data`` as ``name``; returns its description and whether it is new.

    Hashing and building run in threads (tens of MB, seconds); uploads are built one at a time.

    Raises:
        LimitExceeded: ``max_tokenizers`` reached (for new content), or a vocabulary past ``max_vocab_size``.
        TokenizerExists: ``name`` holds another tokenizer.
        TokenizerError: the file is not a tokenizer we can read.
    """
    key = await asyncio.to_thread(upload_key, data, eos_token_ids)
    async with tokenizers.upload_lock:
        tok = tokenizers.uploaded(key)
        if tok is None:
            tokenizers.check_room()  # before building: that costs seconds and tens of MB
            tok = await asyncio.to_thread(
                Tokenizer.from_bytes, name, data, eos_token_ids=eos_token_ids, max_vocab_size=settings.max_vocab_size
            )
        tok, new = tokenizers.add(name, tok, upload=key)
    return tokenizer_info(name, tok), new


async def tokenize(tokenizers: TokenizerRegistry, settings: Settings, name: str, text: str, special: bool) -> list[int]:
    """Encode ``text`` with the tokenizer ``name`` (long texts off the event loop).

    Raises:
        UnknownTokenizer: no tokenizer ``name``.
        LimitExceeded: a text longer than ``max_tokenize_chars``.
    """
    tok = tokenizers.get(name)
    limit = settings.max_tokenize_chars
    if len(text) > limit:
        raise LimitExceeded(f"a text of {len(text)} characters, above the limit of {limit}", "max_tokenize_chars")
    if len(text) > _INLINE_CHARS:
        return await asyncio.to_thread(tok.tokenize, text, special=special)
    return tok.tokenize(text, special=special)


def detokenize(tokenizers: TokenizerRegistry, settings: Settings, name: str, tokens: list[int]) -> str:
    """Decode ``tokens`` with the tokenizer ``name``.

    Raises:
        UnknownTokenizer: no tokenizer ``name``.
        LimitExceeded: more ids than a session may hold (``max_session_tokens``).
        InvalidTokens: an id outside the vocabulary.
    """
    tok = tokenizers.get(name)
    limit = settings.max_session_tokens
    if len(tokens) > limit:
        raise LimitExceeded(f"{len(tokens)} ids, above the limit of {limit}", "max_session_tokens")
    return tok.decode(tokens)
