"""GGUF vocabularies: llama.cpp's test vocabularies tokenize as the models do; hostile files are refused.

The real vocabularies and their expected ids come from llama.cpp (tests/vocabularies.py fetches
them); the synthetic files are written here, byte by byte, so each malformation is exact.
"""

from __future__ import annotations

import functools
import json
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gguf
import llguidance
import numpy as np
import pytest

from core.errors import LimitExceeded, TokenizerError
from core.tokenizers.gguf import PRE_TOKENIZERS, GgufVocabulary, read_gguf_vocabulary
from tests.vocabularies import cases, vocab_path

T = gguf.GGUFValueType

# family: (model, pre, vocab size, BOS text, end token texts). The end tokens are what the files
# hold: EOS from its key; EOT found by text as llama.cpp finds it. No file has an EOM token (the
# llama-bpe vocabulary is Llama 3.0's: its 128008 is <|reserved_special_token_4|>, not <|eom_id|>).
FAMILIES: dict[str, tuple[str, str | None, int, str, tuple[str, ...]]] = {
    "llama-bpe": ("gpt2", "llama-bpe", 128256, "<|begin_of_text|>", ("<|end_of_text|>", "<|eot_id|>")),
    "llama-spm": ("llama", "default", 32000, "<s>", ("</s>",)),
    "phi-3": ("llama", "default", 32064, "<s>", ("<|endoftext|>", "<|end|>")),
    "qwen2": ("gpt2", "qwen2", 151936, "<|endoftext|>", ("<|endoftext|>", "<|im_end|>")),
    "qwen35": ("gpt2", "qwen35", 151936, "<|endoftext|>", ("<|endoftext|>", "<|im_end|>")),
    "gemma-4": ("gemma4", None, 262144, "<bos>", ("<eos>", "<turn|>")),
    "gpt-2": ("gpt2", "gpt-2", 50257, "<|endoftext|>", ("<|endoftext|>",)),
    "deepseek-coder": ("gpt2", "deepseek-coder", 32256, "<｜begin▁of▁sentence｜>", ("<｜end▁of▁sentence｜>",)),
    "deepseek-llm": ("gpt2", "deepseek-llm", 102400, "<｜begin▁of▁sentence｜>", ("<｜end▁of▁sentence｜>",)),
    "command-r": ("gpt2", "command-r", 256000, "<BOS_TOKEN>", ("<|END_OF_TURN_TOKEN|>",)),
    "falcon": ("gpt2", "falcon", 65024, "<|endoftext|>", ("<|endoftext|>",)),
    "mpt": ("gpt2", "mpt", 50432, "<|endoftext|>", ("<|endoftext|>",)),
    "starcoder": ("gpt2", "starcoder", 49152, "<|endoftext|>", ("<|endoftext|>",)),
    "refact": ("gpt2", "refact", 49216, "<|endoftext|>", ("<|endoftext|>",)),
}


@functools.cache
def load(family: str) -> tuple[GgufVocabulary, llguidance.LLTokenizer]:
    vocab = read_gguf_vocabulary(vocab_path(family))
    return vocab, llguidance.LLTokenizer(vocab.tokenizer_json, eos_token=list(vocab.end_token_ids))


def model_ids(vocab: GgufVocabulary, ll: llguidance.LLTokenizer, text: str) -> list[int]:
    """The model's ids for ``text``: llguidance drops SentencePiece's space prefix, so add it."""
    return ll.tokenize_str(" " + text if vocab.add_space_prefix and text else text)


# --- llama.cpp's vocabularies --------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_every_llama_cpp_case_tokenizes_to_the_models_ids(family: str) -> None:
    vocab, ll = load(family)
    expected_cases = cases(family)
    assert len(expected_cases) >= 46
    wrong = [(text, ids, model_ids(vocab, ll, text)) for text, ids in expected_cases]
    wrong = [(text, ids, got) for text, ids, got in wrong if got != ids]
    assert not wrong, "\n".join(f"{text!r}: expected {ids}, got {got}" for text, ids, got in wrong)


