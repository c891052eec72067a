"""``/tokenizers``: registration by content, several end tokens over HTTP, and the alignment check."""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

import httpx
import pytest

from core import Tokenizer
from tests.service.helpers import assert_problem

pytestmark = pytest.mark.asyncio

SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", "<|eom_id|>"]


@pytest.fixture(scope="module")
def chat_json() -> str:
    """A byte-level BPE ``tokenizer.json`` with Llama 3's four special tokens (ids 256 to 259)."""
    hf = pytest.importorskip("tokenizers")
    alphabet = hf.pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    tok = hf.Tokenizer(hf.models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = hf.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = hf.decoders.ByteLevel()
    tok.add_special_tokens(SPECIALS)
    text: str = tok.to_str()
    return text


async def _upload(client: httpx.AsyncClient, name: str, body: str | bytes, **params: str) -> httpx.Response:
    return await client.post("/tokenizers", params={"name": name, **params}, content=body)


async def test_registration_is_by_content_and_a_name_is_an_alias(client: httpx.AsyncClient, chat_json: str) -> None:
    first = await _upload(client, "llama", chat_json)
    assert first.status_code == 201, first.text
    info = first.json()
    assert info["eos_token_ids"] == [257, 258, 259] and info["bos_token_id"] == 256 and info["vocab_size"] == 260
    assert (await _upload(client, "llama", chat_json)).json() == info
    alias = await _upload(client, "llama-alias", chat_json)
    assert alias.status_code == 200 and alias.json()["digest"] == info["digest"]
    other = await _upload(client, "llama", chat_json, eos_token_ids="258")
    assert_problem(other, 409, "tokenizer-exists")
    turn = await _upload(client, "llama-turn", chat_json, eos_token_ids="258,259")
    assert turn.status_code == 201 and turn.json()["eos_token_ids"] == [258, 259]
    assert turn.json()["digest"] != info["digest"]
    listed = {t["tokenizer"]: t for t in (await client.get("/tokenizers")).json()["tokenizers"]}
    assert listed["llama-alias"] == {**info, "tokenizer": "llama-alias"}
    assert set(listed["default"]) == {"tokenizer", "digest", "vocab_size", "eos_token_ids", "bos_token_id"}


@pytest.mark.parametrize("ends", ["65", "1000", "", "1,", "x", ",".join(["257"] * 40)])
async def test_bad_end_tokens_are_refused(client: httpx.AsyncClient, chat_json: str, ends: str) -> None:
    resp = await _upload(client, "llama", chat_json, eos_token_ids=ends)
    assert resp.status_code in (400, 422), resp.text
    assert resp.json()["code"] in ("tokenizer-invalid", "validation-error")


async def test_a_constraint_ends_on_any_end_token_and_says_which(client: httpx.AsyncClient, chat_json: str) -> None:
    assert (await _upload(client, "llama", chat_json)).status_code == 201
    for end in (257, 258, 259):
        compiled = await client.post("/compile", json={"regex": "ab", "tokenizer": "llama", "open_session": True})
        sid = compiled.json()["session_id"]
        ids = (await client.post("/tokenize", json={"text": "ab", "tokenizer": "llama"})).json()["tokens"]
        body = (await client.post(f"/sessions/{sid}/accept", json={"tokens": ids})).json()
        assert body["terminated"] is False and "eos_token_id" not in body and body["accepting"] is True
        body = (await client.post(f"/sessions/{sid}/accept", json={"tokens": [end]})).json()
        assert body["terminated"] is True and body["eos_token_id"] == end


async def test_step_reports_the_end_token_that_ended_each_session(client: httpx.AsyncClient, chat_json: str) -> None:
    assert (await _upload(client, "llama", chat_json)).status_code == 201
    sids = []
    for _ in range(2):
        compiled = await client.post("/compile", json={"regex": "a", "tokenizer": "llama", "open_session": True})
        sids.append(compiled.json()["session_id"])
    a = (await client.post("/tokenize", json={"text": "a", "tokenizer": "llama"})).json()["tokens"]
    sessions = [{"session_id": sids[0], "tokens": [*a, 258]}, {"session_id": sids[1], "tokens": a}]
    resp = await client.post("/step", json={"sessions": sessions})
    assert resp.status_code == 200, resp.text
    (length,) = struct.unpack("<I", resp.content[:4])
    statuses = json.loads(resp.content[4 : 4 + length])["sessions"]
    assert statuses[0]["terminated"] is True and statuses[0]["eos_token_id"] == 258
    assert statuses[1]["terminated"] is False and "eos_token_id" not in statuses[1]


async def test_special_token_text_is_a_control_token_only_when_asked(client: httpx.AsyncClient, chat_json: str) -> None:
    assert (await _upload(client, "llama", chat_json)).status_code == 201
    text = "hi<|eot_id|>"
    plain = (await client.post("/tokenize", json={"text": text, "tokenizer": "llama"})).json()["tokens"]
    assert 258 not in plain
    special = await client.post("/tokenize", json={"text": text, "tokenizer": "llama", "special": True})
    assert special.json()["tokens"][-1] == 258


def _sample(tok: Tokenizer, ids: list[int]) -> dict[str, str]:
    return {str(i): base64.b64encode(tok.token_bytes(i)).decode() for i in ids}


async def test_the_check_passes_an_aligned_model(client: httpx.AsyncClient, default_tokenizer: Tokenizer) -> None:
    body: dict[str, Any] = {
        "vocab_size": 131_072 + 128,  # padding past the vocabulary is fine
        "eos_token_ids": [2],
        "tokens": _sample(default_tokenizer, [0, 1, 2, 3, 999, 1000, 5000, 131_071]),
    }
    resp = await client.post("/tokenizers/default/check", json=body)
    assert resp.status_code == 200, resp.text
    expected = {"tokenizer": "default", "digest": default_tokenizer.digest, "aligned": True, "differences": []}
    assert resp.json() == expected


async def test_the_check_names_every_difference(client: httpx.AsyncClient, default_tokenizer: Tokenizer) -> None:
    tokens = _sample(default_tokenizer, [1000, 5000])
    tokens["5000"] = base64.b64encode(b"not it").decode()
    body = {"vocab_size": 32_000, "eos_token_ids": [2, 128_009], "tokens": tokens}
    answer = (await client.post("/tokenizers/default/check", json=body)).json()
    assert answer["aligned"] is False
    width, ends, strings = answer["differences"]
    assert "32000" in width and "131072" in width
    assert "[2, 128009]" in ends
    assert "1 of 2 sampled tokens differ" in strings and "5000" in strings


@pytest.mark.parametrize(
    "body",
    [{"tokens": {"x": "AA=="}}, {"tokens": {"1": "***"}}, {"vocab_size": 0}, {"eos_token_ids": "2"}, {"other": 1}],
)
async def test_a_malformed_check_is_a_422(client: httpx.AsyncClient, body: dict[str, Any]) -> None:
    assert_problem(await client.post("/tokenizers/default/check", json=body), 422, "validation-error")


async def test_checking_an_unknown_tokenizer_is_a_404(client: httpx.AsyncClient) -> None:
    assert_problem(await client.post("/tokenizers/nope/check", json={}), 404, "tokenizer-not-found")
