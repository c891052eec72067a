"""The vocabulary of a GGUF file (llama.cpp's format) as a Hugging Face ``tokenizer.json``.

A GGUF file (a model, or a vocab-only file) carries its tokenizer as ``tokenizer.ggml.*``
metadata. :func:`read_gguf_vocabulary` reads it and writes the ``tokenizer.json`` that
``llguidance.LLTokenizer`` loads, built so that its tokenization is the model's own (the ids of
the model's Hugging Face tokenizer with ``add_special_tokens=False``, which llama.cpp's own test
vocabularies reproduce):

* ``tokenizer.ggml.model == "gpt2"``: byte-level BPE (Llama 3, Qwen, GPT-2, DeepSeek, Command-R,
  Falcon, MPT, StarCoder ...): the tokens and merges as they are, and the pre-tokenizer named by
  ``tokenizer.ggml.pre``, from :data:`PRE_TOKENIZERS`. A name not in that table is refused (a
  guessed split would give ids that differ from the model's without any error); a file without the
  key, or with ``"default"``, gets llama.cpp's default split (llama.cpp warns that such files
  degrade generation).
* ``"llama"``: SentencePiece BPE (Llama 2, Phi-3, Mistral v1 ...): spaces become ``▁``, a ``▁`` is
  prefixed when ``tokenizer.ggml.add_space_prefix`` (default true), pieces merge best score first,
  and unknown characters fall back to ``<0xNN>`` byte tokens. Hugging Face expresses that as a BPE
  model whose merges are ranked by the score of the piece they make.
* ``"gemma4"``: BPE over raw UTF-8 with ``▁`` for spaces and byte fallback, split at newlines.

Token types: control (3), unknown (2) and unused (5) tokens become special added tokens;
user-defined ones (4) become added tokens that are matched in text (as llama.cpp and Hugging Face
both do). Other kinds (``bert``, ``t5``, ``rwkv``, ``none`` ...) are refused, naming the kind.

The file is parsed here, not with ``gguf.GGUFReader``: that reader builds an object per array
element (14 s for Llama 3's vocabulary, 30 s for Gemma 4's) and loops over an array's declared
length even past the end of the data, which an upload can set to 2**64. Every length here is
checked against the bytes that remain. The ``gguf`` package provides the format's constants.

Note for callers: llguidance drops the ``Prepend`` normalizer when it loads a ``tokenizer.json``,
so its ``tokenize_str`` never adds the SentencePiece space prefix; :attr:`GgufVocabulary.add_space_prefix`
says when the encoder must add it (``" " + text`` for non-empty text).
"""

from __future__ import annotations

import json
import mmap
import os
import struct
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

from gguf import GGUF_MAGIC, GGUFValueType, Keys, TokenType

from core.errors import LimitExceeded, TokenizerError, excerpt

__all__ = ["PRE_TOKENIZERS", "GgufVocabulary", "read_gguf_vocabulary"]


@dataclass(frozen=True)
class GgufVocabulary:
    """A GGUF file's tokenizer, as a Hugging Face ``tokenizer.json``.

    Attributes:
        model: ``tokenizer.ggml.model`` (``"gpt2"``, ``"llama"`` or ``"gemma4"``).
        pre: ``tokenizer.ggml.pre``, or None when the file has none.
        vocab_size: The number of tokens (ids ``0 .. vocab_size - 1``).
        bos_token_id: ``tokenizer.ggml.bos_token_id``, or None.
        end_token_ids: EOS, then EOT, then EOM, each once, those the file has. EOT and EOM come
            from their keys or, without them, from the token's text as llama.cpp finds them
            (``<|eot_id|>``, ``<|im_end|>``, ``<|end|>``, ``<end_of_turn>``, ``<turn|>`` ...;
            ``<|eom_id|>``).
        add_bos_token: ``tokenizer.ggml.add_bos_token``, or None when the file does not say.
        tokenizer_json: The ``tokenizer.json`` text.
        add_space_prefix: Whether the model's tokenization prefixes the text with a space
            (SentencePiece). llguidance ignores the prefix of the ``tokenizer.json``: an encoder
            that wants the model's ids tokenizes ``" " + text`` (non-empty text only).
    """

    model: str
    pre: str | None
    vocab_size: int
    bos_token_id: int | None
    end_token_ids: tuple[int, ...]
    add_bos_token: bool | None
    tokenizer_json: str
    add_space_prefix: bool = False


