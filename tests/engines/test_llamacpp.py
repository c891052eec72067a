"""llama-cpp-python ``create_completion`` with :class:`guidance_client.llamacpp.GuidanceLogitsProcessor`.

The model is a random-weight llama GGUF written here with the ``gguf`` package, its vocabulary a
byte-level BPE tokenizer trained here; the same ``tokenizer.json`` is uploaded to the server.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

llama_cpp = pytest.importorskip("llama_cpp", reason="the engine tests need llama-cpp-python (.ci/engines-hf)")
gguf = pytest.importorskip("gguf", reason="the engine tests need gguf (.ci/engines-hf)")
pytest.importorskip("tokenizers", reason="the engine tests need tokenizers (.ci/engines-hf)")

from guidance_client import GuidanceClient  # noqa: E402
from guidance_client.llamacpp import GuidanceLogitsProcessor  # noqa: E402
from tests.engines.conftest import MIXED_SPECS, check_output, train_bpe  # noqa: E402
from tests.server import Server  # noqa: E402

EMBED, FF, HEADS, LAYERS = 64, 128, 4, 2


def write_gguf(path: Path, tok: Any, seed: int = 0) -> None:
    """A random-weight llama GGUF whose vocabulary is ``tok``'s (a byte-level BPE)."""
    import json

    rng = np.random.default_rng(seed)
    model = json.loads(tok.to_str())["model"]
    vocab = sorted(model["vocab"].items(), key=lambda kv: kv[1])
    special = {t.content for t in tok.get_added_tokens_decoder().values()}
    n_vocab = len(vocab)
    assert [i for _, i in vocab] == list(range(n_vocab))
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(LAYERS)
    w.add_context_length(256)
    w.add_embedding_length(EMBED)
    w.add_feed_forward_length(FF)
    w.add_head_count(HEADS)
    w.add_head_count_kv(HEADS)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(EMBED // HEADS)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list([t for t, _ in vocab])
    w.add_token_types([gguf.TokenType.CONTROL if t in special else gguf.TokenType.NORMAL for t, _ in vocab])
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    w.add_token_merges(merges)
    w.add_eos_token_id(tok.token_to_id("</s>"))
    w.add_bos_token_id(tok.token_to_id("<s>"))
    w.add_pad_token_id(tok.token_to_id("<pad>"))
    w.add_add_bos_token(False)

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


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory, server: Server) -> tuple[Any, Any]:
    tok = train_bpe()
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    write_gguf(path, tok)
    with GuidanceClient(server.url) as client:
        r = client.http.post("/tokenizers", params={"name": "tiny-bpe"}, content=tok.to_str().encode())
        assert r.status_code in (200, 201), r.text
    llm = llama_cpp.Llama(str(path), n_ctx=256, n_threads=1, seed=7, verbose=False)
    return llm, tok


@pytest.mark.parametrize("temperature", [0.0, 1.0], ids=["greedy", "sampled"])
@pytest.mark.parametrize("spec", MIXED_SPECS, ids=["json", "template", "regex", "choice"])
def test_every_completion_satisfies_its_constraint(
    server: Server, model: tuple[Any, Any], spec: dict[str, Any], temperature: float
) -> None:
    llm, tok = model
    with GuidanceClient(server.url) as client:
        processor = GuidanceLogitsProcessor(client, {**spec, "tokenizer": "tiny-bpe"})
        completion = llm.create_completion(
            "apple banana",
            max_tokens=96,
            temperature=temperature,
            top_k=0,
            top_p=1.0,
            min_p=0.0,
            repeat_penalty=1.0,
            seed=11,
            logits_processor=llama_cpp.LogitsProcessorList([processor]),
        )
        processor.finish(completion)
        text = completion["choices"][0]["text"]
        assert completion["choices"][0]["finish_reason"] == "stop", completion
        assert processor.grammar.is_terminated()
        # llama.cpp's own decoding of its sampled tokens, and the trained tokenizer's decoding of
        # the tokens the server was sent, agree.
        assert tok.decode(processor.grammar.tokens[:-1]) == text
        check_output(spec, text, processor.grammar.get_variable_values())
        processor.close()


def test_without_the_processor_the_model_writes_no_json(model: tuple[Any, Any]) -> None:
    llm, _ = model
    completion = llm.create_completion("apple banana", max_tokens=12, temperature=0.0, repeat_penalty=1.0)
    import json

    with pytest.raises(ValueError):
        json.loads(completion["choices"][0]["text"])
