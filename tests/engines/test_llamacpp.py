"""llama-cpp-python ``create_completion`` with :class:`guidance_client.llamacpp.GuidanceLogitsProcessor`.

The models are random-weight llama GGUFs written here with the ``gguf`` package, each carrying a
real vocabulary's ``tokenizer.ggml.*`` metadata (Llama 3's, Qwen 2's: llama.cpp's own vocab-only
files); the processor aligns from the ``Llama`` itself, registering a vocab-only copy of the
model file's vocabulary. Outputs are checked by oracles independent of the server (``json`` +
``jsonschema``, ``re``), completions end on the family's end-of-turn token, and a model whose
vocabulary or end tokens differ from the server tokenizer's is refused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

llama_cpp = pytest.importorskip("llama_cpp", reason="the engine tests need llama-cpp-python (.ci/engines-hf)")
gguf = pytest.importorskip("gguf", reason="the engine tests need gguf (.ci/engines-hf)")

from guidance_client import GuidanceClient, VocabularyMismatch  # noqa: E402
from guidance_client.llamacpp import GuidanceLogitsProcessor, llama_vocabulary  # noqa: E402
from guidance_client.vocab_gguf import read_metadata  # noqa: E402
from tests.engines.conftest import MIXED_SPECS, REGEX, check_output  # noqa: E402
from tests.engines.families import FAMILIES, Family  # noqa: E402
from tests.server import Server  # noqa: E402
from tests.vocabularies import vocab_path  # noqa: E402

EMBED, FF, HEADS, LAYERS = 64, 128, 4, 2


class _Stored(bytes):
    """A metadata value as a GGUF file stores it (its type, then its data), copied as is."""


class _Writer(gguf.GGUFWriter):  # type: ignore[misc]
    """``GGUFWriter`` taking some values as stored: packing 400,000 strings one by one takes ~20 s."""

    def _pack_val(self, val: Any, vtype: Any, add_vtype: bool, sub_type: Any = None) -> bytes:
        if isinstance(val, _Stored):
            return bytes(val)
        packed: bytes = super()._pack_val(val, vtype, add_vtype, sub_type)
        return packed


def write_gguf(path: Path, family: str, seed: int = 0) -> int:
    """A random-weight llama GGUF with the vocabulary of llama.cpp's ``family``; its number of ids."""
    rng = np.random.default_rng(seed)
    vocabulary = read_metadata(vocab_path(family), ["tokenizer.ggml."])
    w = _Writer(str(path), "llama")
    w.add_block_count(LAYERS)
    w.add_context_length(256)
    w.add_embedding_length(EMBED)
    w.add_feed_forward_length(FF)
    w.add_head_count(HEADS)
    w.add_head_count_kv(HEADS)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(EMBED // HEADS)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    for key, stored in vocabulary:
        w.add_key_value(key, _Stored(stored), gguf.GGUFValueType.ARRAY)  # the type is in the stored bytes
    (tokens,) = [stored for key, stored in vocabulary if key == "tokenizer.ggml.tokens"]
    n_vocab = int.from_bytes(tokens[8:16], "little")  # array: item type (4 bytes), count (8)

    def weight(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.5).astype(np.float32)

    w.add_tensor("token_embd.weight", weight(n_vocab, EMBED))
    w.add_tensor("output_norm.weight", np.ones(EMBED, dtype=np.float32))
    w.add_tensor("output.weight", weight(n_vocab, EMBED))
    for b in range(LAYERS):
        w.add_tensor(f"blk.{b}.attn_norm.weight", np.ones(EMBED, dtype=np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            w.add_tensor(f"blk.{b}.{name}.weight", weight(EMBED, EMBED))
        w.add_tensor(f"blk.{b}.ffn_norm.weight", np.ones(EMBED, dtype=np.float32))
        w.add_tensor(f"blk.{b}.ffn_gate.weight", weight(FF, EMBED))
        w.add_tensor(f"blk.{b}.ffn_up.weight", weight(FF, EMBED))
        w.add_tensor(f"blk.{b}.ffn_down.weight", weight(EMBED, FF))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return n_vocab


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def model(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Family, Any]:
    """A tiny random model on a real vocabulary, loaded by llama.cpp."""
    family = FAMILIES[request.param]
    path = tmp_path_factory.mktemp("gguf") / f"tiny-{family.name}.gguf"
    n_vocab = write_gguf(path, family.name)
    llm = llama_cpp.Llama(str(path), n_ctx=256, n_threads=1, seed=7, verbose=False)
    assert llm.n_vocab() == n_vocab
    return family, llm


class PreferEnd:
    """Before the guidance processor: of the end tokens it will allow, ``token`` is the model's favourite."""

    def __init__(self, token: int) -> None:
        self.token = token

    def __call__(self, input_ids: Any, scores: np.ndarray) -> np.ndarray:
        scores[self.token] += 100.0
        return scores


def complete(llm: Any, processors: list[Any], temperature: float, max_tokens: int = 96) -> dict[str, Any]:
    completion: dict[str, Any] = llm.create_completion(
        "apple banana",
        max_tokens=max_tokens,
        temperature=temperature,
        top_k=0,
        top_p=1.0,
        min_p=0.0,
        repeat_penalty=1.0,
        seed=11,
        logits_processor=llama_cpp.LogitsProcessorList(processors),
    )
    return completion


@pytest.mark.parametrize("temperature", [0.0, 1.0], ids=["greedy", "sampled"])
@pytest.mark.parametrize("spec", MIXED_SPECS, ids=["json", "template", "regex", "choice"])
def test_every_completion_ends_on_the_end_of_turn_token_and_satisfies_its_constraint(
    server: Server, model: tuple[Family, Any], spec: dict[str, Any], temperature: float
) -> None:
    family, llm = model
    turn = family.end_of_turn[0]
    with GuidanceClient(server.url) as client:
        processor = GuidanceLogitsProcessor(client, spec, llama=llm)
        assert processor.eos_token_ids == family.llama_cpp_end_tokens
        completion = complete(llm, [PreferEnd(turn), processor], temperature)
        processor.finish(completion)
        text = completion["choices"][0]["text"]
        assert completion["choices"][0]["finish_reason"] == "stop", completion
        assert processor.grammar.is_terminated() and processor.eos_token_id == turn
        assert processor.grammar.tokens[-1] == turn
        # llama.cpp's own decoding of its sampled tokens, and of the tokens the server was sent, agree.
        assert llm.detokenize(processor.grammar.tokens[:-1]).decode() == text
        check_output(spec, text, processor.grammar.get_variable_values())
        processor.close()


def test_the_model_file_is_registered_as_its_vocabulary_alone(server: Server, model: tuple[Family, Any]) -> None:
    family, llm = model
    vocabulary = llama_vocabulary(llm)
    assert llama_vocabulary(llm) is vocabulary  # computed once per model
    assert vocabulary.tokenizer_file is not None
    assert len(vocabulary.tokenizer_file) < Path(llm.model_path).stat().st_size / 4
    with GuidanceClient(server.url) as client:
        processor = GuidanceLogitsProcessor(client, {"regex": REGEX}, llama=llm)
        name = processor.aligned.tokenizer
        registered = {t["tokenizer"]: t for t in client.tokenizers()}[name]
        # llama.cpp's vocab-only file of the family, registered with the same end tokens: the same tokenizer.
        original = client.register_tokenizer(
            vocab_path(family.name).read_bytes(), name=f"{family.name}-gguf", eos_token_ids=vocabulary.eos_token_ids
        )
        assert original.digest == registered["digest"]
        assert registered["vocab_size"] == llm.n_vocab()
        processor.close()


def test_other_end_tokens_than_the_servers_tokenizer_are_refused(server: Server, model: tuple[Family, Any]) -> None:
    family, llm = model
    with GuidanceClient(server.url) as client:
        name = client.register_tokenizer(
            vocab_path(family.name).read_bytes(),
            name=f"{family.name}-gguf-more-ends",
            eos_token_ids=[*family.llama_cpp_end_tokens, 128_000 if family.name == "llama-bpe" else 151_644],
        ).tokenizer
        with pytest.raises(VocabularyMismatch) as e:
            GuidanceLogitsProcessor(client, {"regex": REGEX, "tokenizer": name}, llama=llm)
    assert [d.split(":")[0] for d in e.value.differences] == ["end tokens"]


def test_a_spec_naming_another_vocabulary_is_refused(server: Server, model: tuple[Family, Any]) -> None:
    family, llm = model
    other = next(f for f in FAMILIES.values() if f.name != family.name)
    with GuidanceClient(server.url) as client:
        name = client.register_tokenizer(
            vocab_path(other.name).read_bytes(), name=f"{other.name}-gguf", eos_token_ids=other.llama_cpp_end_tokens
        ).tokenizer
        with pytest.raises(VocabularyMismatch) as e:
            GuidanceLogitsProcessor(client, {"regex": REGEX, "tokenizer": name}, llama=llm)
        kinds = [d.split(":")[0] for d in e.value.differences]
        assert kinds[-2:] == ["end tokens", "token strings"], kinds
        assert ("vocabulary size" in kinds) == (llm.n_vocab() < 151_936)  # Llama 3's 128,256 ids, Qwen's 151,936
        with pytest.raises(VocabularyMismatch) as e:
            GuidanceLogitsProcessor(client, {"regex": REGEX, "tokenizer": "default"}, llama=llm)  # tekken
        kinds = [d.split(":")[0] for d in e.value.differences]
        assert kinds[-2:] == ["end tokens", "token strings"], kinds
        assert ("vocabulary size" in kinds) == (llm.n_vocab() < 131_072)


def test_without_the_processor_the_model_writes_no_json(model: tuple[Family, Any]) -> None:
    _family, llm = model
    completion = llm.create_completion("apple banana", max_tokens=12, temperature=0.0, repeat_penalty=1.0)
    with pytest.raises(ValueError):
        json.loads(completion["choices"][0]["text"])
