"""transformers ``generate`` with :class:`guidance_client.transformers.GuidanceLogitsProcessor`.

Random-weight models write nonsense, which is the point: under a constraint every output must
still satisfy it, checked by oracles independent of the server (``json`` + ``jsonschema``,
``re``), and the captured values must be the text's.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the engine tests need torch (installed by .ci/engines-hf)")
transformers = pytest.importorskip("transformers", reason="the engine tests need transformers (.ci/engines-hf)")

from core import load_default_tokenizer  # noqa: E402
from guidance_client import GuidanceClient, RemoteError  # noqa: E402
from guidance_client.logits import MaskPlan  # noqa: E402
from guidance_client.transformers import GuidanceLogitsProcessor, apply_plan  # noqa: E402
from guidance_client.wire import pack_tokens  # noqa: E402
from tests.engines.conftest import CHOICES, MIXED_SPECS, REGEX, check_output, train_bpe  # noqa: E402
from tests.server import Server  # noqa: E402

TEKKEN_VOCAB = 131_072
TEKKEN_EOS = 2


def tiny_llama(vocab_size: int, eos: int, pad: int, seed: int = 0) -> Any:
    """A random-weight Llama small enough for CI (vocab_size decides the embedding, nothing else)."""
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        eos_token_id=eos,
        pad_token_id=pad,
        bos_token_id=None,
    )
    return transformers.LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def tekken_model() -> Any:
    return tiny_llama(TEKKEN_VOCAB, TEKKEN_EOS, pad=0)


def generate(
    model: Any, processor: GuidanceLogitsProcessor, batch: int, sample: bool, max_new_tokens: int = 64, ids: int = 0
) -> Any:
    """Generate from a random prompt of ordinary ids (below ``ids``, default the model's vocabulary)."""
    torch.manual_seed(1234)
    high = ids or model.config.vocab_size
    prompt = torch.randint(high // 4, high, (batch, 5))
    kwargs: dict[str, Any] = {"do_sample": True, "temperature": 1.0, "top_k": 0} if sample else {"do_sample": False}
    out = model.generate(
        input_ids=prompt,
        attention_mask=torch.ones_like(prompt),
        max_new_tokens=max_new_tokens,
        logits_processor=transformers.LogitsProcessorList([processor]),
        stopping_criteria=transformers.StoppingCriteriaList([processor.stopping_criteria]),
        **kwargs,
    )
    processor.finish(out)
    return out[:, prompt.shape[1] :]


def generated_ids(row: Any, eos: int) -> list[int]:
    """The generated ids of one row up to (without) its EOS."""
    ids: list[int] = row.tolist()
    assert eos in ids, f"the row never ended: {ids}"
    return ids[: ids.index(eos)]


@pytest.mark.parametrize("pipelined", [False, True], ids=["sync", "pipelined"])
@pytest.mark.parametrize("sample", [False, True], ids=["greedy", "sampled"])
def test_every_row_of_a_mixed_batch_satisfies_its_constraint(
    server: Server, tekken_model: Any, sample: bool, pipelined: bool
) -> None:
    with GuidanceClient(server.url) as client:
        processor = GuidanceLogitsProcessor(client, MIXED_SPECS, pipelined=pipelined)
        out = generate(tekken_model, processor, len(MIXED_SPECS), sample)
        for i, spec in enumerate(MIXED_SPECS):
            g = processor.grammars[i]
            assert g.is_terminated()
            text = client.detokenize(generated_ids(out[i], TEKKEN_EOS))
            check_output(spec, text, g.get_variable_values())
        # One step per generated token for the whole batch, plus the first masks and finish():
        # never one per row.
        assert processor.steps <= out.shape[1] + 2


def test_pipelined_and_sync_steps_give_the_same_greedy_outputs(server: Server, tekken_model: Any) -> None:
    outs = []
    with GuidanceClient(server.url) as client:
        for pipelined in (False, True):
            processor = GuidanceLogitsProcessor(client, MIXED_SPECS, pipelined=pipelined)
            outs.append(generate(tekken_model, processor, len(MIXED_SPECS), sample=False))
    assert torch.equal(outs[0], outs[1])


def test_unconstrained_random_model_does_not_satisfy_the_constraints(tekken_model: Any) -> None:
    # The oracles above can fail: without the processor the same model's output is not JSON.
    torch.manual_seed(1234)
    prompt = torch.randint(1000, TEKKEN_VOCAB, (1, 5))
    out = tekken_model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=8, do_sample=False)
    text = load_default_tokenizer().decode(out[0, 5:].tolist())
    with pytest.raises(ValueError):
        json.loads(text)


def test_a_row_that_finishes_early_is_left_alone(server: Server, tekken_model: Any) -> None:
    specs = [{"choice": ["a"]}, {"regex": "[a-z]{30,40}"}]
    with GuidanceClient(server.url) as client:
        processor = GuidanceLogitsProcessor(client, specs, pipelined=True)
        out = generate(tekken_model, processor, 2, sample=True, max_new_tokens=64)
        first = out[0].tolist()
        end = first.index(TEKKEN_EOS)
        assert all(t == 0 for t in first[end + 1 :])  # generate's padding: never sent to the server
        assert processor.grammars[0].tokens[-1] == TEKKEN_EOS
        assert len(processor.grammars[0].tokens) == end + 1
        check_output(specs[1], client.detokenize(generated_ids(out[1], TEKKEN_EOS)), {})


def test_beam_search_is_refused_with_a_clear_error(server: Server, tekken_model: Any) -> None:
    with GuidanceClient(server.url) as client:
        processor = GuidanceLogitsProcessor(client, [{"regex": REGEX}])
        prompt = torch.randint(1000, TEKKEN_VOCAB, (1, 4))
        with pytest.raises(ValueError, match="beam search"):
            tekken_model.generate(
                input_ids=prompt,
                attention_mask=torch.ones_like(prompt),
                num_beams=2,
                max_new_tokens=4,
                logits_processor=transformers.LogitsProcessorList([processor]),
            )
        processor.close()


def test_reusing_a_processor_is_refused(server: Server, tekken_model: Any) -> None:
    with GuidanceClient(server.url) as client:
        processor = GuidanceLogitsProcessor(client, [{"choice": CHOICES}])
        generate(tekken_model, processor, 1, sample=False)
        with pytest.raises(ValueError, match="new one"):
            generate(tekken_model, processor, 1, sample=False)



def _is_open(client: GuidanceClient, session_id: str) -> bool:
    try:
        client.get(session_id)
    except RemoteError as e:
        assert e.status == 404, e
        return False
    return True


def test_a_processor_used_as_a_context_manager_closes_its_sessions_when_generate_fails(
    server: Server, tekken_model: Any
) -> None:
    with GuidanceClient(server.url) as client:
        with pytest.raises(RuntimeError, match="the worker stopped"):
            with GuidanceLogitsProcessor(client, MIXED_SPECS, pipelined=True) as processor:
                assert all(_is_open(client, g.session_id) for g in processor.grammars)
                raise RuntimeError("the worker stopped")
        assert not any(_is_open(client, g.session_id) for g in processor.grammars)


def test_a_spec_that_fails_to_compile_closes_the_rows_already_opened(server: Server) -> None:
    with GuidanceClient(server.url) as client:
        before = client.stats()["sessions"]["active"]
        with pytest.raises(RemoteError) as e:
            GuidanceLogitsProcessor(client, [{"regex": "[a-z]+"}, {"choice": ["a"]}, {"regex": "("}])
        assert e.value.status == 400
        assert client.stats()["sessions"]["active"] == before


def test_a_pipelined_processor_asks_for_the_first_masks_before_generate(server: Server, tekken_model: Any) -> None:
    with GuidanceClient(server.url) as client:
        processor = GuidanceLogitsProcessor(client, MIXED_SPECS, pipelined=True)
        assert processor.steps == 1  # sent at construction, overlapping the prompt's forward pass
        out = generate(tekken_model, processor, len(MIXED_SPECS), sample=False)
        for i, spec in enumerate(MIXED_SPECS):
            check_output(spec, client.detokenize(generated_ids(out[i], TEKKEN_EOS)), processor.grammars[i].get_variable_values())


# -- a tokenizer the server does not embed, uploaded ---------------------------------------------


def test_a_model_with_an_uploaded_tokenizer(server: Server) -> None:
    tok = train_bpe()
    eos, pad = tok.token_to_id("</s>"), tok.token_to_id("<pad>")
    # The embedding is padded past the tokenizer (as models often are): those ids are never allowed.
    model = tiny_llama(tok.get_vocab_size() + 48, eos, pad, seed=3)
    with GuidanceClient(server.url) as client:
        upload = client.http.post("/tokenizers", params={"name": "tiny-bpe"}, content=tok.to_str().encode())
        assert upload.status_code in (200, 201), upload.text
        assert upload.json()["eos_token_id"] == eos
        specs = [{**spec, "tokenizer": "tiny-bpe"} for spec in MIXED_SPECS]
        for pipelined in (False, True):
            processor = GuidanceLogitsProcessor(client, specs, pipelined=pipelined)
            out = generate(model, processor, len(specs), sample=True, ids=tok.get_vocab_size())
            for i, spec in enumerate(specs):
                ids = generated_ids(out[i], eos)
                assert max(ids, default=0) < tok.get_vocab_size()
                # Decoded by the trained tokenizer itself, not by the server.
                check_output(spec, tok.decode(ids), processor.grammars[i].get_variable_values())


# -- applying masks -------------------------------------------------------------------------------


@pytest.mark.parametrize("width", [1000, 1040, 1100])
def test_apply_plan_matches_a_boolean_masked_fill(width: int) -> None:
    vocab = 1000
    rng = np.random.default_rng(width)
    allowed = [
        rng.choice(vocab, size=k, replace=False) for k in (0, 1, 3, 40, 500, 990, 1000)
    ]
    masks = np.stack([pack_tokens(a, vocab) for a in allowed])
    rows = np.array([6, 0, 2, 5, 1, 4, 3])  # masks in another order than the logits rows
    scores = torch.randn(8, width)
    expected = scores.clone()
    for m, r in zip(allowed, rows):
        keep = torch.zeros(width, dtype=torch.bool)
        keep[torch.from_numpy(m)] = True
        expected[r] = expected[r].masked_fill(~keep, float("-inf"))
    plan = MaskPlan.build(masks, vocab, width, rows)
    assert plan.sparse_rows.size and plan.dense_rows.size  # both routes taken
    got = apply_plan(scores.clone(), plan)
    assert torch.equal(got, expected)
    assert list(plan.empty_rows) == [0]
