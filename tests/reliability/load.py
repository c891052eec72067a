"""Bounded load and soak runs against a real server on loopback, from a second process.

    .venv/bin/python -m tests.reliability.load load --sessions 64 --seconds 30      # starts a server
    .venv/bin/python -m tests.reliability.load load --url http://127.0.0.1:8000      # or uses one
    .venv/bin/python -m tests.reliability.load soak --cycles 2000

``load``: ``--sessions`` concurrent virtual workers, each opening a session (a template or a JSON
schema, alternately), then accept one token + read the mask, step after step, until EOS; then it
closes the session and opens the next. Every served mask is compared with the mask ``core``
computes in this process for the same tokens (wrong masks are counted, not tolerated). Tokens are
drawn at random from the reference mask, so every session writes a different text.
Reports requests/s, p50/p99 latency, 5xx count, wrong masks, and ``/metrics`` series before and
after.

``soak``: a fixed number of cycles of create, accept x20, mask, delete (``--concurrency`` at a
time); reports the server's RSS drift after warm-up, open file descriptors, threads and active
sessions before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np

from core import GuidanceBackend, GuidanceState, Tokenizer, load_default_tokenizer
from tests.server import Server, running

TEMPLATE = "Name: {{gen 'name' regex='[A-Z][a-z]+'}}\nAge: {{gen 'age' regex='[0-9]{1,3}'}}"
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "age": {"type": "integer", "minimum": 0, "maximum": 130},
        "active": {"type": "boolean"},
    },
    "required": ["name", "age", "active"],
    "additionalProperties": False,
}
SPECS: list[dict[str, Any]] = [{"template": TEMPLATE}, {"json_schema": SCHEMA}]
SOAK_SPEC: dict[str, Any] = {"regex": "[a-z ]{1,400}"}


def metric_series(text: str) -> int:
    """Number of sample lines (series) in a Prometheus exposition."""
    return sum(1 for line in text.splitlines() if line and not line.startswith("#"))


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q)) if values else 0.0


class Reference:
    """In-process masks from ``core`` for the same programs, to check every served mask."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.backend = GuidanceBackend(tokenizer)
        self.programs = [
            self.backend.compile_template(TEMPLATE),
            self.backend.compile_json_schema(SCHEMA),
        ]
        self.row = self.backend.allocate_bitmask(1)

    def state(self, which: int) -> GuidanceState:
        return self.programs[which].create_state()

    def mask(self, state: GuidanceState) -> bytes:
        self.row[:] = 0
        state.fill_bitmask(self.row, 0)
        return self.row.tobytes()


def _pick(mask: bytes, vocab: int, eos: int, rng: np.random.Generator, step: int) -> int:
    bits = np.unpackbits(np.frombuffer(mask, dtype=np.uint8), bitorder="little")[:vocab]
    allowed = np.flatnonzero(bits)
    if eos in allowed and (allowed.size == 1 or step > 30 or rng.random() < 0.5):
        return eos
    others = allowed[allowed != eos]
    # Prefer short tokens late in a free field so that texts end.
    return int(others[rng.integers(others.size)])


async def run_load(
    url: str, sessions: int = 64, seconds: float = 20.0, max_requests: int = 1_000_000, seed: int = 0
) -> dict[str, Any]:
    """``sessions`` concurrent workers for ``seconds`` (or ``max_requests`` requests)."""
    tok = load_default_tokenizer()
    ref = Reference(tok)
    eos, vocab = tok.eos_token_id, tok.vocab_size
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    wrong: list[str] = []
    counts = {"requests": 0, "sessions": 0, "texts": 0}
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=sessions, max_keepalive_connections=sessions)

    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as http:
        series_before = metric_series((await http.get("/metrics")).text)

        async def call(method: str, path: str, **kw: Any) -> httpx.Response:
            start = time.perf_counter()
            resp = await http.request(method, path, **kw)
            latencies.append(time.perf_counter() - start)
            statuses[resp.status_code] = statuses.get(resp.status_code, 0) + 1
            counts["requests"] += 1
            return resp

        async def worker(k: int) -> None:
            rng = np.random.default_rng(seed * 1000 + k)
            n = 0
            while time.monotonic() < deadline and counts["requests"] < max_requests:
                which = (k + n) % len(SPECS)
                n += 1
                resp = await call("POST", "/sessions", json=SPECS[which])
                if resp.status_code != 201:
                    continue
                sid = resp.json()["session_id"]
                counts["sessions"] += 1
                state = ref.state(which)
                step = 0
                while time.monotonic() < deadline and counts["requests"] < max_requests:
                    resp = await call("GET", f"/sessions/{sid}/mask")
                    if resp.status_code != 200:
                        break
                    expected = ref.mask(state)
                    if resp.content != expected:
                        wrong.append(f"session {sid} after {len(state.tokens)} tokens")
                        break
                    token = _pick(expected, vocab, eos, rng, step)
                    step += 1
                    resp = await call("POST", f"/sessions/{sid}/accept", json={"tokens": [token]})
                    if resp.status_code != 200 or not state.accept_tokens([token]):
                        wrong.append(f"session {sid}: accept of {token} answered {resp.status_code}")
                        break
                    if state.is_terminated():
                        counts["texts"] += 1
                        break
                await call("DELETE", f"/sessions/{sid}")

        start = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(sessions)))
        elapsed = time.perf_counter() - start
        series_after = metric_series((await http.get("/metrics")).text)
        active = (await http.get("/stats")).json()["sessions"]["active"]

    return {
        "sessions_concurrent": sessions,
        "seconds": round(elapsed, 2),
        "requests": counts["requests"],
        "requests_per_second": round(counts["requests"] / elapsed, 1),
        "p50_ms": round(_percentile(latencies, 50) * 1000, 2),
        "p99_ms": round(_percentile(latencies, 99) * 1000, 2),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "server_errors": sum(v for k, v in statuses.items() if k >= 500),
        "wrong_masks": len(wrong),
        "wrong_examples": wrong[:5],
        "sessions_opened": counts["sessions"],
        "texts_completed": counts["texts"],
        "metric_series_before": series_before,
        "metric_series_after": series_after,
        "sessions_active_after": active,
    }


