"""Isolation: ``/step`` latency alone and during a storm of distinct compiles, in one run.

    python -m bench.isolation [--quick] [--data ../shared/data] [--configs isolated,baseline] [--no-floors]

For each server configuration (``isolated``: compiles in worker processes at nice 10 and the
segmented-LRU cache, the defaults; ``processes``: the same at the server's own priority (nice 0);
``baseline``: compiles on the server's threads at the normal priority and a plain LRU, as
before), one server is started and, for 16 and 64 sessions:

* one decode client (this process) steps its sessions of the JSON case through ``POST /step``
  (every session a different valid text, new sessions when the texts run out), timing every
  request;
* phases alternate ``alone`` / ``storm`` (three times; twice with ``--quick``): during a storm,
  four client processes compile distinct MaskBench schemas (a sample in ``/work/shared/data``, read
  there, each made distinct by a ``description``) back to back, on the same cores.

With the first configuration, two floors follow each batch's alternation, at the compile storm's
measured rate: a storm of cache hits (the same clients re-sending schemas the server has already
compiled: it still reads, parses and hashes every request) and a storm sent to a bare Starlette
process instead (only the clients and that process compete for the cores). The compile storm's
ratio minus theirs is what compile isolation can still remove; their own ratio is the part no
compile design touches.

Reported per configuration and batch: ``/step`` p50/p90/p99 alone and during the storm, the
ratio storm/alone of each (medians over the alternations are in the rows), compile throughput
during the storm and answers by status (5xx must be zero). Then, without decode traffic, a storm
of 1,000 one-off schemas while the steady program (the decode client's, compiled and used many
times before) is used again every 300 one-offs by opening a session on its ``program_id``: its hit
rate (a miss is a 404, and a re-compile), and whether it is still cached after the storm. A use
every 300 programs is a longer gap than a plain LRU of 256 entries bridges; a program used more
often stays cached under either policy. The load average is recorded at every phase (the machine
is shared: compare ratios from one run, side by side).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import multiprocessing
import os
import random
import statistics
import time
from collections.abc import Sequence
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path
from typing import Any

import numpy as np

from bench.cases import CASES, texts
from bench.harness import Server, machine, percentile
from guidance_client import GrammarBatch, GuidanceClient

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"
MASKBENCH_DIR = Path("jsonschemabench") / "maskbench" / "data"
STORM_CLIENTS = 4
BATCHES = (16, 64)
ONE_OFFS = 1000
REPEATED = 20  # schemas per storm client in a storm of cache hits
STEADY_EVERY = 300

CONFIGS: dict[str, dict[str, str]] = {
    "isolated": {},  # the defaults
    "processes": {"GUIDANCE_SERVER_COMPILE_NICE": "0"},  # workers at the server's priority
    "nice19": {"GUIDANCE_SERVER_COMPILE_NICE": "19"},  # workers and compile threads at the lowest priority
    "baseline": {
        "GUIDANCE_SERVER_COMPILE_PROCESSES": "false",
        "GUIDANCE_SERVER_COMPILE_NICE": "0",
        "GUIDANCE_SERVER_CACHE_PROBATION_SHARE": "1.0",
    },
}


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def _schemas(data: Path) -> list[Path]:
    files = sorted((data / MASKBENCH_DIR).glob("*.json"))
    if not files:
        raise SystemExit(f"no MaskBench schemas under {data / MASKBENCH_DIR}")
    return files


def _storm_client(
    port: int,
    files: Sequence[str],
    index: int,
    go: Any,
    stop: Any,
    budget: Synchronized[int],
    period: Synchronized[float],
    repeat: Synchronized[int],
    counts: Any,
    tag: str,
) -> None:
    """One storm client: while ``go`` is set (and ``budget`` lasts, when positive), compile
    schemas, one every ``period`` seconds (0: back to back); counts answers as [2xx, 4xx, 5xx,
    failed]. Each schema is made distinct, a program never seen before, unless ``repeat`` is set:
    then the client cycles over its first ``REPEATED`` schemas unchanged, which the server has
    compiled once and answers from its cache."""
    schemas = []
    for f in files:
        try:
            schema = json.loads(Path(f).read_text())["schema"]
        except (ValueError, KeyError, OSError):
            continue
        if isinstance(schema, dict):
            schemas.append(schema)
    random.Random(index).shuffle(schemas)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    n = 0
    due = time.monotonic()
    while not stop.is_set():
        if not go.wait(0.05):
            continue
        if period.value > 0:
            due = max(due + period.value, time.monotonic() - period.value)
            time.sleep(max(0.0, due - time.monotonic()))
        with budget.get_lock():
            if budget.value == 0:
                continue
            if budget.value > 0:
                budget.value -= 1
        if repeat.value:
            schema = schemas[n % REPEATED]
        else:
            schema = dict(schemas[n % len(schemas)])
            schema["description"] = f"{tag}-{index}-{n}"  # a program never seen before
        n += 1
        body = json.dumps({"json_schema": schema})
        slot = 3
        for _ in range(2):  # the server closes idle keep-alive connections: one retry on a new one
            try:
                conn.request("POST", "/compile", body, {"content-type": "application/json"})
                resp = conn.getresponse()
                resp.read()
                slot = {2: 0, 4: 1, 5: 2}.get(resp.status // 100, 3)
                break
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        with counts.get_lock():
            counts[slot] += 1


class _Storm:
    """``STORM_CLIENTS`` processes compiling distinct schemas whenever switched on."""

    def __init__(self, port: int, files: list[Path], tag: str) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.go = ctx.Event()
        self.stop = ctx.Event()
        self.budget: Synchronized[int] = ctx.Value("i", -1)
        self.period: Synchronized[float] = ctx.Value("d", 0.0)
        self.repeat: Synchronized[int] = ctx.Value("i", 0)
        self.counts = ctx.Array("l", 4)
        paths = [str(f) for f in files]
        args = (self.go, self.stop, self.budget, self.period, self.repeat, self.counts, tag)
        self.procs = [
            ctx.Process(
                target=_storm_client,
                args=(port, paths[i::STORM_CLIENTS], i, *args),
                daemon=True,
            )
            for i in range(STORM_CLIENTS)
        ]
        for p in self.procs:
            p.start()

    def snapshot(self) -> list[int]:
        with self.counts.get_lock():
            return list(self.counts)

    def close(self) -> None:
        self.go.clear()
        self.stop.set()
        for p in self.procs:
            p.join(timeout=70)
            if p.is_alive():
                p.kill()


class _Decoder:
    """Steps ``batch`` sessions of the JSON case, new ones when their texts run out."""

    def __init__(self, client: GuidanceClient, batch: int) -> None:
        self.client = client
        self.batch = batch
        self.case = next(c for c in CASES if c.name == "json")
        self.info = client.compile_spec(self.case.body)
        self.tok_texts: list[list[int]] = []
        self.rounds = 0
        self.bitmask = np.zeros((batch, self.info.mask_words), dtype=np.int32)
        self._open()

    def _open(self) -> None:
        from guidance_client import RemoteGrammar

        c = self.client
        if self.rounds:
            for g in self.group.grammars:
                g.close()
        body = self.case.body
        # re-compiled per round, as a worker does per request: the steady program's hits
        info = c.compile_spec(body)
        grammars = [RemoteGrammar(c, body, info, c.create_session(info.program_id)) for _ in range(self.batch)]
        self.group = GrammarBatch(c, grammars)
        seqs = [c.tokenize(t) for t in texts(self.case, self.batch, seed=self.rounds)]
        self.seqs = seqs
        self.pos = 0
        self.steps = min(len(s) for s in seqs)
        self.rounds += 1
        self.group.step([[] for _ in seqs], self.bitmask)  # the first masks, off the clock

    def run(self, seconds: float) -> list[float]:
        took: list[float] = []
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if self.pos >= self.steps:
                self._open()
            tokens = [[s[self.pos]] for s in self.seqs]
            start = time.perf_counter()
            self.group.step(tokens, self.bitmask)
            took.append(time.perf_counter() - start)
            self.pos += 1
        return took


def _stats_ms(xs: list[float]) -> dict[str, float]:
    return {q: round(percentile(xs, p) * 1000, 3) for q, p in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))}


def _ratio(a: float, b: float) -> float:
    return round(a / b, 2) if b else float("nan")


def _open_session(port: int, program_id: str) -> bool:
    """Open (and close) a session by ``program_id``: True when the program was still cached."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("POST", "/sessions", json.dumps({"program_id": program_id}), {"content-type": "application/json"})
        resp = conn.getresponse()
        body = resp.read()
        if resp.status == 201:
            conn.request("DELETE", f"/sessions/{json.loads(body)['session_id']}")
            conn.getresponse().read()
            return True
        if resp.status == 404:
            return False
        raise RuntimeError(f"POST /sessions answered {resp.status}: {body[:200]!r}")
    finally:
        conn.close()


