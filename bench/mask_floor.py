"""Single-session ``GET /sessions/{id}/mask`` vs a bare Starlette endpoint answering the same bytes.

One session of the JSON case, advanced to the middle of a text, is asked for its mask through
``GuidanceClient.mask`` (the client's stdlib keep-alive path). The same client class, pointed at
a bare Starlette app under uvicorn with the same settings (:mod:`bench.floor`), fetches the same
path from two floors:

* **fixed**: the floor answers the same mask bytes, precomputed (pure HTTP cost);
* **compute**: the floor holds an ``LLMatcher`` of the same grammar at the same position and
  computes the mask at each request, the plainest way.

Requests alternate service, fixed, compute, one at a time on keep-alive connections; the ratios
are of medians (target: service / fixed floor within 1.2x). A second session of the
template case (inside its free-text slot) gives a second row. ``python -m bench.mask_floor [--quick]``.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.cases import CASES, texts
from bench.harness import Server, median, percentile, slow_lane_calls
from bench.inprocess import spec_of
from core import GuidanceBackend
from guidance_client import GuidanceClient

MASK_CASES = (("json", 0.5), ("template", 0.6))


def _measure(
    backend: GuidanceBackend, service: Server, case_name: str, where: float, requests: int, tmp: Path
) -> dict[str, Any]:
    case = next(c for c in CASES if c.name == case_name)
    tok = backend.tokenizer
    program = backend.compile(spec_of(case.body))[0]
    seq = tok.encode(texts(case, 1, seed=7)[0])
    prefix = seq[: int(len(seq) * where)]
    with GuidanceClient(service.url) as client:
        info = client.compile_spec(case.body)
        sid = client.create_session(info.program_id)
        client.accept(sid, prefix)
        served = client.mask(sid).copy()
    mask_file, grammar_file, tokens_file = (
        tmp / f"{case_name}.mask",
        tmp / f"{case_name}.lark",
        tmp / f"{case_name}.json",
    )
    mask_file.write_bytes(served.astype("<i4").tobytes())
    grammar_file.write_text(program.grammar, encoding="utf-8")
    tokens_file.write_text(json.dumps(prefix), encoding="utf-8")
    common = ["bench.floor", "--mask-file", str(mask_file), "--vocab-size", str(program.vocab_size)]
    fixed = Server(common)
    compute = Server([*common, "--grammar-file", str(grammar_file), "--tokens-file", str(tokens_file)])
    try:
        fixed.start()
        compute.start()
        clients = {
            "service": GuidanceClient(service.url),
            "fixed": GuidanceClient(fixed.url),
            "compute": GuidanceClient(compute.url),
        }
        out = np.zeros((1, program.mask_words), dtype=np.int32)
        for name, c in clients.items():  # warm every connection, check every answer
            for _ in range(50):
                c.mask(sid, out, 0)
            if not np.array_equal(out[0], served):
                raise AssertionError(f"{name} answered another mask than the service")
        took: dict[str, list[float]] = {name: [] for name in clients}
        order = list(clients)
        slow_before = slow_lane_calls(service.url)
        for i in range(requests):
            for name in order if i % 2 == 0 else reversed(order):
                c = clients[name]
                t0 = time.perf_counter()
                c.mask(sid, out, 0)
                took[name].append(time.perf_counter() - t0)
        slow_after = slow_lane_calls(service.url)
        for c in clients.values():
            c.close()
    finally:
        fixed.stop()
        compute.stop()
    med = {name: median(v) for name, v in took.items()}
    return {
        "case": case_name,
        "position": len(prefix),
        "allowed_tokens": int(np.unpackbits(served.view(np.uint8)).sum()),
        "requests": requests,
        "service_us": round(med["service"] * 1e6, 1),
        "service_p90_us": round(percentile(took["service"], 0.9) * 1e6, 1),
        "fixed_floor_us": round(med["fixed"] * 1e6, 1),
        "compute_floor_us": round(med["compute"] * 1e6, 1),
        "vs_fixed_floor": round(med["service"] / med["fixed"], 3),
        "vs_compute_floor": round(med["service"] / med["compute"], 3),
        # masks the server computed in its slow lane (a thread pool) during the timing, if it has one
        "slow_lane_requests": None if slow_before is None or slow_after is None else slow_after - slow_before,
    }


def run(quick: bool = False, server: Server | None = None) -> dict[str, Any]:
    """Service mask vs the two floors; ``mask_vs_floor`` is the JSON row against the fixed floor."""
    requests = 600 if quick else 4000
    backend = GuidanceBackend()
    own = server is None
    srv = server or Server().start()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-floor-") as tmp:
            rows = [_measure(backend, srv, name, where, requests, Path(tmp)) for name, where in MASK_CASES]
    finally:
        if own:
            srv.stop()
    first = rows[0]
    return {
        "rows": rows,
        "mask_vs_floor": first["vs_fixed_floor"],
        "mask_vs_floor_compute": first["vs_compute_floor"],
    }


def table(result: dict[str, Any]) -> str:
    lines = [
        "case      pos  allowed  service us (p90)   fixed floor us  compute floor us  vs fixed  vs compute  slow lane"
    ]
    for r in result["rows"]:
        lines.append(
            f"{r['case']:<9} {r['position']:>3}  {r['allowed_tokens']:>7}  {r['service_us']:>10}"
            f" ({r['service_p90_us']:>6})"
            f"  {r['fixed_floor_us']:>14}  {r['compute_floor_us']:>16}"
            f"  {r['vs_fixed_floor']:>8}  {r['vs_compute_floor']:>10}"
            f"  {r['slow_lane_requests'] if r['slow_lane_requests'] is not None else '-':>9}"
        )
    lines.append(f"mask_vs_floor (json, fixed bytes): {result['mask_vs_floor']}   (target <= 1.2)")
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    print(table(run(quick="--quick" in sys.argv)))
