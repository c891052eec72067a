"""Tokenizers: the vocabularies masks are defined against.

A :class:`Tokenizer` pairs an encoder (text -> ids) with the ``llguidance.LLTokenizer`` that the
matchers use, built once per tokenizer and shared. Three sources:

* the embedded default, Mistral **tekken** (131,072 ids: 1,000 control tokens, then
  ``id = 1000 + rank``; EOS 2, BOS 1), loaded by :func:`load_default_tokenizer` from
  ``core/data/tekken_240911.tokens.gz`` (derived from the Apache-2.0 ``mistral-common`` wheel by
  ``scripts/derive_tekken.py``; see ``core/data/NOTICE``). Encoding is tiktoken's byte-pair
  encoder; the ``LLTokenizer`` is llguidance's native tiktoken port, so llguidance never calls
  back into Python (nor takes the GIL) to tokenize;
* a Hugging Face ``tokenizer.json`` (:meth:`Tokenizer.from_hf_json`), parsed and encoded by
  llguidance itself (the Rust ``tokenizers`` crate; no Python ``tokenizers`` at run time);
* a small explicit vocabulary with a greedy longest-match encoder
  (:meth:`Tokenizer.from_vocabulary`), for fast unit tests.

Conventions shared by all three:

* ``encode`` never produces a special (control) id: text such as ``"</s>"`` is encoded as
  ordinary tokens (``"</"``, ``"s"``, ``">"`` in tekken). Lone surrogates are encoded as U+FFFD.
* ``decode`` renders special tokens as their names (``"</s>"``), as llguidance and Hugging Face
  do by default; pass ``skip_special_tokens=True`` to drop them. Invalid UTF-8 becomes U+FFFD.
* ``fingerprint`` identifies the vocabulary (every token's bytes, the special ids, EOS): two
  tokenizers with the same fingerprint give the same masks, on any machine.
"""

from __future__ import annotations

import binascii
import functools
import gzip
import hashlib
import json
import os
import struct
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Final

import llguidance
import llguidance.tiktoken
import tiktoken

from core.errors import InvalidTokens, LimitExceeded, TokenizerError, UnknownTokenizer, excerpt

__all__ = [
    "BOS_CANDIDATES",
    "DEFAULT_TOKENIZER_NAMES",
    "EOS_CANDIDATES",
    "Tokenizer",
    "load_default_tokenizer",
    "load_tokenizer",
    "validation_tokenizer",
]

#: Names :func:`load_tokenizer` resolves to the embedded default.
DEFAULT_TOKENIZER_NAMES: Final = ("default", "tekken")

TEKKEN_FILE: Final = Path(__file__).resolve().parent / "data" / "tekken_240911.tokens.gz"
_TEKKEN_FORMAT: Final = "guidance-tekken-v1"

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

_FINGERPRINT_TAG: Final = b"guidance-vocabulary-v1\0"