@pytest.mark.parametrize("family", FAMILIES)
def test_kind_size_bos_and_end_tokens_are_the_files(family: str) -> None:
    model, pre, size, bos, ends = FAMILIES[family]
    vocab, ll = load(family)
    assert (vocab.model, vocab.pre, vocab.vocab_size, ll.vocab_size) == (model, pre, size, size)
    assert vocab.bos_token_id is not None and ll.decode_bytes([vocab.bos_token_id]) == bos.encode()
    assert [ll.decode_bytes([i]) for i in vocab.end_token_ids] == [e.encode() for e in ends]
    assert all(ll.is_special_token(i) for i in (vocab.bos_token_id, *vocab.end_token_ids))
    assert vocab.add_space_prefix == (model == "llama")


def test_add_bos_token_is_read_when_the_file_has_it() -> None:
    assert load("llama-spm")[0].add_bos_token is True
    assert load("gemma-4")[0].add_bos_token is True
    assert load("qwen2")[0].add_bos_token is None


def test_llguidance_drops_the_sentencepiece_prefix_the_encoder_must_add() -> None:
    # Pins what the encode path compensates for: tokenize_str("Hello") is the continuation piece.
    vocab, ll = load("llama-spm")
    (expected,) = [ids for text, ids in cases("llama-spm") if text == "Hello"]
    assert [ll.decode_bytes(expected)] == [b" Hello"]
    assert ll.tokenize_str("Hello") != expected
    assert model_ids(vocab, ll, "Hello") == expected
    assert model_ids(vocab, ll, "") == []


@pytest.mark.parametrize("family", ["llama-spm", "phi-3", "qwen2", "deepseek-llm"])
def test_hugging_faces_library_reads_the_tokenizer_json_as_the_model(family: str) -> None:
    # The tokenizer.json is an ordinary one: Hugging Face's own library, prefix included, gives
    # the expected ids with no help.
    tokenizers = pytest.importorskip("tokenizers")
    hf = tokenizers.Tokenizer.from_str(load(family)[0].tokenizer_json)
    wrong = [(text, ids) for text, ids in cases(family) if hf.encode(text, add_special_tokens=False).ids != ids]
    assert not wrong


def test_text_after_an_added_token_gets_the_prefix_in_hugging_face_but_not_in_llguidance() -> None:
    # llama.cpp's SentencePiece tokenizer prefixes a space to the first text and to the text after
    # a special or user-defined token (phi-3's </s> is user-defined); Hugging Face's Prepend
    # normalizer, applied per segment, does the same. llguidance drops Prepend altogether.
    tokenizers = pytest.importorskip("tokenizers")
    vocab, ll = load("phi-3")
    hf = tokenizers.Tokenizer.from_str(vocab.tokenizer_json)
    assert hf.encode("Hello</s>world", add_special_tokens=False).tokens == ["▁Hello", "</s>", "▁world"]
    assert [ll.decode_bytes([i]) for i in model_ids(vocab, ll, "Hello</s>world")] == [b" Hello", b"</s>", b"world"]


def test_control_tokens_are_special_and_user_defined_ones_are_matched_in_text() -> None:
    vocab, ll = load("qwen2")
    assert ll.is_special_token(151645)  # <|im_end|>, control
    assert not ll.is_special_token(151646)  # [PAD151646], user-defined
    assert ll.tokenize_str("x[PAD151646]y")[1] == 151646
    spec = json.loads(vocab.tokenizer_json)
    flags = {t["content"]: t["special"] for t in spec["added_tokens"]}
    assert flags["<|im_end|>"] is True and flags["[PAD151646]"] is False


@pytest.mark.parametrize("family", ["aquila", "baichuan", "gpt-neox"])
def test_vocabularies_without_test_cases_load_and_round_trip(family: str) -> None:
    # Older files: no tokenizer.ggml.pre (llama.cpp's default split) or SentencePiece.
    vocab = read_gguf_vocabulary(vocab_path(family))
    ll = llguidance.LLTokenizer(vocab.tokenizer_json, eos_token=list(vocab.end_token_ids))
    text = "Hello world, 12345!\n\tcafé 🦙"
    prefix = " " if vocab.add_space_prefix else ""
    assert ll.decode_bytes(model_ids(vocab, ll, text)) == (prefix + text).encode()
    # aquila's EOS, <|endoftext|>, is typed as text: an end token is a control token all the same.
    assert all(ll.is_special_token(i) for i in vocab.end_token_ids)


