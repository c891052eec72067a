"""The vocabulary of a GGUF file (llama.cpp's format) as a Hugging Face ``tokenizer.json``.

A GGUF file (a model, or a vocab-only file) carries its tokenizer as ``tokenizer.ggml.*``
metadata. :func:`read_gguf_vocabulary` reads it and writes a ``tokenizer.json`` for
``llguidance.LLTokenizer`` whose tokenization is the model's own: the ids of the model's Hugging
Face tokenizer with ``add_special_tokens=False``, which llama.cpp reproduces (its test vocabularies,
``models/ggml-vocab-*.gguf`` and their ``.inp``/``.out`` cases, check both).

* ``tokenizer.ggml.model == "gpt2"``: byte-level BPE (Llama 3, Qwen, GPT-2, DeepSeek, Command-R,
  Falcon, MPT, StarCoder ...): the file's tokens and merges, split as :data:`PRE_TOKENIZERS` says
  for ``tokenizer.ggml.pre``. A name not there is refused (a guessed split would silently give
  other ids than the model's); a file without one (or ``"default"``) gets llama.cpp's default.
* ``"llama"``: SentencePiece BPE (Llama 2, Phi-3, Mistral v1 ...): spaces become ``▁``, a ``▁`` is
  prefixed if ``tokenizer.ggml.add_space_prefix`` (default true), the pair making the best-scored
  piece merges first, characters without a piece become ``<0xNN>`` bytes. For Hugging Face: BPE
  with byte fallback whose merges are every split of a piece in two, ranked by the piece's score.
* ``"gemma4"`` (and ``pre`` names of that kind): BPE over raw UTF-8 with ``▁`` for spaces and
  byte fallback, split at newlines, with the file's merges.

Control, unknown and unused tokens become special added tokens; user-defined ones, added tokens
matched in the text (as llama.cpp and Hugging Face match them). Other kinds of tokenizer (``bert``,
``t5``, ``rwkv``, ``none`` ...) are refused, naming the kind.

The file is parsed here, not with ``gguf.GGUFReader``: that reader builds numpy views per array
element (14 s for Llama 3's vocabulary, 30 s for Gemma 4's) and walks an array's declared length
even past the end of the data, a length an uploaded file sets at will. Here every length is
checked against the bytes that remain, and a path is memory-mapped (a model's tensors are never
read). The ``gguf`` package provides the format's constants.

For encoders: llguidance drops the ``Prepend`` normalizer when it loads a ``tokenizer.json``, so
its ``tokenize_str`` never adds SentencePiece's space prefix; :attr:`GgufVocabulary.add_space_prefix`
says when to tokenize ``" " + text`` instead (non-empty text).
"""

from __future__ import annotations

import mmap
import os
import struct
import sys
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

import orjson
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
            from their keys or, without them, from a token's text as llama.cpp finds them
            (``<|eot_id|>``, ``<|im_end|>``, ``<|end|>``, ``<end_of_turn>``, ``<turn|>`` ...; ``<|eom_id|>``).
        add_bos_token: ``tokenizer.ggml.add_bos_token``, or None when the file does not say.
        tokenizer_json: The ``tokenizer.json`` text.
        add_space_prefix: Whether the model's tokenization prefixes text with a space (SentencePiece).
            llguidance ignores the prefix in ``tokenizer_json``: to get the model's ids, tokenize
            ``" " + text`` (non-empty text).
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
    """A split before BPE: Hugging Face pre-tokenizer steps, and the BPE options that go with it."""

    steps: tuple[Mapping[str, Any], ...]
    ignore_merges: bool = False  # a word that is a token is that token (Llama 3 and its kin)
    byte_level: bool = True  # False: raw UTF-8 pieces, ▁ for spaces, byte fallback


