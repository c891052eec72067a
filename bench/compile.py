"""``python -m bench.compile [--quick]``: time to first mask of a constraint never seen before.

For every MaskBench sample schema, and for templates, regexes and Lark grammars built from the
same corpus, the time from the constraint to its first mask on a cold cache, three ways on the
same inputs, in one run and alternating (each input's sides in a rotating order, so machine noise
hits all three):

* **core**: :meth:`core.GuidanceBackend.compile` (checks, rewrites, grammar, matcher, first mask);
* **raw**: llguidance alone on the same constraint (``grammar_from_*``, ``LLMatcher``, first mask;
  for templates, the Lark grammar core writes, which llguidance cannot take from a template);
* **http**: ``POST /compile`` to a real server on loopback (one keep-alive connection), the body
  the client sends; the server compiles it the way it compiles every request.

Only inputs that all sides compile are timed. Rows: each kind, and each MaskBench split for JSON
schemas: mean, p50, p90, p99 and max of each side (CPU milliseconds of the best of two runs),
core / raw in total and at p50 and p99, and the cost HTTP adds per compile (http - core, mean, by
the clock). ``--quick`` takes every 10th schema and a smaller HTTP run.
"""

from __future__ import annotations

import argparse
import functools
import http.client
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import llguidance
import llguidance.numpy
import numpy as np

from bench.harness import ROOT, Server, machine, percentile
from core import GuidanceBackend
from core.bitmask import allocate_bitmask
from core.kinds import compile_spec
from core.spec import ProgramSpec

if TYPE_CHECKING:
    from llguidance._lib import JsonCompileOptions

__all__ = ["corpus", "main", "run", "table"]

DATA = ROOT.parent / "shared" / "data" / "jsonschemabench" / "maskbench" / "data"
QUICK_STRIDE = 10
# The templates, regexes and Lark grammars take every N-th schema (of those in the run).
DERIVED_STRIDE = 4
#: llguidance's options for compact JSON, what the ``json_schema`` kind compiles to by default.
COMPACT: JsonCompileOptions = {"whitespace_flexible": False, "item_separator": ",", "key_separator": ":"}

_LARK = [
    'start: "yes" | "no"',
    'start: expr\nexpr: term ("+" term)*\nterm: NUMBER\nNUMBER: /[0-9]+/',
    'start: item+\nitem: "- " WORD "\\n"\nWORD: /[a-z]{1,8}/',
    'start: "SELECT " cols " FROM " NAME (" WHERE " NAME "=" NUMBER)?\n'
    'cols: NAME ("," NAME)*\nNAME: /[a-z_]+/\nNUMBER: /[0-9]+/',
]
_TEMPLATES = [
    "Name: {{gen 'name' regex='[A-Z][a-z]+'}}\nAge: {{gen 'age' regex='[0-9]{1,3}'}}\n"
    "City: {{gen 'city' stop='\\n'}}\nLikes: {{select 'likes' options=['tea', 'coffee', 'water']}}.",
    "Q: {{gen 'q' stop='?'}}?\nA: {{select 'a' options=['yes', 'no', 'maybe']}}",
]


@dataclass(frozen=True)
class Item:
    """One constraint: its kind, the row it is counted in, its compile body, and raw llguidance's grammar."""

    kind: str
    split: str
    name: str
    body: dict[str, Any]
    raw_grammar: Callable[[], str]


@dataclass
class Times:
    """CPU seconds of core and raw, wall-clock seconds of core and http, per input."""

    core: list[float] = field(default_factory=list)
    raw: list[float] = field(default_factory=list)
    core_wall: list[float] = field(default_factory=list)
    raw_wall: list[float] = field(default_factory=list)
    http: list[float] = field(default_factory=list)


def split_of(path: Path) -> str:
    """The MaskBench split a sample file belongs to (``Github_easy``, ``Kubernetes``, ``BFCL_simple``...)."""
    stem = path.stem.split("---", 1)[0]
    head, _, tail = stem.rpartition("_")
    return head if tail.isdigit() else stem