@pytest.mark.parametrize(("family", "kind"), [("bert-bge", "'bert'"), ("nomic-bert-moe", "'t5'")])
def test_unsupported_kinds_are_refused_by_name(family: str, kind: str) -> None:
    with pytest.raises(TokenizerError, match=kind):
        read_gguf_vocabulary(vocab_path(family))


def test_bytes_bytearray_memoryview_and_path_read_alike() -> None:
    path = vocab_path("phi-3")
    data = path.read_bytes()
    expected = read_gguf_vocabulary(path)
    for source in (data, bytearray(data), memoryview(data), str(path)):
        assert read_gguf_vocabulary(source) == expected


@pytest.mark.parametrize("cut", [0, 3, 4, 23, 24, 100, 5000, 700_000, -1])
def test_a_truncated_real_vocabulary_is_refused(cut: int) -> None:
    data = vocab_path("llama-spm").read_bytes()
    with pytest.raises(TokenizerError):
        read_gguf_vocabulary(data[:cut])


def test_max_vocab_size_refuses_a_larger_real_vocabulary() -> None:
    with pytest.raises(LimitExceeded) as caught:
        read_gguf_vocabulary(vocab_path("llama-bpe"), max_vocab_size=128255)
    assert caught.value.limit == "max_vocab_size"
    assert read_gguf_vocabulary(vocab_path("llama-bpe"), max_vocab_size=128256).vocab_size == 128256


# --- synthetic files -------------------------------------------------------------------------------


def gpt2_chars() -> list[str]:
    """GPT-2's byte-level alphabet: printable bytes stand for themselves, others from U+0100."""
    printable = {*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)}
    out, shifted = [], 0
    for byte in range(256):
        if byte in printable:
            out.append(chr(byte))
        else:
            out.append(chr(0x100 + shifted))
            shifted += 1
    return out


CODES: dict[int, str] = {
    T.UINT8: "B", T.INT8: "b", T.UINT16: "H", T.INT16: "h", T.UINT32: "I", T.INT32: "i", T.UINT64: "Q", T.INT64: "q",
    T.FLOAT32: "f", T.FLOAT64: "d", T.BOOL: "?",
}  # fmt: skip


def value(value_type: int, item: Any, order: str = "<") -> bytes:
    """A value as GGUF writes it (an array's item is (item type, items))."""
    if value_type == T.STRING:
        raw = item.encode() if isinstance(item, str) else item
        return struct.pack(order + "Q", len(raw)) + raw
    if value_type == T.ARRAY:
        item_type, items = item
        head = struct.pack(order + "IQ", item_type, len(items))
        return head + b"".join(value(item_type, i, order) for i in items)
    return struct.pack(order + CODES.get(value_type, "I"), item)  # a type GGUF does not have: 4 bytes


def gguf_file(kvs: Sequence[tuple[str | bytes, int, Any]], *, order: str = "<", version: int = 3) -> bytes:
    """A GGUF file with these key/values (type, value; an array's value is (item type, items))."""
    out = [struct.pack("<I", gguf.GGUF_MAGIC), struct.pack(order + "IQQ", version, 0, len(kvs))]
    for key, value_type, item in kvs:
        out.append(value(T.STRING, key, order) + struct.pack(order + "I", value_type) + value(value_type, item, order))
    return b"".join(out)


def byte_level_kvs(pre: str | None = "gpt-2", **replace: tuple[int, Any] | None) -> list[tuple[str, int, Any]]:
    """A byte-level BPE vocabulary: 256 bytes, a few merges, EOS ``<|endoftext|>``."""
    merges = ["Ġ w", "o r", "Ġw or", "l d", "Ġwor ld", "H e", "He l", "Hel l", "Hell o", "1 2"]
    tokens = [*gpt2_chars(), "Ġw", "or", "Ġwor", "ld", "Ġworld", "He", "Hel", "Hell", "Hello", "12", "<|endoftext|>"]
    types = [1] * (len(tokens) - 1) + [3]
    kvs: dict[str, tuple[int, Any] | None] = {
        "general.architecture": (T.STRING, "gpt2"),
        "tokenizer.ggml.model": (T.STRING, "gpt2"),
        "tokenizer.ggml.pre": None if pre is None else (T.STRING, pre),
        "tokenizer.ggml.tokens": (T.ARRAY, (T.STRING, tokens)),
        "tokenizer.ggml.token_type": (T.ARRAY, (T.INT32, types)),
        "tokenizer.ggml.merges": (T.ARRAY, (T.STRING, merges)),
        "tokenizer.ggml.eos_token_id": (T.UINT32, len(tokens) - 1),
        "tokenizer.ggml.bos_token_id": (T.UINT32, len(tokens) - 1),
    }
    kvs.update({key.replace("__", "."): kv for key, kv in replace.items()})
    return [(key, kv[0], kv[1]) for key, kv in kvs.items() if kv is not None]


