"""transformers ``generate`` with :class:`guidance_client.transformers.GuidanceLogitsProcessor`.

Random-weight models write nonsense, which is the point: under a constraint every output must
still satisfy it, checked by oracles independent of the server (``json`` + ``jsonschema``,
``re``), and the captured values must be the text's. The models run on the server's default
vocabulary (no tokenizer given: the width and end tokens are checked), on real vocabularies
(Llama 3's and Qwen 2's, the model's tokenizer registered by content), and on a tokenizer trained
here; models whose vocabulary or end tokens differ are refused before they generate.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the engine tests need torch (installed by .ci/engines-hf)")
transformers = pytest.importorskip("transformers", reason="the engine tests need transformers (.ci/engines-hf)")

from core import load_default_tokenizer  # noqa: E402
from guidance_client import GuidanceClient, RemoteError, VocabularyMismatch  # noqa: E402
from guidance_client.logits import MaskPlan  # noqa: E402
from guidance_client.transformers import GuidanceLogitsProcessor, apply_plan  # noqa: E402
from guidance_client.wire import pack_tokens  # noqa: E402
from tests.engines.conftest import CHOICES, MIXED_SPECS, REGEX, check_output, train_bpe  # noqa: E402
from tests.engines.families import FAMILIES, Family, hf_tokenizer  # noqa: E402
from tests.server import Server  # noqa: E402

TEKKEN_VOCAB = 131_072
TEKKEN_EOS = 2


# Sizes of the random-weight models: small enough for CI (vocab_size decides the embedding).
TINY = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "bos_token_id": None,
}


def tiny_llama(vocab_size: int, eos: int, pad: int, seed: int = 0) -> Any:
    """A random-weight Llama small enough for CI."""
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(vocab_size=vocab_size, eos_token_id=eos, pad_token_id=pad, **TINY)
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
    out = tekken_model.generate(
        input_ids=prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=8, do_sample=False
    )
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
            text = client.detokenize(generated_ids(out[i], TEKKEN_EOS))
            check_output(spec, text, processor.grammars[i].get_variable_values())


# -- the model's own tokenizer: aligned by content ----------------------------------------------


def tiny_qwen(vocab_size: int, ends: Sequence[int], seed: int = 0) -> Any:
    """A random-weight Qwen 2 small enough for CI."""
    torch.manual_seed(seed)
    config = transformers.Qwen2Config(vocab_size=vocab_size, eos_token_id=list(ends), pad_token_id=ends[0], **TINY)
    return transformers.Qwen2ForCausalLM(config).eval()


def family_model(family: Family, tok: Any, vocab_size: int | None = None, ends: Sequence[int] | None = None) -> Any:
    """A tiny random model of the family on its tokenizer, ending on the family's end tokens (or ``ends``)."""
    ends = list(ends or family.end_tokens)
    width = vocab_size or len(tok)
    if family.name == "qwen2":
        model = tiny_qwen(width, ends)
    else:
        model = tiny_llama(width, ends[0], pad=ends[0])
    model.generation_config.eos_token_id = ends  # as the chat model's generation_config.json
    model.generation_config.pad_token_id = ends[0]
    return model


class PreferEnd:
    """After the guidance processor: where it allows end tokens, row ``i`` ends on ``prefer[i]``."""

    def __init__(self, prefer: Sequence[int]) -> None:
        self.prefer = list(prefer)

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        for i, token in enumerate(self.prefer):
            scores[i, token] += 100.0  # a forbidden token stays -inf
        return scores


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request: pytest.FixtureRequest) -> tuple[Family, Any, Any]:
    """A real vocabulary, its Hugging Face tokenizer and a tiny model of the family."""
    fam = FAMILIES[request.param]
    tok = hf_tokenizer(fam.name)
    return fam, tok, family_model(fam, tok)


