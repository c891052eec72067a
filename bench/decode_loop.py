"""Decode loop: a fake worker, batch 64, fixed forward-pass time, remote constraints vs none.

The worker holds 64 sequences, half on the JSON schema and half on the template of
:mod:`bench.cases`, each on a different text. Per step it "runs the forward pass"
(``time.sleep(F)``, F = 10, 20, 40 ms) and samples one token per sequence: the next token of its
own text if the mask allows it, else the first allowed token (counted as a divergence; expected 0).
A sequence that samples EOS is finished and its slot takes the next text at once (continuous
batching), on a session opened beforehand. The sequences start at random positions of their
first text (accepted before the clock starts), as in a running server: in lockstep, all 32
template sequences would enter their free-text slot (a 131k-vocabulary mask of 0.3 to 0.8 ms
each) on the same step.

* **pipelined** (the product's promise): ``GrammarBatch.submit`` sends step t's tokens, the
  forward pass of step t+1 runs meanwhile, then the worker waits for the masks;
* **sync** (diagnostic): the same with ``GrammarBatch.step`` after the forward pass;
* **none**: the same loop without constraints (no masks, the text's next token);
* **local** (reference): constraints in the worker's own process, as engines embed them today,
  synchronous: after the forward pass, ``core`` fills the 64 masks (one batched call), then the
  worker samples and accepts.

Loops alternate, in the same run, per forward time; tokens/s is sampled tokens / wall time,
median over rounds; the ratio pipelined/none at 20 ms is the headline figure (target >= 0.95).
``python -m bench.decode_loop [--quick]``.
"""

from __future__ import annotations

import random
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench.cases import CASES, Case, texts
from bench.harness import Server, median, slow_lane_calls
from bench.inprocess import spec_of
from core import GuidanceBackend
from core.session import GuidanceState
from guidance_client import GrammarBatch, GuidanceClient, RemoteGrammar, StepStatus

BATCH = 64
FORWARD_MS = (10, 20, 40)
LOOP_CASES = ("json", "template")


@dataclass
class Slot:
    """One row of the batch: a queue of texts (as token ids) and, when constrained, sessions."""

    seqs: list[list[int]]
    start: int = 0
    grammars: list[RemoteGrammar] = field(default_factory=list)
    states: list[GuidanceState] = field(default_factory=list)
    index: int = 0
    pos: int = 0

    def __post_init__(self) -> None:
        self.pos = self.start

    def want(self, eos: int) -> int:
        seq = self.seqs[self.index]
        return seq[self.pos] if self.pos < len(seq) else eos

    def choose(self, row: np.ndarray, eos: int) -> tuple[int, bool]:
        """The token this slot wants if ``row`` allows it, else an allowed one; and whether it diverged."""
        token = self.want(eos)
        if _allowed(row, token):
            return token, False
        return _fallback(row, eos), True

    def advance(self, token: int, eos: int) -> bool:
        """Move past ``token``; True when it ended the text (the next text starts, on a fresh session)."""
        self.pos += 1
        if token != eos:
            return False
        self.index += 1
        self.pos = 0
        return True


def _slots(tok: Any, cases: list[Case], steps: int, seed: int) -> list[Slot]:
    per_case = BATCH // len(cases)
    rng = random.Random(seed)
    slots: list[Slot] = []
    for case in cases:
        sample = [len(tok.encode(t)) for t in texts(case, 8, seed=999)]
        need = steps // (min(sample) + 1) + 2  # texts a slot can finish in `steps` steps
        pool = [tok.encode(t) for t in texts(case, per_case * need, seed=seed)]
        for i in range(per_case):
            seqs = pool[i * need : (i + 1) * need]
            slots.append(Slot(seqs, start=rng.randrange(len(seqs[0]))))
    return slots


def _prefixes(slots: list[Slot]) -> list[list[int]]:
    return [slot.seqs[0][: slot.start] for slot in slots]


def _open_sessions(client: GuidanceClient, slots: list[Slot], cases: list[Case]) -> None:
    per_case = BATCH // len(cases)
    for k, case in enumerate(cases):
        info = client.compile_spec(case.body)
        for slot in slots[k * per_case : (k + 1) * per_case]:
            slot.grammars = [
                RemoteGrammar(client, case.body, info, client.create_session(info.program_id)) for _ in slot.seqs
            ]


