"""Concurrent requests on one session are serialised, never interleaved into a corrupt state.

Hundreds of accepts, rollbacks, forks, masks, reads and batched steps are fired at one session at
once; afterwards its state (and every fork's) must equal a sequential replay of its tokens in
``core``: same mask, same text, and as many tokens as the successful accepts minus rollbacks.
Run both inline (the event loop serialises) and with every program in the slow lane (work in a
thread pool, under the session's lock).
"""

from __future__ import annotations

import asyncio
import json
import random
import struct
from typing import Any

import httpx
import pytest

from core import GuidanceBackend, Tokenizer
from tests.service.helpers import AppFactory, serve

pytestmark = pytest.mark.asyncio

REGEX = "[ab ]{0,4000}"


def _step_statuses(body: bytes) -> list[dict[str, Any]]:
    (size,) = struct.unpack_from("<I", body, 0)
    sessions: list[dict[str, Any]] = json.loads(body[4 : 4 + size])["sessions"]
    return sessions


async def _replay_matches(client: httpx.AsyncClient, backend: GuidanceBackend, sid: str) -> list[int]:
    state = (await client.get(f"/sessions/{sid}")).json()
    tokens: list[int] = state["tokens"]
    reference = backend.compile_regex(REGEX).create_state()
    assert reference.accept_tokens(tokens)
    row = backend.allocate_bitmask(1)
    reference.fill_bitmask(row, 0)
    assert (await client.get(f"/sessions/{sid}/mask")).content == row.tobytes()
    assert state["text"] == reference.text()
    return tokens


@pytest.mark.parametrize("slow_mask_ms", [5.0, 1e-6], ids=["inline", "slow-lane"])
async def test_concurrent_requests_on_one_session_equal_a_sequential_replay(
    make_app: AppFactory, default_tokenizer: Tokenizer, slow_mask_ms: float
) -> None:
    tok = default_tokenizer
    a, b = tok.encode("a"), tok.encode(" b")
    backend = GuidanceBackend(tok)
    rng = random.Random(7)
    async with serve(make_app(slow_mask_ms=slow_mask_ms)) as client:
        sid = (await client.post("/sessions", json={"regex": REGEX})).json()["session_id"]
        other = (await client.post("/sessions", json={"regex": REGEX})).json()["session_id"]
        kinds = ["accept"] * 8 + ["rollback"] * 3 + ["fork", "mask", "mask", "get", "step", "dry"]
        ops = [rng.choice(kinds) for _ in range(300)]

        async def run(op: str) -> tuple[str, httpx.Response]:
            tokens = rng.choice([a, b, a + b])
            if op == "accept":
                return op, await client.post(f"/sessions/{sid}/accept", json={"tokens": tokens})
            if op == "dry":
                return op, await client.post(f"/sessions/{sid}/accept", json={"tokens": tokens, "dry_run": True})
            if op == "rollback":
                return op, await client.post(f"/sessions/{sid}/rollback", json={"tokens": rng.choice([1, 2])})
            if op == "fork":
                return op, await client.post(f"/sessions/{sid}/fork")
            if op == "mask":
                return op, await client.get(f"/sessions/{sid}/mask")
            if op == "get":
                return op, await client.get(f"/sessions/{sid}")
            batch = [{"session_id": sid, "tokens": tokens}, {"session_id": other, "tokens": a}]
            return op, await client.post("/step", json={"sessions": batch})

        results = await asyncio.gather(*(run(op) for op in ops))

        accepted = rolled_back = 0
        forks = []
        for op, resp in results:
            assert resp.status_code < 500, (op, resp.text)
            if op == "accept":
                assert resp.status_code == 200, resp.text
                accepted += resp.json()["accepted"]
            elif op == "rollback":
                if resp.status_code == 200:
                    rolled_back += int(resp.request.content and json.loads(resp.request.content)["tokens"])
                else:
                    assert resp.json()["code"] == "rollback-out-of-range"
            elif op == "fork":
                assert resp.status_code == 201
                forks.append(resp.json()["session_id"])
            elif op == "step":
                assert resp.status_code == 200
                mine = _step_statuses(resp.content)[0]
                assert mine["status"] == "ok", mine
                accepted += mine["accepted"]
            else:
                assert resp.status_code == 200
        tokens = await _replay_matches(client, backend, sid)
        assert len(tokens) == accepted - rolled_back
        for child in forks:
            child_tokens = await _replay_matches(client, backend, child)
            assert len(child_tokens) <= accepted
        await _replay_matches(client, backend, other)