def _split(pattern: str) -> dict[str, Any]:
    return {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": False}


def _byte_level(use_regex: bool) -> dict[str, Any]:
    return {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": use_regex}


_DIGITS: Final = {"type": "Digits", "individual_digits": True}
_NUMBERS: Final = {"type": "Digits", "individual_digits": False}
# The split patterns are the models' own (their tokenizer.json), as llama.cpp's table quotes them.
_CONTRACTIONS = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)"
_TAIL = r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
_LLAMA3_RE = _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}" + _TAIL
_QWEN2_RE = _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}" + _TAIL
_QWEN35_RE = (
    _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}" + _TAIL.replace(r"\p{L}\p{N}", r"\p{L}\p{M}\p{N}")
)
_GPT2_RE = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
_UP, _LOW = r"[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]", r"[\p{Ll}\p{Lm}\p{Lo}\p{M}]"
_LEAD = r"[^\r\n\p{L}\p{N}]?"
_SLASH_TAIL = r"| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
_TEKKEN_RE = f"{_LEAD}{_UP}*{_LOW}+|{_LEAD}{_UP}+{_LOW}*" + r"|\p{N}" + _SLASH_TAIL
_GPT4O_RE = f"{_LEAD}{_UP}*{_LOW}+{_CONTRACTIONS}?|{_LEAD}{_UP}+{_LOW}*{_CONTRACTIONS}?" + r"|\p{N}{1,3}" + _SLASH_TAIL
_CJK = "[一-龥ࠀ-一가-퟿]+"
# DeepSeek LLM's letters (the cased ones), by code point: written as characters, some would be
# replaced by their canonical equivalents (U+1F7D by U+03CE ...), reversing the ranges.
_DEEPSEEK_LETTER_RANGES: Final = (
    (0x41, 0x5A), (0x61, 0x7A), (0xB5, 0xB5), (0xC0, 0xD6), (0xD8, 0xF6), (0xF8, 0x1BA), (0x1BC, 0x1BF),
    (0x1C4, 0x293), (0x295, 0x2AF), (0x370, 0x373), (0x376, 0x377), (0x37B, 0x37D), (0x37F, 0x37F),
    (0x386, 0x386), (0x388, 0x38A), (0x38C, 0x38C), (0x38E, 0x3A1), (0x3A3, 0x3F5), (0x3F7, 0x481),
    (0x48A, 0x52F), (0x531, 0x556), (0x10A0, 0x10C5), (0x13A0, 0x13F5), (0x13F8, 0x13FD), (0x1C90, 0x1CBA),
    (0x1CBD, 0x1CBF), (0x1D00, 0x1D2B), (0x1D6B, 0x1D77), (0x1D79, 0x1D9A), (0x1E00, 0x1F15), (0x1F18, 0x1F1D),
    (0x1F20, 0x1F45), (0x1F48, 0x1F4D), (0x1F50, 0x1F57), (0x1F59, 0x1F59), (0x1F5B, 0x1F5B), (0x1F5D, 0x1F5D),
    (0x1F5F, 0x1F7D), (0x1F80, 0x1FB4), (0x1FB6, 0x1FBC), (0x1FBE, 0x1FBE), (0x1FC2, 0x1FC4), (0x1FC6, 0x1FCC),
    (0x1FD0, 0x1FD3), (0x1FD6, 0x1FDB), (0x1FE0, 0x1FEC), (0x1FF2, 0x1FF4), (0x1FF6, 0x1FFC), (0x2102, 0x2102),
    (0x2107, 0x2107), (0x210A, 0x2113), (0x2115, 0x2115), (0x2119, 0x211D), (0x2124, 0x2124), (0x2126, 0x2126),
    (0x2128, 0x2128), (0x212A, 0x212D), (0x212F, 0x2134), (0x2139, 0x2139), (0x213C, 0x213F), (0x2145, 0x2149),
    (0x214E, 0x214E), (0x2183, 0x2184), (0x2C00, 0x2C7B), (0x2C7E, 0x2CE4), (0x2CEB, 0x2CEE), (0x2CF2, 0x2CF3),
    (0xA640, 0xA66D), (0xA680, 0xA69B), (0xA722, 0xA76F), (0xA771, 0xA787), (0xA78B, 0xA78E), (0xAB70, 0xABBF),
    (0xFB00, 0xFB06), (0xFB13, 0xFB17), (0xFF21, 0xFF3A), (0xFF41, 0xFF5A), (0x10400, 0x1044F), (0x104B0, 0x104D3),
    (0x104D8, 0x104FB), (0x10C80, 0x10CB2), (0x10CC0, 0x10CF2), (0x118A0, 0x118DF), (0x1E900, 0x1E943),
)  # fmt: skip
_DEEPSEEK_LETTERS = r"\s?[" + "".join(f"{chr(a)}-{chr(b)}" for a, b in _DEEPSEEK_LETTER_RANGES) + "]+"
_DEEPSEEK_PUNCT = r"\s?[!-/:-~！-／：-～‘-‟　-。]+"
_DEEPSEEK3_RE = (
    r"[!\"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+"
    r"| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def _bytes_after(*patterns: str) -> tuple[dict[str, Any], ...]:
    """Split by each pattern in turn, then map bytes to GPT-2's characters."""
    return (*map(_split, patterns), _byte_level(False))


_LLAMA3 = _Pre(_bytes_after(_LLAMA3_RE), ignore_merges=True)
_QWEN2 = _Pre(_bytes_after(_QWEN2_RE))
_GPT2 = _Pre((_byte_level(True),))
_STARCODER = _Pre((_DIGITS, _byte_level(True)))
_DEEPSEEK3 = _Pre(_bytes_after(r"\p{N}{1,3}", "[一-龥぀-ゟ゠-ヿ]+", _DEEPSEEK3_RE))
_PUNCTUATION: Final = {"type": "Punctuation", "behavior": "Contiguous"}
_FALCON = _Pre((_PUNCTUATION, _byte_level(True), _NUMBERS, _split("[0-9]{3}")))
_DEEPSEEK_LLM = _Pre(
    (*map(_split, (r"[\r\n]", _DEEPSEEK_LETTERS, _DEEPSEEK_PUNCT, r"\s+$", _CJK)), _NUMBERS, _byte_level(False))
)
_DEEPSEEK_CODER = _Pre((*map(_split, (r"[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", _CJK)), _DIGITS, _byte_level(False)))

# Each split under the tokenizer.ggml.pre names llama.cpp gives it.
_FAMILIES: Final = (
    # Llama 3's split; for these, as in llama.cpp, a word that is a token is not merged.
    (_LLAMA3, "llama3 llama-v3 llama-bpe falcon3 falcon-h1 pixtral midm-2.0 lfm2 jina-v5-nano glm4 glm5"),
    (_Pre(_bytes_after(_LLAMA3_RE)), "dbrx smaug-bpe chatglm-bpe"),
    (_QWEN2, "qwen2 deepseek-r1-qwen kormo f2llmv2 stablelm2 hunyuan solar-open megrez grok-2"),
    (_Pre(_bytes_after(_QWEN35_RE)), "qwen35"),
    (
        _GPT2,
        "gpt-2 mpt olmo phi-2 jais trillion granite-docling gigachat jina-es jina-de jina-v2-es jina-v2-de "
        "jina-v1-en jina-v2-code roberta-bpe a.x-4.0 mellum modern-bert exaone4",
    ),
    (_STARCODER, "starcoder refact command-r smollm codeshell exaone minerva-7b mellum2"),
    (_FALCON, "falcon"),
    (_DEEPSEEK_LLM, "deepseek-llm"),
    (_DEEPSEEK_CODER, "deepseek-coder"),
    (_DEEPSEEK3, "deepseek-v3 hunyuan-dense joyai-llm hy_v4"),
    (_Pre(_bytes_after(_TEKKEN_RE), ignore_merges=True), "tekken"),
    (_Pre(_bytes_after(_GPT4O_RE)), "gpt-4o llama4 kanana2 talkie minimax-m2"),
    # SentencePiece-style BPE: raw UTF-8, ▁ for spaces, merged across words (never across newlines).
    (_Pre((_split(r"\n+"),), byte_level=False), "gemma4 granite-embed-multi-311m sarvam-moe"),
)
#: The split of BPE vocabularies by ``tokenizer.ggml.pre``, one entry per name. Tested on the
#: vocabularies llama.cpp ships (llama-bpe, qwen2, qwen35, gpt-2, mpt, starcoder, refact,
#: command-r, falcon, deepseek-llm, deepseek-coder, gemma-4); other names share the split that
#: llama.cpp gives them.
PRE_TOKENIZERS: Final[Mapping[str, _Pre]] = {name: pre for pre, names in _FAMILIES for name in names.split()}
#: llama.cpp's split for a byte-level BPE file without ``tokenizer.ggml.pre`` (or ``"default"``).
_DEFAULT_PRE: Final = _Pre(_bytes_after(r"[\p{P}\$\+<=>\^~\|]+", _GPT2_RE, r"\p{N}+", "[0-9]{3}"))

_SUPPORTED_MODELS: Final = ("gpt2", "llama", "gemma4")
_MODEL_NAMES: Final = {"bert": "WordPiece", "t5": "Unigram", "rwkv": "RWKV", "none": "no vocabulary"}
#: End-of-turn and end-of-message tokens by text, for files without the keys (llama.cpp's lists).
_EOT_TEXTS: Final = (
    *("<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<turn|>", "<|endoftext|>", "<|end_of_text|>"),
    *("<EOT>", "_<EOT>", "[EOT]", "<｜end▁of▁sentence｜>", "<end_of_utterance>"),
)

_SPACE: Final = "▁"  # U+2581, SentencePiece's visible space
_SPECIAL_TYPES: Final = frozenset({TokenType.CONTROL, TokenType.UNKNOWN, TokenType.UNUSED})
_KEY = Keys.Tokenizer
_ID_KEYS: Final = {"bos": _KEY.BOS_ID, "eos": _KEY.EOS_ID, "eot": _KEY.EOT_ID, "eom": _KEY.EOM_ID, "unk": _KEY.UNK_ID}
_WANTED: Final = {_KEY.MODEL, _KEY.PRE, _KEY.LIST, _KEY.TOKEN_TYPE, _KEY.SCORES, _KEY.MERGES, _KEY.ADD_BOS}
_WANTED.update([_KEY.ADD_PREFIX, *_ID_KEYS.values()])


def read_gguf_vocabulary(
    source: bytes | bytearray | memoryview | str | os.PathLike[str], *, max_vocab_size: int | None = None
) -> GgufVocabulary:
    """Read the tokenizer of a GGUF file.

    Args:
        source: The file's content (``bytes``, ``bytearray`` or ``memoryview``), or its path
            (memory-mapped: only the metadata at its start is read).
        max_vocab_size: The largest vocabulary accepted, in ids; None: no bound.

    Returns:
        The vocabulary, with its ``tokenizer.json``.

    Raises:
        TokenizerError: Not a GGUF file, truncated or malformed, keys missing or of the wrong
            type, or a kind of tokenizer (or BPE split) that is not supported.
        LimitExceeded: More tokens than ``max_vocab_size`` (checked before they are read).
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        view = memoryview(source)
        return _vocabulary(_metadata(view if view.ndim == 1 and view.itemsize == 1 else view.cast("B"), max_vocab_size))
    path = os.fspath(source)
    try:
        with open(path, "rb") as file:
            if os.fstat(file.fileno()).st_size == 0:
                raise TokenizerError(f"{excerpt(path)!r} is empty, not a GGUF file")
            with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                meta = _metadata(mapped, max_vocab_size)  # plain Python values: the map can close
    except (OSError, ValueError) as exc:  # ValueError: mmap refuses some special files
        raise TokenizerError(f"cannot read GGUF file {excerpt(path)!r}: {exc}") from None
    return _vocabulary(meta)


def _metadata(data: memoryview | mmap.mmap, max_vocab_size: int | None) -> dict[str, _Value]:
    try:
        return _Metadata(data, max_vocab_size).read()
    except _Malformed as exc:
        raise TokenizerError(f"not a valid GGUF file: {exc}") from None
    except (struct.error, ValueError, IndexError, OverflowError) as exc:  # a case the checks missed
        raise TokenizerError(f"not a valid GGUF file ({type(exc).__name__}: {excerpt(str(exc))})") from None


class _Malformed(Exception):
    """The bytes do not follow the GGUF format."""


#: struct codes of GGUF's scalar types.
_SCALARS: Final[Mapping[int, str]] = {
    GGUFValueType.UINT8: "B", GGUFValueType.INT8: "b", GGUFValueType.UINT16: "H", GGUFValueType.INT16: "h",
    GGUFValueType.UINT32: "I", GGUFValueType.INT32: "i", GGUFValueType.UINT64: "Q", GGUFValueType.INT64: "q",
    GGUFValueType.FLOAT32: "f", GGUFValueType.FLOAT64: "d", GGUFValueType.BOOL: "?",
}  # fmt: skip
_INTEGERS: Final = frozenset(t for t, code in _SCALARS.items() if code in "BbHhIiQq")


class _Value(NamedTuple):
    """A metadata value: its type (for an array, its items' type) and what was read."""

    type: int
    is_array: bool
    value: Any


class _Metadata:
    """Reads the key/value section of a GGUF file, keeping the tokenizer's keys."""

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
            (version,) = struct.unpack_from(">I", self.data, 4)
        if version not in (2, 3):
            raise _Malformed(f"GGUF version {version} is not supported (2 and 3 are)")
        self.pos = 8
        self._number("Q")  # the tensor count: tensors are not read
        kv_count = self._number("Q")
        if kv_count > (self.end - self.pos) // 13:  # a key/value pair takes 13 bytes at least
            raise _Malformed(f"it declares {kv_count} metadata keys, more than its size holds")
        out: dict[str, _Value] = {}
        seen: set[bytes] = set()
        for _ in range(kv_count):
            start = self._take(self._number("Q"))
            raw = bytes(self.data[start : self.pos])
            key = raw.decode("utf-8", "replace")  # only ASCII keys are read: others need not be UTF-8
            if raw in seen:
                raise _Malformed(f"the key {excerpt(key)!r} appears twice")
            seen.add(raw)
            keep = key in _WANTED
            value_type = self._number("I")
            if value_type != GGUFValueType.ARRAY:
                value = self._scalar(value_type, keep)
                if keep:
                    out[key] = _Value(value_type, False, value)
                continue
            item_type, count = self._number("I"), self._number("Q")
            if key == _KEY.LIST and self.max_vocab_size is not None and count > self.max_vocab_size:
                raise LimitExceeded(
                    f"the GGUF vocabulary has {count} tokens, above the limit of {self.max_vocab_size} ids",
                    "max_vocab_size",
                )
            value = self._array(item_type, count, keep)
            if keep:
                out[key] = _Value(item_type, True, value)
        return out

    def _take(self, size: int) -> int:
        """Skip ``size`` bytes; their offset."""
        if size > self.end - self.pos:
            raise _Malformed(f"it is truncated (at byte {self.pos} of {self.end})")
        start = self.pos
        self.pos += size
        return start

    def _number(self, code: str) -> Any:
        return struct.unpack_from(self.order + code, self.data, self._take(struct.calcsize(code)))[0]

    def _scalar(self, value_type: int, keep: bool) -> Any:
        if value_type == GGUFValueType.STRING:
            start = self._take(self._number("Q"))
            try:
                return str(self.data[start : self.pos], "utf-8") if keep else None
            except UnicodeDecodeError:
                raise _Malformed(f"the string at byte {start} is not UTF-8") from None
        if value_type not in _SCALARS:
            raise _Malformed(f"unknown value type {value_type}")
        return self._number(_SCALARS[value_type])

    def _array(self, item_type: int, count: int, keep: bool) -> list[Any] | None:
        if item_type == GGUFValueType.STRING:
            if count > (self.end - self.pos) // 8:
                raise _Malformed(f"an array declares {count} strings, more than the file holds")
            return self._strings(count, keep)
        if item_type not in _SCALARS:  # nested arrays included: llama.cpp refuses them too
            raise _Malformed(f"unsupported array item type {item_type}")
        code = _SCALARS[item_type]
        size = struct.calcsize(code)
        start = self._take(size * count)
        if not keep:
            return None
        items = array("B" if code == "?" else code)  # the same sizes as struct's standard ones
        items.frombytes(self.data[start : self.pos])
        if (self.order == ">") != (sys.byteorder == "big"):
            items.byteswap()
        return [bool(b) for b in items] if code == "?" else items.tolist()

    def _strings(self, count: int, keep: bool) -> list[str] | None:
        # The hot loop of a large vocabulary (Gemma 4: 777,050 strings): locals, no method calls.
        data, pos, end = self.data, self.pos, self.end
        length = struct.Struct(self.order + "Q").unpack_from
        out: list[str] = []
        append = out.append
        for index in range(count):
            if end - pos < 8:
                raise _Malformed(f"it is truncated (at byte {pos} of {end})")
            (size,) = length(data, pos)
            pos += 8
            if size > end - pos:
                raise _Malformed(f"it is truncated (at byte {pos} of {end})")
            if keep:
                try:
                    append(str(data[pos : pos + size], "utf-8"))
                except UnicodeDecodeError:
                    raise _Malformed(f"string {index} of an array is not UTF-8") from None
            pos += size
        self.pos = pos
        return out if keep else None


def _vocabulary(meta: Mapping[str, _Value]) -> GgufVocabulary:
    model = _get(meta, _KEY.MODEL, "string")
    if model is None:
        raise TokenizerError(f"the GGUF file has no tokenizer ({_KEY.MODEL} is missing)")
    if model not in _SUPPORTED_MODELS:
        kind = f" ({_MODEL_NAMES[model]})" if model in _MODEL_NAMES else ""
        raise TokenizerError(
            f"the GGUF tokenizer type {excerpt(model)!r}{kind} is not supported: byte-level BPE ('gpt2'), "
            "SentencePiece ('llama') and 'gemma4' are"
        )
    pre = _get(meta, _KEY.PRE, "string")
    tokens = _get(meta, _KEY.LIST, "string array")
    if not tokens:
        raise TokenizerError(f"the GGUF file has no tokens ({_KEY.LIST} is missing or empty)")
    n = len(tokens)
    types = _get(meta, _KEY.TOKEN_TYPE, "int32 array") or [TokenType.NORMAL] * n
    if len(types) < n:
        raise TokenizerError(f"{_KEY.TOKEN_TYPE} has {len(types)} entries for {n} tokens")
    for token_id, text in enumerate(tokens):
        if not text:  # llama.cpp's name for an empty token (which no text can produce)
            tokens[token_id] = f"[EMPTY_{token_id}]"
    by_text = _ids_by_text(tokens)

    ids = {name: _token_id(meta, key, n) for name, key in _ID_KEYS.items()}
    for name, texts in (("eot", _EOT_TEXTS), ("eom", ("<|eom_id|>",))):
        if ids[name] is None:
            ids[name] = next((by_text[t] for t in texts if by_text.get(t, ids["eos"]) != ids["eos"]), None)
    ends = tuple(dict.fromkeys(i for i in (ids["eos"], ids["eot"], ids["eom"]) if i is not None))
    if not ends:
        raise TokenizerError("the GGUF file names no end token (no EOS, EOT or EOM id)")
    types = list(types)
    for token_id in ends:  # an end token typed as text is a control token, as llama.cpp makes it
        if types[token_id] not in _SPECIAL_TYPES:
            types[token_id] = TokenType.CONTROL
    added = _added_tokens(tokens, types)

    space_prefix = False
    if model == "llama":
        scores = _get(meta, _KEY.SCORES, "number array") or [0.0] * n  # llama.cpp's default
        if len(scores) < n:
            raise TokenizerError(f"{_KEY.SCORES} has {len(scores)} entries for {n} tokens")
        prefix = _get(meta, _KEY.ADD_PREFIX, "bool")
        space_prefix = True if prefix is None else prefix
        unk = None if ids["unk"] is None else tokens[ids["unk"]]
        spec = _sentencepiece_json(tokens, types, scores, by_text, added, space_prefix, unk)
    else:
        split = _split_of(model, pre)
        merges = _get(meta, _KEY.MERGES, "string array")
        if merges is None:
            raise TokenizerError(f"a BPE GGUF vocabulary needs {_KEY.MERGES}")
        spec = _bpe_json(tokens, by_text, merges, added, split)
    return GgufVocabulary(
        model=model, pre=pre, vocab_size=n, bos_token_id=ids["bos"], end_token_ids=ends,
        add_bos_token=_get(meta, _KEY.ADD_BOS, "bool"), tokenizer_json=orjson.dumps(spec).decode("utf-8"),
        add_space_prefix=space_prefix,
    )  # fmt: skip


def _split_of(model: str, pre: str | None) -> _Pre:
    if model == "gemma4":  # llama.cpp ignores the key for this kind
        return PRE_TOKENIZERS["gemma4"]
    if pre is None or pre == "default":
        return _DEFAULT_PRE
    if pre not in PRE_TOKENIZERS:
        raise TokenizerError(
            f"the GGUF pre-tokenizer {excerpt(pre)!r} ({_KEY.PRE}) is not supported: without it the text "
            "would not be split as the model splits it"
        )
    return PRE_TOKENIZERS[pre]


_STRING, _BOOL = frozenset({GGUFValueType.STRING}), frozenset({GGUFValueType.BOOL})
_INT32, _FLOAT32 = frozenset({GGUFValueType.INT32}), frozenset({GGUFValueType.FLOAT32})
#: The kinds of value the tokenizer's keys have: their types, and whether an array.
_KINDS: Final[Mapping[str, tuple[frozenset[int], bool]]] = {
    "string": (_STRING, False), "bool": (_BOOL, False), "unsigned integer": (_INTEGERS, False),
    "string array": (_STRING, True), "int32 array": (_INT32, True), "number array": (_FLOAT32 | _INT32, True),
}  # fmt: skip


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


def _ids_by_text(tokens: Sequence[str]) -> dict[str, int]:
    by_text = dict(zip(tokens, range(len(tokens))))
    if len(by_text) != len(tokens):  # llama.cpp refuses such a file too
        first: dict[str, int] = {}
        for token_id, text in enumerate(tokens):
            if first.setdefault(text, token_id) != token_id:
                raise TokenizerError(f"the GGUF token {excerpt(text)!r} has two ids, {first[text]} and {token_id}")
    return by_text


def _added_tokens(tokens: Sequence[str], types: Sequence[int]) -> list[dict[str, Any]]:
    """Control, unknown and unused tokens (special), and user-defined ones (matched in text)."""
    # "normalized": False: matched in the text as written, as llama.cpp matches them.
    flags = {"single_word": False, "lstrip": False, "rstrip": False, "normalized": False}
    return [
        {"id": token_id, "content": tokens[token_id], **flags, "special": token_type in _SPECIAL_TYPES}
        for token_id, token_type in enumerate(types[: len(tokens)])
        if token_type in _SPECIAL_TYPES or token_type == TokenType.USER_DEFINED
    ]


def _document(
    added: list[dict[str, Any]], normalizer: Any, pre_tokenizer: Any, decoder: Any, by_text: Mapping[str, int],
    merges: list[Any], *, byte_fallback: bool, ignore_merges: bool = False, unk: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The ``tokenizer.json`` of a BPE model (Hugging Face's field names and defaults)."""
    model = {
        "type": "BPE", "dropout": None, "unk_token": unk, "continuing_subword_prefix": None, "end_of_word_suffix": None,
        "fuse_unk": byte_fallback, "byte_fallback": byte_fallback, "ignore_merges": ignore_merges,
        "vocab": by_text, "merges": merges,
    }  # fmt: skip
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": normalizer,
        "pre_tokenizer": pre_tokenizer, "post_processor": None, "decoder": decoder, "model": model,
    }  # fmt: skip


def _space_decoder(strip_prefix: bool) -> dict[str, Any]:
    strip = [{"type": "Strip", "content": " ", "start": 1, "stop": 0}] if strip_prefix else []
    replace = {"type": "Replace", "pattern": {"String": _SPACE}, "content": " "}
    return {"type": "Sequence", "decoders": [replace, {"type": "ByteFallback"}, {"type": "Fuse"}, *strip]}


_ESCAPE_SPACES: Final = {"type": "Replace", "pattern": {"String": " "}, "content": _SPACE}


def _bpe_json(
    tokens: Sequence[str], by_text: Mapping[str, int], merges: Sequence[str], added: list[dict[str, Any]], split: _Pre
) -> dict[str, Any]:
    """Byte-level BPE, or raw UTF-8 BPE with ``▁`` for spaces (Gemma 4), with the file's merges."""
    # A merge is "left right". Hugging Face refuses a merge whose pieces are not tokens (such a
    # merge never applies in llama.cpp), so those are left out. Where no token holds a space,
    # the first space separates the pieces and the text is kept as it is (compact, and 3x faster
    # to check than pairs); otherwise the pieces are cut at the first space after the first
    # character, as llama.cpp cuts them, and written as pairs.
    kept: list[Any] = []
    if any(" " in text for text in tokens):
        for merge in merges:
            cut = merge.find(" ", 1)
            left, right = merge[:cut], merge[cut + 1 :]
            if cut > 0 and left in by_text and right in by_text and left + right in by_text:
                kept.append([left, right])
    else:
        for merge in merges:
            left, _, right = merge.partition(" ")
            if left in by_text and right in by_text and left + right in by_text:
                kept.append(merge)
    steps = list(split.steps)
    pre_tokenizer = steps[0] if len(steps) == 1 else {"type": "Sequence", "pretokenizers": steps}
    if split.byte_level:
        decoder, normalizer = _byte_level(True), None
    else:
        decoder, normalizer = _space_decoder(strip_prefix=False), _ESCAPE_SPACES
    fallback, ignore = not split.byte_level, split.ignore_merges
    return _document(
        added, normalizer, pre_tokenizer, decoder, by_text, kept, byte_fallback=fallback, ignore_merges=ignore
    )


#: Bounds on the merges of a SentencePiece vocabulary (Llama 2: 61,249 for 32,000 pieces of 16
#: characters at most), which long nested pieces would otherwise make cost minutes and gigabytes.
_MAX_SPLIT_CHARS: Final = 50_000_000  # the characters that splitting every piece copies
_MERGES_PER_PIECE: Final = 4


def _sentencepiece_json(
    tokens: Sequence[str],
    types: Sequence[int],
    scores: Sequence[float],
    by_text: Mapping[str, int],
    added: list[dict[str, Any]],
    space_prefix: bool,
    unk: str | None,
) -> dict[str, Any]:
    """SentencePiece BPE in Hugging Face's terms: every split of a piece into two pieces is a
    merge, ranked by the piece's score, best first (SentencePiece's order), then by id."""
    normal = {text: i for i, text in enumerate(tokens) if types[i] == TokenType.NORMAL}
    if sum(len(text) ** 2 for text in normal) > _MAX_SPLIT_CHARS:
        raise TokenizerError("the SentencePiece pieces are too long to derive their merges")
    most = _MERGES_PER_PIECE * len(normal) + 1000
    ranked: list[tuple[float, int, int, str, str]] = []
    for text, token_id in normal.items():
        for cut in range(1, len(text)):
            left_id, right_id = normal.get(text[:cut]), normal.get(text[cut:])
            if left_id is not None and right_id is not None:
                ranked.append((-float(scores[token_id]), token_id, left_id, text[:cut], text[cut:]))
        if len(ranked) > most:
            raise TokenizerError(f"the SentencePiece pieces make over {_MERGES_PER_PIECE} merges per piece")
    ranked.sort()
    merges = [[left, right] for _, _, _, left, right in ranked]
    prepend = [{"type": "Prepend", "prepend": _SPACE}] if space_prefix else []
    normalizer = {"type": "Sequence", "normalizers": [*prepend, _ESCAPE_SPACES]}
    decoder = _space_decoder(strip_prefix=space_prefix)
    return _document(added, normalizer, None, decoder, by_text, merges, byte_fallback=True, unk=unk)
