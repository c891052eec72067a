"""``python -m bench.step_cost [--quick]``: does a step cost more as a session grows?

Two measures, each through a real server on loopback:

* **partial variables**: 16 JSON sessions, each advanced to a short and then to a long prefix of
  a long document; at each length, ``POST /step`` advancing every session by one token with
  ``"variables": "partial"`` (and forced tokens), against the same step without variables.
* **a watched accept**: one session advanced to ``--watched-tokens`` tokens (100,000 by default)
  and watched by an SSE client (``GET /sessions/{id}/events``), against an unwatched session of
  the same length: the median time of a one-token ``POST /sessions/{id}/accept``.

A step whose work is done once per session and incrementally costs the same at every length.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from typing import Any

from bench.harness import Server

__all__ = ["main", "run", "table"]

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "items": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "n": {"type": "integer"}},
                "required": ["name", "n"],
                "additionalProperties": False,
            },
        }
    },
    "required": ["items"],
    "additionalProperties": False,
}
CHUNK = 4000  # tokens per accept, under max_tokens_per_accept


def _document_tokens(client: Any, at_least: int) -> list[int]:
    items = max(16, at_least // 9)
    text = json.dumps({"items": [{"name": f"item {i}", "n": i} for i in range(items)]}, separators=(",", ":"))
    tokens: list[int] = client.tokenize(text)
    return tokens


def _advance(client: Any, sid: str, tokens: list[int], start: int, end: int) -> None:
    for i in range(start, end, CHUNK):
        client.accept(sid, tokens[i : min(end, i + CHUNK)])


def _steps(
    client: Any, sids: list[str], tokens: list[int], at: int, n: int, variables: bool | str
) -> tuple[float, int]:
    times = []
    for k in range(n):
        items = [(sid, [tokens[at + k]]) for sid in sids]
        start = time.perf_counter()
        result = client.step(items, variables=variables)
        times.append(time.perf_counter() - start)
        assert all(s.status == "ok" for s in result.statuses), result.statuses
    return statistics.median(times) * 1000, at + n


def _accepts(client: Any, sid: str, tokens: list[int], at: int, n: int) -> tuple[float, int]:
    times = []
    for k in range(n):
        start = time.perf_counter()
        client.accept(sid, [tokens[at + k]])
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000, at + n


def run(quick: bool = False, watched_tokens: int | None = None) -> dict[str, Any]:
    """Step and accept times at a short and a long session length (ms, medians)."""
    from guidance_client import GuidanceClient

    sessions, short, long_ = 16, 500, (8_000 if quick else 30_000)
    watched = watched_tokens or (20_000 if quick else 100_000)
    steps = 5 if quick else 10
    out: dict[str, Any] = {"sessions": sessions, "short_tokens": short, "long_tokens": long_, "watched_tokens": watched}
    with Server() as server:
        client = GuidanceClient(server.url, timeout=600)
        tokens = _document_tokens(client, max(long_, watched) + 200)
        info = client.compile(json_schema=SCHEMA)
        sids = [client.create_session(info.program_id) for _ in range(sessions)]
        for sid in sids:
            _advance(client, sid, tokens, 0, short)
        at = short
        for length, label in ((short, "short"), (long_, "long")):
            if length > at:
                for sid in sids:
                    _advance(client, sid, tokens, at, length)
                at = length
            _, at = _steps(client, sids, tokens, at, 3, False)  # warm: the first masks of new states
            plain, at = _steps(client, sids, tokens, at, steps, False)
            partial, at = _steps(client, sids, tokens, at, steps, "partial")
            out[f"step_plain_{label}_ms"] = round(plain, 3)
            out[f"step_partial_{label}_ms"] = round(partial, 3)
        for sid in sids:
            client.delete(sid)

        quiet, watched_sid = client.create_session(info.program_id), client.create_session(info.program_id)
        _advance(client, quiet, tokens, 0, watched)
        _advance(client, watched_sid, tokens, 0, watched)
        events = [0]
        ready = threading.Event()

        def watch() -> None:
            watcher = GuidanceClient(server.url, timeout=600)
            for _ in watcher.watch(watched_sid):
                events[0] += 1
                ready.set()

        threading.Thread(target=watch, name="bench-watcher", daemon=True).start()
        ready.wait(60)
        n = 20 if quick else 50
        unwatched_ms, _ = _accepts(client, quiet, tokens, watched, n)
        watched_ms, _ = _accepts(client, watched_sid, tokens, watched, n)
        out["accept_unwatched_ms"] = round(unwatched_ms, 3)
        out["accept_watched_ms"] = round(watched_ms, 3)
        out["watch_events"] = events[0]
        client.delete(quiet)
        client.delete(watched_sid)
    out["partial_long_vs_short"] = round(out["step_partial_long_ms"] / out["step_partial_short_ms"], 3)
    out["watched_vs_unwatched"] = round(out["accept_watched_ms"] / out["accept_unwatched_ms"], 3)
    return out


def table(result: dict[str, Any]) -> str:
    r = result
    return "\n".join(
        [
            f"/step of {r['sessions']} JSON sessions, one token each (median ms):",
            f"  at {r['short_tokens']} tokens: plain {r['step_plain_short_ms']}"
            f", variables=partial {r['step_partial_short_ms']}",
            f"  at {r['long_tokens']} tokens: plain {r['step_plain_long_ms']}"
            f", variables=partial {r['step_partial_long_ms']}"
            f"  (partial long/short {r['partial_long_vs_short']})",
            f"one-token accept at {r['watched_tokens']} tokens (median ms): unwatched {r['accept_unwatched_ms']}, "
            f"watched {r['accept_watched_ms']} ({r['watched_vs_unwatched']}x; {r['watch_events']} events seen)",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.step_cost", description=__doc__.splitlines()[0] if __doc__ else None
    )
    p.add_argument("--quick", action="store_true", help="shorter sessions, fewer steps")
    p.add_argument("--watched-tokens", type=int, default=None, help="length of the watched session")
    args = p.parse_args(argv)
    result = run(quick=args.quick, watched_tokens=args.watched_tokens)
    print(table(result))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
