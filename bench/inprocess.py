"""In-process: ``GuidanceGrammar`` accept + mask per step vs raw llguidance on the same walks.

Both sides walk the same token sequences (a different valid text per walk), accept one token and
compute the next mask per step. Runs alternate between the two sides so machine noise hits both.
The raw side uses its own ``LLMatcher`` built from the same grammar text, so neither side warms
the other's caches.

Reference engines (xgrammar, outlines-core; see :mod:`bench.reference`) walk the same token ids in
the same alternating rounds and appear as extra columns when they import; otherwise a note says
why they are missing. ``python -m bench.inprocess [--quick]``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from typing import Any

import llguidance
import numpy as np

from bench.cases import CASES, Case, texts
from bench.reference import Engine, Prepared, load_engines
from core import GuidanceBackend, GuidanceGrammar
from core.kinds import KINDS
from core.spec import ProgramSpec, spec_from_kwargs


def spec_of(body: dict[str, Any]) -> ProgramSpec:
    """The spec of a compile body (exactly one kind, as the server reads it)."""
    (kind,) = [k for k in KINDS if k in body]
    options = {**body.get("options", {}), **{f: body[f] for f in KINDS[kind].fields if f in body}}
    return spec_from_kwargs(kind, body[kind], body.get("variables"), options, body.get("reasoning"))


def _walk_core(program: Any, walk: list[int], bitmask: np.ndarray) -> None:
    g = GuidanceGrammar(program)
    g.fill_next_token_bitmask(bitmask, 0)
    for t in walk:
        if not g.accept_tokens((t,)):
            raise AssertionError("walk rejected by core")
        g.fill_next_token_bitmask(bitmask, 0)


def _walk_raw(root: llguidance.LLMatcher, walk: list[int], bitmask: np.ndarray, eos: int) -> None:
    m = root.deep_copy()
    addr, size = bitmask.ctypes.data, bitmask.shape[1] * 4
    m.unsafe_compute_mask_ptr(addr, size)
    for t in walk:
        if not m.consume_token(t):
            raise AssertionError("walk rejected by llguidance")
        m.unsafe_compute_mask_ptr(addr, size)


def run_case(
    backend: GuidanceBackend, case: Case, walks: int, rounds: int, engines: Sequence[Engine] = (), quick: bool = False
) -> dict[str, Any]:
    tok = backend.tokenizer
    program = backend.compile(spec_of(case.body))[0]
    root = llguidance.LLMatcher(tok.ll, program.grammar, log_level=0)
    sequences = [tok.encode(t) + [tok.eos_token_id] for t in texts(case, walks)]
    bitmask = backend.allocate_bitmask(1)
    steps = sum(len(s) + 1 for s in sequences)
    refs: dict[str, Prepared] = {}
    notes: dict[str, str] = {}
    for engine in engines:
        try:
            prepared = engine.prepare(case, quick)
            if isinstance(prepared, Prepared):
                for seq in sequences:  # warm, and check it accepts every walk
                    prepared.walk(seq, bitmask)
                refs[engine.name] = prepared
            else:
                notes[engine.name] = prepared
        except Exception as e:  # noqa: BLE001 - a reference engine failing is reported, not fatal
            notes[engine.name] = f"{type(e).__name__}: {str(e)[:100]}"
    # warm both sides once (lexer build, first visits), then time alternating rounds
    for seq in sequences:
        _walk_core(program, seq, bitmask)
        _walk_raw(root, seq, bitmask, tok.eos_token_id)
    core_us: list[float] = []
    raw_us: list[float] = []
    ref_us: dict[str, list[float]] = {name: [] for name in refs}
    for _ in range(rounds):
        t0 = time.perf_counter()
        for seq in sequences:
            _walk_core(program, seq, bitmask)
        t1 = time.perf_counter()
        for seq in sequences:
            _walk_raw(root, seq, bitmask, tok.eos_token_id)
        t2 = time.perf_counter()
        core_us.append((t1 - t0) / steps * 1e6)
        raw_us.append((t2 - t1) / steps * 1e6)
        for name, prepared in refs.items():
            t3 = time.perf_counter()
            for seq in sequences:
                prepared.walk(seq, bitmask)
            ref_us[name].append((time.perf_counter() - t3) / steps * 1e6)
    core_med, raw_med = statistics.median(core_us), statistics.median(raw_us)
    row: dict[str, Any] = {
        "case": case.name,
        "walks": walks,
        "steps": steps,
        "core_step_us": round(core_med, 2),
        "raw_step_us": round(raw_med, 2),
        "ratio": round(core_med / raw_med, 3),
    }
    for name, prepared in refs.items():
        med = statistics.median(ref_us[name])
        row[f"{name}_step_us"] = round(med, 2)
        row[f"{name}_vs_raw"] = round(med / raw_med, 3)
        row[f"{name}_compile_ms"] = round(prepared.compile_ms, 1)
    if notes:
        row["notes"] = notes
    return row


def run(quick: bool = False) -> dict[str, Any]:
    """Per-step cost of core vs raw llguidance for each case; ratio = core / raw.

    Reference engines that import add ``<engine>_step_us`` and ``<engine>_vs_raw`` per row.
    """
    backend = GuidanceBackend()
    engines, missing = load_engines(backend.tokenizer)
    walks, rounds = (16, 5) if quick else (64, 9)
    rows = [run_case(backend, case, walks, rounds, engines, quick) for case in CASES]
    total_core = sum(r["core_step_us"] * r["steps"] for r in rows)
    total_raw = sum(r["raw_step_us"] * r["steps"] for r in rows)
    return {
        "rows": rows,
        "core_vs_raw": round(total_core / total_raw, 3),
        "engines": [e.name for e in engines],
        "engines_missing": missing,
    }


def table(result: dict[str, Any]) -> str:
    names = [n for n in ("xgrammar", "outlines-core") if n in result.get("engines", ())]
    head = "case       steps   core us/step   raw us/step   ratio"
    for n in names:
        head += f"   {n + ' us/step':>21}"
    lines = [head]
    notes: list[str] = []
    for r in result["rows"]:
        line = f"{r['case']:<10} {r['steps']:>5}   {r['core_step_us']:>12}   {r['raw_step_us']:>11}   {r['ratio']:>5}"
        for n in names:
            v = r.get(f"{n}_step_us")
            line += f"   {v if v is not None else '-':>21}"
        lines.append(line)
        for n, why in r.get("notes", {}).items():
            notes.append(f"  {r['case']}/{n}: {why}")
    lines.append(f"overall core/raw: {result['core_vs_raw']}")
    for n in names:
        compiled = ", ".join(f"{r['case']} {r[n + '_compile_ms']} ms" for r in result["rows"] if n + "_compile_ms" in r)
        lines.append(f"{n} compile: {compiled}")
    for n, why in result.get("engines_missing", {}).items():
        notes.append(f"  {n}: {why} (column omitted)")
    if notes:
        lines.append("notes:")
        lines.extend(notes)
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    print(table(run(quick="--quick" in sys.argv)))
