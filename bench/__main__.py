"""``python -m bench [--quick] [--only NAME,...] [--out PATH]``: every benchmark, one report.

Runs, in order, :mod:`bench.inprocess`, :mod:`bench.service`, :mod:`bench.mask_floor`,
:mod:`bench.decode_loop`, :mod:`bench.memory`, :mod:`bench.compile` and :mod:`bench.attacks` (each also runs alone as
``python -m bench.<name>``), prints a table per benchmark and writes ``bench/results/latest.json``:
the machine, the headline ratios (with their targets) at the top level, and every benchmark's rows.
``--quick`` takes about a minute; the full run a few minutes (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from bench import attacks, decode_loop, inprocess, mask_floor, memory, service
from bench import compile as compile_bench
from bench.harness import ROOT, machine

BENCHMARKS = {
    "inprocess": inprocess,
    "service": service,
    "mask_floor": mask_floor,
    "decode_loop": decode_loop,
    "memory": memory,
    "compile": compile_bench,
    "attacks": attacks,
}

# SPEC section 9: each headline figure, where it comes from, and its target.
HEADLINES: dict[str, tuple[str, str, float]] = {
    "core_vs_raw": ("inprocess", "<=", 1.15),
    "step64_vs_inprocess": ("service", "<=", 1.0),
    "mask_vs_floor": ("mask_floor", "<=", 1.2),
    "decode_loop_vs_unconstrained": ("decode_loop", ">=", 0.95),
    "bytes_per_session": ("memory", "", 0.0),
    "compile_vs_raw": ("compile", "<=", 1.3),
    "attack_healthz_p99_ms": ("attacks", "<=", 50.0),
}


def _met(value: float | None, op: str, target: float) -> bool | None:
    if value is None or not op:
        return None
    return value <= target if op == "<=" else value >= target


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="about a minute: fewer rounds and steps, no diagnostics")
    p.add_argument("--only", help="comma-separated subset of: " + ", ".join(BENCHMARKS))
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "latest.json"), help="JSON report path")
    args = p.parse_args(argv)
    names = [n.strip() for n in args.only.split(",")] if args.only else list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        p.error(f"unknown benchmark(s): {', '.join(unknown)}")

    report: dict[str, Any] = {"quick": args.quick, "machine": machine()}
    details: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    for name in names:
        module = BENCHMARKS[name]
        t0 = time.perf_counter()
        print(f"== {name} ==", flush=True)
        result = module.run(quick=args.quick)
        seconds[name] = round(time.perf_counter() - t0, 1)
        details[name] = result
        print(module.table(result))
        print(f"({seconds[name]} s)\n", flush=True)

    targets: dict[str, Any] = {}
    for key, (source, op, target) in HEADLINES.items():
        if source in details:
            value = details[source].get(key)
            report[key] = value
            if op:
                targets[key] = {"value": value, "target": f"{op} {target}", "met": _met(value, op, target)}
    if "memory" in details:
        report["bytes_per_session_walked"] = details["memory"].get("bytes_per_session_walked")
        report["startup_s"] = details["memory"].get("startup_s")
    if "service" in details:
        for key in (
            "step64_vs_inprocess_template",
            "step64_vs_inprocess_default_step",
            "step64_vs_inprocess_default_step_template",
        ):
            report[key] = details["service"].get(key)
        report["masks_equal"] = details["service"].get("masks_equal")
    if "compile" in details:
        for key in ("compile_vs_raw_p50", "compile_vs_raw_p99", "compile_http_added_ms"):
            report[key] = details["compile"].get(key)
    if "mask_floor" in details:
        report["mask_vs_floor_compute"] = details["mask_floor"].get("mask_vs_floor_compute")
    report["targets"] = targets
    report["seconds"] = {**seconds, "total": round(time.perf_counter() - started, 1)}
    report["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    report["benchmarks"] = details

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print("== summary ==")
    for key, t in targets.items():
        verdict = {True: "met", False: "MISSED", None: "-"}[t["met"]]
        print(f"{key:<30} {t['value']!s:>8}   target {t['target']:<7} {verdict}")
    if "bytes_per_session" in report:
        print(
            f"{'bytes_per_session':<30} {report['bytes_per_session']!s:>8}   (after 40 tokens: "
            f"{report.get('bytes_per_session_walked')})"
        )
    print(
        f"total {report['seconds']['total']} s; load average {report['machine']['loadavg_1_5_15'][0]} at start,"
        f" {report['loadavg_at_end'][0]} at end ({report['machine']['nproc']} CPUs); report written to {out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