class _Pre(NamedTuple):
    """A pre-tokenizer: Hugging Face steps, and the BPE options that go with it."""

    steps: tuple[Mapping[str, Any], ...]
    ignore_merges: bool = False  # a word that is a token is that token (Llama 3 and its kin)
    byte_level: bool = True  # False: raw UTF-8 pieces with ▁ for spaces and byte fallback


def _split(pattern: str) -> dict[str, Any]:
    return {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": False}


def _digits(individual: bool) -> dict[str, Any]:
    return {"type": "Digits", "individual_digits": individual}


def _byte_level(use_regex: bool) -> dict[str, Any]:
    return {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": use_regex}


# The split patterns are the models' own (their tokenizer.json), as llama.cpp's table quotes them.
_CONTRACTIONS = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)"
_LLAMA3_RE = (
    _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_RE = _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
_QWEN35_RE = (
    _CONTRACTIONS
    + r"|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_GPT2_RE = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
_UPPER, _LOWER = r"[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]", r"[\p{Ll}\p{Lm}\p{Lo}\p{M}]"
_TEKKEN_RE = (
    rf"[^\r\n\p{{L}}\p{{N}}]?{_UPPER}*{_LOWER}+|[^\r\n\p{{L}}\p{{N}}]?{_UPPER}+{_LOWER}*"
    r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_GPT4O_RE = (
    rf"[^\r\n\p{{L}}\p{{N}}]?{_UPPER}*{_LOWER}+{_CONTRACTIONS}?|[^\r\n\p{{L}}\p{{N}}]?{_UPPER}+{_LOWER}*{_CONTRACTIONS}?"
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_CJK = "[一-龥ࠀ-一가-퟿]+"
_DEEPSEEK_LETTERS = (
    r"\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝὟ-ώᾀ-ᾴᾶ-ᾼιῂ-ῄῆ-ῌῐ-ΐ"
    r"ῖ-Ίῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤΩℨK-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃]+"
)
_DEEPSEEK_PUNCT = r"\s?[!-/:-~！-／：-～‘-‟　-。]+"
_DEEPSEEK3_RE = (
    r"[!\"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+"
    r"| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

_LLAMA3 = _Pre((_split(_LLAMA3_RE), _byte_level(False)), ignore_merges=True)
_LLAMA3_MERGING = _Pre((_split(_LLAMA3_RE), _byte_level(False)))
_QWEN2 = _Pre((_split(_QWEN2_RE), _byte_level(False)))
_GPT2 = _Pre((_byte_level(True),))
_STARCODER = _Pre((_digits(True), _byte_level(True)))
_GPT4O = _Pre((_split(_GPT4O_RE), _byte_level(False)))
_DEEPSEEK3 = _Pre((_split(r"\p{N}{1,3}"), _split("[一-龥぀-ゟ゠-ヿ]+"), _split(_DEEPSEEK3_RE), _byte_level(False)))
_RAW_NEWLINES = _Pre((_split(r"\n+"),), byte_level=False)

#: Pre-tokenizers of byte-level BPE vocabularies by ``tokenizer.ggml.pre`` (one entry per name,
#: the names llama.cpp knows; the same split under each of a family's names). Tested against the
#: vocabularies llama.cpp ships: llama-bpe, qwen2, qwen35, gpt-2, mpt, starcoder, refact,
#: command-r, falcon, deepseek-llm, deepseek-coder, gemma4.
PRE_TOKENIZERS: Final[Mapping[str, _Pre]] = {
    # Llama 3 and the vocabularies that copied its split; a word that is a token is not merged.
    "llama3": _LLAMA3,
    "llama-v3": _LLAMA3,
    "llama-bpe": _LLAMA3,
    "falcon3": _LLAMA3,
    "falcon-h1": _LLAMA3,
    "pixtral": _LLAMA3,
    "midm-2.0": _LLAMA3,
    "lfm2": _LLAMA3,
    "jina-v5-nano": _LLAMA3,
    "glm4": _LLAMA3,
    "glm5": _LLAMA3,
    "dbrx": _LLAMA3_MERGING,
    "smaug-bpe": _LLAMA3_MERGING,
    "chatglm-bpe": _LLAMA3_MERGING,
    # Qwen 2 (single digits), Qwen 3.5 (marks kept with their letters).
    "qwen2": _QWEN2,
    "deepseek-r1-qwen": _QWEN2,
    "kormo": _QWEN2,
    "f2llmv2": _QWEN2,
    "stablelm2": _QWEN2,
    "hunyuan": _QWEN2,
    "solar-open": _QWEN2,
    "megrez": _QWEN2,
    "grok-2": _QWEN2,
    "qwen35": _Pre((_split(_QWEN35_RE), _byte_level(False))),
    # GPT-2's own split.
    "gpt-2": _GPT2,
    "mpt": _GPT2,
    "olmo": _GPT2,
    "phi-2": _GPT2,
    "jais": _GPT2,
    "trillion": _GPT2,
    "granite-docling": _GPT2,
    "gigachat": _GPT2,
    "jina-es": _GPT2,
    "jina-de": _GPT2,
    "jina-v2-es": _GPT2,
    "jina-v2-de": _GPT2,
    "jina-v1-en": _GPT2,
    "jina-v2-code": _GPT2,
    "roberta-bpe": _GPT2,
    "a.x-4.0": _GPT2,
    "mellum": _GPT2,
    "modern-bert": _GPT2,
    "exaone4": _GPT2,
    # GPT-2's split after single digits.
    "starcoder": _STARCODER,
    "refact": _STARCODER,
    "command-r": _STARCODER,
    "smollm": _STARCODER,
    "codeshell": _STARCODER,
    "exaone": _STARCODER,
    "minerva-7b": _STARCODER,
    "mellum2": _STARCODER,
    "falcon": _Pre(
        (
            {"type": "Punctuation", "behavior": "Contiguous"},
            _byte_level(True),
            _digits(False),
            _split("[0-9][0-9][0-9]"),
        )
    ),
    "deepseek-llm": _Pre(
        (
            _split(r"[\r\n]"),
            _split(_DEEPSEEK_LETTERS),
            _split(_DEEPSEEK_PUNCT),
            _split(r"\s+$"),
            _split(_CJK),
            _digits(False),
            _byte_level(False),
        )
    ),
    "deepseek-coder": _Pre(
        (
            _split(r"[\r\n]"),
            _split(r"\s?\p{L}+"),
            _split(r"\s?\p{P}+"),
            _split(_CJK),
            _digits(True),
            _byte_level(False),
        )
    ),
    "deepseek-v3": _DEEPSEEK3,
    "hunyuan-dense": _DEEPSEEK3,
    "joyai-llm": _DEEPSEEK3,
    "hy_v4": _DEEPSEEK3,
    "tekken": _Pre((_split(_TEKKEN_RE), _byte_level(False)), ignore_merges=True),
    "gpt-4o": _GPT4O,
    "llama4": _GPT4O,
    "kanana2": _GPT4O,
    "talkie": _GPT4O,
    "minimax-m2": _GPT4O,
    # SentencePiece-style BPE: raw UTF-8, ▁ for spaces, merged over whole lines.
    "gemma4": _RAW_NEWLINES,
    "granite-embed-multi-311m": _RAW_NEWLINES,
    "sarvam-moe": _RAW_NEWLINES,
}

#: llama.cpp's split for a byte-level BPE file without ``tokenizer.ggml.pre`` (or ``"default"``).
_DEFAULT_PRE: Final = _Pre(
    (
        _split(r"[\p{P}\$\+<=>\^~\|]+"),
        _split(_GPT2_RE),
        _split(r"\p{N}+"),
        _split("[0-9][0-9][0-9]"),
        _byte_level(False),
    )
)

_UNSUPPORTED_MODELS: Final = {
    "bert": "WordPiece (BERT)",
    "t5": "Unigram (T5)",
    "rwkv": "RWKV",
    "plamo2": "PLaMo-2",
    "none": "no vocabulary",
    "no_vocab": "no vocabulary",
}
#: End-of-turn and end-of-message tokens by text, for files without the keys (llama.cpp's lists).
_EOT_TEXTS: Final = (
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<turn|>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
)
_EOM_TEXTS: Final = ("<|eom_id|>",)

_SPACE: Final = "▁"  # U+2581, SentencePiece's visible space
_SPECIAL_TYPES: Final = frozenset({TokenType.CONTROL, TokenType.UNKNOWN, TokenType.UNUSED})
_KEY = Keys.Tokenizer


def read_gguf_vocabulary(
    source: bytes | memoryview | str | os.PathLike[str], *, max_vocab_size: int | None = None
) -> GgufVocabulary:
    """Read the tokenizer of a GGUF file.

    Args:
        source: The file's content (``bytes``, ``bytearray`` or ``memoryview``), or its path
            (mapped, not read: a model's tensors are never touched).
        max_vocab_size: The largest vocabulary accepted, in ids; None: no bound.

    Returns:
        The vocabulary, with its ``tokenizer.json``.

    Raises:
        TokenizerError: Not a GGUF file, truncated or malformed, keys missing or of the wrong
            type, or a kind of tokenizer (or BPE pre-tokenizer) that is not supported.
        LimitExceeded: More tokens than ``max_vocab_size`` (checked before they are read).
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        view = memoryview(source)
        if view.ndim != 1 or view.itemsize != 1:
            view = view.cast("B")
        return _read(view, max_vocab_size)
    path = os.fspath(source)
    try:
        with open(path, "rb") as file:
            if os.fstat(file.fileno()).st_size == 0:
                raise TokenizerError(f"{excerpt(path)!r} is empty, not a GGUF file")
            with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                return _read(mapped, max_vocab_size)
    except OSError as exc:
        raise TokenizerError(f"cannot read GGUF file {excerpt(path)!r}: {exc.strerror or exc}") from None


def _read(data: memoryview | mmap.mmap, max_vocab_size: int | None) -> GgufVocabulary:
    try:
        meta = _Metadata(data, max_vocab_size).read()
    except _Malformed as exc:
        raise TokenizerError(f"not a valid GGUF file: {exc}") from None
    except (struct.error, ValueError, IndexError, OverflowError) as exc:  # a check this parser missed
        raise TokenizerError(f"not a valid GGUF file ({type(exc).__name__}: {excerpt(str(exc))})") from None
    return _vocabulary(meta)


class _Malformed(Exception):
    """The bytes do not follow the GGUF format."""


_SCALARS: Final[Mapping[int, str]] = {
    GGUFValueType.UINT8: "B",
    GGUFValueType.INT8: "b",
    GGUFValueType.UINT16: "H",
    GGUFValueType.INT16: "h",
    GGUFValueType.UINT32: "I",
    GGUFValueType.INT32: "i",
    GGUFValueType.FLOAT32: "f",
    GGUFValueType.BOOL: "?",
    GGUFValueType.UINT64: "Q",
    GGUFValueType.INT64: "q",
    GGUFValueType.FLOAT64: "d",
}
_INTEGERS: Final = frozenset(
    {
        GGUFValueType.UINT8,
        GGUFValueType.INT8,
        GGUFValueType.UINT16,
        GGUFValueType.INT16,
        GGUFValueType.UINT32,
        GGUFValueType.INT32,
        GGUFValueType.UINT64,
        GGUFValueType.INT64,
    }
)


class _Value(NamedTuple):
    """A metadata value: its type (for arrays, the items' type) and the value read."""

    type: int
    is_array: bool
    value: Any


class _Metadata:
    """Reads the key/value section of a GGUF file, keeping the ``tokenizer.`` keys."""

    def __init__(self, data: memoryview | mmap.mmap, max_vocab_size: int | None) -> None:
        self.data = data
        self.end = len(data)
        self.pos = 0
        self.order = "<"
        self.max_vocab_size = max_vocab_size

    def read(self) -> dict[str, _Value]:
        if self.end < 24 or struct.unpack_from("<I", self.data, 0)[0] != GGUF_MAGIC:
            raise _Malformed("it does not start with the GGUF magic")
        (version,) = struct.unpack_from("<I", self.data, 4)
        if version & 0xFFFF == 0:  # written on a big-endian machine
            self.order = ">"
            version = struct.unpack_from(">I", self.data, 4)[0]
        if version not in (2, 3):
            raise _Malformed(f"GGUF version {version} is not supported (2 and 3 are)")
        self.pos = 8
        self._unsigned("Q")  # the tensor count: tensors are not read
        kv_count = self._unsigned("Q")
        if kv_count > (self.end - self.pos) // 13:  # a key/value takes 13 bytes at least
            raise _Malformed(f"it declares {kv_count} metadata keys, more than its size allows")
        out: dict[str, _Value] = {}
        for _ in range(kv_count):
            key = self._text(self._string())
            if key in out:
                raise _Malformed(f"the key {excerpt(key)!r} appears twice")
            keep = key.startswith("tokenizer.")
            value_type = self._unsigned("I")
            if value_type == GGUFValueType.ARRAY:
                item_type = self._unsigned("I")
                count = self._unsigned("Q")
                if key == _KEY.LIST and self.max_vocab_size is not None and count > self.max_vocab_size:
                    raise LimitExceeded(
                        f"the GGUF vocabulary has {count} tokens, above the limit of {self.max_vocab_size} ids",
                        "max_vocab_size",
                    )
                out_value: Any = self._array(item_type, count, keep)
                if keep:
                    out[key] = _Value(item_type, True, out_value)
            else:
                out_value = self._scalar(value_type)
                if keep:
                    out[key] = _Value(value_type, False, out_value)
        return out

    def _need(self, size: int) -> None:
        if size > self.end - self.pos:
            raise _Malformed(f"it is truncated (at byte {self.pos} of {self.end})")

    def _unsigned(self, code: str) -> int:
        size = struct.calcsize(code)
        self._need(size)
        (value,) = struct.unpack_from(self.order + code, self.data, self.pos)
        self.pos += size
        return int(value)

    def _string(self) -> bytes:
        size = self._unsigned("Q")
        self._need(size)
        start = self.pos
        self.pos += size
        return bytes(self.data[start : self.pos])

    @staticmethod
    def _text(raw: bytes) -> str:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise _Malformed(f"a string is not UTF-8: {excerpt(repr(raw))}") from None

    def _scalar(self, value_type: int) -> Any:
        if value_type == GGUFValueType.STRING:
            return self._text(self._string())
        code = _SCALARS.get(value_type)
        if code is None:
            raise _Malformed(f"unknown value type {value_type}")
        size = struct.calcsize(code)
        self._need(size)
        (value,) = struct.unpack_from(self.order + code, self.data, self.pos)
        self.pos += size
        return value

    def _array(self, item_type: int, count: int, keep: bool) -> Any:
        if item_type == GGUFValueType.STRING:
            if count > (self.end - self.pos) // 8:
                raise _Malformed(f"an array declares {count} strings, more than the file holds")
            return self._strings(count, keep)
        code = _SCALARS.get(item_type)
        if code is None:  # nested arrays included: llama.cpp refuses them too
            raise _Malformed(f"unsupported array item type {item_type}")
        size = struct.calcsize(code) * count
        self._need(size)
        start = self.pos
        self.pos += size
        if not keep:
            return None
        items = array(code if code != "?" else "B")
        if items.itemsize != struct.calcsize(code):  # a platform whose C types differ: slow path
            fmt = f"{self.order}{count}{code}"
            return list(struct.unpack_from(fmt, self.data, start))
        items.frombytes(self.data[start : self.pos])
        if self.order != ("<" if struct.pack("=H", 1) == b"\x01\x00" else ">"):
            items.byteswap()
        return items.tolist() if code != "?" else [bool(b) for b in items]

    def _strings(self, count: int, keep: bool) -> list[str] | None:
        data, pos, end = self.data, self.pos, self.end
        length = struct.Struct(self.order + "Q").unpack_from
        out: list[str] | None = [] if keep else None
        append = out.append if out is not None else None
        try:
            for _ in range(count):
                if end - pos < 8:
                    raise _Malformed(f"it is truncated (at byte {pos} of {end})")
                (size,) = length(data, pos)
                pos += 8
                if size > end - pos:
                    raise _Malformed(f"it is truncated (at byte {pos} of {end})")
                if append is not None:
                    append(str(data[pos : pos + size], "utf-8"))
                pos += size
        except UnicodeDecodeError:
            raise _Malformed(f"string {0 if out is None else len(out)} of an array is not UTF-8") from None
        self.pos = pos
        return out


def _vocabulary(meta: Mapping[str, _Value]) -> GgufVocabulary:
    model = _get(meta, _KEY.MODEL, "string")
    if model is None:
        raise TokenizerError(f"the GGUF file has no tokenizer ({_KEY.MODEL} is missing)")
    if model in _UNSUPPORTED_MODELS or model not in ("gpt2", "llama", "gemma4"):
        kind = _UNSUPPORTED_MODELS.get(model, "an unknown kind")
        raise TokenizerError(
            f"the GGUF tokenizer type {excerpt(model)!r} ({kind}) is not supported: "
            "byte-level BPE ('gpt2'), SentencePiece ('llama') and 'gemma4' are"
        )
    pre = _get(meta, _KEY.PRE, "string")
    tokens = _get(meta, _KEY.LIST, "string array")
    if not tokens:
        raise TokenizerError(f"the GGUF file has no tokens ({_KEY.LIST} is missing or empty)")
    n = len(tokens)
    types = _get(meta, _KEY.TOKEN_TYPE, "int32 array")
    if types is None:
        types = [TokenType.NORMAL] * n
    elif len(types) < n:
        raise TokenizerError(f"{_KEY.TOKEN_TYPE} has {len(types)} entries for {n} tokens")
    for token_id, text in enumerate(tokens):
        if not text:  # llama.cpp's name for an empty token; it can never match text
            tokens[token_id] = f"[EMPTY_{token_id}]"
    _check_unique(tokens)

    ids = {name: _token_id(meta, key, n) for name, key in _ID_KEYS.items()}
    by_text = {text: i for i, text in enumerate(tokens)}
    for name, texts in (("eot", _EOT_TEXTS), ("eom", _EOM_TEXTS)):
        if ids[name] is None:
            ids[name] = next((by_text[t] for t in texts if t in by_text and by_text[t] != ids["eos"]), None)
    ends = tuple(dict.fromkeys(i for i in (ids["eos"], ids["eot"], ids["eom"]) if i is not None))
    if not ends:
        raise TokenizerError("the GGUF file names no end token (no EOS, EOT or EOM id)")
    add_bos = _get(meta, _KEY.ADD_BOS, "bool")
    added = _added_tokens(tokens, types)

    space_prefix = False
    if model == "llama":
        scores = _get(meta, _KEY.SCORES, "number array")
        if scores is None or len(scores) < n:
            raise TokenizerError(f"a SentencePiece GGUF vocabulary needs {_KEY.SCORES} for each token")
        prefix = _get(meta, _KEY.ADD_PREFIX, "bool")
        space_prefix = True if prefix is None else prefix
        unk = ids["unk"]
        spec = _sentencepiece_json(tokens, types, scores, added, space_prefix, None if unk is None else tokens[unk])
    else:
        if model == "gemma4":
            pre_tok = PRE_TOKENIZERS["gemma4"]
        elif pre is None or pre == "default":
            pre_tok = _DEFAULT_PRE
        elif pre in PRE_TOKENIZERS:
            pre_tok = PRE_TOKENIZERS[pre]
        else:
            raise TokenizerError(
                f"the GGUF pre-tokenizer {excerpt(pre)!r} ({_KEY.PRE}) is not supported, so its text "
                "would not be split as the model splits it"
            )
        merges = _get(meta, _KEY.MERGES, "string array")
        if merges is None:
            raise TokenizerError(f"a BPE GGUF vocabulary needs {_KEY.MERGES}")
        spec = _bpe_json(tokens, merges, added, pre_tok)
    return GgufVocabulary(
        model=model,
        pre=pre,
        vocab_size=n,
        bos_token_id=ids["bos"],
        end_token_ids=ends,
        add_bos_token=add_bos,
        tokenizer_json=json.dumps(spec, ensure_ascii=False, separators=(",", ":")),
        add_space_prefix=space_prefix,
    )


_ID_KEYS: Final = {
    "bos": _KEY.BOS_ID,
    "eos": _KEY.EOS_ID,
    "eot": _KEY.EOT_ID,
    "eom": _KEY.EOM_ID,
    "unk": _KEY.UNK_ID,
}
_KINDS: Final[Mapping[str, tuple[frozenset[int], bool]]] = {
    "string": (frozenset({GGUFValueType.STRING}), False),
    "bool": (frozenset({GGUFValueType.BOOL}), False),
    "unsigned integer": (_INTEGERS, False),
    "string array": (frozenset({GGUFValueType.STRING}), True),
    "int32 array": (frozenset({GGUFValueType.INT32}), True),
    "number array": (frozenset({GGUFValueType.FLOAT32, GGUFValueType.INT32}), True),
}


def _get(meta: Mapping[str, _Value], key: str, kind: str) -> Any:
    """The value of ``key`` if it is of ``kind``; None when absent."""
    found = meta.get(key)
    if found is None:
        return None
    types, is_array = _KINDS[kind]
    if found.is_array != is_array or found.type not in types:
        actual = GGUFValueType(found.type).name.lower() + (" array" if found.is_array else "")
        raise TokenizerError(f"{key} must be a {kind}, not a {actual}")
    return found.value


def _token_id(meta: Mapping[str, _Value], key: str, n: int) -> int | None:
    value = _get(meta, key, "unsigned integer")
    if value is not None and not 0 <= value < n:
        raise TokenizerError(f"{key} is {value}, not an id of the {n} tokens")
    return None if value is None else int(value)


def _check_unique(tokens: Sequence[str]) -> None:
    if len(set(tokens)) == len(tokens):
        return
    seen: dict[str, int] = {}
    for token_id, text in enumerate(tokens):
        if text in seen:
            raise TokenizerError(f"the GGUF token {excerpt(text)!r} has two ids, {seen[text]} and {token_id}")
        seen[text] = token_id


def _added_tokens(tokens: Sequence[str], types: Sequence[int]) -> list[dict[str, Any]]:
    """Control, unknown and unused tokens (special), and user-defined ones (matched in text)."""
    out = []
    for token_id, token_type in enumerate(types[: len(tokens)]):
        if token_type in _SPECIAL_TYPES or token_type == TokenType.USER_DEFINED:
            out.append(
                {
                    "id": token_id,
                    "content": tokens[token_id],
                    "single_word": False,
                    "lstrip": False,
                    "rstrip": False,
                    "normalized": False,  # matched in the text as written, as llama.cpp does
                    "special": token_type in _SPECIAL_TYPES,
                }
            )
    return out


def _model(
    tokens: Sequence[str], merges: list[list[str]], *, byte_fallback: bool, ignore_merges: bool, unk: str | None
) -> dict[str, Any]:
    return {
        "type": "BPE",
        "dropout": None,
        "unk_token": unk,
        "continuing_subword_prefix": None,
        "end_of_word_suffix": None,
        "fuse_unk": byte_fallback,
        "byte_fallback": byte_fallback,
        "ignore_merges": ignore_merges,
        "vocab": {text: token_id for token_id, text in enumerate(tokens)},
        "merges": merges,
    }


def _document(
    added: list[dict[str, Any]], normalizer: Any, pre_tokenizer: Any, decoder: Any, model: dict[str, Any]
) -> dict[str, Any]:
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": normalizer,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": None,
        "decoder": decoder,
        "model": model,
    }


def _space_decoder(strip_prefix: bool) -> dict[str, Any]:
    decoders: list[dict[str, Any]] = [
        {"type": "Replace", "pattern": {"String": _SPACE}, "content": " "},
        {"type": "ByteFallback"},
        {"type": "Fuse"},
    ]
    if strip_prefix:
        decoders.append({"type": "Strip", "content": " ", "start": 1, "stop": 0})
    return {"type": "Sequence", "decoders": decoders}


_ESCAPE_SPACES: Final = {"type": "Replace", "pattern": {"String": " "}, "content": _SPACE}


def _bpe_json(tokens: list[str], merges: Sequence[str], added: list[dict[str, Any]], pre: _Pre) -> dict[str, Any]:
    """Byte-level BPE, or raw UTF-8 BPE with ``▁`` for spaces (Gemma 4), from the file's merges."""
    vocab = set(tokens)
    pairs: list[list[str]] = []
    for merge in merges:
        # A piece may itself be a lone space (raw UTF-8 vocabularies): split at the first space
        # after the first character, as llama.cpp does. Merges of pieces that are not tokens
        # can never apply; Hugging Face refuses them, so they are left out.
        cut = merge.find(" ", 1)
        if cut > 0:
            left, right = merge[:cut], merge[cut + 1 :]
            if left in vocab and right in vocab and left + right in vocab:
                pairs.append([left, right])
    steps = list(pre.steps)
    if pre.byte_level:
        model = _model(tokens, pairs, byte_fallback=False, ignore_merges=pre.ignore_merges, unk=None)
        decoder: dict[str, Any] = _byte_level(True)
        normalizer = None
    else:
        model = _model(tokens, pairs, byte_fallback=True, ignore_merges=pre.ignore_merges, unk=None)
        decoder = _space_decoder(strip_prefix=False)
        normalizer = _ESCAPE_SPACES
    pre_tokenizer = steps[0] if len(steps) == 1 else {"type": "Sequence", "pretokenizers": steps}
    return _document(added, normalizer, pre_tokenizer, decoder, model)


def _sentencepiece_json(
    tokens: list[str],
    types: Sequence[int],
    scores: Sequence[float],
    added: list[dict[str, Any]],
    space_prefix: bool,
    unk: str | None,
) -> dict[str, Any]:
    """SentencePiece BPE as Hugging Face BPE: every split of a piece into two pieces is a merge,
    ranked by the piece's score (best first), which is the order SentencePiece merges in."""
    normal = {text: i for i, text in enumerate(tokens) if types[i] == TokenType.NORMAL}
    ranked: list[tuple[float, int, int, str, str]] = []
    for text, token_id in normal.items():
        for cut in range(1, len(text)):
            left, right = text[:cut], text[cut:]
            left_id, right_id = normal.get(left), normal.get(right)
            if left_id is not None and right_id is not None:
                ranked.append((-float(scores[token_id]), token_id, left_id, left, right))
    ranked.sort()
    merges = [[left, right] for _, _, _, left, right in ranked]
    model = _model(tokens, merges, byte_fallback=True, ignore_merges=False, unk=unk)
    prepend = [{"type": "Prepend", "prepend": _SPACE}] if space_prefix else []
    normalizer = {"type": "Sequence", "normalizers": [*prepend, _ESCAPE_SPACES]}
    return _document(added, normalizer, None, _space_decoder(strip_prefix=space_prefix), model)