def test_rows_end_on_the_familys_end_of_turn_tokens_and_satisfy_their_constraints(
    server: Server, family: tuple[Family, Any, Any]
) -> None:
    fam, tok, model = family
    pipelined = fam.name == "qwen2"  # both ways, one family each (the default vocabulary's tests compare them)
    prefer = [fam.end_of_turn[i % len(fam.end_of_turn)] for i in range(len(MIXED_SPECS))]
    with GuidanceClient(server.url) as client:
        with GuidanceLogitsProcessor(client, MIXED_SPECS, tokenizer=tok, model=model, pipelined=pipelined) as processor:
            assert processor.aligned is not None and processor.aligned.tokenizer.startswith("hf-")
            assert processor.aligned.eos_token_ids == tuple(sorted(fam.end_tokens))
            torch.manual_seed(7)
            prompt = torch.randint(1000, 100_000, (len(MIXED_SPECS), 5))
            out = model.generate(
                input_ids=prompt,
                attention_mask=torch.ones_like(prompt),
                max_new_tokens=64,
                do_sample=True,
                top_k=0,
                logits_processor=transformers.LogitsProcessorList([processor, PreferEnd(prefer)]),
                stopping_criteria=transformers.StoppingCriteriaList([processor.stopping_criteria]),
            )
            processor.finish(out)
            for i, spec in enumerate(MIXED_SPECS):
                ids = out[i, prompt.shape[1] :].tolist()
                end = next(k for k, t in enumerate(ids) if t in fam.end_tokens)
                assert ids[end] == prefer[i] == processor.ended_on[i], (ids, processor.ended_on)
                assert processor.grammars[i].is_terminated()
                # Decoded by the model's own tokenizer, not by the server.
                text = tok.decode(ids[:end], clean_up_tokenization_spaces=False)
                check_output(spec, text, processor.grammars[i].get_variable_values())


def test_a_model_narrower_than_its_tokenizer_is_refused_before_generating(
    server: Server, family: tuple[Family, Any, Any]
) -> None:
    fam, tok, _model = family
    narrow = family_model(fam, tok, vocab_size=len(tok) - 64)
    with GuidanceClient(server.url) as client:
        with pytest.raises(VocabularyMismatch) as e:
            GuidanceLogitsProcessor(client, MIXED_SPECS, tokenizer=tok, model=narrow)
    assert [d.split(":")[0] for d in e.value.differences] == ["vocabulary size"]
    assert f"logits have {len(tok) - 64} ids" in str(e.value)


def test_without_the_model_the_width_is_checked_at_the_first_logits_before_any_mask(
    server: Server, family: tuple[Family, Any, Any]
) -> None:
    fam, tok, _model = family
    with GuidanceClient(server.url) as client:
        with GuidanceLogitsProcessor(
            client, [{"regex": REGEX}], tokenizer=tok, generation_config={"eos_token_id": list(fam.end_tokens)}
        ) as processor:
            scores = torch.randn(1, len(tok) - 1)
            original = scores.clone()
            with pytest.raises(VocabularyMismatch, match="vocabulary size"):
                processor(torch.zeros((1, 3), dtype=torch.long), scores)
            assert torch.equal(scores, original)


def test_other_end_tokens_than_the_servers_tokenizer_are_refused(
    server: Server, family: tuple[Family, Any, Any]
) -> None:
    fam, tok, model = family
    chat = f"{fam.name}-chat"
    with GuidanceClient(server.url) as client:
        client.register_tokenizer(tok.backend_tokenizer.to_str().encode(), name=chat, eos_token_ids=fam.end_tokens)
        base = family_model(fam, tok, ends=fam.end_tokens[:1])  # a base model: one end token
        with pytest.raises(VocabularyMismatch) as e:
            GuidanceLogitsProcessor(client, [{"regex": REGEX, "tokenizer": chat}], tokenizer=tok, model=base)
        assert [d.split(":")[0] for d in e.value.differences] == ["end tokens"]
        assert e.value.tokenizer == chat
        # The chat model passes against the same tokenizer.
        with GuidanceLogitsProcessor(client, [{"regex": REGEX, "tokenizer": chat}], tokenizer=tok, model=model) as p:
            assert p.grammars[0].spec["tokenizer"] == chat