def _one_offs(port: int, storm: _Storm, client: GuidanceClient, steady_body: dict[str, Any]) -> dict[str, Any]:
    """A storm of ``ONE_OFFS`` one-off schemas; the steady program (compiled and used before) is
    used again every ``STEADY_EVERY`` one-offs (a session opened by its id, as a worker does): a
    gap longer than a plain LRU of 256 entries remembers. A miss re-sends the spec (a compile)."""
    before = client.stats()["cache"]
    program_id = client.compile_spec(steady_body).program_id
    storm.budget.value = ONE_OFFS
    counts0 = storm.snapshot()
    uses: list[bool] = []
    next_use = STEADY_EVERY
    load0 = _load()
    start = time.monotonic()
    storm.go.set()
    while True:
        done = sum(storm.snapshot()) - sum(counts0)
        if done >= next_use or done >= ONE_OFFS:
            hit = _open_session(port, program_id)
            uses.append(hit)
            if not hit:
                client.compile_spec(steady_body)
            next_use += STEADY_EVERY
            if done >= ONE_OFFS:
                break
        time.sleep(0.01)
    storm.go.clear()
    seconds = time.monotonic() - start
    storm.budget.value = -1
    after = client.stats()["cache"]
    counts = [a - b for a, b in zip(storm.snapshot(), counts0)]
    return {
        "one_offs": ONE_OFFS,
        "seconds": round(seconds, 1),
        "one_offs_per_s": round(ONE_OFFS / seconds, 1),
        "answers_2xx_4xx_5xx_failed": counts,
        "steady_uses": len(uses),
        "steady_hit_rate": round(sum(uses) / len(uses), 3),
        "steady_cached_after": uses[-1],
        "evictions": after["evictions"] - before["evictions"],
        "protected_entries": after.get("protected_entries"),
        "load": [load0, _load()],
    }