def raw_kvs(model: str, pre: str | None = None, **replace: tuple[int, Any] | None) -> list[tuple[str, int, Any]]:
    """A raw UTF-8 vocabulary (SentencePiece, or Gemma 4's kind): byte tokens, ▁ for spaces."""
    pieces = ["▁", "H", "e", "l", "o", "w", "r", "d", "▁w", "or", "▁wor", "ld", "▁world", "He", "ll", "Hell", "Hello"]
    tokens = ["<unk>", "<s>", "</s>", *(f"<0x{b:02X}>" for b in range(256)), *pieces]
    types = [2, 3, 3, *[6] * 256, *[1] * len(pieces)]
    scores = [0.0] * 259 + [-float(i) for i in range(len(pieces))]
    merges = ["▁ w", "o r", "▁w or", "l d", "▁wor ld", "H e", "l l", "He ll", "Hell o"]
    kvs: dict[str, tuple[int, Any] | None] = {
        "tokenizer.ggml.model": (T.STRING, model),
        "tokenizer.ggml.pre": None if pre is None else (T.STRING, pre),
        "tokenizer.ggml.tokens": (T.ARRAY, (T.STRING, tokens)),
        "tokenizer.ggml.token_type": (T.ARRAY, (T.INT32, types)),
        "tokenizer.ggml.scores": (T.ARRAY, (T.FLOAT32, scores)),
        "tokenizer.ggml.merges": None if model == "llama" else (T.ARRAY, (T.STRING, merges)),
        "tokenizer.ggml.bos_token_id": (T.UINT32, 1),
        "tokenizer.ggml.eos_token_id": (T.UINT32, 2),
        "tokenizer.ggml.unknown_token_id": (T.UINT32, 0),
    }
    kvs.update({key.replace("__", "."): kv for key, kv in replace.items()})
    return [(key, kv[0], kv[1]) for key, kv in kvs.items() if kv is not None]


def loaded(data: bytes) -> tuple[GgufVocabulary, llguidance.LLTokenizer]:
    vocab = read_gguf_vocabulary(data)
    return vocab, llguidance.LLTokenizer(vocab.tokenizer_json, eos_token=list(vocab.end_token_ids))


@pytest.mark.parametrize("pre", sorted(PRE_TOKENIZERS))
def test_every_named_split_loads_in_llguidance_and_round_trips(pre: str) -> None:
    raw = not PRE_TOKENIZERS[pre].byte_level
    vocab, ll = loaded(gguf_file(raw_kvs("gpt2", pre) if raw else byte_level_kvs(pre)))
    text = "Hello world 12, I'm 3.5 ok?\n\n  x\tÿ 日本 🙂"
    assert ll.decode_bytes(model_ids(vocab, ll, text)) == text.encode()


def test_a_file_without_pre_gets_llama_cpps_default_split() -> None:
    vocab, ll = loaded(gguf_file(byte_level_kvs(None)))
    assert vocab.pre is None
    assert [ll.decode_bytes([i]) for i in model_ids(vocab, ll, "Hello world")] == [b"Hello", b" world"]


def test_merges_are_applied_and_the_vocabulary_reads_as_written() -> None:
    vocab, ll = loaded(gguf_file(byte_level_kvs()))
    assert (vocab.model, vocab.pre, vocab.vocab_size, vocab.end_token_ids) == ("gpt2", "gpt-2", 267, (266,))
    assert [ll.decode_bytes([i]) for i in ll.tokenize_str("Hello world12")] == [b"Hello", b" world", b"12"]


