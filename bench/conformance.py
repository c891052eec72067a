"""JSON-schema conformance of the engine on two corpora, with and without the exact rewrites.

    python -m bench.conformance [--data ../shared/data] [--quick] [--no-rewrite]
                                [--out bench/results/conformance.json]

Corpora (read from ``--data``, never copied into the repository):

* JSON Schema Test Suite, draft 2020-12: the 46 keyword files of ``tests/draft2020-12/``; the
  ``optional/`` files are run too but reported separately (they test optional behaviour:
  format assertion, big numbers, ECMA-262 regexes) and are not part of the headline figures.
* MaskBench sample: ``jsonschemabench/maskbench/data/*.json`` (schema plus valid and invalid
  instances).

For every schema: compile with the embedded tekken tokenizer (``core.GuidanceBackend()``); for every
instance, serialise it compactly (``json.dumps(x, separators=(",", ":"), ensure_ascii=False)``),
encode it with the backend's tokenizer and feed it token by token, each token checked against the
mask first and then accepted, then EOS. A valid instance must be accepted with EOS allowed at the
end; an invalid one must be refused somewhere (a token outside the mask, or EOS not allowed).

Property order: llguidance fixes object keys to the order of the schema's ``properties`` (then
``required``), so each instance is also tried with its keys reordered to that order
(:func:`schema_order`). A valid instance counts as accepted when either form is accepted;
one accepted only after reordering is counted separately as an order-only failure. An invalid
instance counts as refused only when both forms are refused.

The default run evaluates every schema with the rewrites of ``core/jsonschema/`` (what the
engine does) and then again without them (raw llguidance, the hook replaced by the identity) for
the schemas the rewrites change, giving the two columns side by side; ``--no-rewrite`` runs the
raw engine only. ``--quick`` runs a fixed subset for CI (see :data:`QUICK_FILES`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import llguidance
import numpy as np

import core.jsonschema.prepare
from core import CompiledGuidanceProgram, GuidanceBackend, GuidanceError, Tokenizer, load_default_tokenizer
from core.jsonschema import RewriteReport, rewrite_schema, rewrite_schema_report

from bench.key_order import SchemaOrder

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"
DEFAULT_OUT = REPO / "bench" / "results" / "conformance.json"
EXPECTED = REPO / "bench" / "results" / "conformance_expected.json"
SUITE_DIR = Path("json-schema-test-suite") / "tests" / "draft2020-12"
MASKBENCH_DIR = Path("jsonschemabench") / "maskbench" / "data"

#: Test Suite keyword files in the ``--quick`` subset.
QUICK_FILES = (
    "additionalProperties", "allOf", "anyOf", "const", "dependentRequired", "dependentSchemas", "enum",
    "if-then-else", "items", "maxItems", "minLength", "not", "oneOf", "pattern", "properties", "propertyNames",
    "ref", "required", "type", "unevaluatedProperties", "uniqueItems",
)  # fmt: skip
#: ``--quick`` takes every QUICK_STRIDE-th MaskBench file (sorted by name).
QUICK_STRIDE = 25

#: Reference figures (raw llguidance, in-process, tekken) from ENGINE-NOTES.md.
BASELINES = {
    "maskbench": {"compiled": 83.4, "valid_accepted": 99.7, "invalid_rejected": 100.0},
    "test_suite": {"compiled": 83.1, "valid_accepted": 95.5, "invalid_rejected": 100.0},
}

REMOTE = "http://localhost:1234"
_MESSAGE = 240


def compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


# ---------------------------------------------------------------------------------------------
# running instances


@dataclass
class Timings:
    compile_ms: list[float] = field(default_factory=list)
    mask_us: list[float] = field(default_factory=list)


class Runner:
    """Compiles schemas and feeds instances through masks, collecting timings."""

    def __init__(self, tokenizer: Tokenizer, rewrite: bool, time_masks: bool = True) -> None:
        self.backend = GuidanceBackend(tokenizer, max_cache_size=8)
        self.tokenizer = tokenizer
        self.rewrite = rewrite
        self.timings = Timings()
        self.time_masks = time_masks
        self.mask_stricter = 0
        self.mask_stricter_unforced = 0  # of those, where no bytes were forced (unexplained)
        self.mask_looser = 0
        self.engine_errors = 0  # instances the engine stopped on mid-walk (an llguidance limit)
        self._bitmask = self.backend.allocate_bitmask(1)

    @contextlib.contextmanager
    def _mode(self) -> Iterator[None]:
        if self.rewrite:
            yield
            return
        # the hook is one name in core.jsonschema.prepare: swap it for the identity while compiling
        hook = getattr(core.jsonschema.prepare, "rewrite_schema_report")
        setattr(core.jsonschema.prepare, "rewrite_schema_report", _identity)
        try:
            yield
        finally:
            setattr(core.jsonschema.prepare, "rewrite_schema_report", hook)

    def compile(self, schema: Any) -> tuple[CompiledGuidanceProgram | None, str | None]:
        # Each schema compiled afresh, so that compile times are compile times, not cache hits.
        self.backend.clear_cache()
        start = time.perf_counter()
        try:
            with self._mode():
                program = self.backend.compile_json_schema(schema)
        except GuidanceError as e:
            return None, f"{type(e).__name__}: {e.detail[:_MESSAGE]}"
        self.timings.compile_ms.append((time.perf_counter() - start) * 1000)
        return program, None

    def accepts(self, program: CompiledGuidanceProgram, text: str) -> bool:
        """Token by token (mask, then accept), then EOS; True when every token is accepted.

        The decision is ``accept_token``'s. Each token is also looked up in the mask computed just
        before it: a token the mask refuses but ``accept_token`` takes is counted in
        ``mask_stricter`` (llguidance allows only the canonical token where the next bytes are
        forced); one the mask allows but ``accept_token`` refuses in ``mask_looser`` (a bug: a
        sampled token would be refused).

        An engine error mid-walk (llguidance runs out of a lexer budget: "too many expressions
        constructed") stops the session as a refusal would; it is counted in ``engine_errors`` and
        the instance is not accepted.
        """
        try:
            return self._walk(program, text)
        except (RuntimeError, GuidanceError):
            self.engine_errors += 1
            return False

    def _walk(self, program: CompiledGuidanceProgram, text: str) -> bool:
        tokens = self.tokenizer.encode(text) + [self.tokenizer.eos_token_id]
        state = program.create_state()
        bitmask = self._bitmask
        row = bitmask[0]
        masks = self.timings.mask_us
        for t in tokens:
            if self.time_masks:
                start = time.perf_counter()
                state.fill_bitmask(bitmask, 0)
                masks.append((time.perf_counter() - start) * 1e6)
            else:
                state.fill_bitmask(bitmask, 0)
            allowed = bool((int(row[t >> 5]) >> (t & 31)) & 1)
            forced = bool(state.forced_tokens()) if not allowed else False
            accepted = state.accept_token(t)
            if accepted and not allowed:
                self.mask_stricter += 1
                self.mask_stricter_unforced += not forced
            elif allowed and not accepted:
                self.mask_looser += 1
            if not accepted:
                return False
        return state.is_terminated()


def _identity(
    schema: Any, formats: str = "assert", *, limits: Any = None, keywords: Any = None
) -> tuple[Any, RewriteReport]:
    return schema, RewriteReport()


@dataclass
class InstanceResult:
    valid: bool
    ok: bool  # accepted when valid, refused when invalid
    order_only: bool = False  # valid, refused as given but accepted once reordered
    description: str = ""


def check_instances(
    runner: Runner, program: CompiledGuidanceProgram, schema: Any, tests: Sequence[Mapping[str, Any]]
) -> list[InstanceResult]:
    # the order llguidance imposes is the compiled schema's: after the rewrites when they are on
    compiled = rewrite_schema(schema) if runner.rewrite and isinstance(schema, dict) else schema
    order = SchemaOrder(compiled)
    out: list[InstanceResult] = []
    for test in tests:
        data, valid = test["data"], bool(test["valid"])
        given = compact(data)
        accepted = runner.accepts(program, given)
        reordered = compact(order.reorder(data)) if isinstance(data, (dict, list)) else given
        accepted_reordered = accepted if reordered == given else runner.accepts(program, reordered)
        if valid:
            ok = accepted or accepted_reordered
            out.append(InstanceResult(True, ok, ok and not accepted, str(test.get("description", ""))))
        else:
            ok = not accepted and not accepted_reordered
            out.append(InstanceResult(False, ok, False, str(test.get("description", ""))))
    return out


# ---------------------------------------------------------------------------------------------
# corpora


def _uses_remote(schema: Any) -> bool:
    return REMOTE in json.dumps(schema)


def _classify_error(error: str, tests: Sequence[Mapping[str, Any]], schema: Any) -> str:
    if "retrieving it failed" in error or (REMOTE in error) or (_uses_remote(schema) and "Resource" in error):
        return "unsupported-remote"
    if "nsatisfiable" in error and not any(t["valid"] for t in tests):
        return "refused-unsatisfiable"
    return "compile-error"


def run_suite_file(runner: Runner, path: Path, only: set[str] | None = None) -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = []
    for group in json.loads(path.read_text(encoding="utf-8")):
        if only is not None and group["description"] not in only:
            continue
        schema, tests = group["schema"], group["tests"]
        program, error = runner.compile(schema)
        entry: dict[str, Any] = {"group": group["description"], "tests": len(tests)}
        if program is None:
            assert error is not None
            entry["status"] = _classify_error(error, tests, schema)
            entry["error"] = error
            entry["valid"] = sum(1 for t in tests if t["valid"])
            entry["invalid"] = len(tests) - entry["valid"]
            groups.append(entry)
            continue
        errors_before = runner.engine_errors
        results = check_instances(runner, program, schema, tests)
        entry["status"] = "compiled"
        entry["engine_errors"] = runner.engine_errors - errors_before
        entry["valid"] = sum(r.valid for r in results)
        entry["invalid"] = sum(not r.valid for r in results)
        entry["valid_accepted"] = sum(r.valid and r.ok for r in results)
        entry["invalid_rejected"] = sum(not r.valid and r.ok for r in results)
        entry["order_only"] = sum(r.order_only for r in results)
        entry["failures"] = [
            ("valid refused: " if r.valid else "invalid accepted: ") + r.description for r in results if not r.ok
        ]
        groups.append(entry)
    return groups


def summarise_groups(groups: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    compiled = [g for g in groups if g["status"] == "compiled"]
    unsat = [g for g in groups if g["status"] == "refused-unsatisfiable"]
    remote = [g for g in groups if g["status"] == "unsupported-remote"]
    errors = [g for g in groups if g["status"] == "compile-error"]
    valid = sum(g["valid"] for g in compiled)
    invalid = sum(g["invalid"] for g in compiled)
    return {
        "groups": len(groups),
        "compiled": len(compiled),
        "refused_unsatisfiable": len(unsat),
        "unsupported_remote": len(remote),
        "compile_errors": len(errors),
        "valid": valid,
        "valid_accepted": sum(g["valid_accepted"] for g in compiled),
        "invalid": invalid,
        "invalid_rejected": sum(g["invalid_rejected"] for g in compiled),
        "order_only": sum(g["order_only"] for g in compiled),
        "valid_in_all_groups": sum(g["valid"] for g in groups),
    }


def classify_file(groups: Sequence[Mapping[str, Any]]) -> str:
    """supported / partial / unsupported / unsupported-remote, from the groups' outcomes."""
    good = {"refused-unsatisfiable"}
    statuses = {g["status"] for g in groups}
    if statuses <= {"unsupported-remote"}:
        return "unsupported-remote"
    if "compiled" not in statuses:
        return "unsupported"
    clean = all(
        g["status"] in good or (g["status"] == "compiled" and not g["failures"])
        for g in groups
        if g["status"] != "unsupported-remote"
    )
    return "supported" if clean else "partial"


def run_test_suite(runner: Runner, data: Path, quick: bool) -> dict[str, Any]:
    root = data / SUITE_DIR
    files = sorted(root.glob("*.json"))
    if quick:
        files = [f for f in files if f.stem in QUICK_FILES]
    per_file: dict[str, Any] = {}
    for path in files:
        groups = run_suite_file(runner, path)
        per_file[path.stem] = {"class": classify_file(groups), **summarise_groups(groups), "groups_detail": groups}
    optional: dict[str, Any] = {}
    if not quick:
        for path in sorted((root / "optional").rglob("*.json")):
            groups = run_suite_file(runner, path)
            name = str(path.relative_to(root / "optional").with_suffix(""))
            optional[name] = {"class": classify_file(groups), **summarise_groups(groups), "groups_detail": groups}
    all_groups = [g for f in per_file.values() for g in f["groups_detail"]]
    return {"summary": summarise_groups(all_groups), "files": per_file, "optional": optional}


def maskbench_files(data: Path, quick: bool) -> list[Path]:
    files = sorted((data / MASKBENCH_DIR).glob("*.json"))
    return files[::QUICK_STRIDE] if quick else files


def run_maskbench(runner: Runner, files: Sequence[Path]) -> dict[str, Any]:
    entries: list[dict[str, Any]] = []
    for path in files:
        doc = json.loads(path.read_text(encoding="utf-8"))
        schema, tests = doc["schema"], doc.get("tests", [])
        program, error = runner.compile(schema)
        masks_before = len(runner.timings.mask_us)
        entry: dict[str, Any] = {"file": path.name, "valid": sum(1 for t in tests if t["valid"])}
        entry["invalid"] = len(tests) - entry["valid"]
        if program is None:
            entry["status"] = "compile-error"
            entry["error"] = error
            entries.append(entry)
            continue
        errors_before = runner.engine_errors
        results = check_instances(runner, program, schema, tests)
        entry["status"] = "compiled"
        entry["engine_errors"] = runner.engine_errors - errors_before
        entry["valid_accepted"] = sum(r.valid and r.ok for r in results)
        entry["invalid_rejected"] = sum(not r.valid and r.ok for r in results)
        entry["order_only"] = sum(r.order_only for r in results)
        entry["failures"] = [i for i, r in enumerate(results) if not r.ok]
        if runner.time_masks:
            masks = runner.timings.mask_us[masks_before:]
            entry["compile_ms"] = round(runner.timings.compile_ms[-1], 3)
            entry["masks"] = len(masks)
            entry["mask_us_max"] = round(max(masks), 1) if masks else 0.0
            entry["mask_ms_total"] = round(sum(masks) / 1000, 3)
        entries.append(entry)
    return {"summary": summarise_maskbench(entries), "schemas": entries}


def summarise_maskbench(entries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    compiled = [e for e in entries if e["status"] == "compiled"]
    return {
        "schemas": len(entries),
        "compiled": len(compiled),
        "valid": sum(e["valid"] for e in compiled),
        "valid_accepted": sum(e["valid_accepted"] for e in compiled),
        "invalid": sum(e["invalid"] for e in compiled),
        "invalid_rejected": sum(e["invalid_rejected"] for e in compiled),
        "order_only": sum(e["order_only"] for e in compiled),
        "valid_in_all_schemas": sum(e["valid"] for e in entries),
        "invalid_in_all_schemas": sum(e["invalid"] for e in entries),
    }


# ---------------------------------------------------------------------------------------------
# the no-rewrite column: only schemas the rewrites change need a second evaluation


def changed_by_rewrite(schema: Any) -> bool:
    if not isinstance(schema, dict):
        return False
    try:
        return bool(rewrite_schema(schema) != schema)
    except Exception:
        return True


def raw_maskbench(raw: Runner, files: Sequence[Path], rewritten: Mapping[str, Any]) -> dict[str, Any]:
    by_name = {e["file"]: e for e in rewritten["schemas"]}
    changed = [p for p in files if changed_by_rewrite(json.loads(p.read_text(encoding="utf-8"))["schema"])]
    redone = {e["file"]: e for e in run_maskbench(raw, changed)["schemas"]}
    entries = [redone.get(p.name, by_name[p.name]) for p in files]
    return {"summary": summarise_maskbench(entries), "changed_schemas": len(changed), "schemas": entries}


def rewrite_kinds(files: Sequence[Path]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for path in files:
        schema = json.loads(path.read_text(encoding="utf-8"))["schema"]
        if isinstance(schema, dict):
            for kind in rewrite_schema_report(schema)[1].kinds():
                counts[kind] = counts.get(kind, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


# ---------------------------------------------------------------------------------------------
# reporting


def distribution(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {}
    a = np.asarray(values, dtype=np.float64)
    return {
        "n": int(a.size),
        "median": round(float(np.percentile(a, 50)), 3),
        "p90": round(float(np.percentile(a, 90)), 3),
        "p99": round(float(np.percentile(a, 99)), 3),
        "max": round(float(a.max()), 3),
        "mean": round(float(a.mean()), 3),
    }


def pct(n: int, d: int) -> float:
    return round(100.0 * n / d, 2) if d else 100.0


def headline(summary: Mapping[str, Any], total_key: str) -> dict[str, float]:
    return {
        "compiled": pct(summary["compiled"], summary[total_key]),
        "valid_accepted": pct(summary["valid_accepted"], summary["valid"]),
        "invalid_rejected": pct(summary["invalid_rejected"], summary["invalid"]),
    }


def print_suite(with_rw: Mapping[str, Any], raw: Mapping[str, Any] | None, out: Callable[[str], None]) -> None:
    out("\nJSON Schema Test Suite, draft 2020-12 (keyword files; remote = needs http://localhost:1234)")
    cols = f"{'file':<24} {'groups':>6} {'compiled':>8} {'raw':>5} {'valid ok':>10} {'invalid ok':>11}  class"
    out(cols)
    out("-" * len(cols))
    for name, f in with_rw["files"].items():
        raw_compiled = raw["files"][name]["compiled"] if raw else ""
        extra = f" (+{f['refused_unsatisfiable']} unsat)" if f["refused_unsatisfiable"] else ""
        extra += f" ({f['unsupported_remote']} remote)" if f["unsupported_remote"] else ""
        out(
            f"{name:<24} {f['groups']:>6} {f['compiled']:>8} {raw_compiled!s:>5} "
            f"{f['valid_accepted']:>4}/{f['valid']:<5} {f['invalid_rejected']:>4}/{f['invalid']:<6} "
            f"{f['class']}{extra}"
        )


def print_summary(title: str, rows: Mapping[str, Mapping[str, Any]], out: Callable[[str], None]) -> None:
    out(f"\n{title}")
    cols = f"{'':<22} {'compiled':>9} {'valid accepted':>15} {'invalid refused':>16} {'order-only':>11}"
    out(cols)
    out("-" * len(cols))
    for label, r in rows.items():
        out(
            f"{label:<22} {r['compiled']:>8}% {r['valid_accepted']:>14}% {r['invalid_rejected']:>15}% "
            f"{r.get('order_only', ''):>11}"
        )


def print_distribution(title: str, d: Mapping[str, float], unit: str, out: Callable[[str], None]) -> None:
    if d:
        out(
            f"{title:<22} n={d['n']:<8} median {d['median']:.3f} {unit}  p90 {d['p90']:.3f}  "
            f"p99 {d['p99']:.3f}  max {d['max']:.1f}"
        )


def run(
    data: Path, quick: bool = False, rewrite: bool = True, out: Callable[[str], None] = print
) -> dict[str, Any]:
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
        rows["raw llguidance"] = {**headline(raw_suite["summary"], "groups"), "order_only": raw_suite["summary"]["order_only"]}
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


# ---------------------------------------------------------------------------------------------
# markdown (the tables of docs/conformance.md)

_KEYWORD_REASONS = {
    "contains": "no llguidance form for \"some item matches\" (nor an exact rewrite without a bound on the length)",
    "minContains": "needs `contains`",
    "maxContains": "needs `contains`",
    "$dynamicRef": "dynamic references are not implemented",
    "$dynamicAnchor": "dynamic anchors are not implemented",
    "unevaluatedProperties": "what is evaluated depends on which branch (anyOf/oneOf/if/dependentSchemas) "
    "matches; only the static cases are rewritten",
    "unevaluatedItems": "what is evaluated depends on the instance (anyOf/oneOf/if/contains); only the static "
    "cases are rewritten",
    "not": "the complement needs \"a number that is not an integer\", an existence (some item, some property "
    "matching a pattern) or the complement of a regex, which llguidance cannot express",
    "propertyNames": "combined with patternProperties, or a pattern with listed properties",
    "uniqueItems": "items are not a small finite domain (distinctness of free values has no llguidance form)",
    "if": "the schema has embedded `$id` resources: structural rewrites are off",
    "then": "the schema has embedded `$id` resources: structural rewrites are off",
    "else": "the schema has embedded `$id` resources: structural rewrites are off",
}


#: Why the valid MaskBench instances that are refused are refused (analysed by hand; llguidance's
#: behaviour in every case, raw llguidance refuses them too where it compiles the schema).
MASKBENCH_REASONS = {
    "Github_easy---o21053.json": "llguidance: `pattern` `^$|(^(?:\\S+\\s+){0,99}\\S+$)` with `maxLength: 5000` "
    "runs out of its lexer budget mid-walk (\"too many expressions constructed\"; fine with a small maxLength)",
    **dict.fromkeys(
        ("Kubernetes---kb_105_Normalized.json", "Kubernetes---kb_106_Normalized.json",
         "Kubernetes---kb_1147_Normalized.json", "Kubernetes---kb_75_Normalized.json"),
        "OpenAPI `format: byte` asserted as base64; the instance's value is not base64 (\"base64 encoded "
        "certificate\"): the corpus's validator does not know `byte` and ignores it",
    ),
    "Github_hard---o38538.json": "draft-07 ignores keywords beside `$ref`; llguidance applies them "
    "(`additionalProperties: false` next to a `$ref` forbids the referenced properties)",
    "Github_hard---o57716.json": "llguidance: a number with an exponent (`1e-06`) under `minimum: 0`",
    "Github_medium---o74461.json": "llguidance: `75.0` under `multipleOf: 0.25` (only `75`, `75.25`... spellings)",
    "Synthesized---draft2019_09_valid_const_id27_subschema1_not_2.json": "llguidance: `0.0` for `const: 0.0` "
    "(only `0`)",
    "Synthesized---draft2019_09_valid_const_id30_subschema1_not_2.json": "llguidance: `1.0` for `const: 1.0` "
    "(only `1`)",
}


#: MaskBench refusals by cause: (pattern on llguidance's message, cause, why it stays refused).
REFUSAL_CAUSES: tuple[tuple[str, str, str], ...] = (
    (r'Unimplemented keys: \["not"\]', "`not` without an exact complement",
     "the complement needs a number that is not an integer or not a multiple of k, \"some property matching "
     "a pattern\" or \"some item\" (existence: `patternProperties`, `additionalProperties`, `items`), or the "
     "complement of a regex beyond the shapes written (one-character atoms anchored at an end, one class)"),
    (r"oneOf constraints", "`oneOf` whose branches may overlap",
     "overlap not disproved and a branch has no exact complement (same causes as `not`: `type: integer`, "
     "`items`, patterns, formats), or more than 12 branches need complements"),
    (r'Unimplemented keys: \["uniqueItems"\]', "`uniqueItems` over items that are not a small finite domain",
     "distinctness of free values (strings, objects) has no llguidance form; finite domains are enumerated up "
     "to 256 arrays"),
    (r"nsatisfiable", "unsatisfiable (correctly refused)",
     "no instance satisfies the schema (e.g. all five properties required and a `oneOf` over them); the corpus "
     "has no valid instance for these"),
    (r"circular references with sibling keys", "recursive `$ref` with sibling keywords",
     "llguidance does not merge keywords beside a recursive reference"),
    (r"lookaround|regex parse error", "regex syntax llguidance does not read",
     "lookarounds and other ECMA-262-only syntax in `pattern`"),
    (r"Unable to determine if regex is empty", "regex emptiness undecided",
     "llguidance gives up proving that an intersection of several patterns (or of a pattern and its "
     "rewritten complement) is non-empty"),
    (r"patternProperty regexes .* are not disjoint", "overlapping `patternProperties`",
     "llguidance needs the patterns of `patternProperties` (and of property names) to be disjoint"),
    (r"propertyNames", "`propertyNames` beside `patternProperties`", "which names a pattern covers is "
     "llguidance's to decide; not rewritten"),
    (r"contains", "`contains`", "no llguidance form for \"some item matches\""),
    (r"min/maxProperties", "`min/maxProperties` with optional keys",
     "left where an embedded `$id` or a `$ref` keeps the node in place, or over 256 sets of present keys"),
    (r'"if"|unevaluated', "`if`/`unevaluated*` that depend on the instance",
     "the condition has no exact complement, or what is evaluated depends on the branch taken"),
    (r"too complex|too large|stack level", "engine limits", "the schema exceeds llguidance's size or depth limits"),
    (r"has no exact definition here", "`format: regex` or `idn-email` (default mode)",
     "formats of the 2020-12 vocabulary with no exact regular definition are refused in the default "
     "`formats: assert` mode: enforcing them loosely would accept invalid values (the corpus has such "
     "instances, e.g. `\"*\"` for `format: regex`); `formats: annotate` compiles these schemas"),
    (r"Unknown format", "unknown `format`", "a `format` the rewriter did not reach (deeper than 100 levels)"),
)  # fmt: skip


def refusal_cause(error: str) -> tuple[str, str]:
    """The cause and explanation of a MaskBench compile error (``REFUSAL_CAUSES``)."""
    for pattern, cause, why in REFUSAL_CAUSES:
        if re.search(pattern, error):
            return cause, why
    return "other", "not classified"


def failure_reason(file: str, group: Mapping[str, Any], detail: str = "") -> str:
    """A short reason for a Test Suite group or instance that does not pass."""
    status = group["status"]
    if status == "unsupported-remote":
        return "remote `$ref` (http://localhost:1234/...): never fetched"
    if status == "compile-error":
        error = str(group.get("error", ""))
        m = re.search(r"Unimplemented keys: \[([^\]]*)\]", error)
        if m:
            keys = [k.strip().strip('"') for k in m.group(1).split(",")]
            reasons = sorted({_KEYWORD_REASONS.get(k, "not implemented by llguidance") for k in keys})
            return f"`{', '.join(keys)}`: " + "; ".join(reasons)
        if "oneOf constraints" in error:
            return "oneOf: branches may overlap and one has no exact complement (`type: integer`, a pattern)"
        m = re.search(r"Unknown format: ([^ ]+) \(format '[^']*' has no exact definition", error)
        if m:
            return (f"`format: {m.group(1)}` has no exact definition: refused in the default `formats: assert` "
                    "mode (`formats: annotate` compiles it)")
        if "Unknown format" in error:
            return error.split("SchemaError: ", 1)[-1] + " (a format the rewriter did not reach)"
        if "not disjoint" in error:
            return "llguidance needs disjoint patternProperties"
        if "too many digits" in error:
            return "multipleOf with too many digits for llguidance (limit)"
        return error.split(": ", 1)[-1][:120]
    if detail.startswith("valid refused") and file == "format":
        return ("the default `formats: assert` asserts `format` (2020-12 makes it an annotation by default; "
                "`formats: annotate` accepts these)")
    if detail.startswith("valid refused") and ("float" in detail or ".0" in detail or "integer" in group["group"]):
        return "an integral number written with a fraction (`1.0`): llguidance accepts the integer spelling only"
    return "see bench/results/conformance.json"


def markdown_report(result: Mapping[str, Any]) -> str:
    """The tables of ``docs/conformance.md`` from a full run's results."""
    suite, bench = result["test_suite"], result["maskbench"]
    raw = result.get("without_rewrite", {})
    lines: list[str] = []
    add = lines.append
    s, b = suite["summary"], bench["summary"]
    rs = raw.get("test_suite", {}).get("summary")
    rb = raw.get("maskbench", {}).get("summary")

    add("### Summary\n")
    add("| corpus | figure | baseline (ENGINE-NOTES) | raw llguidance | with rewrites |")
    add("|---|---|---|---|---|")
    for corpus, now, before, total, base in (
        ("Test Suite 2020-12 (46 files)", s, rs, "groups", BASELINES["test_suite"]),
        ("MaskBench sample", b, rb, "schemas", BASELINES["maskbench"]),
    ):
        h_now = headline(now, total)
        h_raw = headline(before, total) if before else {}
        add(f"| {corpus} | compiled | {base['compiled']}% | {_frac(before, 'compiled', total)} ({h_raw.get('compiled')}%) "
            f"| {_frac(now, 'compiled', total)} ({h_now['compiled']}%) |")
        add(f"| | valid accepted | {base['valid_accepted']}% | {_frac(before, 'valid_accepted', 'valid')} "
            f"({h_raw.get('valid_accepted')}%) | {_frac(now, 'valid_accepted', 'valid')} ({h_now['valid_accepted']}%) |")
        add(f"| | invalid refused | {base['invalid_rejected']}% | {_frac(before, 'invalid_rejected', 'invalid')} "
            f"({h_raw.get('invalid_rejected')}%) | {_frac(now, 'invalid_rejected', 'invalid')} "
            f"({h_now['invalid_rejected']}%) |")
        add(f"| | valid accepted only after reordering keys | | {before['order_only'] if before else ''} "
            f"| {now['order_only']} |")
    add("")
    add(f"Test Suite groups refused as unsatisfiable (no valid instance; refusing is right): "
        f"{s['refused_unsatisfiable']}; needing remote references: {s['unsupported_remote']}.\n")
    if raw:
        add(same_as_raw(bench, raw["maskbench"]) + "\n")

    add("### JSON Schema Test Suite, draft 2020-12, per keyword file\n")
    add("Groups = schemas. *raw* = compiled by llguidance alone; *compiled* = with the rewrites. Instances are "
        "counted in compiled groups. Class: supported (every group passes, or is refused as unsatisfiable), "
        "partial, unsupported (no group compiles: a clear compile error), unsupported-remote.\n")
    add("| file | groups | raw | compiled | unsat. | remote | valid accepted | invalid refused | class |")
    add("|---|---|---|---|---|---|---|---|---|")
    raw_files = raw.get("test_suite", {}).get("files", {})
    for name, f in suite["files"].items():
        rc = raw_files.get(name, {}).get("compiled", "")
        add(f"| {name} | {f['groups']} | {rc} | {f['compiled']} | {f['refused_unsatisfiable'] or ''} "
            f"| {f['unsupported_remote'] or ''} | {f['valid_accepted']}/{f['valid']} "
            f"| {f['invalid_rejected']}/{f['invalid']} | {f['class']} |")
    add("")

    add("### Every Test Suite group that does not pass, with its reason\n")
    add("| file | group | outcome | reason |")
    add("|---|---|---|---|")
    for name, f in suite["files"].items():
        for g in f["groups_detail"]:
            if g["status"] == "compiled":
                for detail in g["failures"]:
                    add(f"| {name} | {_cell(g['group'])} | {_cell(detail)} | {failure_reason(name, g, detail)} |")
            elif g["status"] != "refused-unsatisfiable":
                add(f"| {name} | {_cell(g['group'])} | {g['status']} | {_cell(failure_reason(name, g))} |")
    add("")

    if suite.get("optional"):
        add("### optional/ (reported separately, not in the figures above)\n")
        add("| file | groups | compiled | valid accepted | invalid refused |")
        add("|---|---|---|---|---|")
        for name, f in suite["optional"].items():
            add(f"| {name} | {f['groups']} | {f['compiled']} | {f['valid_accepted']}/{f['valid']} "
                f"| {f['invalid_rejected']}/{f['invalid']} |")
        add("")

    add("### MaskBench sample: timings (with rewrites, this machine)\n")
    add("| distribution | n | median | p90 | p99 | max |")
    add("|---|---|---|---|---|---|")
    for label, key, unit in (("compile (ms)", "maskbench_compile_ms", "ms"), ("mask (us)", "maskbench_mask_us", "us")):
        d = result["timings"][key]
        if d:
            add(f"| {label} | {d['n']} | {d['median']} | {d['p90']} | {d['p99']} | {d['max']} |")
    t = result["timings"]
    add("")
    add(f"Tokens refused by the mask but accepted by the session (both passes): {t['mask_stricter_than_accept']}, "
        f"of which {t['mask_stricter_where_nothing_forced']} where no bytes were forced (the others: llguidance "
        f"offers only the canonical tokens of forced bytes); tokens allowed by the mask but refused: "
        f"{t['mask_looser_than_accept']}; instances the engine stopped on mid-walk (an llguidance lexer limit, "
        f"counted as refused): {t.get('engine_errors_mid_walk', 0)}.\n")
    refused = [e for e in bench["schemas"] if e["status"] == "compiled" and e["failures"]]
    if refused:
        add("### MaskBench: valid instances refused (every one)\n")
        add("| schema | instances (index) | reason |")
        add("|---|---|---|")
        for e in refused:
            reason = _cell(MASKBENCH_REASONS.get(e["file"], "not analysed"))
            add(f"| {e['file']} | {', '.join(map(str, e['failures']))} | {reason} |")
        add("")
    if "rewrites_applied" in result:
        add("### MaskBench: schemas changed, by rewrite\n")
        add("| rewrite | schemas |")
        add("|---|---|")
        for kind, n in result["rewrites_applied"]["maskbench_schemas_by_rewrite"].items():
            add(f"| {kind} | {n} |")
        add("")
        add(f"Schemas changed by the rewrites: {raw['maskbench']['changed_schemas']}.\n")
    causes: dict[tuple[str, str], int] = {}
    for e in bench["schemas"]:
        if e["status"] != "compiled":
            found = refusal_cause(str(e["error"]))
            causes[found] = causes.get(found, 0) + 1
    add("### MaskBench: schemas still refused, by cause\n")
    add("| cause | schemas | why it stays refused |")
    add("|---|---|---|")
    for (name, why), n in sorted(causes.items(), key=lambda kv: -kv[1]):
        add(f"| {name} | {n} | {_cell(why)} |")
    add("")
    errors: dict[str, int] = {}
    for e in bench["schemas"]:
        if e["status"] != "compiled":
            key = re.sub(r"\d+", "N", str(e["error"]).split("\n")[0])[:90]
            errors[key] = errors.get(key, 0) + 1
    add("### MaskBench: schemas still refused, by error\n")
    add("| schemas | error (llguidance's message) |")
    add("|---|---|")
    for key, n in sorted(errors.items(), key=lambda kv: -kv[1]):
        add(f"| {n} | {_cell(key)} |")
    add("")
    meta = result["meta"]
    add(f"Run: llguidance {meta['llguidance']}, tokenizer {meta['tokenizer']} ({meta['vocab_size']} ids), "
        f"Python {meta['python']}, {meta['seconds']['total']} s in all.")
    return "\n".join(lines) + "\n"


def same_as_raw(bench: Mapping[str, Any], raw: Mapping[str, Any]) -> str:
    """Valid instances accepted, on the MaskBench schemas raw llguidance compiles, in both columns."""
    with_rw = {e["file"]: e for e in bench["schemas"]}
    valid = raw_ok = rw_ok = 0
    differ = []
    compiled = [e for e in raw["schemas"] if e["status"] == "compiled"]
    for e in compiled:
        w = with_rw[e["file"]]
        valid += e["valid"]
        raw_ok += e["valid_accepted"]
        rw_ok += w.get("valid_accepted", 0)
        if w["status"] != "compiled" or w["valid_accepted"] != e["valid_accepted"]:
            differ.append(e["file"])
    lost = refused_where_raw_accepts(bench, raw)
    return (
        f"On the {len(compiled)} MaskBench schemas raw llguidance compiles, valid instances accepted: "
        f"{raw_ok}/{valid} raw, {rw_ok}/{valid} with the rewrites; schemas where the two differ: "
        f"{', '.join(differ) if differ else 'none'}. Instances refused with the rewrites that raw llguidance "
        f"accepts, instance by instance: {len(lost)}{' (' + ', '.join(lost) + ')' if lost else ''}."
    )


def refused_where_raw_accepts(bench: Mapping[str, Any], raw: Mapping[str, Any]) -> list[str]:
    """Valid MaskBench instances the engine refuses while raw llguidance accepts them (``file#index``).

    Instance by instance, on the schemas raw llguidance compiles: the rewrites must never refuse
    what the engine alone accepts.
    """
    with_rw = {e["file"]: e for e in bench["schemas"]}
    found: list[str] = []
    for e in raw["schemas"]:
        w = with_rw[e["file"]]
        if e["status"] != "compiled":
            continue
        raw_failed = set(e["failures"])
        if w["status"] != "compiled":  # every valid instance raw llguidance accepted is lost
            found.extend(f"{e['file']}#valid{i}" for i in range(e["valid_accepted"]))
            continue
        # a failure of an invalid instance would be one accepted: counted by invalid_rejected instead
        found.extend(f"{e['file']}#{i}" for i in w["failures"] if i not in raw_failed)
    return found


def _frac(summary: Mapping[str, Any] | None, num: str, den: str) -> str:
    return f"{summary[num]}/{summary[den]}" if summary else ""


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.conformance", description="JSON-schema conformance of the engine (Test Suite 2020-12, MaskBench sample).")
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
        "about": "bench/conformance.py --quick with the rewrites; tests/core/test_conformance_smoke.py "
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


if __name__ == "__main__":
    raise SystemExit(main())