def _server_figures(server: Server | None, http: httpx.Client) -> dict[str, int]:
    out = {"sessions_active": int(http.get("/stats").json()["sessions"]["active"])}
    if server is not None:
        out.update(rss_bytes=server.rss_bytes(), open_fds=server.open_fds(), threads=server.threads())
    return out


async def _soak_cycles(url: str, cycles: int, concurrency: int) -> dict[str, int]:
    tok = load_default_tokenizer()
    token = tok.encode(" ab")
    assert len(token) == 1
    statuses: dict[int, int] = {}
    queue: Iterator[int] = iter(range(cycles))
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:

        async def note(resp: httpx.Response) -> httpx.Response:
            statuses[resp.status_code] = statuses.get(resp.status_code, 0) + 1
            return resp

        async def worker() -> None:
            for _ in queue:
                sid = (await note(await http.post("/sessions", json=SOAK_SPEC))).json()["session_id"]
                for _ in range(20):
                    await note(await http.post(f"/sessions/{sid}/accept", json={"tokens": token}))
                await note(await http.get(f"/sessions/{sid}/mask"))
                await note(await http.delete(f"/sessions/{sid}"))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return statuses


def run_soak(url: str, server: Server | None, cycles: int = 2000, concurrency: int = 8) -> dict[str, Any]:
    """Warm up (10% of the cycles), take a baseline, run the cycles, compare."""
    with httpx.Client(base_url=url, timeout=30) as http:
        asyncio.run(_soak_cycles(url, max(cycles // 10, 20), concurrency))
        before = _server_figures(server, http)
        start = time.perf_counter()
        statuses = asyncio.run(_soak_cycles(url, cycles, concurrency))
        elapsed = time.perf_counter() - start
        after = _server_figures(server, http)
    out: dict[str, Any] = {
        "cycles": cycles,
        "seconds": round(elapsed, 2),
        "cycles_per_second": round(cycles / elapsed, 1),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "before": before,
        "after": after,
    }
    if server is not None:
        out["rss_drift_ratio"] = round(after["rss_bytes"] / before["rss_bytes"] - 1, 4)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.reliability.load", description=__doc__.split("\n\n")[0])
    p.add_argument("mode", choices=("load", "soak"))
    p.add_argument("--url", help="an already running server (default: start one on loopback)")
    p.add_argument("--sessions", type=int, default=64, help="load: concurrent sessions (default 64)")
    p.add_argument("--seconds", type=float, default=30.0, help="load: duration (default 30)")
    p.add_argument("--cycles", type=int, default=2000, help="soak: cycles (default 2000)")
    p.add_argument("--concurrency", type=int, default=8, help="soak: cycles at a time (default 8)")
    args = p.parse_args(argv)

    def run(url: str, server: Server | None) -> dict[str, Any]:
        if args.mode == "load":
            return asyncio.run(run_load(url, args.sessions, args.seconds))
        return run_soak(url, server, args.cycles, args.concurrency)

    if args.url:
        result = run(args.url, None)
    else:
        with running() as server:
            result = run(server.url, server)
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    ok = result.get("server_errors", 0) == 0 and result.get("wrong_masks", 0) == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