def test_sentencepiece_merges_follow_scores_and_the_space_prefix_its_key() -> None:
    vocab, ll = loaded(gguf_file(raw_kvs("llama")))
    assert vocab.add_space_prefix and vocab.end_token_ids == (2,)
    assert [ll.decode_bytes([i]) for i in model_ids(vocab, ll, "Hello world")] == [b" ", b"Hello", b" world"]
    assert [ll.decode_bytes([i]) for i in ll.tokenize_str("x")] == [b"x"]  # byte fallback
    no_prefix = read_gguf_vocabulary(gguf_file(raw_kvs("llama", tokenizer__ggml__add_space_prefix=(T.BOOL, False))))
    assert not no_prefix.add_space_prefix and "Prepend" not in no_prefix.tokenizer_json


def test_big_endian_files_read_as_little_endian_ones() -> None:
    kvs = byte_level_kvs()
    assert read_gguf_vocabulary(gguf_file(kvs, order=">")) == read_gguf_vocabulary(gguf_file(kvs))


@pytest.mark.parametrize("endian", [gguf.GGUFEndian.LITTLE, gguf.GGUFEndian.BIG])
def test_files_of_the_gguf_packages_writer_read_as_written(tmp_path: Path, endian: gguf.GGUFEndian) -> None:
    kvs = byte_level_kvs("llama-bpe")
    tokens: list[str] = next(v[1] for k, _, v in kvs if k == "tokenizer.ggml.tokens")
    writer = gguf.GGUFWriter(tmp_path / "v.gguf", "llama", endianess=endian)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("llama-bpe")
    writer.add_token_list(tokens)
    writer.add_token_types([gguf.TokenType.NORMAL] * (len(tokens) - 1) + [gguf.TokenType.CONTROL])
    writer.add_token_merges(next(v[1] for k, _, v in kvs if k == "tokenizer.ggml.merges"))
    writer.add_eos_token_id(len(tokens) - 1)
    writer.add_eom_token_id(3)
    writer.add_add_bos_token(False)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    vocab = read_gguf_vocabulary(tmp_path / "v.gguf")
    read = (vocab.vocab_size, vocab.bos_token_id, vocab.end_token_ids, vocab.add_bos_token)
    assert read == (267, None, (266, 3), False)


def test_end_tokens_are_eos_eot_eom_once_each_by_key_or_by_text() -> None:
    kvs = byte_level_kvs(tokenizer__ggml__eot_token_id=(T.UINT32, 266), tokenizer__ggml__eom_token_id=(T.UINT32, 5))
    assert read_gguf_vocabulary(gguf_file(kvs)).end_token_ids == (266, 5)
    tokens = [*gpt2_chars(), "<|endoftext|>", "<|im_end|>", "<|eom_id|>"]
    found = byte_level_kvs(
        tokenizer__ggml__tokens=(T.ARRAY, (T.STRING, tokens)),
        tokenizer__ggml__token_type=(T.ARRAY, (T.INT32, [1] * 256 + [3, 3, 3])),
        tokenizer__ggml__merges=(T.ARRAY, (T.STRING, [])),
        tokenizer__ggml__eos_token_id=(T.UINT32, 256),
        tokenizer__ggml__bos_token_id=None,
    )
    assert read_gguf_vocabulary(gguf_file(found)).end_token_ids == (256, 257, 258)


# --- what a stranger may upload ---------------------------------------------------------------------


def refused(data: bytes | str | Path, error: type[Exception] = TokenizerError, **kwargs: Any) -> str:
    with pytest.raises(error) as caught:
        read_gguf_vocabulary(data, **kwargs)
    assert type(caught.value) is error
    return str(caught.value)


@pytest.mark.parametrize("seed", range(20))
def test_random_bytes_are_refused(seed: int) -> None:
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, int(rng.integers(0, 4000)), dtype=np.uint8).tobytes()
    if seed % 2:  # past the magic and version check
        data = gguf_file([])[:8] + data
    refused(data)


def test_every_truncation_of_a_gguf_is_refused() -> None:
    data = gguf_file(raw_kvs("llama"))
    read_gguf_vocabulary(data)
    for cut in range(len(data)):
        refused(data[:cut])


