"""The whole run over both corpora, with the rewrites and without, and its command line."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import llguidance

from bench.conformance.corpora import (
    DEFAULT_DATA,
    MASKBENCH_DIR,
    REPO,
    SUITE_DIR,
    maskbench_files,
    raw_maskbench,
    rewrite_kinds,
    run_maskbench,
    run_test_suite,
    summarise_groups,
)
from bench.conformance.instances import Runner
from bench.conformance.report import (
    BASELINES,
    distribution,
    headline,
    markdown_report,
    print_distribution,
    print_suite,
    print_summary,
)
from core import load_default_tokenizer

DEFAULT_OUT = REPO / "bench" / "results" / "conformance.json"
EXPECTED = REPO / "bench" / "results" / "conformance_expected.json"


def run(data: Path, quick: bool = False, rewrite: bool = True, out: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the conformance suite; returns the results document (also what ``--out`` writes)."""
    suite_root = data / SUITE_DIR
    if not suite_root.is_dir() or not (data / MASKBENCH_DIR).is_dir():
        raise FileNotFoundError(f"corpora not found under {data} (expected {SUITE_DIR} and {MASKBENCH_DIR})")
    started = time.perf_counter()
    tokenizer = load_default_tokenizer()
    main = Runner(tokenizer, rewrite=rewrite)
    suite = run_test_suite(main, data, quick)
    t_suite = time.perf_counter() - started
    files = maskbench_files(data, quick)
    mask_start = len(main.timings.mask_us)
    compile_start = len(main.timings.compile_ms)
    bench = run_maskbench(main, files)
    t_bench = time.perf_counter() - started - t_suite
    result: dict[str, Any] = {
        "meta": {
            "llguidance": getattr(llguidance, "__version__", "unknown"),
            "tokenizer": tokenizer.name,
            "vocab_size": tokenizer.vocab_size,
            "data": str(data),
            "quick": quick,
            "rewrite": rewrite,
            "python": sys.version.split()[0],
        },
        "baselines": BASELINES,
        "test_suite": suite,
        "maskbench": bench,
        "timings": {
            "maskbench_compile_ms": distribution(main.timings.compile_ms[compile_start:]),
            "maskbench_mask_us": distribution(main.timings.mask_us[mask_start:]),
            "mask_stricter_than_accept": main.mask_stricter,
            "mask_stricter_where_nothing_forced": main.mask_stricter_unforced,
            "mask_looser_than_accept": main.mask_looser,
            "engine_errors_mid_walk": main.engine_errors,
        },
    }
    raw_suite = raw_bench = None
    if rewrite:
        raw = Runner(tokenizer, rewrite=False, time_masks=False)
        raw_suite = run_test_suite(raw, data, quick)
        raw_bench = raw_maskbench(raw, files, bench)
        result["without_rewrite"] = {"test_suite": raw_suite, "maskbench": raw_bench}
        result["rewrites_applied"] = {"maskbench_schemas_by_rewrite": rewrite_kinds(files)}
        result["timings"]["mask_stricter_than_accept"] += raw.mask_stricter
        result["timings"]["mask_stricter_where_nothing_forced"] += raw.mask_stricter_unforced
        result["timings"]["mask_looser_than_accept"] += raw.mask_looser
        result["timings"]["engine_errors_mid_walk"] += raw.engine_errors
    elapsed = time.perf_counter() - started
    result["meta"]["seconds"] = {"test_suite": round(t_suite, 1), "maskbench": round(t_bench, 1),
                                 "total": round(elapsed, 1)}  # fmt: skip

    # -- the report
    print_suite(suite, raw_suite, out)
    s = suite["summary"]
    rows = {}
    if raw_suite is not None:
        raw_summary = raw_suite["summary"]
        rows["raw llguidance"] = {**headline(raw_summary, "groups"), "order_only": raw_summary["order_only"]}
    rows["with rewrites" if rewrite else "raw llguidance"] = {**headline(s, "groups"), "order_only": s["order_only"]}
    rows["baseline (notes)"] = BASELINES["test_suite"]
    out(
        f"\nTest Suite: {s['groups']} groups, {s['compiled']} compiled, {s['refused_unsatisfiable']} unsatisfiable "
        f"(refused, correct), {s['unsupported_remote']} remote, {s['compile_errors']} compile errors"
    )
    print_summary("Test Suite (percent of groups / of instances in compiled groups)", rows, out)
    if suite["optional"]:
        o = summarise_groups([g for f in suite["optional"].values() for g in f["groups_detail"]])
        out(
            f"optional/ (not in the headline): {o['compiled']}/{o['groups']} groups compiled, valid "
            f"{o['valid_accepted']}/{o['valid']}, invalid {o['invalid_rejected']}/{o['invalid']}"
        )
    b = bench["summary"]
    rows = {}
    if raw_bench is not None:
        rb = raw_bench["summary"]
        rows["raw llguidance"] = {**headline(rb, "schemas"), "order_only": rb["order_only"]}
    rows["with rewrites" if rewrite else "raw llguidance"] = {**headline(b, "schemas"), "order_only": b["order_only"]}
    rows["baseline (notes)"] = BASELINES["maskbench"]
    out(
        f"\nMaskBench sample: {b['schemas']} schemas, {b['compiled']} compiled; instances in compiled schemas: "
        f"{b['valid_accepted']}/{b['valid']} valid accepted, {b['invalid_rejected']}/{b['invalid']} invalid refused"
    )
    print_summary("MaskBench (percent of schemas / of instances in compiled schemas)", rows, out)
    print_distribution("compile time", result["timings"]["maskbench_compile_ms"], "ms", out)
    print_distribution("mask time", result["timings"]["maskbench_mask_us"], "us", out)
    t = result["timings"]
    out(
        f"tokens refused by the mask but accepted: {t['mask_stricter_than_accept']}; "
        f"allowed by the mask but refused: {t['mask_looser_than_accept']}; instances the engine stopped on "
        f"mid-walk: {t['engine_errors_mid_walk']}"
    )
    out(f"elapsed: {elapsed:.1f} s (Test Suite {t_suite:.1f} s, MaskBench {t_bench:.1f} s)")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.conformance",
        description="JSON-schema conformance of the engine (Test Suite 2020-12, MaskBench sample).",
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="corpora root (default: ../shared/data)")
    parser.add_argument("--quick", action="store_true", help="the fixed CI subset")
    parser.add_argument("--no-rewrite", action="store_true", help="raw llguidance only (no schema rewrites)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    parser.add_argument("--markdown", type=Path, help="also write the tables of docs/conformance.md here")
    parser.add_argument(
        "--write-expected",
        action="store_true",
        help=f"with --quick: record the figures the CI smoke test holds to ({EXPECTED.relative_to(REPO)})",
    )
    args = parser.parse_args(argv)
    if args.write_expected and (not args.quick or args.no_rewrite):
        parser.error("--write-expected records a --quick run with the rewrites")
    try:
        result = run(args.data.resolve(), quick=args.quick, rewrite=not args.no_rewrite)
    except FileNotFoundError as e:
        print(e, file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"results: {args.out}")
    if args.markdown:
        args.markdown.write_text(markdown_report(result), encoding="utf-8")
        print(f"tables: {args.markdown}")
    if args.write_expected:
        EXPECTED.write_text(json.dumps(expected_figures(result), indent=1) + "\n", encoding="utf-8")
        print(f"expected figures: {EXPECTED}")
    return 0


def expected_figures(result: Mapping[str, Any]) -> dict[str, Any]:
    """The figures of a ``--quick`` run the CI smoke test must keep (at least these; 100% refused)."""
    figures: dict[str, Any] = {
        "about": "python -m bench.conformance --quick with the rewrites; tests/core/test_conformance_smoke.py "
        "fails when compiled or valid_accepted drop below these, or when any invalid instance is accepted. "
        "Regenerate with: python -m bench.conformance --quick --write-expected",
        "llguidance": result["meta"]["llguidance"],
    }
    for corpus, total in (("test_suite", "groups"), ("maskbench", "schemas")):
        s = result[corpus]["summary"]
        figures[corpus] = {
            total: s[total],
            "compiled": s["compiled"],
            "valid": s["valid"],
            "valid_accepted": s["valid_accepted"],
            "invalid": s["invalid"],
            "invalid_rejected": s["invalid_rejected"],
        }
    return figures
