"""A vocab-only GGUF from a model file: the vocabulary's metadata copied as stored, nothing else."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from core import Tokenizer
from guidance_client.vocab_gguf import read_metadata, vocab_only_gguf
from tests.vocabularies import vocab_path

gguf = pytest.importorskip("gguf", reason="the GGUF tests need the gguf package")


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A GGUF model: some weights, llama hyper-parameters and llama.cpp's SentencePiece vocabulary (32,000 ids)."""
    path = tmp_path_factory.mktemp("gguf") / "model.gguf"
    vocab = gguf.GGUFReader(vocab_path("llama-spm"))
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_embedding_length(8)
    writer.add_string("general.name", "a model")
    for key, field in vocab.fields.items():
        if key.startswith("tokenizer.ggml."):
            kind = field.types[0]
            if kind == gguf.GGUFValueType.ARRAY:
                sub = field.types[-1]
                strings = sub == gguf.GGUFValueType.STRING
                value = [bytes(field.parts[i]) for i in field.data] if strings else field.contents()
                writer.add_key_value(key, value, kind, sub)
            else:
                writer.add_key_value(key, field.contents(), kind)
    writer.add_tensor("token_embd.weight", np.ones((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_the_vocabulary_is_copied_and_the_weights_left_out(tmp_path: Path, model: Path) -> None:
    path = model
    data = vocab_only_gguf(path)
    out = tmp_path / "vocab.gguf"
    out.write_bytes(data)
    magic, version, tensors, pairs = struct.unpack_from("<IIQQ", data)
    assert (magic, version, tensors) == (gguf.GGUF_MAGIC, 3, 0)
    keys = [k for k, _ in read_metadata(out, None)]
    assert len(keys) == pairs and keys[0] == "general.architecture"
    assert set(keys[1:]) == {k for k, _ in read_metadata(vocab_path("llama-spm"), ["tokenizer."])}
    assert read_metadata(out) == read_metadata(path)  # every pair byte for byte
    name = struct.pack("<IQ", gguf.GGUFValueType.STRING, 7) + b"a model"
    assert read_metadata(path, ["general.name"]) == [("general.name", name)]
    assert len(data) < path.stat().st_size


def test_the_server_reads_the_same_tokenizer_from_both(model: Path) -> None:
    path = model
    original = Tokenizer.from_bytes("a", vocab_path("llama-spm").read_bytes())
    copied = Tokenizer.from_bytes("b", vocab_only_gguf(path))
    assert copied.digest == original.digest


def test_a_file_without_a_vocabulary_or_not_gguf_is_refused(tmp_path: Path) -> None:
    bare = tmp_path / "bare.gguf"
    writer = gguf.GGUFWriter(str(bare), "llama")
    writer.add_block_count(1)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    with pytest.raises(ValueError, match="no vocabulary"):
        vocab_only_gguf(bare)
    other = tmp_path / "tokenizer.json"
    other.write_bytes(b'{"model": {"vocab": {}}}' * 4)
    with pytest.raises(ValueError, match="GGUF"):
        vocab_only_gguf(other)
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(vocab_path("llama-spm").read_bytes()[:5000])
    with pytest.raises(ValueError, match="GGUF metadata"):
        read_metadata(truncated)
