"""The vLLM plugin driven through vLLM's own classes: ``BatchUpdate``, ``SamplingParams``, plugin loading.

No model runs (vLLM's published wheel has no CPU kernels); a decode loop with random logits plays the
model runner's part, in vLLM 0.33's call order: ``update_state`` (batch changes: add, remove, move,
swap), then ``apply`` on the ``[batch, vocab]`` logits, then sampling. Every masked row is compared
with the mask of an independent session on the same server fed the same tokens, every unconstrained
row must come back untouched, and every finished output must satisfy its constraint (``re``,
``jsonschema``, the choice list).
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from tests.engines.serving import EOS, REGEX, SCHEMA, VOCAB, reference_allowed
from tests.server import free_port

torch = pytest.importorskip("torch", reason="torch is not installed: the vLLM tier runs in .ci/engines-serving")
pytest.importorskip("vllm", reason="vLLM is not installed: the vLLM tier runs in .ci/engines-serving (its own venv)")

import jsonschema  # noqa: E402
from vllm import SamplingParams  # noqa: E402
from vllm.v1.sample.logits_processor import (  # noqa: E402
    BatchUpdate,
    LogitsProcessor,
    MoveDirectionality,
    _load_logitsprocs_by_fqcns,
    _load_logitsprocs_plugins,
)

from guidance_client import GuidanceClient, VocabularyMismatch  # noqa: E402
from guidance_client.vllm import EXTRA_ARGS_KEY, GuidanceLogitsProcessor  # noqa: E402

CHOICES = ["yes", "no", "maybe"]


@dataclass(eq=False)
class Request:
    """What vLLM's input batch holds for one request."""

    spec: dict[str, Any] | None
    greedy: bool
    params: SamplingParams = field(init=False)
    output: list[int] = field(default_factory=list)
    reference: Any = None  # an independent session fed the same tokens

    def __post_init__(self) -> None:
        extra = {EXTRA_ARGS_KEY: self.spec} if self.spec is not None else None
        self.params = SamplingParams(temperature=0.0 if self.greedy else 1.0, extra_args=extra)
        self.params.update_from_generation_config({}, eos_token_id=EOS)  # as vLLM's frontend does


def vllm_config(model_dir: Path, vocab_size: int = VOCAB, eos_token_ids: list[int] | None = None) -> Any:
    """What the plugin reads of vLLM's config: the model's directory, vocabulary size, generation config.

    A real ``ModelConfig`` needs a platform vLLM supports; this holds the fields vLLM's own
    ``cached_tokenizer_from_config`` reads, and the generation config comes from vLLM's
    ``try_get_generation_config`` on the directory (unless ``eos_token_ids`` replaces it).
    """
    from vllm.transformers_utils.config import try_get_generation_config

    def generation_config() -> dict[str, Any]:
        if eos_token_ids is not None:
            return {"eos_token_id": eos_token_ids}
        found = try_get_generation_config(str(model_dir), trust_remote_code=False)
        return {} if found is None else found.to_diff_dict()

    model_config = SimpleNamespace(
        get_vocab_size=lambda: vocab_size,
        try_get_generation_config=generation_config,
        skip_tokenizer_init=False,
        tokenizer=str(model_dir),
        model=str(model_dir),
        hf_config=None,
        runner_type="generate",
        tokenizer_mode="auto",
        tokenizer_revision=None,
        trust_remote_code=False,
    )
    return SimpleNamespace(model_config=model_config)


