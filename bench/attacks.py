"""Other clients' ``/healthz`` latency while one client attacks the event loop.

    python -m bench.attacks [--quick]

One server (the defaults) and, in turn, for ``seconds`` each:

* ``alone``: nothing else runs;
* ``late_lexeme``: an attacker process compiles ``[0-9](ab|ab){40000}`` (cheap to compile, cheap
  at its first mask, about a second or more per mask after one digit), opens a session, accepts a
  digit and asks for masks in a loop (each answered 413 ``engine-limit`` past ``max_mask_ms``, or
  served from the slow lane); a fresh program every few rounds;
* ``heavy_step``: an attacker process sends ``/step`` batches of ``sessions`` x 4,096 tokens
  (340 sessions: 8 MiB of answer) on fresh sessions, back to back.

Meanwhile this process (another client) times ``GET /healthz`` every 5 ms. Reported per phase:
its p50/p99 (target: p99 < 50 ms under either attack) and the attacker's answers by status.
Ratios from one run only (the machine is shared).
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import time
from collections import Counter
from multiprocessing.sharedctypes import Synchronized
from typing import Any

from bench.harness import Server, machine, percentile

TARGET_P99_MS = 50.0


def _post(conn: http.client.HTTPConnection, path: str, body: dict[str, Any]) -> tuple[int, bytes]:
    conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    resp = conn.getresponse()
    return resp.status, resp.read()


def _late_lexeme(port: int, stop: Synchronized[int], statuses: Any) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    digit = json.loads(_post(conn, "/tokenize", {"text": "7"})[1])["tokens"]
    n = 40000
    while not stop.value:
        n += 1  # a fresh program: nothing of the last one is known
        status, raw = _post(conn, "/sessions", {"regex": f"[0-9](ab|ab){{{n}}}"})
        statuses[status] = statuses.get(status, 0) + 1
        if status != 201:
            continue
        sid = json.loads(raw)["session_id"]
        status, _ = _post(conn, f"/sessions/{sid}/accept", {"tokens": digit})
        statuses[status] = statuses.get(status, 0) + 1
        for _ in range(3):
            if stop.value:
                break
            conn.request("GET", f"/sessions/{sid}/mask")
            resp = conn.getresponse()
            resp.read()
            statuses[resp.status] = statuses.get(resp.status, 0) + 1
        conn.request("DELETE", f"/sessions/{sid}")
        conn.getresponse().read()


def _heavy_step(port: int, stop: Synchronized[int], statuses: Any, sessions: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    (a,) = json.loads(_post(conn, "/tokenize", {"text": "a"})[1])["tokens"]
    program = json.loads(_post(conn, "/compile", {"regex": "a*"})[1])["program_id"]
    while not stop.value:
        ids = [json.loads(_post(conn, "/sessions", {"program_id": program})[1])["session_id"] for _ in range(sessions)]
        status, _ = _post(conn, "/step", {"sessions": [{"session_id": s, "tokens": [a] * 4096} for s in ids]})
        statuses[status] = statuses.get(status, 0) + 1
        for s in ids:
            conn.request("DELETE", f"/sessions/{s}")
            conn.getresponse().read()


def _healthz(port: int, seconds: float) -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    times: list[float] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        start = time.perf_counter()
        conn.request("GET", "/healthz")
        conn.getresponse().read()
        times.append(time.perf_counter() - start)
        time.sleep(0.005)
    return times


def run(quick: bool = False) -> dict[str, Any]:
    """Every phase, one server; rows of ``/healthz`` p50/p99 and the attacker's answers."""
    seconds = 8.0 if quick else 20.0
    sessions = 340
    rows: list[dict[str, Any]] = []
    ctx = multiprocessing.get_context("spawn")
    with Server() as server:
        for phase in ("alone", "late_lexeme", "heavy_step"):
            stop: Synchronized[int] = ctx.Value("i", 0)
            manager = ctx.Manager()
            statuses = manager.dict()
            attacker = None
            if phase == "late_lexeme":
                attacker = ctx.Process(target=_late_lexeme, args=(server.port, stop, statuses))
            elif phase == "heavy_step":
                attacker = ctx.Process(target=_heavy_step, args=(server.port, stop, statuses, sessions))
            if attacker is not None:
                attacker.start()
                time.sleep(2.0)  # the attack under way
            times = _healthz(server.port, seconds)
            stop.value = 1
            if attacker is not None:
                attacker.join(timeout=120)
            answers = dict(Counter({int(k): v for k, v in statuses.items()}))
            manager.shutdown()
            rows.append(
                {
                    "phase": phase,
                    "healthz_p50_ms": round(percentile(times, 0.5) * 1e3, 2),
                    "healthz_p99_ms": round(percentile(times, 0.99) * 1e3, 2),
                    "requests": len(times),
                    "attacker_answers": answers,
                }
            )
    worst = max(r["healthz_p99_ms"] for r in rows if r["phase"] != "alone")
    return {"rows": rows, "attack_healthz_p99_ms": worst, "target_p99_ms": TARGET_P99_MS, "machine": machine()}


def table(result: dict[str, Any]) -> str:
    """The phases as a plain-text table."""
    lines = [f"{'phase':<12} {'p50 ms':>8} {'p99 ms':>8} {'requests':>9}  attacker answers"]
    for r in result["rows"]:
        lines.append(
            f"{r['phase']:<12} {r['healthz_p50_ms']:>8} {r['healthz_p99_ms']:>8} {r['requests']:>9}"
            f"  {r['attacker_answers']}"
        )
    worst, target = result["attack_healthz_p99_ms"], result["target_p99_ms"]
    lines.append(f"worst p99 under attack: {worst} ms (target < {target} ms)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    description = __doc__.splitlines()[0] if __doc__ else None
    parser = argparse.ArgumentParser(prog="python -m bench.attacks", description=description)
    parser.add_argument("--quick", action="store_true", help="8 s per phase instead of 20")
    args = parser.parse_args(argv)
    print(table(run(quick=args.quick)))


if __name__ == "__main__":
    main()
