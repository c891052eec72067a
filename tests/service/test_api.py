"""The HTTP API's happy paths, in-process against a fresh app."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import numpy as np
import pytest

from core import GuidanceBackend, GuidanceGrammar, Tokenizer, allowed_tokens
from core.bitmask import from_bytes, mask_words
from tests.service.helpers import PERSON_SCHEMA, TEMPLATE, AppFactory, serve

pytestmark = pytest.mark.asyncio


async def _compile(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    resp = await client.post("/compile", json=body)
    assert resp.status_code == 200, resp.text
    data: dict[str, Any] = resp.json()
    return data


async def _open(client: httpx.AsyncClient, **body: Any) -> str:
    data = await _compile(client, open_session=True, **body)
    return str(data["session_id"])


async def _mask(client: httpx.AsyncClient, sid: str) -> bytes:
    resp = await client.get(f"/sessions/{sid}/mask")
    assert resp.status_code == 200, resp.text
    return resp.content


@pytest.mark.parametrize(
    ("body", "variables"),
    [
        ({"template": TEMPLATE}, ["name", "age"]),
        ({"json_schema": PERSON_SCHEMA}, []),
        ({"json_schema": json.dumps(PERSON_SCHEMA), "options": {"whitespace": 2}}, []),
        ({"regex": "[0-9]{3}-[0-9]{4}"}, []),
        ({"grammar": 'start: "yes" | "no"'}, []),
        ({"choice": ["red", "green", "blue"]}, []),
    ],
)
async def test_compile_answers_exactly_the_documented_fields(
    client: httpx.AsyncClient, default_tokenizer: Tokenizer, body: dict[str, Any], variables: list[str]
) -> None:
    first = await _compile(client, **body)
    assert set(first) == {"program_id", "cached", "vocab_size", "mask_words", "variables", "compile_ms", "ignored"}
    assert first["ignored"] == []
    assert first["cached"] is False
    assert first["vocab_size"] == default_tokenizer.vocab_size
    assert first["mask_words"] == mask_words(default_tokenizer.vocab_size)
    assert first["variables"] == variables
    assert first["compile_ms"] >= 0
    again = await _compile(client, **body)
    assert again["cached"] is True
    assert again["program_id"] == first["program_id"]


async def test_compile_reports_formats_compiled_as_annotations(client: httpx.AsyncClient) -> None:
    schema = {
        "type": "object",
        "properties": {"p": {"type": "string", "format": "path"}, "e": {"type": "string", "format": "email"}},
    }
    asserted = await _compile(client, json_schema=schema)
    assert asserted["ignored"] == ['format "path" at #/properties/p']  # email is asserted
    annotated = await _compile(client, json_schema=schema, options={"formats": "annotate"})
    assert annotated["ignored"] == ['format "path" at #/properties/p', 'format "email" at #/properties/e']
    assert annotated["program_id"] != asserted["program_id"]
    # a format of the vocabulary that cannot be asserted exactly is refused, with the way out
    resp = await client.post("/compile", json={"json_schema": {"type": "string", "format": "regex"}})
    assert resp.status_code == 400 and "annotate" in resp.json()["detail"]
    resp = await client.post("/compile", json={"json_schema": schema, "options": {"formats": "loose"}})
    assert resp.status_code == 400 and "formats" in resp.json()["detail"]


async def test_program_id_is_the_same_on_another_replica(make_app: AppFactory) -> None:
    async with serve(make_app()) as a, serve(make_app()) as b:
        ida = (await _compile(a, template=TEMPLATE))["program_id"]
        idb = (await _compile(b, template=TEMPLATE))["program_id"]
    assert ida == idb


async def test_open_session_on_compile_and_by_program_id(client: httpx.AsyncClient) -> None:
    compiled = await _compile(client, regex="a+b", open_session=True)
    assert isinstance(compiled["session_id"], str) and compiled["session_id"]
    resp = await client.post("/sessions", json={"program_id": compiled["program_id"]})
    assert resp.status_code == 201
    assert resp.json()["program_id"] == compiled["program_id"]
    assert resp.json()["session_id"] != compiled["session_id"]
    # A compile body works as well, and shares the cached program.
    resp = await client.post("/sessions", json={"regex": "a+b"})
    assert resp.status_code == 201
    assert resp.json()["program_id"] == compiled["program_id"]


async def test_template_session_walks_to_eos_with_variables(
    client: httpx.AsyncClient, default_tokenizer: Tokenizer
) -> None:
    tok = default_tokenizer
    sid = await _open(client, template=TEMPLATE)
    resp = await client.post(f"/sessions/{sid}/accept", json={"tokens": tok.encode("Name: Ada\nAge: 36")})
    assert resp.status_code == 200
    body = resp.json()
    assert set(body) == {"accepted", "terminated", "accepting", "forced_tokens", "variables"}
    assert body["accepted"] == len(tok.encode("Name: Ada\nAge: 36"))
    assert body["terminated"] is False and body["accepting"] is True
    assert body["variables"]["name"] == "Ada"  # "age" may still grow: llguidance reports it once done
    mask = from_bytes(await _mask(client, sid), tok.vocab_size)
    assert mask[0, tok.eos_token_id // 32] >> (tok.eos_token_id % 32) & 1
    body = (await client.post(f"/sessions/{sid}/accept", json={"tokens": [tok.eos_token_id]})).json()
    assert body["terminated"] is True and body["forced_tokens"] == []
    assert body["variables"] == {"name": "Ada", "age": "36"}
    state = (await client.get(f"/sessions/{sid}")).json()
    assert state["text"] == "Name: Ada\nAge: 36"
    assert state["terminated"] is True and state["accepting"] is True
    assert state["variables"] == {"name": "Ada", "age": "36"}
    assert state["tokens"][-1] == tok.eos_token_id


async def test_forced_tokens_are_reported(client: httpx.AsyncClient, default_tokenizer: Tokenizer) -> None:
    sid = await _open(client, template="The answer is {{gen 'x' regex='[0-9]'}}")
    body = (await client.post(f"/sessions/{sid}/accept", json={"tokens": []})).json()
    assert body["accepted"] == 0
    assert default_tokenizer.decode(body["forced_tokens"]).startswith("The answer is")


async def test_mask_matches_the_engine_in_process(client: httpx.AsyncClient, default_tokenizer: Tokenizer) -> None:
    tok = default_tokenizer
    sid = await _open(client, json_schema=PERSON_SCHEMA)
    local = GuidanceGrammar(GuidanceBackend(tok).compile_json_schema(PERSON_SCHEMA), tok)
    expected = np.zeros((1, mask_words(tok.vocab_size)), dtype=np.int32)
    for piece in ['{"name":"', "Bob", '","age":', "4", "2"]:
        ids = tok.encode(piece)
        assert (await client.post(f"/sessions/{sid}/accept", json={"tokens": ids})).status_code == 200
        assert local.accept_tokens(ids)
        local.fill_next_token_bitmask(expected, 0)
        resp = await client.get(f"/sessions/{sid}/mask")
        assert resp.headers["content-type"] == "application/octet-stream"
        assert resp.headers["x-vocab-size"] == str(tok.vocab_size)
        assert resp.headers["x-mask-words"] == str(expected.shape[1])
        assert resp.headers["x-terminated"] == "false"
        assert len(resp.content) == expected.shape[1] * 4
        assert np.array_equal(from_bytes(resp.content, tok.vocab_size), expected)


async def test_mask_as_json_is_the_same_bits_in_base64(client: httpx.AsyncClient, default_tokenizer: Tokenizer) -> None:
    sid = await _open(client, choice=["yes", "no"])
    raw = await _mask(client, sid)
    resp = await client.get(f"/sessions/{sid}/mask", headers={"Accept": "application/json"})
    assert resp.headers["content-type"] == "application/json"
    body = resp.json()
    assert base64.b64decode(body["mask"]) == raw
    assert body["mask_words"] == len(raw) // 4
    assert body["vocab_size"] == default_tokenizer.vocab_size
    assert body["terminated"] is False
    allowed = allowed_tokens(from_bytes(raw, default_tokenizer.vocab_size)[0], default_tokenizer.vocab_size)
    assert {default_tokenizer.decode([int(t)]) for t in allowed} <= {"y", "ye", "yes", "n", "no"}


async def test_dry_run_accept_validates_without_moving(client: httpx.AsyncClient, default_tokenizer: Tokenizer) -> None:
    tok = default_tokenizer
    sid = await _open(client, regex="abc")
    before = await _mask(client, sid)
    ids = tok.encode("ab") + tok.encode("x")
    body = (await client.post(f"/sessions/{sid}/accept", json={"tokens": ids, "dry_run": True})).json()
    assert body["accepted"] == len(tok.encode("ab"))
    assert (await client.get(f"/sessions/{sid}")).json()["tokens"] == []
    assert await _mask(client, sid) == before


async def test_rollback_restores_the_earlier_state(client: httpx.AsyncClient, default_tokenizer: Tokenizer) -> None:
    tok = default_tokenizer
    sid = await _open(client, template=TEMPLATE)
    head = tok.encode("Name: Ada\n")
    vars_at_head = (await client.post(f"/sessions/{sid}/accept", json={"tokens": head})).json()["variables"]
    at_head = await _mask(client, sid)
    tail = tok.encode("Age: 7") + [tok.eos_token_id]
    assert (await client.post(f"/sessions/{sid}/accept", json={"tokens": tail})).json()["terminated"]
    resp = await client.post(f"/sessions/{sid}/rollback", json={"tokens": len(tail)})
    assert resp.status_code == 200
    state = resp.json()
    assert set(state) == {"program_id", "tokens", "text", "variables", "terminated", "accepting"}
    assert state["tokens"] == head and state["terminated"] is False
    assert state["variables"] == vars_at_head
    assert await _mask(client, sid) == at_head


async def test_fork_is_independent(client: httpx.AsyncClient, default_tokenizer: Tokenizer) -> None:
    tok = default_tokenizer
    sid = await _open(client, choice=["alpha", "beta"])
    resp = await client.post(f"/sessions/{sid}/fork")
    assert resp.status_code == 201
    child = resp.json()["session_id"]
    assert child != sid
    await client.post(f"/sessions/{sid}/accept", json={"tokens": tok.encode("alpha")})
    assert (await client.get(f"/sessions/{child}")).json()["tokens"] == []
    await client.post(f"/sessions/{child}/accept", json={"tokens": tok.encode("beta")})
    assert (await client.get(f"/sessions/{sid}")).json()["text"] == "alpha"
    assert (await client.get(f"/sessions/{child}")).json()["text"] == "beta"


async def test_delete_closes_the_session(client: httpx.AsyncClient) -> None:
    sid = await _open(client, regex="x")
    resp = await client.delete(f"/sessions/{sid}")
    assert resp.status_code == 204 and resp.content == b""
    assert (await client.get(f"/sessions/{sid}")).status_code == 404


async def test_tokenize_and_detokenize_round_trip(client: httpx.AsyncClient, default_tokenizer: Tokenizer) -> None:
    text = 'Hello, wörld! {"a": 1}'
    tokens = (await client.post("/tokenize", json={"text": text})).json()["tokens"]
    assert tokens == default_tokenizer.encode(text)
    resp = await client.post("/detokenize", json={"tokens": tokens, "tokenizer": "tekken"})
    assert resp.json() == {"text": text}
    long_text = "lorem ipsum " * 3000  # encoded off the event loop
    assert (await client.post("/tokenize", json={"text": long_text})).json()["tokens"] == default_tokenizer.encode(
        long_text
    )


async def test_tokenizers_lists_the_default_under_both_names(
    client: httpx.AsyncClient, default_tokenizer: Tokenizer
) -> None:
    listed = {t["tokenizer"]: t for t in (await client.get("/tokenizers")).json()["tokenizers"]}
    assert set(listed) == {"default", "tekken"}
    assert listed["default"]["vocab_size"] == default_tokenizer.vocab_size
    assert listed["default"]["eos_token_ids"] == [default_tokenizer.eos_token_id] == [2]
    assert listed["default"]["bos_token_id"] == 1
    assert listed["default"]["digest"] == listed["tekken"]["digest"] == default_tokenizer.digest


def _tiny_hf_tokenizer_json() -> str:
    """A byte-level BPE ``tokenizer.json`` with 256 byte tokens, two merges and ``</s>``."""
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import decoders, models, pre_tokenizers

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    vocab["ye"] = len(vocab)
    vocab["yes"] = len(vocab)
    tok = tokenizers.Tokenizer(models.BPE(vocab=vocab, merges=[("y", "e"), ("ye", "s")]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["</s>"])
    text: str = tok.to_str()
    return text


async def test_uploaded_tokenizer_compiles_and_masks(client: httpx.AsyncClient) -> None:
    spec = _tiny_hf_tokenizer_json()
    resp = await client.post(
        "/tokenizers", params={"name": "tiny"}, content=spec, headers={"content-type": "application/json"}
    )
    assert resp.status_code == 201, resp.text
    info = resp.json()
    assert info["tokenizer"] == "tiny" and info["vocab_size"] == 259 and info["eos_token_ids"] == [258]
    assert info["bos_token_id"] is None and len(info["digest"]) == 64
    again = await client.post("/tokenizers", params={"name": "tiny"}, content=spec)
    assert again.status_code == 200 and again.json() == info
    alias = await client.post("/tokenizers", params={"name": "tiny-alias"}, content=spec)
    assert alias.status_code == 200 and alias.json() == {**info, "tokenizer": "tiny-alias"}
    assert "tiny" in {t["tokenizer"] for t in (await client.get("/tokenizers")).json()["tokenizers"]}

    compiled = await _compile(client, choice=["yes", "no"], tokenizer="tiny", open_session=True)
    assert compiled["vocab_size"] == 259 and compiled["mask_words"] == 9
    sid = compiled["session_id"]
    assert (await client.post("/tokenize", json={"text": "yes", "tokenizer": "tiny"})).json()["tokens"] == [257]
    assert len(await _mask(client, sid)) == 9 * 4
    body = (await client.post(f"/sessions/{sid}/accept", json={"tokens": [257, 258]})).json()
    assert body["terminated"] is True
    # A session opened by program_id keeps the program's tokenizer.
    resp = await client.post("/sessions", json={"program_id": compiled["program_id"]})
    assert len(await _mask(client, resp.json()["session_id"])) == 9 * 4


async def test_health_readiness_and_stats(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    assert (await client.get("/readyz")).json() == {"status": "ready"}
    await _open(client, regex="a")
    await _compile(client, regex="a")
    stats = (await client.get("/stats")).json()
    assert stats["cache"]["entries"] == 1 and stats["cache"]["hits"] == 1 and stats["cache"]["misses"] == 1
    assert stats["tokenizer"] == "tekken"
    assert stats["sessions"]["active"] == 1 and stats["sessions"]["created"] == 1
    assert stats["tokenizers"] == ["default", "tekken"]


async def test_readiness_is_503_before_startup_and_while_draining(make_app: AppFactory) -> None:
    app = make_app()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        resp = await c.get("/readyz")
        assert resp.status_code == 503 and resp.json()["code"] == "not-ready"
        assert resp.headers["retry-after"] == "1"
        assert (await c.get("/healthz")).status_code == 200
        async with app.router.lifespan_context(app):
            assert (await c.get("/readyz")).status_code == 200
            app.state.service.draining = True
            assert (await c.get("/readyz")).status_code == 503


async def test_concurrent_requests_on_one_session_are_serialised(
    client: httpx.AsyncClient, default_tokenizer: Tokenizer
) -> None:
    import asyncio

    sid = await _open(client, regex="(ab)*")
    ids = default_tokenizer.encode("ab")
    results = await asyncio.gather(*(client.post(f"/sessions/{sid}/accept", json={"tokens": ids}) for _ in range(20)))
    assert all(r.status_code == 200 for r in results)
    assert (await client.get(f"/sessions/{sid}")).json()["text"] == "ab" * 20


async def test_configured_tokenizers_load_from_paths(default_tokenizer: Tokenizer, tmp_path: Any) -> None:
    from service import Settings, create_app

    path = tmp_path / "tiny.json"
    path.write_text(_tiny_hf_tokenizer_json(), encoding="utf-8")
    settings = Settings(tokenizers=["default", f"small={path}", str(path)], max_tokenizers=2)
    app = create_app(settings, tokenizers={"default": default_tokenizer})
    async with serve(app) as client:
        listed = {t["tokenizer"]: t["vocab_size"] for t in (await client.get("/tokenizers")).json()["tokenizers"]}
        assert listed == {"default": 131072, "tekken": 131072, "small": 259, "tiny": 259}
        assert (await _compile(client, regex="yes", tokenizer="small"))["mask_words"] == 9
        # At the limit of distinct tokenizers, an upload is refused before it is built.
        resp = await client.post("/tokenizers", params={"name": "more"}, content=_tiny_hf_tokenizer_json())
        assert resp.status_code == 413 and resp.json()["limit"] == "max_tokenizers"
