"""The :class:`Tokenizer`: a vocabulary, its encoder, and the llguidance tokenizer built over it.

Conventions shared by every source (:mod:`~core.tokenizers.tekken`, :mod:`~core.tokenizers.hf`,
:mod:`~core.tokenizers.vocabulary`):

* ``encode`` never produces a special (control) id: text such as ``"</s>"`` is encoded as
  ordinary tokens (``"</"``, ``"s"``, ``">"`` in tekken). Lone surrogates are encoded as U+FFFD.
* ``decode`` renders special tokens as their names (``"</s>"``), as llguidance and Hugging Face
  do by default; pass ``skip_special_tokens=True`` to drop them. Invalid UTF-8 becomes U+FFFD.
* ``fingerprint`` identifies the vocabulary (every token's bytes, the special ids, EOS): two
  tokenizers with the same fingerprint give the same masks, on any machine.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Iterable, Sequence
from typing import Final

import llguidance

from core.errors import InvalidTokens
from core.tokenizers.hf import hf_file_parts, hf_parts
from core.tokenizers.parts import TokenizerParts
from core.tokenizers.vocabulary import vocabulary_parts

__all__ = ["Tokenizer"]

_FINGERPRINT_TAG: Final = b"guidance-vocabulary-v1\0"


class Tokenizer:
    """A vocabulary, its encoder, and the llguidance tokenizer built over it.

    Instances are immutable and thread-safe; build them with :meth:`from_vocabulary`,
    :meth:`from_hf_json`, :meth:`from_hf_file` or :func:`~core.tokenizers.load_tokenizer`.

    Attributes:
        name: Short name (``"tekken"``, a file stem, or the caller's choice).
        vocab_size: Number of ids; a mask has ``ceil(vocab_size / 32)`` int32 words.
        eos_token_id: The end-of-sequence id.
        bos_token_id: The beginning-of-sequence id, or ``None`` if the vocabulary has none.
        special_token_ids: Ids of control tokens (never produced by :meth:`encode`).
        fingerprint: SHA-256 hex digest of the vocabulary (token bytes, special ids, EOS).
        ll: The ``llguidance.LLTokenizer``, built once and shared by every matcher.
    """

    name: str
    vocab_size: int
    eos_token_id: int
    bos_token_id: int | None
    special_token_ids: frozenset[int]
    fingerprint: str
    ll: llguidance.LLTokenizer

    def __init__(self, name: str, parts: TokenizerParts) -> None:
        """Private: use the classmethods, or :func:`~core.tokenizers.load_tokenizer`."""
        self.name = name
        self.vocab_size = len(parts.tokens)
        self.eos_token_id = parts.eos_token_id
        self.bos_token_id = parts.bos_token_id
        self.special_token_ids = parts.special_token_ids
        self.ll = parts.ll
        self._tokens = parts.tokens
        self._encoder = parts.encoder
        self.fingerprint = _fingerprint(parts.tokens, parts.special_token_ids, parts.eos_token_id)

    def __repr__(self) -> str:
        return (
            f"Tokenizer(name={self.name!r}, vocab_size={self.vocab_size}, "
            f"eos_token_id={self.eos_token_id}, fingerprint={self.fingerprint[:12]!r})"
        )

    # -- encoding and decoding -------------------------------------------------------------

    def vocabulary(self) -> tuple[list[bytes], int, int | None, list[int]]:
        """``(tokens, eos_token_id, bos_token_id, special_token_ids)``: what
        :func:`validation_tokenizer` needs to rebuild this vocabulary in another process."""
        return self._tokens, self.eos_token_id, self.bos_token_id, sorted(self.special_token_ids)

    def encode(self, text: str) -> list[int]:
        """Encode text into token ids, without BOS/EOS and without any special id.

        Args:
            text: The text. Special-token text such as ``"</s>"`` is encoded as plain text.

        Returns:
            The ids; ``decode(encode(text)) == text`` for any text without lone surrogates.
        """
        if not isinstance(text, str):
            raise TypeError(f"encode() takes a str, not {type(text).__name__}")
        if not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                # Lone surrogates (e.g. from a JSON "\ud800" escape) become U+FFFD, as in
                # tiktoken; a surrogate pair becomes its character.
                text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
        return self._encoder(text)

    def decode_bytes(self, ids: Sequence[int], *, skip_special_tokens: bool = False) -> bytes:
        """Concatenate the bytes of the tokens.

        Args:
            ids: Token ids.
            skip_special_tokens: Drop special tokens instead of rendering their names.

        Returns:
            The bytes (possibly not valid UTF-8, e.g. half a character).

        Raises:
            InvalidTokens: An id is outside ``0 .. vocab_size - 1``.
        """
        self._check_ids(ids)
        tokens = self._tokens
        if skip_special_tokens:
            special = self.special_token_ids
            return b"".join([tokens[i] for i in ids if i not in special])
        return b"".join(map(tokens.__getitem__, ids))

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = False) -> str:
        """Decode ids into text; invalid UTF-8 becomes U+FFFD.

        Special tokens are rendered as their names (``"</s>"``) unless ``skip_special_tokens``.

        Args:
            ids: Token ids.
            skip_special_tokens: Drop special tokens instead of rendering their names.

        Returns:
            The text.

        Raises:
            InvalidTokens: An id is outside ``0 .. vocab_size - 1``.
        """
        data = self.decode_bytes(ids, skip_special_tokens=skip_special_tokens)
        return data.decode("utf-8", errors="replace")

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes of one token (a special token's bytes are its name).

        Raises:
            InvalidTokens: ``token_id`` is outside ``0 .. vocab_size - 1``.
        """
        self._check_ids((token_id,))
        return self._tokens[token_id]

    def is_special(self, token_id: int) -> bool:
        """Whether ``token_id`` is a special (control) token; False for ids out of range."""
        return token_id in self.special_token_ids

    def _check_ids(self, ids: Sequence[int]) -> None:
        n = len(self._tokens)
        if len(ids) and (min(ids) < 0 or max(ids) >= n):
            for index, token_id in enumerate(ids):
                if not 0 <= token_id < n:
                    raise InvalidTokens(
                        f"token id {int(token_id)} at index {index} is outside the vocabulary "
                        f"of {self.name!r} (0 to {n - 1})",
                        index=index,
                    )

    # -- constructors ----------------------------------------------------------------------

    @classmethod
    def from_vocabulary(
        cls,
        name: str,
        tokens: Sequence[bytes],
        *,
        eos_token_id: int,
        special_token_ids: Sequence[int] = (),
        bos_token_id: int | None = None,
    ) -> Tokenizer:
        """A tokenizer over an explicit vocabulary, encoding by greedy longest match.

        Meant for small synthetic vocabularies in tests. ``encode`` raises ``ValueError`` on
        text with a byte that no non-special token starts with.

        Args:
            name: The tokenizer's name.
            tokens: The bytes of every id, in id order (special tokens: their names).
            eos_token_id: The EOS id; always special.
            special_token_ids: Further control ids.
            bos_token_id: The BOS id, if any; always special.

        Returns:
            The tokenizer.

        Raises:
            ValueError: Empty vocabulary, ids out of range, or an empty non-special token.
            TypeError: A token that is not ``bytes``.
        """
        parts = vocabulary_parts(
            tokens, eos_token_id=eos_token_id, special_token_ids=special_token_ids, bos_token_id=bos_token_id
        )
        return cls(name, parts)

    @classmethod
    def from_hf_json(cls, name: str, tokenizer_json: str | bytes, max_vocab_size: int | None = None) -> Tokenizer:
        """A tokenizer from the text of a Hugging Face ``tokenizer.json``.

        llguidance parses the file (byte-level BPE, or BPE with byte fallback) and encodes; this
        equals ``tokenizers``' ``encode(text, add_special_tokens=False)`` for byte-level
        tokenizers, with two deliberate differences: special-token text is encoded as plain text
        (ordinary tokens spelling it, by greedy longest match, unless the vocabulary cannot
        spell it at all) rather than as the control id; and for tokenizers that prepend ``"▁"``
        (SentencePiece style) the text is encoded as a continuation, without the leading
        ``"▁"``, so that its bytes round-trip.

        The special ids are the added tokens, all of which llguidance treats as control tokens
        (even those the file marks ``"special": false``), so :meth:`encode` spells their text
        too. EOS is the first of :data:`~core.tokenizers.hf.EOS_CANDIDATES` among the added
        tokens; BOS the first of :data:`~core.tokenizers.hf.BOS_CANDIDATES`, if any.
        ``vocab_size`` is the largest id plus one.

        Args:
            name: The tokenizer's name.
            tokenizer_json: The file's content (UTF-8 if bytes).
            max_vocab_size: The largest vocabulary accepted (ids), checked before anything is
                built for it; None: no bound.

        Returns:
            The tokenizer.

        Raises:
            TokenizerError: Anything wrong with the input, with a short explanation quoting
                at most 200 characters of it.
            LimitExceeded: The vocabulary is larger than ``max_vocab_size``.
        """
        return cls(name, hf_parts(tokenizer_json, quote=True, max_vocab_size=max_vocab_size))

    @classmethod
    def from_hf_file(cls, name: str, path: str | os.PathLike[str]) -> Tokenizer:
        """A tokenizer from a Hugging Face ``tokenizer.json`` file.

        Args:
            name: The tokenizer's name.
            path: The file.

        Returns:
            The tokenizer.

        Raises:
            UnknownTokenizer: The file does not exist.
            TokenizerError: It cannot be read or is not a valid ``tokenizer.json``.
        """
        return cls(name, hf_file_parts(path))


def _fingerprint(tokens: Sequence[bytes], specials: Iterable[int], eos_token_id: int) -> str:
    digest = hashlib.sha256(_FINGERPRINT_TAG)
    special_ids = sorted(specials)
    digest.update(struct.pack("<QQQ", len(tokens), eos_token_id, len(special_ids)))
    digest.update(struct.pack(f"<{len(special_ids)}Q", *special_ids))
    pack = struct.Struct("<I").pack
    digest.update(b"".join([pack(len(t)) + t for t in tokens]))
    return digest.hexdigest()
