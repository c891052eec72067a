"""Service: one ``POST /step`` for a batch over loopback vs raw llguidance doing the same work.

For each case (the JSON schema and the template of :mod:`bench.cases`) and batch size (1, 16, 64,
256), every session walks a different valid text, one token per session per step, from a random
position of its text (the prefix is accepted off the clock), so that a batch holds sessions at
mixed positions as a running server does. Each step is measured four ways, alternately and back
to back, on identical work:

* **server**: ``GrammarBatch.step`` (the client's stdlib keep-alive path), asking for the work the
  raw side does, accepts and masks (``forced_tokens: false``): the request body, the server's
  accepts and masks, the binary answer (batch x 16 KiB of masks for tekken) and its copy into the
  worker's bitmask, end to end over loopback;
* **server, default step**: the same with the server also computing every session's forced
  tokens, as a step does unless asked not to (one more llguidance call per session);
* **raw**: in this process, a plain Python loop over deep copies of one root ``LLMatcher``:
  ``consume_token`` then ``unsafe_compute_mask_ptr`` into a ``[batch, words]`` array;
* **handler work** (diagnostic): in this process, what the ``/step`` handler does per session
  through ``core`` (``GuidanceState.advance``, the status fields ``is_terminated`` and
  ``is_accepting``; then the batched fill), without HTTP.

The paired ratio server/raw per step (median over all steps) is the headline figure
at batch 64 ("for the same work"; target: no slower than raw, i.e. <= 1.0); the default
step's ratio is reported beside it. Every served mask is also compared
with the raw one (a correctness guard, outside the timing). The first step of a walk is the mask
before any token (the prompt's step). ``python -m bench.service [--quick]``.
"""

from __future__ import annotations

import functools
import random
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import llguidance
import numpy as np

from bench.cases import CASES, Case, texts
from bench.harness import Server, median, open_grammars, percentile, slow_lane_calls
from bench.inprocess import spec_of
from core import GuidanceBackend
from core.session import GuidanceState
from guidance_client import GrammarBatch, GuidanceClient

BATCHES = (1, 16, 64, 256)
SPARSE_IDS = 256  # a row allowing at most this many tokens fits in 1 KiB as int32 ids (vs 16 KiB)
STEP_CASES = ("json", "template")


def _popcounts(rows: np.ndarray) -> list[int]:
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        return [int(x) for x in np.bitwise_count(rows.view(np.uint32)).sum(axis=1)]
    return [int(x) for x in np.unpackbits(rows.view(np.uint8), axis=1).sum(axis=1)]


def _raw_step(matchers: list[llguidance.LLMatcher], tokens: list[list[int]], base: int, row_bytes: int) -> None:
    for i, m in enumerate(matchers):
        for t in tokens[i]:
            if not m.consume_token(t):
                raise AssertionError("walk rejected by llguidance")
        m.unsafe_compute_mask_ptr(base + i * row_bytes, row_bytes)


_RAW_ROOTS: dict[str, llguidance.LLMatcher] = {}


def _raw_root(tok: Any, grammar: str) -> llguidance.LLMatcher:
    """The raw side's root matcher of a grammar, one per process: its caches stay warm from one
    batch size to the next, as the server's program does (a fresh root per batch would time the
    raw side's first visits against a warm server)."""
    root = _RAW_ROOTS.get(grammar)
    if root is None:
        root = _RAW_ROOTS[grammar] = llguidance.LLMatcher(tok.ll, grammar, log_level=0)
    return root


def _handler_step(
    backend: GuidanceBackend, states: list[GuidanceState], tokens: list[list[int]], bitmask: np.ndarray
) -> None:
    statuses = []
    for st, toks in zip(states, tokens):
        st.advance(toks)
        statuses.append((st.is_terminated(), st.is_accepting()))
    backend.fill_next_token_bitmasks(states, bitmask)


