"""Aligning a model's vocabulary with the server: the requests, the sample, the byte mapping, and
the server's verdicts (a real app; the model's side built from ``tokenizers``' own objects)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient
from tokenizers import Tokenizer as HfTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from core import Tokenizer
from guidance_client import GuidanceClient, ModelVocabulary, RemoteError, VocabularyMismatch, alignment
from guidance_client.protocol import Answer
from guidance_client.vocabulary import SAMPLE_EDGE, SAMPLE_RANDOM, hf_token_bytes, sample_ids
from tests.service.helpers import AppFactory

_JSON = {"content-type": "application/json"}


# -- the protocol ------------------------------------------------------------------------------


def test_register_sends_the_file_as_is_typed_by_its_magic() -> None:
    gguf = alignment.register_tokenizer(b"GGUF\x03\x00\x00\x00rest", "m/1", eos_token_ids=[9, 2, 9])
    assert (gguf.method, gguf.path) == ("POST", "/tokenizers?name=m%2F1&eos_token_ids=2,9")
    assert gguf.body == b"GGUF\x03\x00\x00\x00rest"
    assert gguf.headers["content-type"] == "application/octet-stream"
    hf = alignment.register_tokenizer(b'{"model": {}}', "hf")
    assert (hf.path, hf.headers["content-type"]) == ("/tokenizers?name=hf", "application/json")
    with pytest.raises(ValueError):
        alignment.register_tokenizer(b"", "x")
    with pytest.raises(ValueError):
        alignment.register_tokenizer(b"{}", "x", eos_token_ids=[])


def test_register_answers_parse_with_whether_they_created() -> None:
    body = b'{"tokenizer":"t","digest":"d","vocab_size":10,"eos_token_ids":[2,3],"bos_token_id":null}'
    made = alignment.register_tokenizer(b"{}", "t").parse(Answer(201, _JSON, body))
    assert (made.tokenizer, made.vocab_size, made.eos_token_ids, made.bos_token_id, made.created) == (
        "t",
        10,
        [2, 3],
        None,
        True,
    )
    assert not alignment.register_tokenizer(b"{}", "t").parse(Answer(200, _JSON, body)).created


def test_check_sends_width_end_tokens_and_base64_bytes() -> None:
    req = alignment.check_vocabulary("a b", 64, [3, 1], {5: b"\xff<", 0: b"a"})
    assert (req.method, req.path) == ("POST", "/tokenizers/a%20b/check")
    assert req.body is not None
    sent = json.loads(req.body)
    assert sent == {"vocab_size": 64, "eos_token_ids": [1, 3], "tokens": {"0": "YQ==", "5": "/zw="}}
    assert base64.b64decode(sent["tokens"]["5"]) == b"\xff<"
    nothing = alignment.check_vocabulary("t")
    assert nothing.body is not None
    assert json.loads(nothing.body) == {"vocab_size": None, "eos_token_ids": None, "tokens": None}


def test_the_verdict_names_every_difference() -> None:
    answer = Answer(200, _JSON, b'{"tokenizer":"t","digest":"d","aligned":false,"differences":["width","ends"]}')
    result = alignment.check_vocabulary("t").parse(answer)
    with pytest.raises(VocabularyMismatch) as e:
        alignment.verdict(result)
    assert e.value.differences == ["width", "ends"] and e.value.tokenizer == "t"
    assert "'t'" in str(e.value) and "width; ends" in str(e.value)
    ok = Answer(200, _JSON, b'{"tokenizer":"t","digest":"d","aligned":true,"differences":[]}')
    assert alignment.verdict(alignment.check_vocabulary("t").parse(ok)) == "t"


def test_an_unknown_tokenizer_is_told_apart_from_other_errors() -> None:
    assert alignment.unknown_tokenizer(RemoteError(404, {"code": "tokenizer-not-found"}))
    assert not alignment.unknown_tokenizer(RemoteError(404, {"code": "session-not-found"}))
    assert not alignment.unknown_tokenizer(ValueError())


# -- the sample --------------------------------------------------------------------------------


def test_the_sample_is_deterministic_with_both_ends_and_the_given_ids() -> None:
    n = 150_000
    ids = sample_ids(n, [128_009, -1, n + 5])
    assert ids == sample_ids(n, [128_009])
    assert ids == sorted(set(ids)) and all(0 <= i < n for i in ids)
    assert set(range(SAMPLE_EDGE)) <= set(ids) and set(range(n - SAMPLE_EDGE, n)) <= set(ids)
    assert 128_009 in ids
    assert len(ids) == 2 * SAMPLE_EDGE + SAMPLE_RANDOM + 1
    assert sample_ids(n, seed=1) != sample_ids(n)


def test_a_small_vocabulary_is_compared_whole() -> None:
    assert sample_ids(300) == list(range(300))
    assert sample_ids(0) == []


# -- the model's side, from Hugging Face tokenizers --------------------------------------------


def byte_level_bpe() -> HfTokenizer:
    """A byte-level BPE (GPT-2's byte alphabet) trained here, with special tokens and a non-special added one."""
    tok = HfTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=420, special_tokens=["<pad>", "</s>", "<s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    rng = np.random.default_rng(0)
    words = ["naïve", "café", "true", " spaced", "\n\nnew", "日本", "€uro", '{"a": 1}']
    tok.train_from_iterator([" ".join(rng.choice(words, 5)) for _ in range(200)], trainer)
    tok.add_tokens(["<|im_end|>"])  # an added token that is not special: its bytes are its content
    return tok


def sentencepiece_bpe() -> HfTokenizer:
    """A SentencePiece-style BPE (``▁`` for a space, ``<0xNN>`` byte fallback), as Llama 2's tokenizer.json."""
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    vocab.update({f"<0x{b:02X}>": 3 + b for b in range(256)})
    pieces = ["▁", "a", "b", "é", "▁a", "▁b", "ab", "▁ab", "▁▁", "日"]
    vocab.update({p: 259 + i for i, p in enumerate(pieces)})
    merges = [("▁", "a"), ("▁", "b"), ("a", "b"), ("▁a", "b"), ("▁", "▁")]
    tok = HfTokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    tok.add_special_tokens(["<unk>", "<s>", "</s>"])
    return tok


@pytest.mark.parametrize("make", [byte_level_bpe, sentencepiece_bpe], ids=["byte-level", "sentencepiece"])
def test_token_bytes_are_the_servers_for_every_id(make: type[HfTokenizer]) -> None:
    tok = make()
    text = tok.to_str()
    ours = hf_token_bytes(json.loads(text), {i: tok.id_to_token(i) for i in range(tok.get_vocab_size())})
    server = Tokenizer.from_hf_json("t", text, eos_token_ids=[tok.token_to_id("</s>")])
    assert len(ours) == server.vocab_size
    assert {i: b for i, b in ours.items() if b != server.token_bytes(i)} == {}
    if make is sentencepiece_bpe:
        assert ours[tok.token_to_id("▁ab")] == b" ab" and ours[3 + 0xE9] == b"\xe9"
    else:
        assert ours[tok.token_to_id("<|im_end|>")] == b"<|im_end|>"
        assert ours[tok.token_to_id("</s>")] == b"</s>"


def test_a_vocabulary_from_a_tokenizer_object() -> None:
    tok = byte_level_bpe()
    eos = tok.token_to_id("</s>")
    vocab = ModelVocabulary.from_hf(tok, eos_token_ids=[eos, eos], vocab_size=512)
    assert vocab.eos_token_ids == (eos,) and vocab.vocab_size == 512
    assert set(vocab.token_bytes) == set(range(tok.get_vocab_size()))  # small: every id
    assert vocab.tokenizer_file == tok.to_str().encode()
    assert vocab.name == ModelVocabulary.from_hf(tok, eos_token_ids=[eos]).name  # content, not width
    assert vocab.name != ModelVocabulary.from_hf(tok, eos_token_ids=[eos, 0]).name  # end tokens count
    with pytest.raises(ValueError, match="end token"):
        ModelVocabulary.from_hf(tok)  # a bare tokenizers.Tokenizer has no EOS of its own
    with pytest.raises(ValueError):
        ModelVocabulary(vocab_size=None, eos_token_ids=(), token_bytes={}).name  # noqa: B018


def test_the_generation_config_gives_the_end_tokens() -> None:
    tok = byte_level_bpe()
    assert ModelVocabulary.from_hf(tok, generation_config={"eos_token_id": [2, 1]}).eos_token_ids == (1, 2)
    assert ModelVocabulary.from_hf(tok, generation_config={"eos_token_id": 2}).eos_token_ids == (2,)
    assert ModelVocabulary.from_hf(tok, generation_config={"eos_token_id": 1}, eos_token_ids=2).eos_token_ids == (2,)


# -- against the server ------------------------------------------------------------------------


@pytest.fixture()
def sclient(make_app: AppFactory) -> Iterator[GuidanceClient]:
    with TestClient(make_app()) as http:
        yield GuidanceClient(http=http)


@pytest.fixture(scope="module")
def model() -> ModelVocabulary:
    """A model whose tokenizer is the byte-level BPE, with an embedding padded past it."""
    tok = byte_level_bpe()
    return ModelVocabulary.from_hf(tok, eos_token_ids=[tok.token_to_id("</s>")], vocab_size=tok.get_vocab_size() + 60)


def test_a_matching_vocabulary_is_registered_once_and_passes(sclient: GuidanceClient, model: ModelVocabulary) -> None:
    name = sclient.align_vocabulary(model)
    assert name == model.name
    assert sclient.align_vocabulary(model) == name  # found by name: not uploaded again
    listed = [t for t in sclient.tokenizers() if t["tokenizer"] == name]
    assert len(listed) == 1 and listed[0]["eos_token_ids"] == list(model.eos_token_ids)
    assert model.tokenizer_file is not None
    again = sclient.register_tokenizer(model.tokenizer_file, name=name, eos_token_ids=model.eos_token_ids)
    assert not again.created and again.digest == listed[0]["digest"]
    grammar = sclient.grammar(regex="[a-z]+", tokenizer=name)
    assert grammar.vocab_size == len(model.token_bytes)  # the tokenizer's ids, not the padded width


def test_narrower_logits_are_refused_naming_the_width(sclient: GuidanceClient, model: ModelVocabulary) -> None:
    ids = len(model.token_bytes)  # a small vocabulary: every id is sampled
    with pytest.raises(VocabularyMismatch) as e:
        sclient.align_vocabulary(model.with_vocab_size(ids - 1))
    assert len(e.value.differences) == 1 and "vocabulary size" in e.value.differences[0]
    assert f"{ids - 1} ids" in str(e.value) and f"has {ids}" in str(e.value)


def test_other_end_tokens_are_refused_naming_them(sclient: GuidanceClient, model: ModelVocabulary) -> None:
    name = sclient.align_vocabulary(model)
    other = ModelVocabulary(model.vocab_size, (*model.eos_token_ids, 2), model.token_bytes, model.tokenizer_file)
    with pytest.raises(VocabularyMismatch) as e:
        sclient.align_vocabulary(other, tokenizer=name)
    assert len(e.value.differences) == 1 and e.value.differences[0].startswith("end tokens")
    assert "on [1, 2]" in str(e.value) and "on [1]" in str(e.value)


def test_other_token_bytes_are_refused_naming_the_tokens(sclient: GuidanceClient, model: ModelVocabulary) -> None:
    name = sclient.align_vocabulary(model)
    changed = dict(model.token_bytes)
    changed[200] = b"not-this"
    other = ModelVocabulary(model.vocab_size, model.eos_token_ids, changed, model.tokenizer_file)
    with pytest.raises(VocabularyMismatch) as e:
        sclient.align_vocabulary(other, tokenizer=name)
    assert len(e.value.differences) == 1 and e.value.differences[0].startswith("token strings")
    assert "200" in str(e.value) and "not-this" in str(e.value)


def test_another_vocabulary_is_refused_with_every_difference(sclient: GuidanceClient, model: ModelVocabulary) -> None:
    with pytest.raises(VocabularyMismatch) as e:
        sclient.align_vocabulary(model, tokenizer="default")  # tekken: wider, other EOS, other tokens
    kinds = [d.split(":")[0] for d in e.value.differences]
    assert kinds == ["vocabulary size", "end tokens", "token strings"]


def test_a_named_tokenizer_the_server_lacks_is_an_error_not_a_registration(
    sclient: GuidanceClient, model: ModelVocabulary
) -> None:
    with pytest.raises(RemoteError) as e:
        sclient.align_vocabulary(model, tokenizer="absent")
    assert e.value.code == "tokenizer-not-found"
    without_file = ModelVocabulary(model.vocab_size, model.eos_token_ids, model.token_bytes)
    with pytest.raises(ValueError, match="name a server tokenizer"):
        sclient.align_vocabulary(without_file)


async def test_the_async_client_aligns_the_same_way(make_app: AppFactory, model: ModelVocabulary) -> None:
    from guidance_client import AsyncGuidanceClient
    from tests.service.helpers import serve

    async with serve(make_app()) as http:
        client = AsyncGuidanceClient(http=http)
        assert await client.align_vocabulary(model) == model.name
        check = await client.check_vocabulary(model.name, vocab_size=10)
        assert not check.aligned and check.differences[0].startswith("vocabulary size")
