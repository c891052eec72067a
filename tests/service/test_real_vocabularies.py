"""Real vocabularies nobody here wrote (llama.cpp's vocab-only GGUFs), registered over HTTP with a
real server: ``/tokenize`` equals llama.cpp's expected ids, and masks served for a JSON schema, a
regex, a template and a Lark grammar are right, judged by ``jsonschema`` and ``re``."""

from __future__ import annotations

import base64
import json
import random
import re
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import numpy as np
import pytest

from tests.server import running
from tests.vocabularies import cases, vocab_path

# Family -> its end tokens as text (the GGUF's EOS, EOT and EOM, those it has).
FAMILIES = {
    "llama-bpe": {"<|end_of_text|>", "<|eot_id|>"},
    "llama-spm": {"</s>"},
    "qwen2": {"<|endoftext|>", "<|im_end|>"},
    "qwen35": {"<|endoftext|>", "<|im_end|>"},
    "gemma-4": {"<eos>", "<turn|>"},
    "phi-3": {"<|endoftext|>", "<|end|>"},
    "gpt-2": {"<|endoftext|>"},
    "deepseek-coder": {"<｜end▁of▁sentence｜>"},
}

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 10},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "tags": {"type": "array", "items": {"enum": ["a", "b", "ç"]}, "maxItems": 3},
    },
    "required": ["name", "age", "tags"],
    "additionalProperties": False,
}
REGEX = r"[A-Z][a-z]{1,8} [0-9]{2,4}"
TEMPLATE = "Name: {{gen 'name' regex='[A-Z][a-z]{1,8}'}}\nAge: {{gen 'age' regex='[0-9]{1,3}'}}."
TEMPLATE_TEXT = re.compile(r"Name: ([A-Z][a-z]{1,8})\nAge: ([0-9]{1,3})\.")
LARK = 'start: num ("+" num){0,3}\nnum: /[0-9]{1,3}/\n'
LARK_TEXT = re.compile(r"[0-9]{1,3}(\+[0-9]{1,3}){0,3}")

# (kind, body, valid text, oracle for a text)
CONSTRAINTS: list[tuple[str, dict[str, Any], str]] = [
    ("json", {"json_schema": SCHEMA}, '{"name":"Zoë","age":42,"tags":["ç","a"]}'),
    ("regex", {"regex": REGEX}, "Hello 2024"),
    ("template", {"template": TEMPLATE}, "Name: Ada\nAge: 36."),
    ("lark", {"grammar": LARK}, "12+345+6"),
]


def valid(kind: str, text: str) -> bool:
    if kind == "json":
        try:
            jsonschema.validate(json.loads(text), SCHEMA)
        except (ValueError, jsonschema.ValidationError):
            return False
        return True
    pattern = {"regex": re.compile(REGEX), "template": TEMPLATE_TEXT, "lark": LARK_TEXT}[kind]
    return pattern.fullmatch(text) is not None


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with running(env={"GUIDANCE_SERVER_MAX_TOKENIZERS": "16"}) as server:
        with httpx.Client(base_url=server.url, timeout=120) as client:
            yield client


@pytest.fixture(scope="module")
def registered(http: httpx.Client) -> dict[str, dict[str, Any]]:
    out = {}
    for family in FAMILIES:
        resp = http.post("/tokenizers", params={"name": family}, content=vocab_path(family).read_bytes())
        assert resp.status_code == 201, resp.text
        out[family] = resp.json()
    return out


def _allowed(http: httpx.Client, sid: str) -> np.ndarray:
    resp = http.get(f"/sessions/{sid}/mask")
    assert resp.status_code == 200, resp.text
    bits = np.unpackbits(np.frombuffer(resp.content, dtype=np.uint8), bitorder="little")
    return np.flatnonzero(bits[: int(resp.headers["x-vocab-size"])])


@pytest.mark.parametrize("family", FAMILIES)
def test_registered_gguf_has_the_familys_end_tokens(
    http: httpx.Client, registered: dict[str, dict[str, Any]], family: str
) -> None:
    info = registered[family]
    names = {
        http.post("/detokenize", json={"tokens": [t], "tokenizer": family}).json()["text"]
        for t in info["eos_token_ids"]
    }
    assert names == FAMILIES[family]
    again = http.post("/tokenizers", params={"name": family}, content=vocab_path(family).read_bytes())
    assert again.status_code == 200 and again.json() == info


