"""What a worker knows of its model's vocabulary: the model's side of an alignment.

A :class:`ModelVocabulary` holds the logits' width, the model's end tokens, a deterministic
sample of its ids with their bytes as the model's own tokenizer spells them, and the tokenizer
file to register with the server (a ``tokenizer.json``, or a vocab-only GGUF). The clients'
``align_vocabulary`` registers that file by content and has the server compare the rest with it
(:mod:`guidance_client.alignment`).

Builders: :meth:`ModelVocabulary.from_hf` from a Hugging Face tokenizer (a ``transformers``
tokenizer or a ``tokenizers.Tokenizer``, duck-typed; :func:`hf_vocabulary` keeps it per tokenizer
object) and :meth:`ModelVocabulary.from_llama` from a llama-cpp-python ``Llama``. numpy only:
``llama_cpp`` and ``gguf`` are imported inside the llama.cpp builder, and nothing here imports an
engine.

Which ids are compared (:func:`sample_ids`, the one place the rule is written): the first and the
last :data:`SAMPLE_EDGE` ids (byte tokens and control tokens gather there), the end and BOS
tokens, and :data:`SAMPLE_RANDOM` ids drawn with a fixed seed from the rest, so that a mismatch
found once is found again.
"""

from __future__ import annotations

import ctypes
import dataclasses
import hashlib
import importlib
import json
import re
import threading
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from guidance_client.vocab_gguf import vocab_only_gguf

__all__ = [
    "ModelVocabulary",
    "SAMPLE_EDGE",
    "SAMPLE_RANDOM",
    "SAMPLE_SEED",
    "hf_token_bytes",
    "hf_vocabulary",
    "sample_ids",
]

SAMPLE_EDGE = 256
"""Ids compared at each end of the vocabulary."""

SAMPLE_RANDOM = 1000
"""Ids compared, drawn with :data:`SAMPLE_SEED` from the rest."""

SAMPLE_SEED = 0
"""The seed of the drawn ids: the same vocabulary gives the same sample."""


def sample_ids(
    n_tokens: int,
    always: Iterable[int] = (),
    *,
    edge: int = SAMPLE_EDGE,
    count: int = SAMPLE_RANDOM,
    seed: int = SAMPLE_SEED,
) -> list[int]:
    """The ids whose bytes are compared, sorted: both ends, ``always``, and ``count`` seeded draws.

    Args:
        n_tokens: the tokenizer's number of ids (ids ``0 .. n_tokens - 1`` have bytes).
        always: ids compared whatever the draw (the end tokens, BOS); those outside the range
            are left out.
        edge: ids taken at each end.
        count: ids drawn from the middle.
        seed: the draw's seed.
    """
    if n_tokens <= 0:
        return []
    chosen = set(range(min(edge, n_tokens))) | set(range(max(n_tokens - edge, 0), n_tokens))
    chosen |= {int(i) for i in always if 0 <= int(i) < n_tokens}
    middle = np.arange(min(edge, n_tokens), max(n_tokens - edge, 0))
    if middle.size:
        drawn = np.random.default_rng(seed).choice(middle, size=min(count, middle.size), replace=False)
        chosen.update(int(i) for i in drawn)
    return sorted(chosen)


# -- Hugging Face tokenizers -------------------------------------------------------------------


