"""Explicit vocabularies, encoded by greedy longest match: small test vocabularies, and the
tokenizers compile workers validate grammars with."""

from __future__ import annotations

import re
from collections.abc import Sequence

import llguidance

from core.tokenizers.ends import checked_end_tokens
from core.tokenizers.parts import TokenizerParts

__all__ = ["GreedySource", "greedy_encode", "validation_tokenizer", "vocabulary_parts"]


def vocabulary_parts(
    tokens: Sequence[bytes],
    *,
    eos_token_ids: Sequence[int],
    special_token_ids: Sequence[int] = (),
    bos_token_id: int | None = None,
) -> TokenizerParts:
    """The parts of a tokenizer over an explicit vocabulary, encoding by greedy longest match.

    See :meth:`Tokenizer.from_vocabulary <core.tokenizers.Tokenizer.from_vocabulary>` for the
    arguments and the errors raised.
    """
    vocab: list[bytes] = []
    for token in tokens:
        if not isinstance(token, (bytes, bytearray)):
            raise TypeError(f"vocabulary tokens must be bytes, not {type(token).__name__}")
        vocab.append(bytes(token))
    n = len(vocab)
    if n == 0:
        raise ValueError("the vocabulary is empty")
    specials = set(special_token_ids) | set(eos_token_ids)
    if bos_token_id is not None:
        specials.add(bos_token_id)
    for token_id in sorted(specials):
        if not 0 <= token_id < n:
            raise ValueError(f"special id {token_id} is outside the vocabulary (0 to {n - 1})")
    ends = checked_end_tokens(eos_token_ids, n)
    lookup: dict[bytes, int] = {}
    for token_id, token in enumerate(vocab):
        if token_id in specials:
            continue
        if not token:
            raise ValueError(f"token {token_id} is empty")
        lookup.setdefault(token, token_id)
    max_len = max((len(t) for t in lookup), default=0)

    def greedy(text: str) -> list[int]:
        return greedy_encode(text.encode("utf-8"), lookup, max_len)

    names = {vocab[i].decode("utf-8", "replace"): i for i in sorted(specials, reverse=True) if vocab[i]}
    special_text = re.compile("|".join(re.escape(n) for n in sorted(names, key=len, reverse=True)))

    def tokenize(text: str, special: bool) -> list[int]:
        if not special:
            return greedy(text)
        out: list[int] = []
        pos = 0
        for match in special_text.finditer(text):
            out.extend(greedy(text[pos : match.start()]))
            out.append(names[match.group()])
            pos = match.end()
        out.extend(greedy(text[pos:]))
        return out

    ll = llguidance.LLTokenizer(
        llguidance.TokenizerWrapper(GreedySource(vocab, ends[0], bos_token_id, sorted(specials), lookup, max_len)),
        eos_token=list(ends),
    )
    return TokenizerParts(
        tokens=vocab,
        eos_token_ids=ends,
        bos_token_id=bos_token_id,
        special_token_ids=frozenset(specials),
        ll=ll,
        encoder=greedy,
        tokenize=tokenize,
        tokenization=b"greedy",
    )


def validation_tokenizer(
    tokens: list[bytes], eos_token_ids: list[int], bos_token_id: int | None, special_token_ids: list[int]
) -> llguidance.LLTokenizer:
    """An llguidance tokenizer over the same token bytes and special ids, for checking grammars.

    A compile worker (:mod:`core.workers`) validates grammars with it: validation reads the tokens'
    bytes and the special ids, never the encoder, which here is a greedy longest match.
    """
    specials = set(special_token_ids) | set(eos_token_ids)
    if bos_token_id is not None:
        specials.add(bos_token_id)
    lookup: dict[bytes, int] = {}
    for token_id, token in enumerate(tokens):
        if token and token_id not in specials:
            lookup.setdefault(token, token_id)
    max_len = max((len(t) for t in lookup), default=0)
    source = GreedySource(list(tokens), eos_token_ids[0], bos_token_id, sorted(specials), lookup, max_len)
    return llguidance.LLTokenizer(llguidance.TokenizerWrapper(source), eos_token=list(eos_token_ids))


def greedy_encode(data: bytes, lookup: dict[bytes, int], max_len: int, *, strict: bool = True) -> list[int]:
    """Greedy longest match. At a byte no token starts with: ValueError, or skip it if not strict."""
    out: list[int] = []
    pos, n = 0, len(data)
    while pos < n:
        for length in range(min(max_len, n - pos), 0, -1):
            token_id = lookup.get(data[pos : pos + length])
            if token_id is not None:
                out.append(token_id)
                pos += length
                break
        else:
            if strict:
                raise ValueError(f"no token of the vocabulary covers byte 0x{data[pos]:02x} at offset {pos}")
            pos += 1
    return out


class GreedySource:
    """What ``llguidance.TokenizerWrapper`` reads: tokens, special ids, and an encoder."""

    def __init__(
        self,
        tokens: list[bytes],
        eos_token_id: int,
        bos_token_id: int | None,
        special_token_ids: list[int],
        lookup: dict[bytes, int],
        max_len: int,
    ) -> None:
        self.tokens = tokens
        self.eos_token_id = eos_token_id
        self.bos_token_id = bos_token_id
        self.special_token_ids = special_token_ids
        self._lookup = lookup
        self._max_len = max_len

    def __call__(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise TypeError("str only")  # makes TokenizerWrapper pass str, not bytes
        # llguidance panics on an exception here: skip the bytes the vocabulary cannot spell.
        data = text.encode("utf-8", "replace")
        return greedy_encode(data, self._lookup, self._max_len, strict=False)
