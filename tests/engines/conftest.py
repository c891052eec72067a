"""Fixtures of the engine tests: a real server, the oracles every constrained output must pass, and for
the inference-server plugins a client of that server and a model directory whose tokenizer they align with.

These tests need the engines' own packages (torch, transformers, tokenizers, gguf, llama-cpp-python,
jsonschema), installed by ``.ci/engines-hf`` in their own venv; without them each module skips
with the reason.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from guidance_client import GuidanceClient
from tests.engines.serving import EOS, VOCAB
from tests.server import Server, running

# A JSON schema whose every instance is short, so a random model finishes it in a few dozen tokens.
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 6},
        "n": {"type": "integer", "minimum": 0, "maximum": 999},
        "ok": {"type": "boolean"},
    },
    "required": ["name", "n", "ok"],
    "additionalProperties": False,
}
TEMPLATE = (
    "Name: {{gen 'name' regex='[A-Z][a-z]{1,6}'}}, age {{gen 'age' regex='[0-9]{1,2}'}}, "
    "likes {{select 'color' options=['red', 'green', 'blue']}}."
)
TEMPLATE_RE = re.compile(r"Name: (?P<name>[A-Z][a-z]{1,6}), age (?P<age>[0-9]{1,2}), likes (?P<color>red|green|blue)\.")
REGEX = r"[a-z]{2,6}@[a-z]{2,5}\.(com|org)"
CHOICES = ["apple", "banana split", "cherry"]

MIXED_SPECS: list[dict[str, Any]] = [
    {"json_schema": SCHEMA},
    {"template": TEMPLATE},
    {"regex": REGEX},
    {"choice": CHOICES},
]


def check_output(spec: dict[str, Any], text: str, variables: dict[str, Any]) -> None:
    """Assert ``text`` satisfies ``spec`` by an oracle independent of the server (jsonschema, re)."""
    import jsonschema

    if "json_schema" in spec:
        jsonschema.validate(json.loads(text), spec["json_schema"])
    elif "template" in spec:
        m = TEMPLATE_RE.fullmatch(text)
        assert m is not None, text
        assert variables == m.groupdict(), (variables, text)
    elif "regex" in spec:
        assert re.fullmatch(spec["regex"], text) is not None, text
    elif "choice" in spec:
        assert text in spec["choice"], text
    else:  # pragma: no cover - a spec kind the tests do not use
        raise AssertionError(spec)


def train_bpe(vocab_size: int = 400) -> Any:
    """A small byte-level BPE ``tokenizers.Tokenizer`` trained here on made-up text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    rng = np.random.default_rng(0)
    words = ["name", "true", "false", "apple", "banana", "split", "cherry", "com", "org", "red", "green", "blue"]
    corpus = [
        " ".join(rng.choice(words, 6)) + f' {{"name": "x{i}", "n": {i}, "ok": true}} {i * 7}@mail.com'
        for i in range(300)
    ]
    tok.train_from_iterator(corpus, trainer)
    return tok


@pytest.fixture(scope="session")
def server() -> Iterator[Server]:
    """One real server for the engine tests (room for the real vocabularies the models register)."""
    with running(env={"GUIDANCE_SERVER_MAX_TOKENIZERS": "24"}) as s:
        yield s


@pytest.fixture(scope="module")
def server_url(server: Server) -> str:
    """The URL of the engine tests' one server (``server`` above)."""
    return server.url


@pytest.fixture
def client(server_url: str) -> Iterator[GuidanceClient]:
    """A client of that server, closed after the test."""
    with GuidanceClient(server_url) as c:
        yield c


# -- the engine's own tokenizer ------------------------------------------------------------------


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model directory as an engine reads it: config, generation config and a Hugging Face tokenizer.

    The tokenizer is the server's default vocabulary (tekken: 131,072 ids, 1,000 control tokens,
    EOS 2) written as a byte-level BPE ``tokenizer.json``: the same tokens' bytes and control ids,
    so the masks of the tokenizer the plugins register are those of the server's ``default``, on
    which the tests' reference sessions run.
    """
    import transformers
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    from core import load_default_tokenizer

    tokens, ends, bos, specials = load_default_tokenizer().vocabulary()
    char = bytes_to_unicode()  # GPT-2's byte alphabet, as transformers writes it

    def spelled(token: bytes) -> str:
        return "".join(char[b] for b in token)

    control = set(specials)
    rank = {token: i for i, token in enumerate(tokens) if i not in control}
    merges: list[tuple[str, str]] = []
    for i, token in enumerate(tokens):  # a tiktoken rank list's merges: each token's likeliest split
        if i in control or len(token) < 2:
            continue
        splits = [
            (max(rank[token[:k]], rank[token[k:]]), k)
            for k in range(1, len(token))
            if token[:k] in rank and token[k:] in rank
        ]
        if splits:
            k = min(splits)[1]
            merges.append((spelled(token[:k]), spelled(token[k:])))
    vocab = {token.decode() if i in control else spelled(token): i for i, token in enumerate(tokens)}
    bpe = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=True))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    bpe.decoder = decoders.ByteLevel()
    bpe.add_special_tokens([AddedToken(tokens[i].decode(), special=True, normalized=False) for i in sorted(control)])
    names = {"bos_token": tokens[bos].decode(), "eos_token": tokens[ends[0]].decode()} if bos is not None else {}
    path = tmp_path_factory.mktemp("model")
    transformers.PreTrainedTokenizerFast(tokenizer_object=bpe, **names).save_pretrained(path)
    transformers.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=1,
        num_attention_heads=4,
        eos_token_id=EOS,
        bos_token_id=bos,
        architectures=["LlamaForCausalLM"],
    ).save_pretrained(path)
    transformers.GenerationConfig(eos_token_id=list(ends), bos_token_id=bos).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def engine_tokenizer(model_dir: Path) -> Any:
    """The model's tokenizer, loaded as an engine does (``AutoTokenizer``)."""
    import transformers

    return transformers.AutoTokenizer.from_pretrained(model_dir)


@pytest.fixture(scope="module")
def other_vocabulary(server_url: str) -> str:
    """A server tokenizer of another vocabulary (a byte-level BPE trained here; EOS 2 as tekken's)."""
    with GuidanceClient(server_url) as c:
        return c.register_tokenizer(train_bpe().to_str().encode(), name="tiny-bpe", eos_token_ids=[EOS]).tokenizer
