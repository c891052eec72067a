"""The SGLang backend driven through SGLang's own code: registry, plugin loading, grammar cache,
``SamplingBatchInfo.update_regex_vocab_mask`` (its int32 mask, filled through
``fill_vocab_mask_batched``) and ``GrammarMask.apply``.

No model runs (SGLang's published wheel needs a GPU); random logits play the model's part. Every
masked row is compared with the mask of an independent session on the same server fed the same
tokens, unconstrained rows must come back untouched, and every finished output must satisfy its
constraint (``re``, ``jsonschema``, a Lark grammar's language).
"""

from __future__ import annotations

import json
import random
import re
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from tests.engines.serving import EOS, REGEX, SCHEMA, VOCAB, reference_allowed

torch = pytest.importorskip("torch", reason="torch is not installed: the SGLang tier runs in .ci/engines-serving")
pytest.importorskip(
    "sglang", reason="SGLang is not installed: the SGLang tier runs in .ci/engines-serving (its own venv)"
)

import jsonschema  # noqa: E402
from sglang.srt.arg_groups.choices import GRAMMAR_BACKEND_CHOICES  # noqa: E402
from sglang.srt.constrained.base_grammar_backend import (  # noqa: E402
    GRAMMAR_BACKEND_REGISTRY,
    BaseGrammarObject,
    InvalidGrammarObject,
)
from sglang.srt.plugins import GENERAL_PLUGINS_GROUP, load_plugins_by_group  # noqa: E402

with warnings.catch_warnings():  # torch's own deprecations, met while SGLang's sampling code imports
    warnings.simplefilter("ignore", DeprecationWarning)
    from sglang.srt.sampling.sampling_batch_info import SamplingBatchInfo

from guidance_client import GuidanceClient, VocabularyMismatch  # noqa: E402
from guidance_client.sglang import BACKEND_NAME, GuidanceBackend, GuidanceGrammar, register  # noqa: E402

LARK = 'start: ("yes" | "no") "!"?'


