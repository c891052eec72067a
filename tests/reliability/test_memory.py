"""Memory per request is bounded before it is allocated, and given back afterwards.

Each place where one request's size multiplies into memory has a limit (docs/reliability.md):
draft rows and the whole ``/step`` answer, a session's token history, ``/tokenize`` text,
``/detokenize`` ids, compile-time variables, uploaded vocabularies. A refused request leaves the
sessions it names as they were. A real server's RSS returns near its baseline after large answers.
"""

from __future__ import annotations

import json
import time
import tracemalloc
from typing import Any

import httpx

from core import Tokenizer
from tests.server import running
from tests.service.helpers import AppFactory, assert_problem, serve

JSON = {"content-type": "application/json"}


async def _open(client: httpx.AsyncClient, n: int, body: dict[str, Any] | None = None) -> list[str]:
    program = (await client.post("/compile", json=body or {"regex": "[a-z ]{0,200}"})).json()["program_id"]
    return [(await client.post("/sessions", json={"program_id": program})).json()["session_id"] for _ in range(n)]


def _limit(resp: httpx.Response, name: str) -> dict[str, Any]:
    doc = assert_problem(resp, 413, "limit-exceeded")
    assert doc["limit"] == name, doc
    return doc


async def test_draft_tokens_past_the_limit_are_refused(make_app: AppFactory, default_tokenizer: Tokenizer) -> None:
    a = default_tokenizer.encode("a")[0]
    async with serve(make_app()) as client:  # default: 16 draft tokens
        (sid,) = await _open(client, 1)
        ok = await client.post("/step", json={"sessions": [{"session_id": sid, "draft_tokens": [a] * 16}]})
        assert ok.status_code == 200
        header = json.loads(ok.content[4 : 4 + int.from_bytes(ok.content[:4], "little")])
        assert header["rows"] == 17
        _limit(
            await client.post(
                "/step", json={"sessions": [{"session_id": sid, "tokens": [a], "draft_tokens": [a] * 17}]}
            ),
            "max_draft_tokens",
        )
        assert (await client.get(f"/sessions/{sid}")).json()["tokens"] == []  # nothing moved


async def test_a_step_answer_past_the_limit_is_refused_before_anything_moves(
    make_app: AppFactory, default_tokenizer: Tokenizer
) -> None:
    a = default_tokenizer.encode("a")[0]
    row = 131_072 // 8  # bytes of one tekken mask row
    async with serve(make_app(max_step_answer_bytes=10 * row + 4096)) as client:
        sids = await _open(client, 10)
        ok = await client.post("/step", json={"sessions": [{"session_id": s, "tokens": [a]} for s in sids]})
        assert ok.status_code == 200 and len(ok.content) <= 10 * row + 4096
        over = [{"session_id": s, "tokens": [a]} for s in sids]
        over[0]["draft_tokens"] = [a]  # one row more
        doc = _limit(await client.post("/step", json={"sessions": over}), "max_step_answer_bytes")
        assert "rows" in doc["detail"]
        for s in sids:  # the refused step accepted nothing
            assert (await client.get(f"/sessions/{s}")).json()["tokens"] == [a]
        # The block-sparse encoding computes dense rows first: the same bound applies.
        _limit(await client.post("/step", json={"sessions": over, "mask_encoding": "blocks"}), "max_step_answer_bytes")


async def test_a_huge_answer_is_refused_before_any_buffer_exists(
    make_app: AppFactory, default_tokenizer: Tokenizer
) -> None:
    # 100,000 draft rows of 16 kB: a 1.6 GB answer. With the draft limit lifted, the answer
    # limit must stop it before anything of that size is allocated.
    a = default_tokenizer.encode("a")[0]
    async with serve(make_app(max_draft_tokens=1_000_000)) as client:
        (sid,) = await _open(client, 1)
        body = json.dumps({"sessions": [{"session_id": sid, "draft_tokens": [a] * 100_000}]}).encode()
        tracemalloc.start()
        try:
            resp = await client.post("/step", content=body, headers=JSON)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        _limit(resp, "max_step_answer_bytes")
        assert peak < 64 * 1024 * 1024, peak  # the request's parse, not the answer's 1.6 GB