@pytest.fixture
def processor(server_url: str, model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[GuidanceLogitsProcessor]:
    monkeypatch.setenv("GUIDANCE_CLIENT_URL", server_url)
    p = GuidanceLogitsProcessor(vllm_config(model_dir), torch.device("cpu"), False)
    yield p
    p.close()


@pytest.fixture
def fresh_validator(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``validate_params`` builds its client from the environment the test sets; closed after."""
    monkeypatch.setattr(GuidanceLogitsProcessor, "_validator", None)
    yield
    if GuidanceLogitsProcessor._validator is not None:
        GuidanceLogitsProcessor._validator.close()


def check_row(masked: torch.Tensor, original: torch.Tensor, allowed: np.ndarray | None) -> None:
    """``masked`` is ``original`` where ``allowed``, ``-inf`` elsewhere (everything, if None)."""
    if allowed is None:
        assert torch.equal(masked, original), "an unconstrained row was changed"
        return
    allowed_t = torch.from_numpy(allowed)
    assert bool(torch.isneginf(masked[~allowed_t]).all()), "a token the server forbids kept its logit"
    assert torch.equal(masked[allowed_t], original[allowed_t]), "a token the server allows was masked"


def validate(request: Request, text: str) -> None:
    spec = request.spec
    assert spec is not None
    if "regex" in spec:
        assert re.fullmatch(spec["regex"], text), text
    elif "json_schema" in spec:
        jsonschema.validate(json.loads(text), spec["json_schema"])
    else:
        assert text in spec["choice"], text


class Runner:
    """vLLM's persistent batch, reduced to what logits processors see."""

    def __init__(self, processor: GuidanceLogitsProcessor, client: GuidanceClient, seed: int) -> None:
        self.processor = processor
        self.client = client
        self.rng = random.Random(seed)
        self.gen = torch.Generator().manual_seed(seed)
        self.slots: list[Request] = []
        self.waiting: list[Request] = []
        self.finished: list[Request] = []
        self.checked_rows = 0

    def admit(self, request: Request) -> None:
        if request.spec is not None:
            request.reference = self.client.grammar(**request.spec)
        self.waiting.append(request)

    def step(self, *, swap: bool = False, placeholder: bool = False) -> None:
        """One engine step: batch changes, ``update_state``, ``apply``, sampling."""
        removed: list[int] = []
        added: list[tuple[int, SamplingParams, list[int] | None, list[int]]] = []
        moved: list[tuple[int, int, MoveDirectionality]] = []
        # Finished requests leave; the batch is condensed by moving the last rows into the holes.
        keep: list[Request | None] = list(self.slots)
        for i, r in enumerate(self.slots):
            if r.output and r.output[-1] == EOS:
                removed.append(i)
                keep[i] = None
                self.finished.append(r)
        # New requests fill the lowest empty indices first (as vLLM's InputBatch.add_request).
        for i in range(len(keep)):
            if keep[i] is None and self.waiting:
                r = self.waiting.pop(0)
                keep[i] = r
                added.append((i, r.params, [1, 2, 3], r.output))
        while self.waiting:
            r = self.waiting.pop(0)
            keep.append(r)
            added.append((len(keep) - 1, r.params, [1, 2, 3], r.output))
        holes = [i for i, r in enumerate(keep) if r is None]
        for hole in holes:
            while keep and keep[-1] is None:
                keep.pop()
            if hole < len(keep):
                moved.append((len(keep) - 1, hole, MoveDirectionality.UNIDIRECTIONAL))
                keep[hole] = keep.pop()
        self.slots = [r for r in keep if r is not None]
        if swap and len(self.slots) >= 2:
            moved.append((0, 1, MoveDirectionality.SWAP))
            self.slots[0], self.slots[1] = self.slots[1], self.slots[0]
        changed = bool(removed or added or moved)
        batch_update = BatchUpdate(len(self.slots), removed, added, moved) if changed else None
        if not self.slots:
            self.processor.update_state(batch_update)
            return
        # Async scheduling: the last sampled token is a -1 placeholder until just before sampling.
        pending: dict[int, int] = {}
        if placeholder:
            for i, r in enumerate(self.slots):
                if r.output and r.output[-1] != EOS:
                    pending[i] = r.output[-1]
                    r.output[-1] = -1
        self.processor.update_state(batch_update)
        for i, token in pending.items():
            self.slots[i].output[-1] = token
        logits = torch.randn((len(self.slots), VOCAB), generator=self.gen)
        original = logits.clone()
        masked = self.processor.apply(logits)
        for i, r in enumerate(self.slots):
            allowed = None
            if r.reference is not None:
                allowed = reference_allowed(r.reference)
            check_row(masked[i], original[i], allowed)
            self.checked_rows += 1
            if r.greedy:
                token = int(torch.argmax(masked[i]))
            else:
                token = int(torch.multinomial(torch.softmax(masked[i], dim=-1), 1, generator=self.gen))
            if r.reference is not None:
                assert r.reference.accept_tokens([token]), f"sampled token {token} refused by the reference"
            r.output.append(token)


def test_decode_loop_add_step_remove_move_swap(processor: GuidanceLogitsProcessor, client: GuidanceClient) -> None:
    runner = Runner(processor, client, seed=7)
    specs: list[dict[str, Any] | None] = [
        {"regex": REGEX},
        {"json_schema": SCHEMA},
        None,
        {"choice": CHOICES},
        {"regex": REGEX},
        None,
        {"json_schema": SCHEMA},
        {"choice": CHOICES},
    ]
    for k, spec in enumerate(specs[:5]):
        runner.admit(Request(spec, greedy=k % 2 == 0))
    for t in range(60):
        if t == 3:  # requests arriving mid-run take the holes finished ones leave
            for k, spec in enumerate(specs[5:]):
                runner.admit(Request(spec, greedy=k % 2 == 1))
        for r in runner.slots:  # unconstrained requests end when told (vLLM's max_tokens)
            if r.spec is None and len(r.output) >= 5 + t % 3 and r.output[-1] != EOS:
                r.output.append(EOS)
        runner.step(swap=t % 4 == 1, placeholder=t % 3 == 2)
        if not runner.slots and not runner.waiting:
            break
    assert runner.checked_rows > 40
    constrained = [r for r in runner.finished if r.spec is not None]
    assert len(constrained) >= 4, "too few constrained requests finished to say anything"
    for r in constrained:
        assert r.reference.is_terminated()
        validate(r, client.detokenize([t for t in r.output if t != EOS]))
    kinds = {next(iter(r.spec)) for r in constrained}
    assert kinds >= {"regex", "choice"}


def test_resumed_request_replays_its_output(processor: GuidanceLogitsProcessor, client: GuidanceClient) -> None:
    """A preempted request comes back with the tokens it had: its new session must start from them."""
    tokens = client.tokenize("12.")
    request = Request({"regex": REGEX}, greedy=True)
    request.output.extend(tokens)
    processor.update_state(BatchUpdate(1, [], [(0, request.params, None, request.output)], []))
    logits = torch.zeros((1, VOCAB))
    processor.apply(logits)
    reference = client.grammar(regex=REGEX)
    assert reference.accept_tokens(tokens)
    check_row(logits[0], torch.zeros(VOCAB), reference_allowed(reference))


def test_discarded_tokens_are_rolled_back(processor: GuidanceLogitsProcessor, client: GuidanceClient) -> None:
    """vLLM may shorten an output list (a failed KV load): the session follows it back."""
    request = Request({"regex": REGEX}, greedy=True)
    processor.update_state(BatchUpdate(1, [], [(0, request.params, None, request.output)], []))
    processor.apply(torch.zeros((1, VOCAB)))
    request.output.extend(client.tokenize("123"))
    processor.update_state(None)
    processor.apply(torch.zeros((1, VOCAB)))
    del request.output[1:]
    processor.update_state(None)
    logits = torch.zeros((1, VOCAB))
    processor.apply(logits)
    reference = client.grammar(regex=REGEX)
    assert reference.accept_tokens(request.output)
    check_row(logits[0], torch.zeros(VOCAB), reference_allowed(reference))


def test_a_row_that_cannot_be_served_may_only_stop(processor: GuidanceLogitsProcessor) -> None:
    """A constraint the server refuses (validation skipped) leaves its request nothing but EOS."""
    request = Request(None, greedy=True)
    request.params = SamplingParams(extra_args={EXTRA_ARGS_KEY: {"regex": "("}})
    request.params.update_from_generation_config({}, eos_token_id=EOS)
    plain = Request(None, greedy=True)
    processor.update_state(
        BatchUpdate(2, [], [(0, request.params, None, request.output), (1, plain.params, None, plain.output)], [])
    )
    logits = torch.randn((2, VOCAB))
    original = logits.clone()
    processor.apply(logits)
    only_eos = np.zeros(VOCAB, dtype=bool)
    only_eos[EOS] = True
    check_row(logits[0], original[0], only_eos)
    check_row(logits[1], original[1], None)


def test_unfilled_placeholder_fails_the_row(processor: GuidanceLogitsProcessor) -> None:
    """A -1 still there at apply() (async scheduling, plugin not named) cannot be stepped: stop only."""
    request = Request({"regex": REGEX}, greedy=True)
    processor.update_state(BatchUpdate(1, [], [(0, request.params, None, request.output)], []))
    processor.apply(torch.zeros((1, VOCAB)))
    request.output.append(-1)
    processor.update_state(None)
    logits = torch.zeros((1, VOCAB))
    processor.apply(logits)
    assert torch.isfinite(logits[0]).nonzero().flatten().tolist() == [EOS]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("{not json", "is not JSON"),
        ([1, 2], "must be a POST /compile body"),
        ({"options": {}}, "exactly one of"),
        ({"regex": "a", "choice": ["b"]}, "exactly one of"),
        ({"regex": "a", "open_session": True}, "open_session"),
        ({"regex": "("}, "refused by the server (400"),
        (json.dumps({"json_schema": {"type": "nope"}}), "refused by the server"),
    ],
)
def test_validate_params_refuses_bad_constraints(
    server_url: str, monkeypatch: pytest.MonkeyPatch, fresh_validator: None, value: Any, message: str
) -> None:
    monkeypatch.setenv("GUIDANCE_CLIENT_URL", server_url)
    with pytest.raises(ValueError, match=re.escape(message)):
        GuidanceLogitsProcessor.validate_params(SamplingParams(extra_args={EXTRA_ARGS_KEY: value}))


