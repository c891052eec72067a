"""Memory per open session and server start-up time.

* **Start-up**: ``python -m service`` spawned, until ``/readyz`` answers 200 (interpreter, imports,
  the embedded tekken tokenizer, the app); median of several starts, with the RSS once ready.
* **Sessions**: on a fresh server, compile the JSON case, open one session and fetch a mask (the
  program warm), then read the server's RSS (``VmRSS`` of ``/proc/<pid>/status``). Phase A opens
  N sessions on that program (10,000; 2,000 with ``--quick``), reads RSS, advances every session by
  the first 40 tokens of its own text (``/step``, 256 sessions per request; texts all different)
  and reads RSS. Phase B does the same again with N more sessions on the same texts. Growth in
  phase B / N is the cost of one more open session, fresh and mid-walk; phase A's figures also
  hold the growth of the program's shared llguidance caches (new lexer states) and of the
  allocator's pools, which stay when sessions close.

``python -m bench.memory [--quick]``.
"""

from __future__ import annotations

import gc
import http.client
import json
import time
from typing import Any

from bench.cases import CASES, texts
from bench.harness import Server, median
from core import load_default_tokenizer
from guidance_client import GrammarBatch, GuidanceClient, ProgramInfo, RemoteGrammar

WALK_TOKENS = 40
STEP_BATCH = 256


def _rss_settled(server: Server) -> int:
    time.sleep(0.3)  # let the event loop finish the last answers' bookkeeping
    return server.rss()


def _request(conn: http.client.HTTPConnection, method: str, path: str, body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"content-type": "application/json"} if data is not None else {}
    conn.request(method, path, body=data, headers=headers)
    resp = conn.getresponse()
    payload = resp.read()
    if resp.status >= 300:
        raise RuntimeError(f"{method} {path}: {resp.status} {payload[:200]!r}")
    if resp.getheader("content-type", "").startswith("application/json"):
        return json.loads(payload)
    return payload


def startup(starts: int) -> dict[str, Any]:
    seconds: list[float] = []
    rss: list[int] = []
    for _ in range(starts):
        with Server() as srv:
            seconds.append(srv.startup_seconds)
            rss.append(srv.rss())
    return {
        "starts": starts,
        "startup_s": round(median(seconds), 3),
        "startup_max_s": round(max(seconds), 3),
        "rss_ready_mb": round(median(rss) / 2**20, 1),
    }


def _open(conn: http.client.HTTPConnection, program_id: str, n: int) -> list[str]:
    return [_request(conn, "POST", "/sessions", {"program_id": program_id})["session_id"] for _ in range(n)]


def _walk(
    client: GuidanceClient, program: ProgramInfo, body: dict[str, Any], ids: list[str], walks: list[list[int]]
) -> None:
    for lo in range(0, len(ids), STEP_BATCH):
        chunk = ids[lo : lo + STEP_BATCH]
        batch = GrammarBatch(client, [RemoteGrammar(client, body, program, sid) for sid in chunk])
        statuses = batch.step(walks[lo : lo + STEP_BATCH])
        if any(s.status != "ok" for s in statuses):
            raise AssertionError("a walk was refused")


def sessions(n: int) -> dict[str, Any]:
    """Two phases of ``n`` sessions each: A (caches and buffers grow), then B (the marginal cost).

    Phase A opens ``n`` sessions and walks them; phase B opens ``n`` more and walks them over the
    same texts as A. Figures from B are the cost of one more session once the program's shared
    llguidance caches and the allocator's pools have grown; figures from A include that growth.
    """
    case = next(c for c in CASES if c.name == "json")
    tok = load_default_tokenizer()
    walks = [tok.encode(t)[:WALK_TOKENS] for t in texts(case, n, seed=42)]
    with Server(["service", "--log-level", "warning", "--max-sessions", str(2 * n + 100)]) as srv:
        conn = http.client.HTTPConnection("127.0.0.1", srv.port)
        info = _request(conn, "POST", "/compile", case.body)
        program = ProgramInfo(info["program_id"], True, info["vocab_size"], info["mask_words"], [], 0.0)
        first = _request(conn, "POST", "/sessions", {"program_id": program.program_id})["session_id"]
        _request(conn, "GET", f"/sessions/{first}/mask")
        gc.collect()
        rss0 = _rss_settled(srv)
        with GuidanceClient(srv.url) as client:
            start = time.perf_counter()
            ids_a = _open(conn, program.program_id, n)
            open_s = time.perf_counter() - start
            rss_a_open = _rss_settled(srv)
            _walk(client, program, case.body, ids_a, walks)
            rss_a = _rss_settled(srv)
            ids_b = _open(conn, program.program_id, n)
            rss_b_open = _rss_settled(srv)
            _walk(client, program, case.body, ids_b, walks)
            rss_b = _rss_settled(srv)
        for sid in ids_a + ids_b:
            conn.request("DELETE", f"/sessions/{sid}")
            conn.getresponse().read()
        rss_closed = _rss_settled(srv)
        conn.close()
    mb = 2**20
    return {
        "sessions": n,
        "program": case.name,
        "walk_tokens": WALK_TOKENS,
        "rss_before_mb": round(rss0 / mb, 1),
        "rss_a_open_mb": round(rss_a_open / mb, 1),
        "rss_a_walked_mb": round(rss_a / mb, 1),
        "rss_b_open_mb": round(rss_b_open / mb, 1),
        "rss_b_walked_mb": round(rss_b / mb, 1),
        "rss_closed_mb": round(rss_closed / mb, 1),
        "bytes_per_session": round((rss_b_open - rss_a) / n),
        "bytes_per_session_walked": round((rss_b - rss_a) / n),
        "first_phase_bytes_per_session": round((rss_a_open - rss0) / n),
        "first_phase_bytes_per_session_walked": round((rss_a - rss0) / n),
        "open_per_s": round(n / open_s),
    }


def run(quick: bool = False) -> dict[str, Any]:
    """Start-up time and RSS per session; ``bytes_per_session`` is for fresh sessions."""
    up = startup(2 if quick else 5)
    mem = sessions(2000 if quick else 10000)
    return {
        "startup": up,
        "sessions": mem,
        "bytes_per_session": mem["bytes_per_session"],
        "bytes_per_session_walked": mem["bytes_per_session_walked"],
        "startup_s": up["startup_s"],
    }


def table(result: dict[str, Any]) -> str:
    up, mem = result["startup"], result["sessions"]
    lines = [
        (
            f"start-up to /readyz 200: median {up['startup_s']} s, max {up['startup_max_s']} s over {up['starts']}"
            f" starts; RSS when ready {up['rss_ready_mb']} MB"
        ),
        (
            f"{mem['sessions']} + {mem['sessions']} sessions on one program ({mem['program']}): RSS MB"
            f" {mem['rss_before_mb']} before; A: {mem['rss_a_open_mb']} open, {mem['rss_a_walked_mb']} walked;"
            f" B: {mem['rss_b_open_mb']} open, {mem['rss_b_walked_mb']} walked; {mem['rss_closed_mb']} all closed"
        ),
        (
            f"bytes_per_session (phase B): {mem['bytes_per_session']} fresh, {mem['bytes_per_session_walked']} after"
            f" {mem['walk_tokens']} tokens;  phase A (with cache growth): {mem['first_phase_bytes_per_session']} fresh,"
            f" {mem['first_phase_bytes_per_session_walked']} walked   (opened at {mem['open_per_s']}/s)"
        ),
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    print(table(run(quick="--quick" in sys.argv)))