def _byte_level_alphabet() -> dict[str, int]:
    """GPT-2's byte-level alphabet: the printable character standing for each byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars)}


_BYTE_LEVEL = _byte_level_alphabet()
_BYTE_FALLBACK = re.compile(r"<0x([0-9A-Fa-f]{2})>")
_SPACE = "\u2581"  # SentencePiece's visible space, "▁"


def _types(node: Any, key: str) -> set[str]:
    """The ``type`` of a tokenizer.json component and of the members of a ``Sequence`` of them."""
    if not isinstance(node, Mapping):
        return set()
    found = {str(node.get("type"))}
    for member in node.get(key) or ():
        found |= _types(member, key)
    return found


def _spelling(spec: Mapping[str, Any]) -> str:
    """How a tokenizer.json spells bytes in its tokens: ``byte-level``, ``sentencepiece`` or ``plain``."""
    decoders = _types(spec.get("decoder"), "decoders")
    pre = _types(spec.get("pre_tokenizer"), "pretokenizers")
    model: Mapping[str, Any] = spec["model"] if isinstance(spec.get("model"), Mapping) else {}
    if "ByteLevel" in decoders or (spec.get("decoder") is None and "ByteLevel" in pre):
        return "byte-level"
    if decoders & {"ByteFallback", "Metaspace", "Replace"} or "Metaspace" in pre or model.get("byte_fallback"):
        return "sentencepiece"
    return "plain"


def hf_token_bytes(spec: Mapping[str, Any], tokens: Mapping[int, str | None]) -> dict[int, bytes]:
    """The bytes of tokens of a Hugging Face tokenizer, from its own vocabulary's strings.

    Added tokens (special or not) are their content; byte-level BPE tokens are read through
    GPT-2's byte alphabet (``Ġ`` is a space); SentencePiece tokens have ``▁`` for a space and
    ``<0xNN>`` for a byte (byte fallback). Ids with no token are left out.

    Args:
        spec: the tokenizer.json, parsed.
        tokens: the token string of each id (``convert_ids_to_tokens``), or None.
    """
    added = {int(t["id"]): str(t["content"]) for t in spec.get("added_tokens") or () if isinstance(t, Mapping)}
    spelling = _spelling(spec)
    out: dict[int, bytes] = {}
    for token_id, text in tokens.items():
        if token_id in added:
            out[token_id] = added[token_id].encode("utf-8")
        elif text is None:
            continue
        elif spelling == "byte-level":
            out[token_id] = b"".join(bytes([_BYTE_LEVEL[c]]) if c in _BYTE_LEVEL else c.encode("utf-8") for c in text)
        elif spelling == "sentencepiece":
            byte = _BYTE_FALLBACK.fullmatch(text)
            out[token_id] = bytes([int(byte.group(1), 16)]) if byte else text.replace(_SPACE, " ").encode("utf-8")
        else:
            out[token_id] = text.encode("utf-8")
    return out


def _hf_size(spec: Mapping[str, Any]) -> int:
    """The number of ids of a tokenizer.json: its largest id + 1, as the server counts them."""
    model = spec.get("model") or {}
    vocab = model.get("vocab") if isinstance(model, Mapping) else None
    ids: list[int] = []
    if isinstance(vocab, Mapping):
        ids.extend(int(i) for i in vocab.values())
    elif isinstance(vocab, list) and vocab:
        ids.append(len(vocab) - 1)
    ids.extend(int(t["id"]) for t in spec.get("added_tokens") or () if isinstance(t, Mapping))
    return max(ids) + 1 if ids else 0


def _end_tokens(value: Any) -> list[int]:
    """End tokens as a list, from an int, a list of ints, or None."""
    if value is None:
        return []
    if isinstance(value, (int, np.integer)):
        return [int(value)]
    return [int(v) for v in value]


# -- the model's side ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelVocabulary:
    """A model's vocabulary as its worker sees it, to compare with a server tokenizer.

    Attributes:
        vocab_size: the model's logits width (None: not known yet; an adapter then checks it at
            the first logits, before applying any mask).
        eos_token_ids: the model's end tokens (sorted, distinct).
        token_bytes: a sample of ids (:func:`sample_ids`) with their bytes, from the model's own
            tokenizer: a control token's bytes are its name (``<|eot_id|>``).
        tokenizer_file: the tokenizer to register (a ``tokenizer.json``'s bytes, or a vocab-only
            GGUF), or None when the worker names a server tokenizer instead.
        bos_token_id: the model's BOS token, if any.
    """

    vocab_size: int | None
    eos_token_ids: tuple[int, ...]
    token_bytes: Mapping[int, bytes]
    tokenizer_file: bytes | None = dataclasses.field(default=None, repr=False)
    bos_token_id: int | None = None

    def __post_init__(self) -> None:
        ends = tuple(sorted({int(t) for t in self.eos_token_ids}))
        if not ends:
            raise ValueError("a model vocabulary needs at least one end token")
        object.__setattr__(self, "eos_token_ids", ends)

    @property
    def name(self) -> str:
        """The server name the tokenizer file is registered under: derived from its content and end tokens.

        The same file with the same end tokens has the same name on every worker, so registering
        it again finds it; another file, or other end tokens, another name.

        Raises:
            ValueError: there is no tokenizer file.
        """
        if self.tokenizer_file is None:
            raise ValueError("no tokenizer file: name a server tokenizer to check against")
        digest = hashlib.sha256(self.tokenizer_file)
        digest.update(b"\0eos:" + ",".join(map(str, self.eos_token_ids)).encode())
        kind = "gguf" if self.tokenizer_file[:4] == b"GGUF" else "hf"
        return f"{kind}-{digest.hexdigest()[:24]}"

    def with_vocab_size(self, vocab_size: int | None) -> ModelVocabulary:
        """The same vocabulary with the logits width known."""
        return dataclasses.replace(self, vocab_size=None if vocab_size is None else int(vocab_size))

    @classmethod
    def from_hf(
        cls,
        tokenizer: Any,
        *,
        generation_config: Any = None,
        eos_token_ids: Sequence[int] | int | None = None,
        vocab_size: int | None = None,
    ) -> ModelVocabulary:
        """A Hugging Face tokenizer's vocabulary, with the model's end tokens.

        Args:
            tokenizer: a ``transformers`` tokenizer (``backend_tokenizer.to_str()``,
                ``convert_ids_to_tokens``, ``eos_token_id``) or a ``tokenizers.Tokenizer``
                (``to_str()``, ``id_to_token``).
            generation_config: the model's ``GenerationConfig`` (or a dict): its
                ``eos_token_id`` (an int or a list) are the end tokens ``generate`` stops on.
            eos_token_ids: the end tokens, given outright (before ``generation_config``).
            vocab_size: the model's logits width (``model.config.vocab_size``), if known.

        The end tokens are, in order of preference: ``eos_token_ids``, the generation config's,
        the tokenizer's ``eos_token_id``.

        Raises:
            ValueError: no end token is known, or the tokenizer has no ``tokenizer.json`` form
                (a slow tokenizer).
        """
        backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
        if not hasattr(backend, "to_str"):
            raise ValueError("a fast Hugging Face tokenizer is needed (its tokenizer.json, backend_tokenizer.to_str())")
        text: str = backend.to_str()
        spec = json.loads(text)
        ends = _end_tokens(eos_token_ids)
        if not ends and generation_config is not None:
            gen = generation_config.get("eos_token_id") if isinstance(generation_config, Mapping) else None
            ends = _end_tokens(gen if isinstance(generation_config, Mapping) else generation_config.eos_token_id)
        if not ends:
            ends = _end_tokens(getattr(tokenizer, "eos_token_id", None))
        if not ends:
            raise ValueError("no end token: give eos_token_ids or the model's generation_config")
        bos = getattr(tokenizer, "bos_token_id", None)
        ids = sample_ids(_hf_size(spec), [*ends, *([bos] if bos is not None else [])])
        if hasattr(tokenizer, "convert_ids_to_tokens"):
            names: list[str | None] = list(tokenizer.convert_ids_to_tokens(ids))
        else:
            names = [backend.id_to_token(i) for i in ids]
        return cls(
            vocab_size=vocab_size,
            eos_token_ids=tuple(ends),
            token_bytes=hf_token_bytes(spec, dict(zip(ids, names))),
            tokenizer_file=text.encode("utf-8"),
            bos_token_id=None if bos is None else int(bos),
        )

    @classmethod
    def from_llama(cls, llm: Any) -> ModelVocabulary:
        """A llama-cpp-python ``Llama``'s vocabulary, from the model itself.

        The logits width is ``n_vocab()``; the end tokens are llama.cpp's EOS, EOT and EOM (those
        the model has); each sampled token's bytes are llama.cpp's own piece of it (control tokens
        by name); the file to register is a vocab-only GGUF written from the model file's
        ``tokenizer.ggml.*`` metadata (:func:`vocab_only_gguf`): the model's weights never leave.
        """
        llama_cpp = importlib.import_module("llama_cpp")
        vocab = llama_cpp.llama_model_get_vocab(llm.model)
        n_vocab = int(llm.n_vocab())
        ends = [int(llm.token_eos()), int(llama_cpp.llama_vocab_eot(vocab))]
        eom = getattr(llama_cpp, "llama_vocab_eom", None)  # not in every binding
        if eom is not None:
            ends.append(int(eom(vocab)))
        ends = [t for t in ends if 0 <= t < n_vocab]
        bos = int(llm.token_bos())
        bos_id = bos if 0 <= bos < n_vocab else None
        ids = sample_ids(n_vocab, [*ends, *([bos_id] if bos_id is not None else [])])
        return cls(
            vocab_size=n_vocab,
            eos_token_ids=tuple(ends),
            token_bytes={i: _llama_piece(llama_cpp, vocab, i) for i in ids},
            tokenizer_file=vocab_only_gguf(llm.model_path),
            bos_token_id=bos_id,
        )


def _llama_piece(llama_cpp: Any, vocab: Any, token: int) -> bytes:
    """llama.cpp's bytes of one token (special tokens rendered), through its piece API."""
    size = 64
    for _ in range(2):
        buf = (ctypes.c_char * size)()
        n = int(llama_cpp.llama_token_to_piece(vocab, token, buf, size, 0, True))
        if n >= 0:
            return buf.raw[:n]
        size = -n  # the piece's length: ask again with room for it
    raise RuntimeError(f"llama.cpp gave no piece for token {token}")