@pytest.mark.parametrize(
    ("key", "kv", "message"),
    [
        ("tokenizer.ggml.model", (T.UINT32, 2), "must be a string, not a uint32"),
        ("tokenizer.ggml.pre", (T.ARRAY, (T.STRING, ["gpt-2"])), "must be a string, not a string array"),
        ("tokenizer.ggml.tokens", (T.ARRAY, (T.INT32, [1, 2])), "must be a string array, not a int32 array"),
        ("tokenizer.ggml.token_type", (T.ARRAY, (T.FLOAT32, [1.0] * 267)), "must be a int32 array"),
        ("tokenizer.ggml.merges", (T.STRING, "Ġ w"), "must be a string array, not a string"),
        ("tokenizer.ggml.bos_token_id", (T.STRING, "1"), "must be a unsigned integer, not a string"),
        ("tokenizer.ggml.eos_token_id", (T.FLOAT32, 1.0), "must be a unsigned integer, not a float32"),
        ("tokenizer.ggml.add_bos_token", (T.UINT8, 1), "must be a bool, not a uint8"),
    ],
)
def test_a_key_of_the_wrong_type_is_refused(key: str, kv: tuple[int, Any], message: str) -> None:
    kvs = [(k, t, v) for k, t, v in byte_level_kvs() if k != key]
    assert message in refused(gguf_file([*kvs, (key, *kv)]))


@pytest.mark.parametrize(
    ("kvs", "message"),
    [
        (byte_level_kvs(tokenizer__ggml__model=(T.STRING, "rwkv")), "'rwkv' (RWKV) is not supported"),
        (byte_level_kvs(tokenizer__ggml__model=(T.STRING, "none")), "'none' (no vocabulary)"),
        (byte_level_kvs(tokenizer__ggml__model=(T.STRING, "bpe-9000")), "'bpe-9000' is not supported"),
        (byte_level_kvs(tokenizer__ggml__model=None), "has no tokenizer"),
        (byte_level_kvs("made-up"), "pre-tokenizer 'made-up'"),
        (byte_level_kvs(tokenizer__ggml__merges=None), "needs tokenizer.ggml.merges"),
        (byte_level_kvs(tokenizer__ggml__tokens=(T.ARRAY, (T.STRING, []))), "has no tokens"),
        (byte_level_kvs(tokenizer__ggml__token_type=(T.ARRAY, (T.INT32, [1]))), "1 entries for 267 tokens"),
        (byte_level_kvs(tokenizer__ggml__eos_token_id=(T.UINT32, 267)), "not an id of the 267 tokens"),
        (
            byte_level_kvs(
                tokenizer__ggml__tokens=(T.ARRAY, (T.STRING, [*gpt2_chars(), "<pad>"])),
                tokenizer__ggml__token_type=None,
                tokenizer__ggml__merges=(T.ARRAY, (T.STRING, [])),
                tokenizer__ggml__eos_token_id=None,
                tokenizer__ggml__bos_token_id=None,
            ),
            "no end token",
        ),
        (byte_level_kvs(tokenizer__ggml__tokens=(T.ARRAY, (T.STRING, ["a", "b", "a"]))), "has two ids, 0 and 2"),
        (raw_kvs("llama", tokenizer__ggml__scores=(T.ARRAY, (T.FLOAT32, [0.0]))), "1 entries for 276 tokens"),
        (byte_level_kvs(tokenizer__ggml__pre=(T.ARRAY, (T.ARRAY, []))), "unsupported array item type 9"),
        (byte_level_kvs(tokenizer__ggml__pre=(13, 0)), "unknown value type 13"),
        (byte_level_kvs(tokenizer__ggml__pre=(T.STRING, b"\xff\xfe")), "is not UTF-8"),
        (byte_level_kvs(tokenizer__ggml__merges=(T.ARRAY, (T.STRING, [b"\xc3"]))), "string 0 of an array is not UTF-8"),
    ],
)
def test_a_vocabulary_that_cannot_be_read_is_refused_saying_why(kvs: list[tuple[str, int, Any]], message: str) -> None:
    assert message in refused(gguf_file(kvs))


def test_keys_that_are_not_read_need_not_be_utf8() -> None:
    other: list[tuple[str | bytes, int, Any]] = [
        ("general.description", T.STRING, b"\xff\xfe"),
        (b"general.\xff", T.UINT8, 1),
        ("general.tags", T.ARRAY, (T.STRING, [b"\xc3", b"ok"])),
    ]
    assert read_gguf_vocabulary(gguf_file([*other, *byte_level_kvs()])).vocab_size == 267