def _patterns(schema: Any) -> Iterator[str]:
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if isinstance(node.get("pattern"), str):
                yield node["pattern"]
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def _template_grammar(body: dict[str, Any], tokenizer: Any, limits: Any) -> Callable[[], str]:
    spec = ProgramSpec("template", body["template"], body.get("variables", {}), {})
    return lambda: compile_spec(spec, tokenizer, limits).grammar


def corpus(quick: bool, backend: GuidanceBackend) -> list[Item]:
    """Every input of a run, in a fixed order."""
    files = sorted(DATA.glob("*.json"))
    if not files:
        raise FileNotFoundError(f"MaskBench sample not found under {DATA}")
    if quick:
        files = files[::QUICK_STRIDE]
    items: list[Item] = []
    patterns: dict[str, None] = {}
    for i, path in enumerate(files):
        schema = json.loads(path.read_text(encoding="utf-8"))["schema"]
        items.append(
            Item(
                "json_schema",
                split_of(path),
                path.name,
                {"json_schema": schema},
                functools.partial(llguidance.LLMatcher.grammar_from_json_schema, schema, defaults=COMPACT),
            )
        )
        patterns.update(dict.fromkeys(_patterns(schema)))
        if i % DERIVED_STRIDE == 0:
            text = json.dumps(schema, ensure_ascii=False)
            lark = f"start: %json {text}"
            items.append(
                Item(
                    "grammar",
                    "lark",
                    path.name,
                    {"grammar": lark},
                    functools.partial(llguidance.LLMatcher.grammar_from_lark, lark),
                )
            )
            body = {"template": "Answer: {{json 'answer' schema=s}}\n", "variables": {"s": schema}}
            items.append(
                Item(
                    "template",
                    "template",
                    path.name,
                    body,
                    _template_grammar(body, backend.tokenizer.ll, backend.limits),
                )
            )
    for j, lark in enumerate(_LARK):
        items.append(
            Item(
                "grammar",
                "lark",
                f"lark-{j}",
                {"grammar": lark},
                functools.partial(llguidance.LLMatcher.grammar_from_lark, lark),
            )
        )
    for j, template in enumerate(_TEMPLATES):
        body = {"template": template}
        items.append(
            Item(
                "template",
                "template",
                f"template-{j}",
                body,
                _template_grammar(body, backend.tokenizer.ll, backend.limits),
            )
        )
    for j, pattern in enumerate(list(patterns)[:: DERIVED_STRIDE // 2]):
        items.append(
            Item(
                "regex",
                "regex",
                f"pattern-{j}",
                {"regex": pattern},
                functools.partial(llguidance.LLMatcher.grammar_from_regex, pattern),
            )
        )
    return items


def _spec(body: dict[str, Any]) -> ProgramSpec:
    (kind,) = [k for k in ("template", "json_schema", "regex", "grammar") if k in body]
    return ProgramSpec(kind, body[kind], body.get("variables", {}), {})


Timing = tuple[float, float]  # (wall-clock seconds, CPU seconds of this process)


def _time_raw(item: Item, tokenizer: llguidance.LLTokenizer, grammar: str, bitmask: np.ndarray) -> Timing | None:
    start, cpu = time.perf_counter(), time.process_time()
    if item.kind != "template":  # a template's grammar is core's output: only the matcher is raw's
        grammar = item.raw_grammar()
    matcher = llguidance.LLMatcher(tokenizer, grammar, log_level=0)
    if matcher.is_error():
        return None
    llguidance.numpy.fill_next_token_bitmask(matcher, bitmask, 0)
    if matcher.is_error():
        return None
    return time.perf_counter() - start, time.process_time() - cpu


def _time_core(backend: GuidanceBackend, item: Item) -> Timing | None:
    spec = _spec(item.body)
    backend.clear_cache()
    start, cpu = time.perf_counter(), time.process_time()
    try:
        backend.compile(spec)
    except Exception:  # a refusal: the input is left out
        return None
    return time.perf_counter() - start, time.process_time() - cpu


class _Http:
    """One keep-alive connection to the server, opened again when the server closes it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def compile(self, item: Item) -> Timing | None:
        payload = json.dumps(item.body).encode()
        for attempt in range(2):
            start = time.perf_counter()
            try:
                self.conn.request("POST", "/compile", body=payload, headers={"Content-Type": "application/json"})
                response = self.conn.getresponse()
                response.read()
            except (OSError, http.client.HTTPException):
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
                continue
            elapsed = time.perf_counter() - start
            if response.will_close:
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
            return (elapsed, elapsed) if response.status == 200 else None
        return None


def _best(timings: list[Timing | None]) -> Timing | None:
    if any(t is None for t in timings):
        return None
    return min(t[0] for t in timings if t), min(t[1] for t in timings if t)


def _stats(xs: Sequence[float]) -> dict[str, float]:
    return {
        "mean": statistics.fmean(xs) * 1000,
        "p50": percentile(xs, 0.5) * 1000,
        "p90": percentile(xs, 0.9) * 1000,
        "p99": percentile(xs, 0.99) * 1000,
        "max": max(xs) * 1000,
    }


def _row(name: str, times: Times) -> dict[str, Any]:
    core, raw = _stats(times.core), _stats(times.raw)
    row: dict[str, Any] = {"row": name, "n": len(times.core)}
    for key in core:
        row[f"core_{key}_ms"] = round(core[key], 3)
        row[f"raw_{key}_ms"] = round(raw[key], 3)
        if key != "mean":  # the ratio of means is the total's
            row[f"ratio_{key}"] = round(core[key] / raw[key], 3)
    row["ratio_total"] = round(sum(times.core) / sum(times.raw), 3)
    row["wall_ratio_total"] = round(sum(times.core_wall) / sum(times.raw_wall), 3)
    if times.http:
        h = _stats(times.http)
        row["http_n"] = len(times.http)
        row["http_mean_ms"] = round(h["mean"], 3)
        row["http_p50_ms"] = round(h["p50"], 3)
        row["http_p99_ms"] = round(h["p99"], 3)
    return row


def run(quick: bool = False, http_every: int | None = None, repeats: int = 2) -> dict[str, Any]:
    """Time every input of :func:`corpus`; ``http_every``: every N-th input also through HTTP.

    Core and raw run ``repeats`` times each (core's cache cleared before each) and keep their
    least time: the machine's noise only ever adds. Their ratios are of CPU time (this process's,
    every thread), which a loaded machine does not inflate; the wall-clock ratio is reported too.
    HTTP runs once (its cache is cold only the first time) and is compared by the clock.
    """
    backend = GuidanceBackend(max_cache_size=4, negative_cache_entries=1)
    tok = backend.tokenizer.ll
    items = corpus(quick, backend)
    http_every = http_every or (4 if quick else 1)
    bitmask = allocate_bitmask(1, backend.vocab_size)
    by_row: dict[str, Times] = {}
    both = Times()
    left_out = 0
    with Server() as server:
        conn = _Http(server.port)
        for i, item in enumerate(items):
            grammar = ""
            if item.kind == "template":
                try:
                    grammar = item.raw_grammar()
                except Exception:
                    left_out += 1
                    continue
            try:
                item.raw_grammar() if item.kind != "template" else None
            except Exception:  # raw llguidance refuses it before any matcher
                left_out += 1
                continue
            sides: list[str] = ["core", "raw"] + (["http"] if i % http_every == 0 else [])
            shift = i % len(sides)
            runs: dict[str, list[Timing | None]] = {side: [] for side in sides}
            for _ in range(repeats):
                for side in sides[shift:] + sides[:shift]:
                    if side == "core":
                        runs[side].append(_time_core(backend, item))
                    elif side == "raw":
                        runs[side].append(_time_raw(item, tok, grammar, bitmask))
                    elif not runs[side]:
                        runs[side].append(conn.compile(item))
            got = {side: _best(timings) for side, timings in runs.items()}
            if any(v is None for v in got.values()):
                left_out += 1
                continue
            core, raw, over_http = got["core"], got["raw"], got.get("http")
            assert core is not None and raw is not None
            for key in (item.kind, f"{item.kind}:{item.split}") if item.kind == "json_schema" else (item.kind,):
                times = by_row.setdefault(key, Times())
                times.core.append(core[1])
                times.raw.append(raw[1])
                times.core_wall.append(core[0])
                times.raw_wall.append(raw[0])
                if over_http is not None:
                    times.http.append(over_http[0])
                    if key == item.kind:
                        both.core.append(core[0])
                        both.http.append(over_http[0])
        conn.conn.close()
    order = ["json_schema", "template", "regex", "grammar"]
    rows = [_row(k, by_row[k]) for k in order if k in by_row]
    rows += [_row(k, by_row[k]) for k in sorted(by_row) if k.startswith("json_schema:")]
    json_row = rows[0]
    http_added = (statistics.fmean(both.http) - statistics.fmean(both.core)) * 1000 if both.http else None
    return {
        "rows": rows,
        "inputs": len(items),
        "left_out": left_out,
        "compile_vs_raw": json_row["ratio_total"],
        "compile_vs_raw_p50": json_row["ratio_p50"],
        "compile_vs_raw_p99": json_row["ratio_p99"],
        "compile_vs_raw_wall": json_row["wall_ratio_total"],
        "compile_http_added_ms": None if http_added is None else round(http_added, 3),
        "http_vs_core": round(statistics.fmean(both.http) / statistics.fmean(both.core), 3) if both.http else None,
        "http_n": len(both.http),
    }


def table(result: dict[str, Any]) -> str:
    head = (
        f"{'row':<34} {'n':>5}  {'core mean/p50/p90/p99/max ms':>34}  {'raw mean/p50/p90/p99/max ms':>34}"
        f"  {'core/raw total p50 p99':>22}  {'http mean ms':>12}"
    )
    lines = [head]
    for r in result["rows"]:
        core = "/".join(f"{r[f'core_{k}_ms']:.2f}" for k in ("mean", "p50", "p90", "p99", "max"))
        raw = "/".join(f"{r[f'raw_{k}_ms']:.2f}" for k in ("mean", "p50", "p90", "p99", "max"))
        ratios = f"{r['ratio_total']:.2f} {r['ratio_p50']:.2f} {r['ratio_p99']:.2f}"
        http = f"{r['http_mean_ms']:.2f}" if "http_mean_ms" in r else "-"
        lines.append(f"{r['row']:<34} {r['n']:>5}  {core:>34}  {raw:>34}  {ratios:>22}  {http:>12}")
    lines.append(
        f"core/raw on JSON schemas: {result['compile_vs_raw']} in total, {result['compile_vs_raw_p50']} at p50, "
        f"{result['compile_vs_raw_p99']} at p99 (target <= 1.3, <= 1.5, <= 1.5; CPU time), "
        f"{result['compile_vs_raw_wall']} in total by the clock; POST /compile adds "
        f"{result['compile_http_added_ms']} ms per compile over core in process ({result['http_vs_core']}x, "
        f"{result['http_n']} compiles); {result['left_out']} of {result['inputs']} inputs left out "
        "(refused by a side)"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.compile", description=__doc__.splitlines()[0] if __doc__ else None
    )
    p.add_argument("--quick", action="store_true", help="every 10th MaskBench schema")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "compile.json"), help="JSON report path")
    args = p.parse_args(argv)
    result = run(quick=args.quick)
    print(table(result))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine(), **result}, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
