"""The deepest legal chain of each costly kind, over HTTP, on every path engine work takes:
inline on the event loop's thread, in the slow lane, in a parallel fill, and in ``/step``.

Grammars are built on engine threads whatever the path (their stack is sized for the bound);
masks, accepts and forks run where the path puts them and need little stack. A crash here would
take the test process down with it, which fails the run.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import numpy as np
import pytest

import core.backend
from core import Tokenizer
from guidance_client.wire import read_step
from tests.core.test_derivation import deepest_legal, lark_chain, schema_chain
from tests.service.helpers import AppFactory, serve

pytestmark = pytest.mark.asyncio

BODIES: dict[str, dict[str, Any]] = {
    "schema properties": {"json_schema": schema_chain("properties", deepest_legal("schema properties"))},
    "lark alt": {"grammar": lark_chain("alt", deepest_legal("lark alt"))},
    "template json slot": {
        "template": "{{json 'x' schema=s}}",
        "variables": {"s": schema_chain("ref", deepest_legal("template json slot"))},
    },
}


def _first_allowed(mask: bytes, eos: int) -> int:
    bits = np.unpackbits(np.frombuffer(mask, dtype=np.uint8), bitorder="little")
    return next(int(t) for t in np.flatnonzero(bits) if t != eos)


async def _walk(http: httpx.AsyncClient, body: dict[str, Any], eos: int, batch: int) -> None:
    """Compile, then on ``batch`` sessions: a mask, an accept, a fork, and two ``/step`` calls."""
    resp = await http.post("/compile", json=body)
    assert resp.status_code == 200, resp.text
    program_id = resp.json()["program_id"]
    sids = [(await http.post("/sessions", json={"program_id": program_id})).json()["session_id"] for _ in range(batch)]
    mask = await http.get(f"/sessions/{sids[0]}/mask")
    assert mask.status_code == 200
    token = _first_allowed(mask.content, eos)
    accepted = await http.post(f"/sessions/{sids[0]}/accept", json={"tokens": [token]})
    assert accepted.status_code == 200, accepted.text
    assert (await http.post(f"/sessions/{sids[0]}/fork")).status_code == 201
    step = {"sessions": [{"session_id": s, "tokens": [] if s == sids[0] else [token]} for s in sids]}
    for _ in range(2):
        resp = await http.post("/step", json=step)
        assert resp.status_code == 200
        header, masks = read_step(resp.content)
        assert [s["status"] for s in header["sessions"]] == ["ok"] * batch
        assert all(row.any() for row in masks)
        step = {"sessions": [{"session_id": s, "tokens": []} for s in sids]}


@pytest.mark.parametrize("kind", sorted(BODIES))
async def test_inline_on_the_event_loop(make_app: AppFactory, default_tokenizer: Tokenizer, kind: str) -> None:
    async with serve(make_app()) as http:
        await _walk(http, BODIES[kind], default_tokenizer.eos_token_id, batch=2)


async def test_in_the_slow_lane(make_app: AppFactory, default_tokenizer: Tokenizer) -> None:
    async with serve(make_app(slow_mask_ms=0.001)) as http:  # every program counts as slow
        for body in BODIES.values():
            await _walk(http, body, default_tokenizer.eos_token_id, batch=2)
        metrics = (await http.get("/metrics")).text
    calls = re.search(r"^guidance_slow_lane_calls_total (\S+)$", metrics, re.MULTILINE)
    assert calls and float(calls[1]) >= 6


async def test_in_parallel_fills(
    make_app: AppFactory, default_tokenizer: Tokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    init = core.backend.GuidanceBackend.__init__

    def eager(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs, parallel_min_mask_seconds=0.0)  # fill in parallel from 8 sessions

    monkeypatch.setattr(core.backend.GuidanceBackend, "__init__", eager)
    fills: list[int] = []
    parallel = core.backend.GuidanceBackend._fill_parallel

    def spy(self: Any, work: Any, bitmask: Any, threads: int) -> Any:
        fills.append(len(work))
        return parallel(self, work, bitmask, threads)

    monkeypatch.setattr(core.backend.GuidanceBackend, "_fill_parallel", spy)
    async with serve(make_app(mask_threads=2)) as http:
        for body in BODIES.values():
            await _walk(http, body, default_tokenizer.eos_token_id, batch=8)
    assert fills and max(fills) == 8
