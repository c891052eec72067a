"""The results as figures: summaries, the printed tables of a run, and the tables of ``docs/conformance.md``."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from bench.conformance.reasons import MASKBENCH_REASONS, failure_reason, refusal_cause

#: Reference figures (raw llguidance, in-process, tekken) from ENGINE-NOTES.md.
BASELINES = {
    "maskbench": {"compiled": 83.4, "valid_accepted": 99.7, "invalid_rejected": 100.0},
    "test_suite": {"compiled": 83.1, "valid_accepted": 95.5, "invalid_rejected": 100.0},
}


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
        add(
            f"| {corpus} | compiled | {base['compiled']}% | {_frac(before, 'compiled', total)} "
            f"({h_raw.get('compiled')}%) | {_frac(now, 'compiled', total)} ({h_now['compiled']}%) |"
        )
        add(
            f"| | valid accepted | {base['valid_accepted']}% | {_frac(before, 'valid_accepted', 'valid')} "
            f"({h_raw.get('valid_accepted')}%) | {_frac(now, 'valid_accepted', 'valid')} "
            f"({h_now['valid_accepted']}%) |"
        )
        add(
            f"| | invalid refused | {base['invalid_rejected']}% | {_frac(before, 'invalid_rejected', 'invalid')} "
            f"({h_raw.get('invalid_rejected')}%) | {_frac(now, 'invalid_rejected', 'invalid')} "
            f"({h_now['invalid_rejected']}%) |"
        )
        add(
            f"| | valid accepted only after reordering keys | | {before['order_only'] if before else ''} "
            f"| {now['order_only']} |"
        )
    add("")
    add(
        f"Test Suite groups refused as unsatisfiable (no valid instance; refusing is right): "
        f"{s['refused_unsatisfiable']}; needing remote references: {s['unsupported_remote']}.\n"
    )
    if raw:
        add(same_as_raw(bench, raw["maskbench"]) + "\n")

    add("### JSON Schema Test Suite, draft 2020-12, per keyword file\n")
    add(
        "Groups = schemas. *raw* = compiled by llguidance alone; *compiled* = with the rewrites. Instances are "
        "counted in compiled groups. Class: supported (every group passes, or is refused as unsatisfiable), "
        "partial, unsupported (no group compiles: a clear compile error), unsupported-remote.\n"
    )
    add("| file | groups | raw | compiled | unsat. | remote | valid accepted | invalid refused | class |")
    add("|---|---|---|---|---|---|---|---|---|")
    raw_files = raw.get("test_suite", {}).get("files", {})
    for name, f in suite["files"].items():
        rc = raw_files.get(name, {}).get("compiled", "")
        add(
            f"| {name} | {f['groups']} | {rc} | {f['compiled']} | {f['refused_unsatisfiable'] or ''} "
            f"| {f['unsupported_remote'] or ''} | {f['valid_accepted']}/{f['valid']} "
            f"| {f['invalid_rejected']}/{f['invalid']} | {f['class']} |"
        )
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
            add(
                f"| {name} | {f['groups']} | {f['compiled']} | {f['valid_accepted']}/{f['valid']} "
                f"| {f['invalid_rejected']}/{f['invalid']} |"
            )
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
    add(
        f"Tokens refused by the mask but accepted by the session (both passes): {t['mask_stricter_than_accept']}, "
        f"of which {t['mask_stricter_where_nothing_forced']} where no bytes were forced (the others: llguidance "
        f"offers only the canonical tokens of forced bytes); tokens allowed by the mask but refused: "
        f"{t['mask_looser_than_accept']}; instances the engine stopped on mid-walk (an llguidance lexer limit, "
        f"counted as refused): {t.get('engine_errors_mid_walk', 0)}.\n"
    )
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
    add(
        f"Run: llguidance {meta['llguidance']}, tokenizer {meta['tokenizer']} ({meta['vocab_size']} ids), "
        f"Python {meta['python']}, {meta['seconds']['total']} s in all."
    )
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