# A tokenizer's vocabulary costs its tokenizer.json (half a second for 131,072 ids): kept per
# tokenizer object, for the processors of successive generate calls and an engine's plugins.
_HF: weakref.WeakKeyDictionary[Any, dict[tuple[Any, ...], ModelVocabulary]] = weakref.WeakKeyDictionary()
_HF_LOCK = threading.Lock()


def hf_vocabulary(
    tokenizer: Any, *, eos_token_ids: Sequence[int] | None = None, vocab_size: int | None = None
) -> ModelVocabulary:
    """:meth:`ModelVocabulary.from_hf`, computed once per tokenizer object and end tokens.

    A tokenizer that grew (``add_tokens``) since is read again; one that cannot be weakly
    referenced is read every time.
    """
    ends = tuple(sorted({int(t) for t in eos_token_ids or ()}))
    key = (len(tokenizer) if hasattr(tokenizer, "__len__") else None, ends)
    with _HF_LOCK:
        try:
            known = _HF.setdefault(tokenizer, {})
        except TypeError:
            known = {}
        vocabulary = known.get(key)
    if vocabulary is None:
        vocabulary = ModelVocabulary.from_hf(tokenizer, eos_token_ids=ends or None)
        with _HF_LOCK:
            known[key] = vocabulary
    return vocabulary.with_vocab_size(vocab_size)