def test_validate_params_accepts_good_constraints(
    server_url: str, monkeypatch: pytest.MonkeyPatch, fresh_validator: None
) -> None:
    monkeypatch.setenv("GUIDANCE_CLIENT_URL", server_url)
    for value in ({"regex": REGEX}, json.dumps({"json_schema": SCHEMA}), {"choice": CHOICES}):
        GuidanceLogitsProcessor.validate_params(SamplingParams(extra_args={EXTRA_ARGS_KEY: value}))
    GuidanceLogitsProcessor.validate_params(SamplingParams())  # no constraint: nothing to check
    GuidanceLogitsProcessor.validate_params(SamplingParams(extra_args={"other": 1}))


def test_validate_params_server_unreachable(monkeypatch: pytest.MonkeyPatch, fresh_validator: None) -> None:
    monkeypatch.setenv("GUIDANCE_CLIENT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("GUIDANCE_CLIENT_TIMEOUT", "2")
    with pytest.raises(ValueError, match="unreachable"):
        GuidanceLogitsProcessor.validate_params(SamplingParams(extra_args={EXTRA_ARGS_KEY: {"regex": "a"}}))


def test_vllm_loads_the_plugin_by_entry_point_and_by_name() -> None:
    assert GuidanceLogitsProcessor in _load_logitsprocs_plugins()
    assert _load_logitsprocs_by_fqcns(["guidance_client.vllm:GuidanceLogitsProcessor"]) == [GuidanceLogitsProcessor]
    assert issubclass(GuidanceLogitsProcessor, LogitsProcessor)
    assert not GuidanceLogitsProcessor.is_argmax_invariant(object.__new__(GuidanceLogitsProcessor))


# -- alignment with the engine's tokenizer ----------------------------------------------------------


def test_the_processor_aligns_with_the_engines_tokenizer(
    processor: GuidanceLogitsProcessor, client: GuidanceClient
) -> None:
    name = processor.alignment.aligned().tokenizer
    listed = {t["tokenizer"]: t for t in client.tokenizers()}
    assert name.startswith("hf-") and (listed[name]["vocab_size"], listed[name]["eos_token_ids"]) == (VOCAB, [EOS])
    # The model directory's tokenizer.json holds tekken's tokens: the server finds them the default's.
    assert client.check_vocabulary("default", token_bytes=processor.alignment.vocabulary.token_bytes).aligned


def test_a_model_narrower_than_its_tokenizer_stops_vllm_from_starting(
    server_url: str, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GUIDANCE_CLIENT_URL", server_url)
    with pytest.raises(VocabularyMismatch) as e:
        GuidanceLogitsProcessor(vllm_config(model_dir, vocab_size=VOCAB - 32), torch.device("cpu"), False)
    assert [d.split(":")[0] for d in e.value.differences] == ["vocabulary size"]


def test_a_named_server_tokenizer_of_another_vocabulary_stops_vllm_from_starting(
    server_url: str, model_dir: Path, other_vocabulary: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GUIDANCE_CLIENT_URL", server_url)
    monkeypatch.setenv("GUIDANCE_CLIENT_TOKENIZER", other_vocabulary)
    with pytest.raises(VocabularyMismatch) as e:
        GuidanceLogitsProcessor(vllm_config(model_dir), torch.device("cpu"), False)
    assert e.value.tokenizer == other_vocabulary
    assert [d.split(":")[0] for d in e.value.differences] == ["token strings"]


def test_other_end_tokens_than_the_named_tokenizers_stop_vllm_from_starting(
    server_url: str, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GUIDANCE_CLIENT_URL", server_url)
    monkeypatch.setenv("GUIDANCE_CLIENT_TOKENIZER", "default")
    with pytest.raises(VocabularyMismatch) as e:
        GuidanceLogitsProcessor(vllm_config(model_dir, eos_token_ids=[EOS, 3]), torch.device("cpu"), False)
    assert [d.split(":")[0] for d in e.value.differences] == ["end tokens"]


def test_a_request_naming_another_vocabulary_may_only_stop(
    processor: GuidanceLogitsProcessor, other_vocabulary: str
) -> None:
    request = Request(None, greedy=True)
    request.params = SamplingParams(extra_args={EXTRA_ARGS_KEY: {"regex": REGEX, "tokenizer": other_vocabulary}})
    request.params.update_from_generation_config({}, eos_token_id=EOS)
    processor.update_state(BatchUpdate(1, [], [(0, request.params, None, request.output)], []))
    logits = torch.randn((1, VOCAB))
    processor.apply(logits)
    assert torch.isfinite(logits[0]).nonzero().flatten().tolist() == [EOS]


def test_a_server_unreachable_at_start_does_not_stop_vllm(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The alignment waits for the server; until then a constrained request may only stop."""
    monkeypatch.setenv("GUIDANCE_CLIENT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("GUIDANCE_CLIENT_TIMEOUT", "2")
    p = GuidanceLogitsProcessor(vllm_config(model_dir), torch.device("cpu"), False)
    try:
        request = Request({"regex": REGEX}, greedy=True)
        p.update_state(BatchUpdate(1, [], [(0, request.params, None, request.output)], []))
        logits = torch.zeros((1, VOCAB))
        p.apply(logits)
        assert torch.isfinite(logits[0]).nonzero().flatten().tolist() == [EOS]
    finally:
        p.close()


def test_a_named_tokenizer_the_server_lacks_stops_vllm_from_starting(
    server_url: str, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from guidance_client import RemoteError

    monkeypatch.setenv("GUIDANCE_CLIENT_URL", server_url)
    monkeypatch.setenv("GUIDANCE_CLIENT_TOKENIZER", "no-such-tokenizer")
    with pytest.raises(RemoteError) as e:
        GuidanceLogitsProcessor(vllm_config(model_dir), torch.device("cpu"), False)
    assert e.value.code == "tokenizer-not-found"