def test_a_spec_naming_another_familys_tokenizer_is_refused(server: Server, family: tuple[Family, Any, Any]) -> None:
    fam, tok, model = family
    other = next(f for f in FAMILIES.values() if f.name != fam.name)
    other_tok = hf_tokenizer(other.name)
    with GuidanceClient(server.url) as client:
        name = client.register_tokenizer(
            other_tok.backend_tokenizer.to_str().encode(), name=f"{other.name}-chat", eos_token_ids=other.end_tokens
        ).tokenizer
        with pytest.raises(VocabularyMismatch) as e:
            specs = [{"regex": REGEX}, {"regex": REGEX, "tokenizer": name}]
            GuidanceLogitsProcessor(client, specs, tokenizer=tok, model=model)
    kinds = [d.split(":")[0] for d in e.value.differences]
    assert kinds[-2:] == ["end tokens", "token strings"], kinds  # and the width when the other is wider
    assert ("vocabulary size" in kinds) == (len(other_tok) > len(tok))


def test_a_byte_level_tokenizer_trained_here_with_a_padded_embedding(server: Server) -> None:
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=train_bpe(), eos_token="</s>", pad_token="<pad>")
    eos, pad = tok.convert_tokens_to_ids(["</s>", "<pad>"])
    # The embedding is padded past the tokenizer (as models often are): those ids are never allowed.
    model = tiny_llama(len(tok) + 48, eos, pad, seed=3)
    with GuidanceClient(server.url) as client:
        for pipelined in (False, True):
            processor = GuidanceLogitsProcessor(client, MIXED_SPECS, tokenizer=tok, model=model, pipelined=pipelined)
            out = generate(model, processor, len(MIXED_SPECS), sample=True, ids=len(tok))
            for i, spec in enumerate(MIXED_SPECS):
                ids = generated_ids(out[i], eos)
                assert max(ids, default=0) < len(tok)
                # Decoded by the trained tokenizer itself, not by the server.
                check_output(spec, tok.decode(ids), processor.grammars[i].get_variable_values())


# -- without the model's tokenizer: what can be checked is -----------------------------------------


def test_without_the_tokenizer_a_narrower_model_is_refused(server: Server) -> None:
    small = tiny_llama(32_000, 2, pad=0)  # a Llama 2-sized vocabulary against the default's 131,072 ids
    with GuidanceClient(server.url) as client:
        with pytest.raises(VocabularyMismatch) as e:
            GuidanceLogitsProcessor(client, [{"regex": REGEX}], model=small)
        assert "logits have 32000 ids" in str(e.value)
        processor = GuidanceLogitsProcessor(client, [{"regex": REGEX}])  # width unknown until the first logits
        with pytest.raises(VocabularyMismatch, match="logits have 32000 ids"):
            generate(small, processor, 1, sample=False)
        processor.close()


def test_without_the_tokenizer_other_end_tokens_are_refused(server: Server, tekken_model: Any) -> None:
    with GuidanceClient(server.url) as client:
        with pytest.raises(VocabularyMismatch) as e:
            GuidanceLogitsProcessor(client, [{"regex": REGEX}], generation_config={"eos_token_id": [2, 3]})
        assert [d.split(":")[0] for d in e.value.differences] == ["end tokens"]
        with GuidanceLogitsProcessor(client, [{"regex": REGEX}], model=tekken_model) as processor:
            assert processor.eos_token_ids == [frozenset({TEKKEN_EOS})]


# -- applying masks -------------------------------------------------------------------------------


@pytest.mark.parametrize("width", [1000, 1040, 1100])
def test_apply_plan_matches_a_boolean_masked_fill(width: int) -> None:
    vocab = 1000
    rng = np.random.default_rng(width)
    allowed = [rng.choice(vocab, size=k, replace=False) for k in (0, 1, 3, 40, 500, 990, 1000)]
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