def run_batch(
    client: GuidanceClient,
    url: str,
    backend: GuidanceBackend,
    case: Case,
    batch: int,
    rounds: int,
    max_steps: int,
    variants: dict[str, GuidanceClient] | None = None,
) -> dict[str, Any]:
    """One case at one batch size; ``variants`` are more servers timed in the same alternation."""
    tok = backend.tokenizer
    program = backend.compile(spec_of(case.body))[0]
    root = _raw_root(tok, program.grammar)
    words = program.mask_words
    row_bytes = words * 4
    servers = {"server": client, **(variants or {})}
    served = {name: np.zeros((batch, words), dtype=np.int32) for name in servers}
    raw = np.zeros((batch, words), dtype=np.int32)
    local = np.zeros((batch, words), dtype=np.int32)
    base = int(raw.ctypes.data)
    all_texts = texts(case, batch * rounds, seed=batch)
    took_s: dict[str, list[float]] = {name: [] for name in [*servers, "raw", "handler"]}
    ratios: dict[str, list[float]] = {name: [] for name in servers}
    mismatched_steps = 0
    allowed: list[int] = []  # tokens allowed per served row: how sparse the 16 KiB rows are
    slow_before = slow_lane_calls(url)
    for r in range(rounds):
        seqs = [tok.encode(t) for t in all_texts[r * batch : (r + 1) * batch]]
        # at most half the shortest text, so the starting positions spread over the texts
        n_steps = min(min(len(s) for s in seqs) // 2, max_steps)
        rng = random.Random(f"{case.name}:{batch}:{r}")
        offsets = [rng.randint(0, len(s) - n_steps) for s in seqs]
        groups = {
            name: GrammarBatch(c, open_grammars(c, case, batch)[1], forced_tokens=False) for name, c in servers.items()
        }
        matchers = [root.deep_copy() for _ in range(batch)]
        states = [program.create_state() for _ in range(batch)]
        # off the clock: every session to its starting position (and its first mask)
        prefixes = [s[:o] for s, o in zip(seqs, offsets)]
        for name, group in groups.items():
            group.step(prefixes, served[name])
        _raw_step(matchers, prefixes, base, row_bytes)
        _handler_step(backend, states, prefixes, local)
        sides = [*servers, "raw", "handler"]
        for step in range(n_steps):
            tokens = [[s[o + step]] for s, o in zip(seqs, offsets)]
            took: dict[str, float] = {}
            for side in sides if step % 2 == 0 else reversed(sides):
                t0 = time.perf_counter()
                if side == "raw":
                    _raw_step(matchers, tokens, base, row_bytes)
                elif side == "handler":
                    _handler_step(backend, states, tokens, local)
                else:
                    statuses = groups[side].step(tokens, served[side])
                    if any(st.status != "ok" for st in statuses):
                        raise AssertionError(f"{side} refused a walk: {[x for x in statuses if x.status != 'ok'][:1]}")
                took[side] = time.perf_counter() - t0
            if any(not np.array_equal(served[name], raw) for name in servers):
                mismatched_steps += 1
            allowed.extend(_popcounts(served["server"]))
            for side, seconds in took.items():
                took_s[side].append(seconds)
            for name in servers:
                ratios[name].append(took[name] / took["raw"])
        for group in groups.values():
            for g in group.grammars:
                g.close()
    slow_after = slow_lane_calls(url)
    server_s, raw_s, handler_s = took_s["server"], took_s["raw"], took_s["handler"]
    row: dict[str, Any] = {
        "case": case.name,
        "batch": batch,
        "steps": len(server_s),
        "server_ms": round(median(server_s) * 1e3, 3),
        "server_p90_ms": round(percentile(server_s, 0.9) * 1e3, 3),
        "raw_ms": round(median(raw_s) * 1e3, 3),
        "raw_p90_ms": round(percentile(raw_s, 0.9) * 1e3, 3),
        "handler_ms": round(median(handler_s) * 1e3, 3),
        "ratio": round(statistics.median(ratios["server"]), 3),
        "ratio_of_totals": round(sum(server_s) / sum(raw_s), 3),
        "handler_vs_raw": round(sum(handler_s) / sum(raw_s), 3),
        "mask_mb_per_step": round(batch * row_bytes / 1e6, 3),
        "allowed_median": int(statistics.median(allowed)),
        f"rows_at_most_{SPARSE_IDS}_allowed": round(sum(a <= SPARSE_IDS for a in allowed) / len(allowed), 3),
        "masks_equal": mismatched_steps == 0,
        "mismatched_steps": mismatched_steps,
        # /step requests whose work the server ran in its slow lane (thread pool), if it has one
        "slow_lane_requests": None if slow_before is None or slow_after is None else slow_after - slow_before,
    }
    for name in variants or {}:
        row[f"{name}_ms"] = round(median(took_s[name]) * 1e3, 3)
        row[f"{name}_ratio"] = round(statistics.median(ratios[name]), 3)
        row[f"{name}_vs_server"] = round(statistics.median([a / b for a, b in zip(took_s[name], server_s)]), 3)
    return row


def _case(name: str) -> Case:
    return next(c for c in CASES if c.name == name)


# -- diagnostics ---------------------------------------------------------------------------------


class _PinnedStepClient(GuidanceClient):
    """A client whose batched steps always send ``pinned`` options, whatever the batch asks."""

    def __init__(self, base_url: str, **pinned: Any) -> None:
        super().__init__(base_url)
        self.pinned = pinned

    def step(self, items: Any, **options: Any) -> Any:
        return super().step(items, **{**options, **self.pinned})


DEFAULT_STEP = "default_step"  # the variant column of the /step rows: forced tokens computed too

VARIANTS: dict[str, dict[str, str]] = {
    # fills always in a loop, never in parallel threads
    "mask_threads=1": {"GUIDANCE_SERVER_MASK_THREADS": "1"},
}
CLIENT_VARIANTS = ("mask_encoding=blocks",)


def _variant_rows(backend: GuidanceBackend, rounds: int, max_steps: int) -> list[dict[str, Any]]:
    """Batch 64 on the default server, on each variant server and with block-sparse masks, alternately."""
    rows: list[dict[str, Any]] = []
    servers = [Server(), *(Server(env=env) for env in VARIANTS.values())]
    clients: list[GuidanceClient] = []
    try:
        for srv in servers:
            srv.start()
            clients.append(GuidanceClient(srv.url))
        default = clients[0]
        variants: dict[str, GuidanceClient] = dict(zip(VARIANTS, clients[1:]))
        variants["mask_encoding=blocks"] = _PinnedStepClient(servers[0].url, mask_encoding="blocks")
        clients.append(variants["mask_encoding=blocks"])
        for case_name in STEP_CASES:
            run_batch(default, servers[0].url, backend, _case(case_name), 16, 1, max_steps, variants)  # warm
            rows.append(run_batch(default, servers[0].url, backend, _case(case_name), 64, rounds, max_steps, variants))
    finally:
        for c in clients:
            c.close()
        for srv in servers:
            srv.stop()
    return rows


def _parallel_fill(backend: GuidanceBackend, steps: int) -> list[dict[str, Any]]:
    """Fill 64 masks in one process: a loop vs two threads, over one root matcher or two (matcher shards).

    Copies of one root share llguidance's caches, which llguidance locks: two threads over them
    wait on each other. Two roots (what ``GuidanceBackend(num_threads=2)`` keeps per program)
    have caches of their own. ``LLExecutor(num_threads=2)`` is llguidance's own parallel fill.
    """
    tok = backend.tokenizer
    ways = ("loop", "threads_one_root", "threads_two_roots", "llexecutor_2")
    executor = llguidance.LLExecutor(num_threads=2)
    pool = ThreadPoolExecutor(1)
    rows: list[dict[str, Any]] = []
    for case_name in STEP_CASES:
        program = backend.compile(spec_of(_case(case_name).body))[0]
        seqs = [tok.encode(t) for t in texts(_case(case_name), 64, seed=77)]
        n = min(steps, min(len(s) for s in seqs) // 2)
        rng = random.Random(case_name)
        offsets = [rng.randint(0, len(s) - n) for s in seqs]
        words = program.mask_words
        row_bytes = words * 4
        sets = {}
        for way in ways:
            roots = [llguidance.LLMatcher(tok.ll, program.grammar, log_level=0) for _ in range(2)]
            two = way == "threads_two_roots"
            ms = [roots[i % 2 if two else 0].deep_copy() for i in range(64)]
            for m, s, o in zip(ms, seqs, offsets):
                if o and not m.consume_tokens(s[:o]):
                    raise AssertionError("walk rejected")
            sets[way] = (ms, np.zeros((64, words), dtype=np.int32))

        def part(ms: list[llguidance.LLMatcher], ptr: int, idx: range) -> None:
            for i in idx:
                ms[i].unsafe_compute_mask_ptr(ptr + i * row_bytes, row_bytes)

        took: dict[str, list[float]] = {way: [] for way in ways}
        for step in range(n):
            for way in ways if step % 2 == 0 else tuple(reversed(ways)):
                ms, bm = sets[way]
                for m, s, o in zip(ms, seqs, offsets):
                    m.consume_token(s[o + step])
                ptr = int(bm.ctypes.data)
                t0 = time.perf_counter()
                if way == "loop":
                    part(ms, ptr, range(64))
                elif way == "llexecutor_2":
                    executor.unsafe_compute_mask_ptr([(m, i) for i, m in enumerate(ms)], ptr, row_bytes, 64)
                else:  # even rows here, odd rows (the second root's, with two) in the other thread
                    f = pool.submit(part, ms, ptr, range(1, 64, 2))
                    part(ms, ptr, range(0, 64, 2))
                    f.result()
                took[way].append(time.perf_counter() - t0)
            if any(not np.array_equal(sets["loop"][1], sets[w][1]) for w in ways):
                raise AssertionError("a parallel fill differs from the loop")
        loop_total = sum(took["loop"])
        rows.append(
            {
                "case": case_name,
                "steps": n,
                **{f"{k}_ms": round(median(v) * 1e3, 3) for k, v in took.items()},
                **{f"{k}_total_vs_loop": round(sum(v) / loop_total, 3) for k, v in took.items() if k != "loop"},
            }
        )
    pool.shutdown()
    return rows


def _http_floor(requests: int) -> list[dict[str, Any]]:
    """Bare Starlette answering a 64-session ``/step`` body: HTTP fixed bytes, a fresh buffer, WebSocket.

    At two answer sizes: 64 dense tekken masks (1 MB) and one (16 KiB). The WebSocket rows use
    the ``websockets`` package (installed with ``uvicorn[standard]``), binary frames, no
    compression, on one persistent connection; skipped if the package is missing.
    """
    import tempfile
    from pathlib import Path

    from guidance_client.transports import HotPath  # the client's own connection class: the same kind of connection

    connect: Any
    try:
        from websockets.sync.client import connect
    except ImportError:  # pragma: no cover - websockets comes with uvicorn[standard]
        connect = None
    body = (
        b'{"sessions":['
        + b",".join(b'{"session_id":"%032d","tokens":[1234]}' % i for i in range(64))
        + b'],"variables":false}'
    )
    rows: list[dict[str, Any]] = []
    headers = {"content-type": "application/json", "accept": "application/vnd.guidance.step"}
    for size in (64 * 4096 * 4 + 6000, 4096 * 4 + 100):
        with tempfile.TemporaryDirectory(prefix="bench-floor-") as tmp:
            mask = Path(tmp) / "mask"
            mask.write_bytes(bytes(16384))
            common = ["bench.floor", "--mask-file", str(mask), "--step-bytes", str(size)]
            servers = {"fixed bytes": Server(common), "fresh buffer": Server([*common, "--fresh"])}
            sockets: list[Any] = []
            try:
                for srv in servers.values():
                    srv.start()
                calls: dict[str, Any] = {}
                for name, srv in servers.items():
                    path = HotPath(srv.url, 30.0)
                    calls[name] = functools.partial(path.request, "POST", "/step", body, headers)
                if connect is not None:
                    ws = connect(f"ws://127.0.0.1:{servers['fixed bytes'].port}/step", max_size=None, compression=None)
                    sockets.append(ws)

                    def over_ws(ws: Any = ws) -> tuple[int, dict[str, str], bytes]:
                        ws.send(body)
                        return 200, {}, ws.recv()

                    calls["websocket"] = over_ws
                took: dict[str, list[float]] = {name: [] for name in calls}
                for i in range(requests):
                    for name in calls if i % 2 == 0 else reversed(list(calls)):
                        t0 = time.perf_counter()
                        status, _, data = calls[name]()
                        took[name].append(time.perf_counter() - t0)
                        if status != 200 or len(data) != size:
                            raise AssertionError("floor answered wrong")
            finally:
                for ws in sockets:
                    ws.close()
                for srv in servers.values():
                    srv.stop()
        for name, v in took.items():
            rows.append(
                {
                    "floor": name,
                    "bytes": size,
                    "ms": round(median(v) * 1e3, 3),
                    "p90_ms": round(percentile(v, 0.9) * 1e3, 3),
                }
            )
    return rows


def diagnostics(backend: GuidanceBackend, quick: bool) -> dict[str, Any]:
    rounds, max_steps = (1, 12) if quick else (3, 40)
    return {
        "variants": _variant_rows(backend, rounds, max_steps),
        "parallel_fill": _parallel_fill(backend, 12 if quick else 40),
        "http_floor_64": _http_floor(100 if quick else 400),
    }


def run(quick: bool = False, server: Server | None = None, diagnose: bool | None = None) -> dict[str, Any]:
    """``/step`` vs raw llguidance per batch size; ``step64_vs_inprocess`` is the JSON case at 64."""
    rounds, max_steps = (2, 12) if quick else (5, 40)
    backend = GuidanceBackend()
    own = server is None
    srv = server or Server().start()
    rows: list[dict[str, Any]] = []
    try:
        with GuidanceClient(srv.url) as client, _PinnedStepClient(srv.url, forced_tokens=True) as default_step:
            variants: dict[str, GuidanceClient] = {DEFAULT_STEP: default_step}
            for name in STEP_CASES:
                case = _case(name)
                # Warm the server's program (lexer, first visits) and ours alike, off the clock.
                run_batch(client, srv.url, backend, case, 16, 1, max_steps, variants)
                for batch in BATCHES:
                    rows.append(run_batch(client, srv.url, backend, case, batch, rounds, max_steps, variants))
    finally:
        if own:
            srv.stop()
    at64 = {r["case"]: r for r in rows if r["batch"] == 64}
    result: dict[str, Any] = {
        "rows": rows,
        "step64_vs_inprocess": at64["json"]["ratio"],
        "step64_vs_inprocess_template": at64["template"]["ratio"],
        "step64_vs_inprocess_default_step": at64["json"][f"{DEFAULT_STEP}_ratio"],
        "step64_vs_inprocess_default_step_template": at64["template"][f"{DEFAULT_STEP}_ratio"],
        "masks_equal": all(r["masks_equal"] for r in rows),
    }
    if diagnose if diagnose is not None else not quick:
        result["diagnostics"] = diagnostics(backend, quick)
    return result


def table(result: dict[str, Any]) -> str:
    lines = [
        (
            "case      batch  steps  server ms (p90)     raw ms (p90)     handler ms  server/raw  handler/raw"
            "  default step ms  default/raw  MB/step  masks equal  totals ratio  slow lane  allowed med  rows<=256"
        )
    ]
    for r in result["rows"]:
        lines.append(
            f"{r['case']:<9} {r['batch']:>5}  {r['steps']:>5}  {r['server_ms']:>8} ({r['server_p90_ms']:>6})"
            f"  {r['raw_ms']:>7} ({r['raw_p90_ms']:>6})  {r['handler_ms']:>10}"
            f"  {r['ratio']:>10}  {r['handler_vs_raw']:>11}"
            f"  {r[DEFAULT_STEP + '_ms']:>15}  {r[DEFAULT_STEP + '_ratio']:>11}"
            f"  {r['mask_mb_per_step']:>7}"
            f"  {'yes' if r['masks_equal'] else 'NO (' + str(r['mismatched_steps']) + ')':>11}"
            f"  {r['ratio_of_totals']:>12}"
            f"  {r['slow_lane_requests'] if r['slow_lane_requests'] is not None else '-':>9}"
            f"  {r['allowed_median']:>11}  {r[f'rows_at_most_{SPARSE_IDS}_allowed']:>9}"
        )
    lines.append(
        f"step64_vs_inprocess (json): {result['step64_vs_inprocess']}"
        f"   template: {result['step64_vs_inprocess_template']}"
        "   (target <= 1.0; the step asks for accepts and masks, the raw side's work)"
    )
    lines.append(
        f"the default step (forced tokens too) at 64: json {result['step64_vs_inprocess_default_step']}"
        f"   template {result['step64_vs_inprocess_default_step_template']}"
    )
    diag = result.get("diagnostics")
    if diag:
        lines.append("diagnostics, batch 64:")
        for r in diag["variants"]:
            line = f"  servers side by side   {r['case']:<9} default {r['server_ms']} ms (server/raw {r['ratio']})"
            for name in [*VARIANTS, *CLIENT_VARIANTS]:
                line += (
                    f";  {name} {r[name + '_ms']} ms"
                    f" (server/raw {r[name + '_ratio']}, vs default {r[name + '_vs_server']})"
                )
            lines.append(line + f";  raw {r['raw_ms']} ms;  masks equal: {'yes' if r['masks_equal'] else 'NO'}")
        for r in diag["parallel_fill"]:
            lines.append(
                f"  fill 64 in process     {r['case']:<9} loop {r['loop_ms']} ms;  2 threads, one root"
                f" {r['threads_one_root_ms']} ms ({r['threads_one_root_total_vs_loop']}x);  2 threads, two roots"
                f" {r['threads_two_roots_ms']} ms ({r['threads_two_roots_total_vs_loop']}x);  LLExecutor(2)"
                f" {r['llexecutor_2_ms']} ms ({r['llexecutor_2_total_vs_loop']}x)"
            )
        for r in diag["http_floor_64"]:
            lines.append(
                f"  bare Starlette /step   {r['floor']:<12} {r['bytes']:>7} bytes: {r['ms']} ms (p90 {r['p90_ms']})"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    print(table(run(quick="--quick" in sys.argv, diagnose=True if "--diagnostics" in sys.argv else None)))
