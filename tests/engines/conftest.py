"""Fixtures of the engine tests: a real server, and the oracles every constrained output must pass.

These tests need the engines' own packages (torch, transformers, tokenizers, gguf, llama-cpp-python,
jsonschema), installed by ``.ci/engines-hf`` in their own venv; without them each module skips
with the reason.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

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
TEMPLATE = "Name: {{gen 'name' regex='[A-Z][a-z]{1,6}'}}, age {{gen 'age' regex='[0-9]{1,2}'}}, likes {{select 'color' options=['red', 'green', 'blue']}}."
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