def test_headers_that_are_not_gguf_3_or_2_are_refused() -> None:
    assert "GGUF magic" in refused(b"GGML" + gguf_file([])[4:])
    assert "version 1 is not supported" in refused(gguf_file(byte_level_kvs(), version=1))
    kvs = byte_level_kvs()
    assert "appears twice" in refused(gguf_file([*kvs, kvs[1]]))


def test_lengths_beyond_the_data_are_refused_without_reading_them() -> None:
    header = struct.pack("<IIQ", gguf.GGUF_MAGIC, 3, 0)
    assert "more than its size holds" in refused(header + struct.pack("<Q", 2**63) + bytes(64))
    key = value(T.STRING, "general.x")
    one = header + struct.pack("<Q", 1) + key
    assert "truncated" in refused(one + struct.pack("<IQ", T.STRING, 2**63 + 5))
    assert "truncated" in refused(one + struct.pack("<IIQ", T.ARRAY, T.UINT8, 2**62))
    assert "more than the file holds" in refused(one + struct.pack("<IIQ", T.ARRAY, T.STRING, 2**62))


def test_a_vocabulary_above_max_vocab_size_is_refused_before_its_tokens_are_read() -> None:
    data = gguf_file(byte_level_kvs())
    assert "267 tokens, above the limit of 266 ids" in refused(data, LimitExceeded, max_vocab_size=266)
    assert read_gguf_vocabulary(data, max_vocab_size=267).vocab_size == 267
    # A file that declares 2**40 tokens and ends there: the limit, not the truncation, refuses it.
    head = gguf_file([("tokenizer.ggml.model", T.STRING, "gpt2")])
    head = head[:16] + struct.pack("<Q", 2) + head[24:]
    declared = head + value(T.STRING, "tokenizer.ggml.tokens") + struct.pack("<IIQ", T.ARRAY, T.STRING, 2**40)
    refused(declared, LimitExceeded, max_vocab_size=300_000)
    assert "more than the file holds" in refused(declared)


@pytest.mark.parametrize(("longest", "message"), [(600, "too long"), (400, "over 4 merges per piece")])
def test_sentencepiece_pieces_that_would_make_too_many_merges_are_refused(longest: int, message: str) -> None:
    # "a", "aa", "aaa" ...: every split of every piece is a merge, quadratic in time and memory.
    pieces = ["a" * length for length in range(1, longest + 1)]
    kvs = raw_kvs(
        "llama",
        tokenizer__ggml__tokens=(T.ARRAY, (T.STRING, ["<unk>", "<s>", "</s>", *pieces])),
        tokenizer__ggml__token_type=(T.ARRAY, (T.INT32, [2, 3, 3, *[1] * longest])),
        tokenizer__ggml__scores=(T.ARRAY, (T.FLOAT32, [0.0] * (longest + 3))),
    )
    assert message in refused(gguf_file(kvs))


@pytest.mark.parametrize("seed", range(4))
def test_corrupted_bytes_raise_only_the_domain_errors(seed: int) -> None:
    rng = np.random.default_rng(seed)
    base = bytearray(gguf_file(byte_level_kvs() if seed % 2 else raw_kvs("llama")))
    for _ in range(150):
        data = bytearray(base)
        for position in rng.integers(0, len(data), int(rng.integers(1, 4))):
            data[position] = int(rng.integers(0, 256))
        try:
            vocab = read_gguf_vocabulary(bytes(data), max_vocab_size=1000)
        except (TokenizerError, LimitExceeded):
            continue
        json.loads(vocab.tokenizer_json)


def test_paths_that_are_not_gguf_files_are_refused(tmp_path: Path) -> None:
    assert "cannot read GGUF file" in refused(tmp_path / "missing.gguf")
    assert "cannot read GGUF file" in refused(tmp_path)
    (tmp_path / "empty.gguf").write_bytes(b"")
    assert "is empty" in refused(tmp_path / "empty.gguf")
    (tmp_path / "text.gguf").write_text("not a model")
    assert "GGUF magic" in refused(tmp_path / "text.gguf")