class Tokenizer:
    """A vocabulary, its encoder, and the llguidance tokenizer built over it.

    Instances are immutable and thread-safe; build them with :meth:`from_vocabulary`,
    :meth:`from_hf_json`, :meth:`from_hf_file` or :func:`load_default_tokenizer`.

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

    def __init__(
        self,
        *,
        name: str,
        tokens: list[bytes],
        eos_token_id: int,
        bos_token_id: int | None,
        special_token_ids: frozenset[int],
        ll: llguidance.LLTokenizer,
        encoder: Callable[[str], list[int]],
    ) -> None:
        # Private: use the classmethods or load_* functions.
        self.name = name
        self.vocab_size = len(tokens)
        self.eos_token_id = eos_token_id
        self.bos_token_id = bos_token_id
        self.special_token_ids = special_token_ids
        self.ll = ll
        self._tokens = tokens
        self._encoder = encoder
        self.fingerprint = _fingerprint(tokens, special_token_ids, eos_token_id)

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
        vocab: list[bytes] = []
        for token in tokens:
            if not isinstance(token, (bytes, bytearray)):
                raise TypeError(f"vocabulary tokens must be bytes, not {type(token).__name__}")
            vocab.append(bytes(token))
        n = len(vocab)
        if n == 0:
            raise ValueError("the vocabulary is empty")
        specials = set(special_token_ids) | {eos_token_id}
        if bos_token_id is not None:
            specials.add(bos_token_id)
        for token_id in sorted(specials):
            if not 0 <= token_id < n:
                raise ValueError(f"special id {token_id} is outside the vocabulary (0 to {n - 1})")
        lookup: dict[bytes, int] = {}
        for token_id, token in enumerate(vocab):
            if token_id in specials:
                continue
            if not token:
                raise ValueError(f"token {token_id} is empty")
            lookup.setdefault(token, token_id)
        max_len = max((len(t) for t in lookup), default=0)

        def greedy(text: str) -> list[int]:
            return _greedy_encode(text.encode("utf-8"), lookup, max_len)

        ll = llguidance.LLTokenizer(
            llguidance.TokenizerWrapper(
                _WrapperSource(vocab, eos_token_id, bos_token_id, sorted(specials), lookup, max_len)
            )
        )
        return cls(
            name=name,
            tokens=vocab,
            eos_token_id=eos_token_id,
            bos_token_id=bos_token_id,
            special_token_ids=frozenset(specials),
            ll=ll,
            encoder=greedy,
        )

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
        too. EOS is the first of :data:`EOS_CANDIDATES` among the added tokens; BOS the first of
        :data:`BOS_CANDIDATES`, if any. ``vocab_size`` is the largest id plus one.

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
        return cls._from_hf(name, tokenizer_json, quote=True, max_vocab_size=max_vocab_size)

    @classmethod
    def _from_hf(
        cls, name: str, tokenizer_json: str | bytes, *, quote: bool, max_vocab_size: int | None = None
    ) -> Tokenizer:
        # quote=False for files: their content is the server's, not the caller's, to echo.
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

        return cls(
            name=name,
            tokens=tokens,
            eos_token_id=eos_token_id,
            bos_token_id=bos_token_id,
            special_token_ids=specials,
            ll=ll,
            encoder=encode,
        )

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
        try:
            data = Path(path).read_bytes()
        except FileNotFoundError:
            raise UnknownTokenizer(f"no tokenizer file {excerpt(os.fspath(path))!r}") from None
        except OSError as exc:
            raise TokenizerError(
                f"cannot read tokenizer file {excerpt(os.fspath(path))!r}: {exc.strerror}"
            ) from None
        return cls._from_hf(name, data, quote=False)

    @classmethod
    def _from_tiktoken(
        cls,
        name: str,
        *,
        pattern: str,
        ranks: Sequence[bytes],
        special_names: Sequence[str],
        eos_token_id: int,
        bos_token_id: int | None,
    ) -> Tokenizer:
        """Control tokens ``0 .. len(special_names) - 1``, then ``id = len(special_names) + rank``."""
        offset = len(special_names)
        vocab_size = offset + len(ranks)
        encoding = tiktoken.Encoding(
            name=name,
            pat_str=pattern,
            mergeable_ranks={token: offset + rank for rank, token in enumerate(ranks)},
            special_tokens={special: i for i, special in enumerate(special_names)},
            explicit_n_vocab=vocab_size,
        )
        ll = llguidance.tiktoken.lltokenizer_from_encoding(
            encoding, n_vocab=vocab_size, eos_token=eos_token_id
        )
        tokens = [s.encode("utf-8") for s in special_names]
        tokens.extend(ranks)
        return cls(
            name=name,
            tokens=tokens,
            eos_token_id=eos_token_id,
            bos_token_id=bos_token_id,
            special_token_ids=frozenset(range(offset)),
            ll=ll,
            encoder=encoding.encode_ordinary,
        )


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


def validation_tokenizer(
    tokens: list[bytes], eos_token_id: int, bos_token_id: int | None, special_token_ids: list[int]
) -> llguidance.LLTokenizer:
    """An llguidance tokenizer over the same token bytes and special ids, for checking grammars.

    A compile worker (:mod:`core.workers`) validates grammars with it: validation reads the tokens'
    bytes and the special ids, never the encoder, which here is a greedy longest match.
    """
    specials = set(special_token_ids) | {eos_token_id}
    if bos_token_id is not None:
        specials.add(bos_token_id)
    lookup: dict[bytes, int] = {}
    for token_id, token in enumerate(tokens):
        if token and token_id not in specials:
            lookup.setdefault(token, token_id)
    max_len = max((len(t) for t in lookup), default=0)
    source = _WrapperSource(list(tokens), eos_token_id, bos_token_id, sorted(specials), lookup, max_len)
    return llguidance.LLTokenizer(llguidance.TokenizerWrapper(source))


# -- helpers ---------------------------------------------------------------------------------


@functools.cache
def _load_tekken(path: Path) -> Tokenizer:
    lines = gzip.decompress(path.read_bytes()).split(b"\n")
    header: dict[str, Any] = json.loads(lines[0])
    if header.get("format") != _TEKKEN_FORMAT:
        raise ValueError(f"{path}: unexpected format {header.get('format')!r}")
    num_special = int(header["num_special_tokens"])
    num_ranks = int(header["num_ranks"])
    names = list(header["special_names"])
    template = str(header["special_name_template"])
    names.extend(template.format(id=i) for i in range(len(names), num_special))
    ranks = [binascii.a2b_base64(line) for line in lines[1 : 1 + num_ranks]]
    if len(ranks) != num_ranks or num_special + num_ranks != int(header["vocab_size"]):
        raise ValueError(f"{path}: truncated ({len(ranks)} of {num_ranks} ranks)")
    return Tokenizer._from_tiktoken(
        "tekken",
        pattern=str(header["pattern"]),
        ranks=ranks,
        special_names=names,
        eos_token_id=int(header["eos_token_id"]),
        bos_token_id=int(header["bos_token_id"]),
    )


def _fingerprint(tokens: Sequence[bytes], specials: Iterable[int], eos_token_id: int) -> str:
    digest = hashlib.sha256(_FINGERPRINT_TAG)
    special_ids = sorted(specials)
    digest.update(struct.pack("<QQQ", len(tokens), eos_token_id, len(special_ids)))
    digest.update(struct.pack(f"<{len(special_ids)}Q", *special_ids))
    pack = struct.Struct("<I").pack
    digest.update(b"".join([pack(len(t)) + t for t in tokens]))
    return digest.hexdigest()


def _greedy_encode(
    data: bytes, lookup: dict[bytes, int], max_len: int, *, strict: bool = True
) -> list[int]:
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
                raise ValueError(
                    f"no token of the vocabulary covers byte 0x{data[pos]:02x} at offset {pos}"
                )
            pos += 1
    return out


class _WrapperSource:
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
        return _greedy_encode(data, self._lookup, self._max_len, strict=False)


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