@pytest.mark.parametrize("family", FAMILIES)
def test_tokenize_equals_llama_cpps_expected_ids(
    http: httpx.Client, registered: dict[str, dict[str, Any]], family: str
) -> None:
    wrong = []
    for text, expected in cases(family):
        got = http.post("/tokenize", json={"text": text, "tokenizer": family}).json()["tokens"]
        if got != expected:
            wrong.append((text, got, expected))
    assert not wrong, wrong[:3]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(("kind", "body", "text"), CONSTRAINTS, ids=[c[0] for c in CONSTRAINTS])
def test_served_masks_allow_a_valid_text_and_walks_validate(
    http: httpx.Client, registered: dict[str, dict[str, Any]], family: str, kind: str, body: dict[str, Any], text: str
) -> None:
    ends = set(registered[family]["eos_token_ids"])
    compiled = http.post("/compile", json={**body, "tokenizer": family})
    assert compiled.status_code == 200, compiled.text
    program = compiled.json()["program_id"]

    # Every token of a valid text is allowed where it comes, and then every end token.
    sid = http.post("/sessions", json={"program_id": program}).json()["session_id"]
    ids = http.post("/tokenize", json={"text": text, "tokenizer": family}).json()["tokens"]
    prefix = http.post("/detokenize", json={"tokens": ids[:1], "tokenizer": family}).json()["text"]
    if not text.startswith(prefix):  # a SentencePiece space prefix: take the text as generated
        ids = _continuation(http, family, text)
    for token in ids:
        assert token in set(_allowed(http, sid).tolist())
        assert http.post(f"/sessions/{sid}/accept", json={"tokens": [token]}).status_code == 200
    assert ends <= set(_allowed(http, sid).tolist())

    # Walks sampled only from served masks end on one of the family's end tokens and validate.
    rng = random.Random(f"{family}-{kind}")
    for _ in range(3):
        sid = http.post("/sessions", json={"program_id": program}).json()["session_id"]
        for _step in range(200):
            allowed = _allowed(http, sid).tolist()
            assert allowed, "a mask allows nothing"
            stop = [t for t in allowed if t in ends]
            token = rng.choice(stop) if stop and rng.random() < 0.5 else rng.choice(allowed)
            answer = http.post(f"/sessions/{sid}/accept", json={"tokens": [token]}).json()
            if answer["terminated"]:
                assert answer["eos_token_id"] == token and token in ends
                break
        else:
            pytest.fail("the walk did not end")
        walked = http.get(f"/sessions/{sid}").json()["text"]
        assert valid(kind, walked), walked


def _continuation(http: httpx.Client, family: str, text: str) -> list[int]:
    """The ids of ``text`` as a model generates it mid-sequence: the prompt tokenization of
    ``"a" + text`` without the tokens of ``"a"``, where that split is clean."""
    ids = http.post("/tokenize", json={"text": "a" + text, "tokenizer": family}).json()["tokens"]
    for cut in range(1, len(ids)):
        head = http.post("/detokenize", json={"tokens": ids[:cut], "tokenizer": family}).json()["text"]
        if head.strip() == "a":
            return ids[cut:]
    raise AssertionError(f"no clean split of {text!r}")


def test_tokens_of_a_sample_agree_with_the_file(http: httpx.Client, registered: dict[str, dict[str, Any]]) -> None:
    """The alignment check on a real vocabulary: the file's own view passes, a shifted one fails."""
    info = registered["llama-bpe"]
    ids = list(range(0, info["vocab_size"], 997))
    text = {t: http.post("/detokenize", json={"tokens": [t], "tokenizer": "llama-bpe"}).json()["text"] for t in ids}
    sample = {str(t): base64.b64encode(s.encode()).decode() for t, s in text.items() if "\ufffd" not in s}
    body = {"vocab_size": 128_256, "eos_token_ids": info["eos_token_ids"], "tokens": sample}
    assert http.post("/tokenizers/llama-bpe/check", json=body).json()["aligned"] is True
    shifted = {str(int(t) + 1): v for t, v in sample.items()}
    answer = http.post("/tokenizers/llama-bpe/check", json={**body, "tokens": shifted}).json()
    assert answer["aligned"] is False and "token strings" in answer["differences"][0]