def _close_sessions(slots: list[Slot]) -> None:
    for slot in slots:
        for g in slot.grammars:
            g.close()


def _allowed(row: np.ndarray, token: int) -> bool:
    return bool((int(row[token >> 5]) >> (token & 31)) & 1)


def _fallback(row: np.ndarray, eos: int) -> int:
    if _allowed(row, eos):
        return eos
    bits = np.unpackbits(row.view(np.uint8), bitorder="little")
    allowed = np.flatnonzero(bits)
    if not allowed.size:
        raise AssertionError("empty mask")
    return int(allowed[0])


def _figures(
    slots: list[Slot], produced: int, elapsed: float, waits: list[float], divergences: int
) -> dict[str, float]:
    return {
        "tokens_per_s": produced / elapsed,
        "wait_ms": median(waits) * 1e3 if waits else 0.0,
        "divergences": divergences,
        "finished": sum(s.index for s in slots),
    }


def _loop_none(slots: list[Slot], steps: int, forward_s: float, eos: int) -> dict[str, float]:
    produced = 0
    start = time.perf_counter()
    for _ in range(steps):
        time.sleep(forward_s)
        for slot in slots:
            slot.advance(slot.want(eos), eos)
            produced += 1
    return _figures(slots, produced, time.perf_counter() - start, [], 0)


def _loop_remote(
    client: GuidanceClient, slots: list[Slot], steps: int, forward_s: float, eos: int, words: int, pipelined: bool
) -> dict[str, float]:
    bitmask = np.zeros((BATCH, words), dtype=np.int32)
    batch = GrammarBatch(client, [slot.grammars[0] for slot in slots])
    divergences = produced = 0
    waits: list[float] = []
    tokens: list[list[int]] = [[] for _ in slots]
    try:
        statuses = batch.step(_prefixes(slots), bitmask)  # the running state, off the clock
        pending: Future[list[StepStatus]] | None = None
        start = time.perf_counter()
        for step in range(steps):
            time.sleep(forward_s)  # the forward pass (the step in flight overlaps it)
            t0 = time.perf_counter()
            if step > 0:
                statuses = pending.result() if pending is not None else batch.step(tokens, bitmask)
            waits.append(time.perf_counter() - t0)
            tokens = []
            for i, slot in enumerate(slots):
                if statuses[i].status != "ok":
                    raise AssertionError(f"step refused: {statuses[i]}")
                token, diverged = slot.choose(bitmask[i], eos)
                divergences += diverged
                produced += 1
                if slot.advance(token, eos):  # finished: the slot's next request starts on a fresh session
                    batch.grammars[i] = slot.grammars[slot.index]
                    tokens.append([])
                else:
                    tokens.append([token])
            if pipelined:
                pending = batch.submit(tokens, bitmask)
        elapsed = time.perf_counter() - start
        if pending is not None:
            pending.result()
    finally:
        batch.close()
    return _figures(slots, produced, elapsed, waits, divergences)


def _loop_local(
    backend: GuidanceBackend, programs: list[Any], slots: list[Slot], steps: int, forward_s: float, eos: int
) -> dict[str, float]:
    per_case = BATCH // len(programs)
    for k, program in enumerate(programs):
        for slot in slots[k * per_case : (k + 1) * per_case]:
            slot.states = [program.create_state() for _ in slot.seqs]
    states = [slot.states[0] for slot in slots]
    for st, prefix in zip(states, _prefixes(slots)):
        st.advance(prefix)
    bitmask = backend.allocate_bitmask(BATCH)
    divergences = produced = 0
    waits: list[float] = []
    start = time.perf_counter()
    for _ in range(steps):
        time.sleep(forward_s)
        t0 = time.perf_counter()
        backend.fill_next_token_bitmasks(states, bitmask)
        for i, slot in enumerate(slots):
            token, diverged = slot.choose(bitmask[i], eos)
            divergences += diverged
            produced += 1
            if slot.advance(token, eos):
                states[i] = slot.states[slot.index]
            else:
                states[i].advance((token,))
        waits.append(time.perf_counter() - t0)
    return _figures(slots, produced, time.perf_counter() - start, waits, divergences)


