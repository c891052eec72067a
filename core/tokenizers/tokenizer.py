"""The :class:`Tokenizer`: a vocabulary, its encoder, and the llguidance tokenizer built over it.

Conventions shared by every source (:mod:`~core.tokenizers.tekken`, :mod:`~core.tokenizers.hf`,
:mod:`~core.tokenizers.vocabulary`):

* ``encode`` never produces a special (control) id: text such as ``"</s>"`` is encoded as
  ordinary tokens (``"</"``, ``"s"``, ``">"`` in tekken). Lone surrogates are encoded as U+FFFD.
* ``decode`` renders special tokens as their names (``"</s>"``), as llguidance and Hugging Face
  do by default; pass ``skip_special_tokens=True`` to drop them. Invalid UTF-8 becomes U+FFFD.
* ``digest`` identifies the vocabulary and its settings (every token's bytes, the special ids, the
  set of end tokens, BOS, the rules of its encoders): two tokenizers with the same digest give
  the same masks and the same tokenizations, on any machine. Tokenizers whose token bytes, special
  ids and end tokens agree give the same masks even when their digests differ (a GGUF and a
  ``tokenizer.json`` of one model, written differently).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import struct
from collections.abc import Mapping, Sequence
from typing import Any, Final

import llguidance

from core.errors import InvalidTokens
from core.tokenizers.hf import hf_file_parts, hf_parts
from core.tokenizers.parts import TokenizerParts
from core.tokenizers.vocabulary import vocabulary_parts

__all__ = ["Tokenizer"]

_DIGEST_TAG: Final = b"guidance-tokenizer-v2\0"
#: The first bytes of a GGUF file.
GGUF_MAGIC: Final = b"GGUF"


class Tokenizer:
    """A vocabulary, its encoder, and the llguidance tokenizer built over it.

    Instances are immutable and thread-safe; build them with :meth:`from_vocabulary`,
    :meth:`from_hf_json`, :meth:`from_hf_file`, :meth:`from_gguf`, :meth:`from_bytes` or
    :func:`~core.tokenizers.load_tokenizer`.

    Attributes:
        name: Short name (``"tekken"``, a file stem, or the caller's choice).
        vocab_size: Number of ids; a mask has ``ceil(vocab_size / 32)`` int32 words.
        eos_token_ids: The end tokens, the primary one first: any of them ends a constraint.
        eos_token_id: The primary end token (``eos_token_ids[0]``).
        bos_token_id: The beginning-of-sequence id, or ``None`` if the vocabulary has none.
        special_token_ids: Ids of control tokens (never produced by :meth:`encode`).
        digest: SHA-256 hex digest of the vocabulary and its settings (token bytes, special ids,
            end tokens, BOS, the encoders' rules).
        ll: The ``llguidance.LLTokenizer``, built once and shared by every matcher.
    """

    name: str
    vocab_size: int
    eos_token_ids: tuple[int, ...]
    eos_token_id: int
    bos_token_id: int | None
    special_token_ids: frozenset[int]
    digest: str
    ll: llguidance.LLTokenizer

    def __init__(self, name: str, parts: TokenizerParts) -> None:
        """Private: use the classmethods, or :func:`~core.tokenizers.load_tokenizer`."""
        self.name = name
        self.vocab_size = len(parts.tokens)
        self.eos_token_ids = parts.eos_token_ids
        self.eos_token_id = parts.eos_token_ids[0]
        self.bos_token_id = parts.bos_token_id
        self.special_token_ids = parts.special_token_ids
        self.ll = parts.ll
        self._tokens = parts.tokens
        self._encoder = parts.encoder
        self._tokenize = parts.tokenize
        self.digest = _digest(parts)

    def __repr__(self) -> str:
        return (
            f"Tokenizer(name={self.name!r}, vocab_size={self.vocab_size}, "
            f"eos_token_ids={list(self.eos_token_ids)}, digest={self.digest[:12]!r})"
        )

    # -- encoding and decoding -------------------------------------------------------------

    def vocabulary(self) -> tuple[list[bytes], list[int], int | None, list[int]]:
        """``(tokens, eos_token_ids, bos_token_id, special_token_ids)``: what
        :func:`validation_tokenizer` needs to rebuild this vocabulary in another process."""
        return self._tokens, list(self.eos_token_ids), self.bos_token_id, sorted(self.special_token_ids)

    def encode(self, text: str) -> list[int]:
        """Encode text as a continuation: no BOS/EOS, no space prefix, no special id.

        What a model generating ``text`` samples, and what :meth:`GuidanceGrammar.accept_token_text
        <core.GuidanceGrammar.accept_token_text>` accepts. See :meth:`tokenize` for the tokenization
        of a prompt.

        Args:
            text: The text. Special-token text such as ``"</s>"`` is encoded as plain text.

        Returns:
            The ids; ``decode(encode(text)) == text`` for any text without lone surrogates.
        """
        return self._encoder(_clean(text))

    def tokenize(self, text: str, *, special: bool = False) -> list[int]:
        """The model's own tokenization of a whole text, without BOS (``POST /tokenize``).

        As the model's tokenizer encodes a prompt: a SentencePiece vocabulary that adds a space
        prefix (Llama 2, Phi-3) adds it here, so the ids' bytes may start with a space the text
        does not have; otherwise this equals :meth:`encode` except for ``special``.

        Args:
            text: The text.
            special: Whether special-token text (``"</s>"``, ``"[TOOL_CALLS]"``) becomes the
                control token; by default it is encoded as plain text.

        Returns:
            The ids.
        """
        return self._tokenize(_clean(text), special)

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
        eos_token_id: int | None = None,
        eos_token_ids: Sequence[int] | None = None,
        special_token_ids: Sequence[int] = (),
        bos_token_id: int | None = None,
    ) -> Tokenizer:
        """A tokenizer over an explicit vocabulary, encoding by greedy longest match.

        Meant for small synthetic vocabularies in tests. ``encode`` raises ``ValueError`` on
        text with a byte that no non-special token starts with.

        Args:
            name: The tokenizer's name.
            tokens: The bytes of every id, in id order (special tokens: their names).
            eos_token_id: The end token; always special.
            eos_token_ids: Several end tokens instead (the first is the primary one).
            special_token_ids: Further control ids.
            bos_token_id: The BOS id, if any; always special.

        Returns:
            The tokenizer.

        Raises:
            ValueError: Empty vocabulary, ids out of range, an empty non-special token, or not
                exactly one of ``eos_token_id`` and ``eos_token_ids``.
            TypeError: A token that is not ``bytes``.
        """
        if (eos_token_id is None) == (eos_token_ids is None):
            raise ValueError("give eos_token_id or eos_token_ids")
        ends = [eos_token_id] if eos_token_id is not None else list(eos_token_ids or ())
        parts = vocabulary_parts(
            tokens, eos_token_ids=ends, special_token_ids=special_token_ids, bos_token_id=bos_token_id
        )
        return cls(name, parts)

    @classmethod
    def from_hf_json(
        cls,
        name: str,
        tokenizer_json: str | bytes,
        *,
        tokenizer_config: Mapping[str, Any] | None = None,
        generation_config: Mapping[str, Any] | None = None,
        eos_token_ids: Sequence[int] | None = None,
        max_vocab_size: int | None = None,
    ) -> Tokenizer:
        """A tokenizer from the text of a Hugging Face ``tokenizer.json``.

        llguidance parses the file (byte-level BPE, or BPE with byte fallback) and encodes; this
        equals ``tokenizers``' ``encode(text, add_special_tokens=False)``, except that
        special-token text is encoded as plain text (ordinary tokens spelling it, by greedy
        longest match, unless the vocabulary cannot spell it at all) rather than as the control id.

        The special ids are the added tokens, all of which llguidance treats as control tokens
        (even those the file marks ``"special": false``), so :meth:`encode` spells their text
        too. ``vocab_size`` is the largest id plus one.

        The end tokens, unless ``eos_token_ids`` names them: the generation config's
        ``eos_token_id`` (an id or a list) and the tokenizer config's ``eos_token``; without
        either, every added token of :data:`~core.tokenizers.EOS_CANDIDATES` the file has. BOS:
        the tokenizer config's ``bos_token``, the generation config's ``bos_token_id``, or the
        first of :data:`~core.tokenizers.BOS_CANDIDATES`, if any.

        Args:
            name: The tokenizer's name.
            tokenizer_json: The file's content (UTF-8 if bytes).
            tokenizer_config: The model's ``tokenizer_config.json``, parsed, if any.
            generation_config: The model's ``generation_config.json``, parsed, if any.
            eos_token_ids: The end tokens (control tokens of the file), replacing the defaults.
            max_vocab_size: The largest vocabulary accepted (ids), checked before anything is
                built for it; None: no bound.

        Returns:
            The tokenizer.

        Raises:
            TokenizerError: Anything wrong with the input, with a short explanation quoting
                at most 200 characters of it.
            LimitExceeded: The vocabulary is larger than ``max_vocab_size``.
        """
        parts = hf_parts(
            tokenizer_json,
            quote=True,
            tokenizer_config=tokenizer_config,
            generation_config=generation_config,
            eos_token_ids=eos_token_ids,
            max_vocab_size=max_vocab_size,
        )
        return cls(name, parts)

    @classmethod
    def from_hf_file(
        cls, name: str, path: str | os.PathLike[str], *, eos_token_ids: Sequence[int] | None = None
    ) -> Tokenizer:
        """A tokenizer from a Hugging Face ``tokenizer.json`` file, and the model's
        ``tokenizer_config.json`` and ``generation_config.json`` when they sit beside it.

        Args:
            name: The tokenizer's name.
            path: The file.
            eos_token_ids: The end tokens, replacing those the files name.

        Returns:
            The tokenizer.

        Raises:
            UnknownTokenizer: The file does not exist.
            TokenizerError: It cannot be read or is not a valid ``tokenizer.json``.
        """
        return cls(name, hf_file_parts(path, eos_token_ids=eos_token_ids))

    @classmethod
    def from_gguf(
        cls,
        name: str,
        source: bytes | memoryview | str | os.PathLike[str],
        *,
        eos_token_ids: Sequence[int] | None = None,
        max_vocab_size: int | None = None,
    ) -> Tokenizer:
        """A tokenizer from a GGUF file (a model or a vocab-only one), as llama.cpp reads it.

        The ``tokenizer.ggml.*`` metadata (tokens, types, merges or scores, pre-tokenizer) becomes
        the vocabulary; byte-level BPE (Llama 3, Qwen, GPT-2, DeepSeek, Command-R ...) and
        SentencePiece-style (Llama 2, Phi-3, Gemma ...) vocabularies are read. The end tokens,
        unless ``eos_token_ids`` names them: the file's EOS, EOT and EOM ids, those it has.

        Args:
            name: The tokenizer's name.
            source: The file's content, or its path.
            eos_token_ids: The end tokens (control tokens of the file), replacing the defaults.
            max_vocab_size: The largest vocabulary accepted (ids); None: no bound.

        Raises:
            TokenizerError: Not a GGUF file, no vocabulary in it, or a kind not supported.
            LimitExceeded: The vocabulary is larger than ``max_vocab_size``.
        """
        from core.tokenizers.gguf import read_gguf_vocabulary  # the gguf package, only when used

        vocab = read_gguf_vocabulary(source, max_vocab_size=max_vocab_size)
        parts = hf_parts(
            vocab.tokenizer_json,
            quote=False,
            eos_token_ids=vocab.end_token_ids if eos_token_ids is None else eos_token_ids,
        )
        if vocab.bos_token_id is not None:
            parts = dataclasses.replace(parts, bos_token_id=vocab.bos_token_id)
        return cls(name, parts)

    @classmethod
    def from_bytes(
        cls,
        name: str,
        data: bytes,
        *,
        eos_token_ids: Sequence[int] | None = None,
        max_vocab_size: int | None = None,
    ) -> Tokenizer:
        """A tokenizer from a file's content: a GGUF file (by its magic) or a ``tokenizer.json``.

        See :meth:`from_gguf` and :meth:`from_hf_json`.
        """
        build = cls.from_gguf if bytes(data[:4]) == GGUF_MAGIC else cls.from_hf_json
        return build(name, data, eos_token_ids=eos_token_ids, max_vocab_size=max_vocab_size)


def _clean(text: str) -> str:
    if not isinstance(text, str):
        raise TypeError(f"encode() takes a str, not {type(text).__name__}")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            # Lone surrogates (e.g. from a JSON "\ud800" escape) become U+FFFD, as in tiktoken;
            # a surrogate pair becomes its character.
            return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def _digest(parts: TokenizerParts) -> str:
    digest = hashlib.sha256(_DIGEST_TAG)
    special_ids = sorted(parts.special_token_ids)
    ends = sorted(parts.eos_token_ids)
    bos = -1 if parts.bos_token_id is None else parts.bos_token_id
    digest.update(struct.pack("<QqQQQ", len(parts.tokens), bos, len(ends), len(special_ids), len(parts.tokenization)))
    digest.update(parts.tokenization)
    digest.update(struct.pack(f"<{len(ends)}Q{len(special_ids)}Q", *ends, *special_ids))
    pack = struct.Struct("<I").pack
    digest.update(b"".join([pack(len(t)) + t for t in parts.tokens]))
    return digest.hexdigest()
