"""Compiles and memory under attack: budgets hold, departed clients cost nothing, memory is counted and returned.

Each test reproduces an attack that hurt other tenants before (docs/reliability.md, "Compile
budgets" and "Memory by bytes") and checks what holds it, in statuses and bytes, not timings.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import string
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from tests.server import Server, start, stop
from tests.service.helpers import AppFactory, assert_problem, serve

KEY = "key-a-0123456789abcdefghij"
ADMIN = "admin-0123456789abcdefghij"
MIB = 1024 * 1024


def heavy_template(n: int = 20_000, tag: str = "g") -> str:
    """A template of ``n`` generations: its compile costs seconds of CPU, growing faster than ``n``."""
    return "".join(f"{{{{gen '{tag}{i}' regex='[a-z]'}}}}" for i in range(n))


async def _workers_ready(http: httpx.AsyncClient) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        workers = (await http.get("/stats")).json().get("compile_workers", {})
        if workers.get("warming") == 0 and workers.get("running", 0) >= 1:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the compile workers did not start")


async def test_a_compile_past_its_cpu_budget_answers_413_and_others_compile(make_app: AppFactory) -> None:
    app = make_app(compile_processes=True, compile_workers=1, max_compile_ms=1000)
    async with serve(app) as http:
        await _workers_ready(http)
        resp = await http.post("/compile", json={"template": heavy_template()})
        doc = assert_problem(resp, 413, "limit-exceeded")
        assert doc["limit"] == "max_compile_ms"
        assert (await http.post("/compile", json={"regex": "[0-9]{3}"})).status_code == 200  # a fresh worker
        again = await http.post("/compile", json={"template": heavy_template()})
        assert_problem(again, 413, "limit-exceeded")  # from the failed-compile cache: no worker spent
        stats = (await http.get("/stats")).json()
        assert stats["compile_workers"]["stopped"] == 1 and stats["cache"]["negative_hits"] == 1
        assert "guidance_compile_workers_stopped_total 1.0" in (await http.get("/metrics")).text


def pattern_properties(n: int) -> dict[str, Any]:
    """An object of ``n`` disjoint ``patternProperties`` and no other key: llguidance's compile of it
    grows about as n^4 (0.4 s at 200, 5.7 s at 400, about a minute at 500)."""
    return {
        "type": "object",
        "patternProperties": {f"^p{i}x[a-z]*$": {"type": "integer"} for i in range(n)},
        "additionalProperties": False,
    }


async def test_many_pattern_properties_are_refused_before_they_compile(make_app: AppFactory) -> None:
    async with serve(make_app()) as http:
        resp = await http.post("/compile", json={"json_schema": pattern_properties(500)})
        doc = assert_problem(resp, 413, "limit-exceeded")
        assert doc["limit"] == "max_pattern_properties"
        nested = {"type": "object", "properties": {"inner": pattern_properties(65)}}
        assert_problem(await http.post("/compile", json={"json_schema": nested}), 413, "limit-exceeded")
        # as many as the real-world corpora hold (22 in one object) compile, and work
        ok = await http.post("/compile", json={"json_schema": pattern_properties(22), "open_session": True})
        assert ok.status_code == 200, ok.text


async def test_a_non_admin_upload_is_refused_before_its_body_is_read(make_app: AppFactory) -> None:
    sent = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(64):  # 64 MiB, the upload limit
            sent += 1
            yield b" " * MIB

    async with serve(make_app(api_keys=[KEY], admin_api_keys=[ADMIN])) as http:
        resp = await http.post("/tokenizers?name=mine", content=body(), headers={"Authorization": f"Bearer {KEY}"})
        assert_problem(resp, 403, "forbidden")
        assert sent <= 1  # at most the chunk in flight: the other 63 MiB were never read
        # an admin's upload is read and judged on its content
        resp = await http.post("/tokenizers?name=mine", content=b"{}", headers={"Authorization": f"Bearer {ADMIN}"})
        assert resp.status_code == 400  # not a tokenizer: refused for what it is, not for who sent it


async def test_new_work_past_the_memory_budget_answers_503_and_the_rest_is_served(make_app: AppFactory) -> None:
    async with serve(make_app()) as http:
        state = http._transport.app.state.service  # type: ignore[attr-defined]
        program = (await http.post("/compile", json={"regex": "[a-z]{0,20}"})).json()["program_id"]
        sid = (await http.post("/sessions", json={"program_id": program})).json()["session_id"]
        state.memory.max_bytes = 1  # the process is now over its budget
        for path, body in (
            ("/compile", {"regex": "[0-9]+"}),
            ("/sessions", {"program_id": program}),
            (f"/sessions/{sid}/fork", None),
        ):
            resp = await http.post(path, json=body)
            assert_problem(resp, 503, "memory-exhausted")
            assert resp.headers["retry-after"] == "1"
        assert (await http.get(f"/sessions/{sid}/mask")).status_code == 200  # running sessions go on
        assert (await http.get("/healthz")).status_code == 200
        assert (await http.delete(f"/sessions/{sid}")).status_code == 204  # and may end, freeing memory
        assert (await http.get("/stats")).json()["memory"]["refused"] == 3
        state.memory.max_bytes = 64 * 1024 * MIB
        assert (await http.post("/compile", json={"regex": "[0-9]+"})).status_code == 200


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    env = {
        "GUIDANCE_SERVER_SESSION_TTL_SECONDS": "8",  # the sweep every 2 s
        "GUIDANCE_SERVER_MAX_COMPILE_MS": "120000",
        "GUIDANCE_SERVER_NEGATIVE_CACHE_TTL_SECONDS": "0",
        # Every program in the slow lane: forks are made on its threads, whose malloc arenas glibc
        # does not trim by itself when their blocks are freed.
        "GUIDANCE_SERVER_SLOW_MASK_MS": "0.001",
    }
    s = start(env=env)
    try:
        with httpx.Client(base_url=s.url, timeout=120) as http:
            deadline = time.monotonic() + 120
            while http.get("/stats").json()["compile_workers"]["warming"] and time.monotonic() < deadline:
                time.sleep(0.2)
        yield s
    finally:
        _, err = stop(s)
    assert "Traceback" not in err, err[-2000:]  # departed clients are not errors


def _stats(server: Server) -> dict[str, Any]:
    return httpx.get(f"{server.url}/stats", timeout=30).json()  # type: ignore[no-any-return]


def _until(check: Any, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def _post_and_hold(server: Server, body: dict[str, Any]) -> socket.socket:
    """Send ``POST /compile`` on a raw connection and leave it open, unread."""
    host, port = server.url.removeprefix("http://").split(":")
    data = json.dumps(body).encode()
    conn = socket.create_connection((host, int(port)))
    conn.sendall(
        b"POST /compile HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(data)}\r\n\r\n".encode()
        + data
    )
    return conn


def _answered(conn: socket.socket) -> bool:
    conn.setblocking(False)
    try:
        return bool(conn.recv(1, socket.MSG_PEEK))
    except BlockingIOError:
        return False


def test_compiles_whose_clients_have_gone_are_stopped(server: Server) -> None:
    before = _stats(server)
    gone = [_post_and_hold(server, {"template": heavy_template(tag=f"gone{i}_")}) for i in range(4)]
    _until(lambda: _stats(server)["compiles_pending"] >= 4)
    for conn in gone:  # the clients give up and close their connections
        conn.close()
    _until(lambda: _stats(server)["compiles_pending"] == 0)
    # Each flight ends once its worker, or the queue, has let it go.
    _until(lambda: _stats(server)["cache"]["compiles_cancelled"] - before["cache"]["compiles_cancelled"] >= 4)
    after = _stats(server)
    assert after["cache"]["compiles_cancelled"] - before["cache"]["compiles_cancelled"] == 4
    assert after["cache"]["compiles"] == before["cache"]["compiles"]  # none of them ran to its end
    assert after["compile_workers"]["stopped"] > before["compile_workers"]["stopped"]  # running ones were stopped


def test_a_cheap_compile_does_not_wait_behind_heavy_ones(server: Server) -> None:
    before = _stats(server)
    heavy = [_post_and_hold(server, {"template": heavy_template(tag=f"busy{i}_")}) for i in range(2)]
    try:
        # Both workers busy, past the heavy threshold (1 s), before the victim arrives.
        _until(lambda: _stats(server)["compiles_pending"] >= 2)
        time.sleep(2)
        victim = httpx.post(f"{server.url}/compile", json={"regex": "[0-9]{4}-victim"}, timeout=120)
        assert victim.status_code == 200 and victim.json()["cached"] is False
        assert not any(_answered(c) for c in heavy)  # both heavy compiles were still running
    finally:
        for conn in heavy:
            conn.close()
    _until(lambda: _stats(server)["cache"]["compiles_cancelled"] - before["cache"]["compiles_cancelled"] >= 2)


def test_forks_are_counted_and_their_memory_returned(server: Server) -> None:
    rng = random.Random(3)
    words = " ".join("".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 9))) for _ in range(120_000))
    with httpx.Client(base_url=server.url, timeout=120) as http:
        ids = http.post("/tokenize", json={"text": words[:1_000_000]}).json()["tokens"][:131_000]
        assert len(ids) == 131_000
        sid = http.post("/compile", json={"regex": "[a-z ]*", "open_session": True}).json()["session_id"]
        for i in range(0, len(ids), 4096):
            assert http.post(f"/sessions/{sid}/accept", json={"tokens": ids[i : i + 4096]}).status_code == 200
        time.sleep(2.5)
        base = server.rss_bytes()
        forks = [http.post(f"/sessions/{sid}/fork").json()["session_id"] for _ in range(30)]
        grown = server.rss_bytes() - base
        held = http.get("/stats").json()["sessions"]["tokens_held"]
        assert held == 31 * 131_000  # each fork's history is counted
        for f in forks:
            assert http.delete(f"/sessions/{f}").status_code == 204
        _until(lambda: server.rss_bytes() - base <= 24 * MIB, 20)
        returned = server.rss_bytes() - base
        print(
            f"30 forks of 131,000 tokens: +{grown / MIB:.1f} MiB ({grown / 30 / MIB:.2f} per fork), "
            f"{returned / MIB:.1f} MiB held after deleting them"
        )
        assert grown > 30 * 2 * MIB  # the forks did hold their copies (the measurement is real)
        assert http.delete(f"/sessions/{sid}").status_code == 204
