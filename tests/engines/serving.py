"""What the inference-server engine tests share: a real server on loopback, the reference masks, and a
model directory whose tokenizer the plugins align with."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from guidance_client import GuidanceClient
from tests import server as test_server

VOCAB = 131_072
"""The server's default tokenizer (tekken): the vocabulary the tests' logits cover."""

EOS = 2
"""Tekken's end-of-sequence id."""

SCHEMA = {
    "type": "object",
    "properties": {"ok": {"type": "boolean"}, "n": {"enum": [1, 2, 3]}},
    "required": ["ok", "n"],
    "additionalProperties": False,
}
"""A JSON schema of short instances: what the plugins' walks constrain."""

REGEX = r"[0-9]{1,3}(\.[0-9]{1,2})?"
"""A regex of short texts, beside ``SCHEMA``."""


@pytest.fixture(scope="module")
def server_url(server: test_server.Server) -> str:
    """The URL of the engine tests' one server (``server`` in tests/engines/conftest.py)."""
    return server.url


@pytest.fixture
def client(server_url: str) -> Iterator[GuidanceClient]:
    """A client of that server, closed after the test."""
    with GuidanceClient(server_url) as c:
        yield c


def reference_allowed(grammar: Any) -> NDArray[np.bool_]:
    """The ids a remote grammar allows next, as ``[VOCAB]`` bools, from the server's mask."""
    row = np.zeros((1, grammar.mask_words), dtype=np.int32)
    grammar.fill_next_token_bitmask(row, 0)
    bits = np.unpackbits(row.astype("<i4").view(np.uint8), bitorder="little").astype(bool)
    return bits[:VOCAB]


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
    from tests.engines.conftest import train_bpe

    with GuidanceClient(server_url) as c:
        return c.register_tokenizer(train_bpe().to_str().encode(), name="tiny-bpe", eos_token_ids=[EOS]).tokenizer