@pytest.fixture
def backend(server_url: str, engine_tokenizer: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[GuidanceBackend]:
    """The backend as SGLang's ``create_grammar_backend`` builds a registered one, with the model's tokenizer."""
    monkeypatch.setenv("GUIDANCE_CLIENT_URL", server_url)
    register()
    b = GRAMMAR_BACKEND_REGISTRY[BACKEND_NAME](None, engine_tokenizer, VOCAB, {EOS})
    assert isinstance(b, GuidanceBackend)
    made = (b.client, b.compiler)  # a test may swap them for others
    yield b
    for c in {*made, b.client, b.compiler}:
        c.close()
    b.executor.shutdown(wait=True)


def grammar_for(backend: GuidanceBackend, key: tuple[str, str]) -> BaseGrammarObject:
    """A request's grammar as SGLang's grammar manager gets it: compiled once, cached, copied."""
    value, cached = backend.get_cached_or_future_value(key, False)
    if cached:
        assert isinstance(value, BaseGrammarObject)
        return value
    template = value.result()  # type: ignore[union-attr]
    backend.set_cache(key, template)
    return template.copy()


def batch_mask(grammars: list[BaseGrammarObject | None]) -> SamplingBatchInfo:
    """SGLang's own batch mask step, on a ``SamplingBatchInfo`` reduced to what it reads."""
    info = SamplingBatchInfo.__new__(SamplingBatchInfo)
    info.grammars = grammars
    info.temperatures = torch.ones((len(grammars), 1))
    info.vocab_size = VOCAB
    info.device = "cpu"
    info.update_regex_vocab_mask()
    return info


def check_row(masked: torch.Tensor, original: torch.Tensor, allowed: np.ndarray | None) -> None:
    if allowed is None:
        assert torch.equal(masked, original), "an unconstrained row was changed"
        return
    allowed_t = torch.from_numpy(allowed)
    assert bool(torch.isneginf(masked[~allowed_t]).all()), "a token the server forbids kept its logit"
    assert torch.equal(masked[allowed_t], original[allowed_t]), "a token the server allows was masked"


def test_registered_and_loaded_as_sglang_does() -> None:
    plugins = load_plugins_by_group(GENERAL_PLUGINS_GROUP)
    assert "guidance" in plugins
    func, _dist = plugins["guidance"]
    func()  # what sglang.srt.plugins.load_plugins does in every process
    assert GRAMMAR_BACKEND_REGISTRY[BACKEND_NAME] is GuidanceBackend
    assert BACKEND_NAME in GRAMMAR_BACKEND_CHOICES
    func()
    assert GRAMMAR_BACKEND_CHOICES.count(BACKEND_NAME) == 1


def test_decode_loop_through_sglang_batch_mask(backend: GuidanceBackend, client: GuidanceClient) -> None:
    rng = random.Random(3)
    gen = torch.Generator().manual_seed(3)
    keys: list[tuple[str, str] | None] = [
        ("json", json.dumps(SCHEMA)),
        ("regex", REGEX),
        None,
        ("ebnf", LARK),
        ("regex", REGEX),  # a cache hit: a copy of the first regex grammar
        ("json", json.dumps(SCHEMA)),
    ]
    grammars: list[BaseGrammarObject | None] = [grammar_for(backend, k) if k else None for k in keys]
    assert all(isinstance(g, GuidanceGrammar) for g, k in zip(grammars, keys) if k)
    references = [
        client.grammar(**{"json": {"json_schema": SCHEMA}, "regex": {"regex": REGEX}, "ebnf": {"grammar": LARK}}[k[0]])
        if k
        else None
        for k in keys
    ]
    outputs: list[list[int]] = [[] for _ in keys]
    done = [False] * len(keys)
    checked = 0
    for _step in range(60):
        info = batch_mask(grammars)
        assert info.grammar_mask is not None and info.grammar_mask.vocab_mask.dtype == torch.int32
        logits = torch.randn((len(keys), VOCAB), generator=gen)
        original = logits.clone()
        info.grammar_mask.apply(logits)
        for i, g in enumerate(grammars):
            if done[i]:
                continue
            ref = references[i]
            check_row(logits[i], original[i], reference_allowed(ref) if ref is not None else None)
            checked += 1
            if rng.random() < 0.5:
                token = int(torch.argmax(logits[i]))
            else:
                token = int(torch.multinomial(torch.softmax(logits[i], dim=-1), 1, generator=gen))
            outputs[i].append(token)
            if g is None:
                done[i] = len(outputs[i]) >= 4
                continue
            assert ref is not None and ref.accept_tokens([token])
            g.accept_token(token)  # as SGLang's result processor does
            assert g.is_terminated() == ref.is_terminated()
            if g.is_terminated():
                g.finished = True
                done[i] = True
        if all(done):
            break
    assert checked > 30
    finished = [i for i, k in enumerate(keys) if k and done[i]]
    assert len(finished) >= 3, "too few constrained requests finished to say anything"
    for i in finished:
        text = client.detokenize([t for t in outputs[i] if t != EOS])
        kind = keys[i][0]  # type: ignore[index]
        if kind == "json":
            jsonschema.validate(json.loads(text), SCHEMA)
        elif kind == "regex":
            assert re.fullmatch(REGEX, text), text
        else:
            assert re.fullmatch(r"(yes|no)!?", text), text


def test_accept_token_refuses_what_the_mask_forbids(backend: GuidanceBackend, client: GuidanceClient) -> None:
    g = grammar_for(backend, ("regex", REGEX))
    batch_mask([g])
    letter = client.tokenize("x")[0]
    with pytest.raises(ValueError, match="not allowed"):
        g.accept_token(letter)


def test_rollback_local_and_remote(backend: GuidanceBackend, client: GuidanceClient) -> None:
    g = grammar_for(backend, ("regex", REGEX))
    assert isinstance(g, GuidanceGrammar)
    digits = client.tokenize("1")
    batch_mask([g])
    g.accept_token(digits[0])
    batch_mask([g])  # sent: the session has "1"
    g.accept_token(digits[0])
    g.accept_token(client.tokenize(".")[0])
    g.rollback(3)  # two unsent tokens locally, one on the server
    info = batch_mask([g])
    logits = torch.zeros((1, VOCAB))
    info.grammar_mask.apply(logits)  # type: ignore[union-attr]
    check_row(logits[0], torch.zeros(VOCAB), reference_allowed(client.grammar(regex=REGEX)))


def test_refused_constraints_are_sglang_invalid_grammars(backend: GuidanceBackend) -> None:
    for key in (("regex", "("), ("json", '{"type": "nope"}'), ("ebnf", 'root ::= ( "a"')):
        g = grammar_for(backend, key)
        assert isinstance(g, InvalidGrammarObject), key
        assert g.error_message
    tag = backend.dispatch_structural_tag("{}")
    assert isinstance(tag, InvalidGrammarObject) and "structural tag" in tag.error_message


def test_structural_tags_compile_in_both_forms(backend: GuidanceBackend) -> None:
    """xgrammar's structural tag as SGLang passes it (JSON text), older and newer form alike."""
    call = {"begin": "<function=get_weather>", "end": "</function>"}
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    older = {"type": "structural_tag", "structures": [{**call, "schema": schema}], "triggers": ["<function="]}
    newer = {
        "type": "structural_tag",
        "format": {
            "type": "triggered_tags",
            "triggers": ["<function="],
            "tags": [{"type": "tag", **call, "content": {"type": "json_schema", "json_schema": schema}}],
        },
    }
    for tag in (older, newer):
        assert isinstance(backend.dispatch_structural_tag(json.dumps(tag)), GuidanceGrammar), tag


def test_ebnf_is_gbnf_or_lark_as_sglang_has_it(backend: GuidanceBackend) -> None:
    """SGLang's documented EBNF (GBNF, its default backend's dialect) and a Lark grammar both compile."""
    capitals = (
        'root ::= city | description\ncity ::= "London" | "Paris" | "Berlin" | "Rome"\n'
        'description ::= city " is " status\nstatus ::= "the capital of " country\n'
        'country ::= "England" | "France" | "Germany" | "Italy"\n'
    )
    for text in (capitals, LARK):
        assert isinstance(grammar_for(backend, ("ebnf", text)), GuidanceGrammar), text


def test_any_json(backend: GuidanceBackend, client: GuidanceClient) -> None:
    g = grammar_for(backend, ("json", "$$ANY$$"))
    assert isinstance(g, GuidanceGrammar)
    info = batch_mask([g])
    logits = torch.zeros((1, VOCAB))
    info.grammar_mask.apply(logits)  # type: ignore[union-attr]
    allowed = torch.isfinite(logits[0])
    assert allowed[client.tokenize("{")[0]] and not allowed[EOS]


def test_unreachable_server_leaves_only_eos(backend: GuidanceBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    g = grammar_for(backend, ("regex", REGEX))
    from tests.server import free_port

    dead = GuidanceClient(f"http://127.0.0.1:{free_port()}", timeout=2, retries=1, backoff=0.01)
    monkeypatch.setattr(backend, "client", dead)
    info = batch_mask([g, None])
    logits = torch.randn((2, VOCAB))
    original = logits.clone()
    info.grammar_mask.apply(logits)  # type: ignore[union-attr]
    assert torch.isfinite(logits[0]).nonzero().flatten().tolist() == [EOS]
    check_row(logits[1], original[1], None)
    dead.close()


def test_unreachable_at_compile_is_not_a_lasting_refusal(
    backend: GuidanceBackend, client: GuidanceClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SGLang caches what dispatch returns: an outage then must not make the constraint invalid."""
    from tests.server import free_port

    dead = GuidanceClient(f"http://127.0.0.1:{free_port()}", timeout=2, retries=0)
    monkeypatch.setattr(backend, "compiler", dead)
    g = grammar_for(backend, ("regex", "[a-c]+"))
    dead.close()
    assert isinstance(g, GuidanceGrammar) and g.program is None
    info = batch_mask([g])  # the server is reachable for the step: compiled and opened there
    logits = torch.zeros((1, VOCAB))
    info.grammar_mask.apply(logits)  # type: ignore[union-attr]
    check_row(logits[0], torch.zeros(VOCAB), reference_allowed(client.grammar(regex="[a-c]+")))


def test_the_command_line_takes_the_backend() -> None:
    """``--grammar-backend guidance-server`` parses once the plugin ran (launch_server's order)."""
    from sglang.srt.server_args import prepare_server_args

    register()
    args = prepare_server_args(["--model-path", "/nonexistent", "--grammar-backend", BACKEND_NAME])
    assert args.grammar_backend == BACKEND_NAME


# -- alignment with the model's tokenizer ---------------------------------------------------------


def test_the_backend_aligns_with_the_models_tokenizer(backend: GuidanceBackend, client: GuidanceClient) -> None:
    name = backend.alignment.aligned().tokenizer
    listed = {t["tokenizer"]: t for t in client.tokenizers()}
    assert name.startswith("hf-") and (listed[name]["vocab_size"], listed[name]["eos_token_ids"]) == (VOCAB, [EOS])
    g = grammar_for(backend, ("regex", REGEX))
    assert isinstance(g, GuidanceGrammar) and g.spec["tokenizer"] == name


@pytest.mark.parametrize(
    ("vocab_size", "eos_token_ids", "named", "difference"),
    [
        (VOCAB - 32, {EOS}, None, "vocabulary size"),  # logits narrower than the tokenizer
        (VOCAB, {EOS, 3}, "default", "end tokens"),  # the model stops on more tokens than the server's
        (VOCAB, {EOS}, "other", "token strings"),  # a server tokenizer of another vocabulary
    ],
    ids=["narrower-logits", "more-end-tokens", "other-vocabulary"],
)
def test_a_mismatch_stops_sglang_from_starting(
    server_url: str,
    engine_tokenizer: Any,
    other_vocabulary: str,
    monkeypatch: pytest.MonkeyPatch,
    vocab_size: int,
    eos_token_ids: set[int],
    named: str | None,
    difference: str,
) -> None:
    monkeypatch.setenv("GUIDANCE_CLIENT_URL", server_url)
    if named is not None:
        monkeypatch.setenv("GUIDANCE_CLIENT_TOKENIZER", other_vocabulary if named == "other" else named)
    register()
    with pytest.raises(VocabularyMismatch) as e:
        GRAMMAR_BACKEND_REGISTRY[BACKEND_NAME](None, engine_tokenizer, vocab_size, eos_token_ids)
    assert [d.split(":")[0] for d in e.value.differences] == [difference]