def _alternate(decoder: _Decoder, storm: _Storm, alternations: int, phase_s: float) -> dict[str, Any]:
    """``/step`` latency of ``decoder`` in phases alternating alone / during ``storm``."""
    per: dict[str, list[float]] = {"alone": [], "storm": []}
    phases: list[dict[str, Any]] = []
    storm_seconds = 0.0
    counts0 = storm.snapshot()
    for a in range(alternations):
        order = ("alone", "storm") if a % 2 == 0 else ("storm", "alone")
        for phase in order:
            load0 = _load()
            if phase == "storm":
                storm.go.set()
                time.sleep(0.3)  # the storm is up to speed
            took = decoder.run(phase_s)
            if phase == "storm":
                storm.go.clear()
                storm_seconds += phase_s + 0.3
                time.sleep(0.5)  # compiles in flight finish before the next phase
            per[phase].extend(took)
            phases.append({"phase": phase, "steps": len(took), **_stats_ms(took), "load": [load0, _load()]})
    counts = [x - y for x, y in zip(storm.snapshot(), counts0)]
    alone, during = _stats_ms(per["alone"]), _stats_ms(per["storm"])
    # the ratio per alternation, side by side, and their median
    p90_ratios = [
        _ratio(
            phases[i + (1 if phases[i]["phase"] == "alone" else 0)]["p90"],
            phases[i + (0 if phases[i]["phase"] == "alone" else 1)]["p90"],
        )
        for i in range(0, len(phases), 2)
    ]
    return {
        "alone_ms": alone,
        "storm_ms": during,
        "steps_alone": len(per["alone"]),
        "steps_storm": len(per["storm"]),
        "p50_ratio": _ratio(during["p50"], alone["p50"]),
        "p90_ratio": _ratio(during["p90"], alone["p90"]),
        "p99_ratio": _ratio(during["p99"], alone["p99"]),
        "p90_ratio_per_alternation": p90_ratios,
        "p90_ratio_median": sorted(p90_ratios)[len(p90_ratios) // 2],
        "compiles_per_s": round(sum(counts) / storm_seconds, 1) if storm_seconds else 0.0,
        "answers_2xx_4xx_5xx_failed": counts,
        "phases": phases,
    }


def _warm_repeats(storm: _Storm) -> None:
    """Each storm client sends its ``REPEATED`` schemas once, so that a storm of them is all hits."""
    storm.repeat.value, storm.period.value = 1, 0.0
    target = sum(storm.snapshot()) + STORM_CLIENTS * REPEATED
    storm.budget.value = STORM_CLIENTS * REPEATED
    storm.go.set()
    while sum(storm.snapshot()) < target:
        time.sleep(0.05)
    storm.go.clear()
    storm.budget.value = -1


def _floors(
    decoder: _Decoder, storm: _Storm, bare: _Storm, rate: float, alternations: int, phase_s: float
) -> dict[str, Any]:
    """The same alternation with storms that make the service compile nothing, at ``rate``
    requests/s (the compile storm's own): ``hits``, the storm's schemas answered from the cache
    (the service still reads, parses and hashes every request); ``elsewhere``, the same requests
    sent to a bare Starlette process (only the storm's clients and that process share the cores).
    What the compile storm costs beyond them is what compile isolation can still remove."""
    period = STORM_CLIENTS / rate if rate > 0 else 0.0
    out: dict[str, Any] = {"rate_per_s": rate}
    for name, s in (("hits", storm), ("elsewhere", bare)):
        _warm_repeats(s)
        s.period.value = period
        out[name] = _alternate(decoder, s, alternations, phase_s)
        s.repeat.value, s.period.value = 0, 0.0
    return out


def run_config(
    name: str, env: dict[str, str], files: list[Path], alternations: int, phase_s: float, floors: bool = False
) -> dict[str, Any]:
    """Every figure for one server configuration; with ``floors``, the floor storms too."""
    rows: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        srv = stack.enter_context(Server(env=env))
        client = stack.enter_context(GuidanceClient(srv.url))
        tag = f"{name}-{os.getpid()}-{time.time_ns()}"
        storm = _Storm(srv.port, files, tag)
        stack.callback(storm.close)
        bare: _Storm | None = None
        if floors:
            floor = stack.enter_context(Server(["bench.floor"]))
            bare = _Storm(floor.port, files, tag)
            stack.callback(bare.close)
        time.sleep(3)  # storm clients import and read their schemas; the compile workers warm up
        for batch in BATCHES:
            decoder = _Decoder(client, batch)
            decoder.run(1.0)  # warm
            row = {"config": name, "batch": batch, **_alternate(decoder, storm, alternations, phase_s)}
            if bare is not None:
                row["floors"] = _floors(decoder, storm, bare, row["compiles_per_s"], alternations, phase_s)
            rows.append(row)
        one_offs = _one_offs(srv.port, storm, client, decoder.case.body)
        stats = client.stats()
    return {"rows": rows, "one_offs": {"config": name, **one_offs}, "workers": stats.get("compile_workers")}


def _stages(schema: Any, tok: Any, limits: Any) -> dict[str, float] | None:
    """Seconds of each stage of one schema's compile, as the server runs them."""
    import llguidance

    from core.derivation import derivation_depth
    from core.expansion import expansion
    from core.jsonschema import prepare_json_schema

    t0 = time.perf_counter()
    prepared = prepare_json_schema(schema, None, limits)[0]
    grammar = llguidance.LLMatcher.grammar_from_json_schema(prepared)
    derivation_depth(grammar, limits.max_derivation_depth)
    t1 = time.perf_counter()
    failed, _ = llguidance.LLMatcher.validate_grammar_with_warnings(grammar, tok.ll, limits=limits.parser_limits())
    t2 = time.perf_counter()
    if failed:
        return None
    expansion(grammar)
    t3 = time.perf_counter()
    matcher = llguidance.LLMatcher(tok.ll, grammar, log_level=0, limits=limits.parser_limits())
    t4 = time.perf_counter()
    row = np.zeros((tok.ll.vocab_size + 31) // 32, dtype=np.int32)
    matcher.deep_copy().unsafe_compute_mask_ptr(int(row.ctypes.data), row.nbytes)
    t5 = time.perf_counter()
    return {
        "python: rewrites, grammar text, depth check": t1 - t0,
        "llguidance validate": t2 - t1,
        "python: expansion check": t3 - t2,
        "llguidance LLMatcher()": t4 - t3,
        "first mask": t5 - t4,
    }


def breakdown(files: list[Path], n: int) -> dict[str, Any]:
    """Where a compile's time goes, over ``n`` MaskBench schemas, in this process (no server);
    and the round trip of a compile worker for a trivial constraint (its fixed cost)."""
    from core import Limits, load_default_tokenizer
    from core.spec import ProgramSpec
    from core.threads import run_on_llguidance_thread
    from core.workers import CompileWorkers

    tok, limits = load_default_tokenizer(), Limits()
    load0 = _load()
    totals: dict[str, list[float]] = {}
    for f in random.Random(1).sample(files, min(n, len(files))):
        try:
            got = run_on_llguidance_thread(
                limits.llguidance_stack_bytes, _stages, json.loads(f.read_text())["schema"], tok, limits
            )
        except Exception:  # refused by a rewrite or a limit: not a compile to time
            continue
        if got is not None:
            for k, v in got.items():
                totals.setdefault(k, []).append(v)
    workers = CompileWorkers(1, limits)
    try:
        workers.compile(ProgramSpec("regex", "a"), tok)  # start and teach the vocabulary
        trips = []
        for i in range(100):
            start = time.perf_counter()
            workers.compile(ProgramSpec("regex", f"a{i}"), tok)
            trips.append(time.perf_counter() - start)
    finally:
        workers.close()
    all_s = sum(sum(v) for v in totals.values())
    return {
        "schemas": len(next(iter(totals.values()))),
        "stages": {
            k: {
                "total_s": round(sum(v), 3),
                "share": round(sum(v) / all_s, 3),
                "median_ms": round(statistics.median(v) * 1000, 3),
                "p90_ms": round(percentile(v, 0.9) * 1000, 3),
            }
            for k, v in totals.items()
        },
        "worker_round_trip_ms": {
            "median": round(statistics.median(trips) * 1000, 3),
            "p90": round(percentile(trips, 0.9) * 1000, 3),
        },
        "load": [load0, _load()],
    }


def run(
    quick: bool = False,
    data: Path = DEFAULT_DATA,
    configs: Sequence[str] = ("isolated", "processes", "baseline"),
    floors: bool = True,
) -> dict[str, Any]:
    """Every configuration, one after the other, on the same machine; the floors with the first."""
    files = _schemas(data)
    alternations, phase_s = (2, 3.0) if quick else (3, 6.0)
    out: dict[str, Any] = {"machine": machine(), "alternations": alternations, "phase_seconds": phase_s, "configs": {}}
    out["breakdown"] = breakdown(files, 100 if quick else 300)
    for i, name in enumerate(configs):
        out["configs"][name] = run_config(name, CONFIGS[name], files, alternations, phase_s, floors and i == 0)
    return out


def table(result: dict[str, Any]) -> str:
    b = result["breakdown"]
    lines = [f"where a compile's time goes ({b['schemas']} MaskBench schemas, load {b['load'][0]}-{b['load'][1]}):"]
    lines.append("stage                                          total s  share  median ms  p90 ms   runs in")
    for k, v in b["stages"].items():
        where = "server" if k in ("llguidance LLMatcher()", "first mask") else "worker"
        lines.append(f"{k:<45} {v['total_s']:>8} {v['share']:>6} {v['median_ms']:>10} {v['p90_ms']:>7}   {where}")
    rt = b["worker_round_trip_ms"]
    lines.append(f"compile worker round trip, trivial regex: median {rt['median']} ms, p90 {rt['p90']} ms")
    lines.append("")
    lines += [
        "config    batch  /step ms alone p50/p90/p99   during storm p50/p90/p99   ratio p50/p90/p99"
        "   p90 ratio per alternation   compiles/s  2xx/4xx/5xx/failed  load"
    ]
    for cfg in result["configs"].values():
        for r in cfg["rows"]:
            a, s = r["alone_ms"], r["storm_ms"]
            loads = [x for p in r["phases"] for x in p["load"]]
            lines.append(
                f"{r['config']:<9} {r['batch']:>5}  {a['p50']:>7}/{a['p90']:>7}/{a['p99']:>7}"
                f"   {s['p50']:>7}/{s['p90']:>7}/{s['p99']:>7}"
                f"   {r['p50_ratio']:>5}/{r['p90_ratio']:>5}/{r['p99_ratio']:>5}"
                f"   {str(r['p90_ratio_per_alternation']):<26}  {r['compiles_per_s']:>9}"
                f"  {'/'.join(map(str, r['answers_2xx_4xx_5xx_failed'])):>18}  {min(loads)}-{max(loads)}"
            )
    floor_rows = [r for cfg in result["configs"].values() for r in cfg["rows"] if "floors" in r]
    if floor_rows:
        lines.append("")
        lines.append(
            "floors: the same alternation, storms at the compile storm's rate that make the service compile nothing"
        )
        lines.append(
            "config    batch  storm      req/s  p90 ms alone -> storm   ratio p50/p90/p99   p90 ratio per alternation"
        )
        for r in floor_rows:
            f = r["floors"]
            for kind, x in (("compiles", r), ("hits", f["hits"]), ("elsewhere", f["elsewhere"])):
                rate = r["compiles_per_s"] if kind == "compiles" else x["compiles_per_s"]
                lines.append(
                    f"{r['config']:<9} {r['batch']:>5}  {kind:<9} {rate:>6}  {x['alone_ms']['p90']:>8}"
                    f" -> {x['storm_ms']['p90']:<8}"
                    f"   {x['p50_ratio']:>5}/{x['p90_ratio']:>5}/{x['p99_ratio']:>5}   {x['p90_ratio_per_alternation']}"
                )
    lines.append("")
    lines.append(
        f"config    one-off schemas  compiles/s (no decode)  steady hit rate (a use every {STEADY_EVERY})"
        "  steady cached after  evictions  2xx/4xx/5xx/failed  load"
    )
    for cfg in result["configs"].values():
        o = cfg["one_offs"]
        lines.append(
            f"{o['config']:<9} {o['one_offs']:>15}  {o['one_offs_per_s']:>22}"
            f"  {str(o['steady_hit_rate']) + ' of ' + str(o['steady_uses']):>38}"
            f"  {str(o['steady_cached_after']):>19}  {o['evictions']:>9}"
            f"  {'/'.join(map(str, o['answers_2xx_4xx_5xx_failed'])):>18}  {o['load'][0]}-{o['load'][1]}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--configs", default="isolated,processes,baseline")
    parser.add_argument("--no-floors", action="store_true", help="skip the floor storms (hits, elsewhere)")
    parser.add_argument("--out", type=Path, default=None, help="also write the result as JSON here")
    args = parser.parse_args(argv)
    start = time.monotonic()
    print(f"load average at start: {_load()}")
    result = run(args.quick, args.data, [c for c in args.configs.split(",") if c], not args.no_floors)
    print(table(result))
    print(f"({time.monotonic() - start:.1f} s; load average at end: {_load()})")
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