def run(quick: bool = False, server: Server | None = None) -> dict[str, Any]:
    """tokens/s per forward time for pipelined, sync and unconstrained loops; ratios to unconstrained."""
    steps, rounds = (40, 1) if quick else (120, 3)
    backend = GuidanceBackend()
    tok = backend.tokenizer
    eos = tok.eos_token_id
    cases = [c for c in CASES if c.name in LOOP_CASES]
    programs = [backend.compile(spec_of(c.body))[0] for c in cases]
    own = server is None
    srv = server or Server().start()
    rows: list[dict[str, Any]] = []
    try:
        with GuidanceClient(srv.url) as client:
            words = client.compile_spec(cases[0].body).mask_words
            # warm the server's programs on other texts, off the clock
            warm = _slots(tok, cases, 20, seed=12345)
            _open_sessions(client, warm, cases)
            _loop_remote(client, warm, 20, 0.0, eos, words, True)
            _close_sessions(warm)
            _loop_local(backend, programs, _slots(tok, cases, 20, seed=12345), 20, 0.0, eos)
            for forward_ms in FORWARD_MS:
                modes = ["none", "pipelined"] + (["sync", "local"] if not quick or forward_ms == 20 else [])
                results: dict[str, list[dict[str, float]]] = {m: [] for m in modes}
                slow_before = slow_lane_calls(srv.url)
                for r in range(rounds):
                    order = modes if r % 2 == 0 else list(reversed(modes))
                    for mode in order:
                        slots = _slots(tok, cases, steps, seed=1000 * forward_ms + r)
                        if mode == "none":
                            results[mode].append(_loop_none(slots, steps, forward_ms / 1e3, eos))
                            continue
                        if mode == "local":
                            results[mode].append(_loop_local(backend, programs, slots, steps, forward_ms / 1e3, eos))
                            continue
                        _open_sessions(client, slots, cases)
                        try:
                            results[mode].append(
                                _loop_remote(client, slots, steps, forward_ms / 1e3, eos, words, mode == "pipelined")
                            )
                        finally:
                            _close_sessions(slots)
                slow_after = slow_lane_calls(srv.url)
                base = median([x["tokens_per_s"] for x in results["none"]])
                row: dict[str, Any] = {"forward_ms": forward_ms, "batch": BATCH, "steps": steps, "rounds": rounds}
                row["none_tok_s"] = round(base, 1)
                for mode in modes[1:]:
                    tps = median([x["tokens_per_s"] for x in results[mode]])
                    row[f"{mode}_tok_s"] = round(tps, 1)
                    row[f"{mode}_ratio"] = round(tps / base, 3)
                    row[f"{mode}_wait_ms"] = round(median([x["wait_ms"] for x in results[mode]]), 3)
                    row[f"{mode}_divergences"] = int(sum(x["divergences"] for x in results[mode]))
                row["requests_finished"] = int(sum(x["finished"] for x in results["pipelined"]))
                row["slow_lane_requests"] = (
                    None if slow_before is None or slow_after is None else slow_after - slow_before
                )
                rows.append(row)
    finally:
        if own:
            srv.stop()
    at20 = next(r for r in rows if r["forward_ms"] == 20)
    return {"rows": rows, "decode_loop_vs_unconstrained": at20["pipelined_ratio"]}


def table(result: dict[str, Any]) -> str:
    lines = [
        (
            "forward ms  none tok/s  pipelined tok/s  ratio  wait ms   sync tok/s  ratio  wait ms"
            "  local tok/s  ratio  wait ms  divergences  finished  slow lane"
        )
    ]
    for r in result["rows"]:
        extra = ""
        for mode in ("sync", "local"):
            extra += (
                f"  {r[mode + '_tok_s']:>11}  {r[mode + '_ratio']:>5}  {r[mode + '_wait_ms']:>7}"
                if mode + "_tok_s" in r
                else f"  {'-':>11}  {'-':>5}  {'-':>7}"
            )
        lines.append(
            f"{r['forward_ms']:>10}  {r['none_tok_s']:>10}  {r['pipelined_tok_s']:>15}  {r['pipelined_ratio']:>5}"
            f"  {r['pipelined_wait_ms']:>7}{extra}  {r['pipelined_divergences']:>11}  {r['requests_finished']:>8}"
            f"  {r['slow_lane_requests'] if r['slow_lane_requests'] is not None else '-':>9}"
        )
    lines.append(
        f"decode_loop_vs_unconstrained (20 ms, pipelined): {result['decode_loop_vs_unconstrained']}   (target >= 0.95)"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    print(table(run(quick="--quick" in sys.argv)))