async def test_a_session_history_is_bounded(make_app: AppFactory, default_tokenizer: Tokenizer) -> None:
    a = default_tokenizer.encode("a")[0]
    async with serve(make_app(max_session_tokens=10)) as client:
        s1, s2 = await _open(client, 2)
        assert (await client.post(f"/sessions/{s1}/accept", json={"tokens": [a] * 8})).status_code == 200
        _limit(await client.post(f"/sessions/{s1}/accept", json={"tokens": [a] * 3}), "max_session_tokens")
        assert len((await client.get(f"/sessions/{s1}")).json()["tokens"]) == 8  # unchanged
        assert (await client.post(f"/sessions/{s1}/accept", json={"tokens": [a] * 2})).status_code == 200
        # In /step the limit is one session's error; the others advance.
        resp = await client.post(
            "/step", json={"sessions": [{"session_id": s1, "tokens": [a]}, {"session_id": s2, "tokens": [a]}]}
        )
        header = json.loads(resp.content[4 : 4 + int.from_bytes(resp.content[:4], "little")])
        first, second = header["sessions"]
        assert first["status"] == "error" and first["error"]["limit"] == "max_session_tokens"
        assert second["status"] == "ok" and second["accepted"] == 1
        # A fork starts with its parent's history: the same bound.
        child = (await client.post(f"/sessions/{s1}/fork")).json()["session_id"]
        _limit(await client.post(f"/sessions/{child}/accept", json={"tokens": [a]}), "max_session_tokens")


async def test_tokenize_and_detokenize_are_bounded(make_app: AppFactory) -> None:
    async with serve(make_app(max_tokenize_chars=1000, max_session_tokens=500)) as client:
        assert (await client.post("/tokenize", json={"text": "a" * 1000})).status_code == 200
        _limit(await client.post("/tokenize", json={"text": "a" * 1001}), "max_tokenize_chars")
        assert (await client.post("/detokenize", json={"tokens": [1000] * 500})).status_code == 200
        _limit(await client.post("/detokenize", json={"tokens": [1000] * 501}), "max_session_tokens")


async def test_variables_are_bounded_in_count_and_size(make_app: AppFactory) -> None:
    async with serve(make_app(max_variables=3, max_variables_bytes=1000)) as client:
        ok = {"template": "{{a}}", "variables": {"a": "x", "b": "y", "c": "z"}}
        assert (await client.post("/compile", json=ok)).status_code == 200
        _limit(
            await client.post("/compile", json={"template": "x", "variables": {f"v{i}": "" for i in range(4)}}),
            "max_variables",
        )
        _limit(
            await client.post("/compile", json={"template": "{{a}}", "variables": {"a": "x" * 1000}}),
            "max_variables_bytes",
        )
        # Integers past 64 bits and nesting past orjson's depth are measured too.
        big = {"template": "{{a}}", "variables": {"a": "x", "n": 10**2000}}
        _limit(await client.post("/compile", json=big), "max_variables_bytes")
        deep: Any = "x"
        for _ in range(300):
            deep = [deep]
        resp = await client.post("/compile", json={"template": "x", "variables": {"d": deep}})
        assert resp.status_code < 500


async def test_an_uploaded_vocabulary_is_bounded(make_app: AppFactory) -> None:
    tokenizer = {
        "model": {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": []},
        "added_tokens": [{"id": 2_000_000, "content": "</s>", "special": True}],
    }
    async with serve(make_app(max_vocab_size=1000)) as client:
        _limit(await client.post("/tokenizers?name=wide", content=json.dumps(tokenizer).encode()), "max_vocab_size")
        assert "wide" not in (await client.get("/tokenizers")).text


def test_memory_is_given_back_after_large_answers() -> None:
    """A real server: after /step answers of 4 to 60 MiB, its RSS returns near the baseline."""
    env = {"GUIDANCE_SERVER_SESSION_TTL_SECONDS": "8"}  # the sweep (and memory release) every 2 s
    with running(env=env) as server, httpx.Client(base_url=server.url, timeout=120) as http:
        programs = [
            http.post("/compile", json=b).json()["program_id"]
            for b in ({"regex": "[a-z ]{0,200}"}, {"json_schema": {"type": "object"}})
        ]
        sids = [http.post("/sessions", json={"program_id": programs[i % 2]}).json()["session_id"] for i in range(256)]
        small = {"sessions": [{"session_id": s} for s in sids[:4]]}
        for _ in range(5):
            assert http.post("/step", json=small).status_code == 200
        time.sleep(2.5)
        baseline = server.rss_bytes()
        peak = baseline
        sizes = []
        for drafts in (0, 1, 3, 7, 14):  # 256 x (1 + drafts) rows of 16 kB: 4, 8, 16, 32, 60 MiB
            body = {"sessions": [{"session_id": s, "draft_tokens": [1097] * drafts} for s in sids]}
            resp = http.post("/step", json=body)
            assert resp.status_code == 200
            sizes.append(len(resp.content))
            peak = max(peak, server.rss_bytes())
        assert max(sizes) > 60 * 1024 * 1024
        deadline = time.monotonic() + 15
        while server.rss_bytes() > baseline + 8 * 1024 * 1024 and time.monotonic() < deadline:
            time.sleep(0.5)
        after = server.rss_bytes()
        mib = 1024 * 1024
        assert after <= baseline + 8 * mib, (baseline / mib, peak / mib, after / mib)
