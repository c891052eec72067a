"""transformers ``generate`` under constraints: tokens/s, remote (sync, pipelined) vs in-process vs none.

``python -m bench.engines [--quick] [--out PATH]``, in the venv of ``.ci/engines-hf`` (torch,
transformers). The model is a random-weight Llama with tekken's 131,072 ids, built here in three
sizes whose forward pass (batch 8, one new token) takes about 10, 20 and 40 ms on an idle core
of the development machine (hidden 96, 192 and 384: the 131k-row output layer dominates), each run
at batch 8 and 32; the forward times of the run itself are measured and reported (``--calibrate``
picks the hidden sizes from measurements instead, which a busy machine skews). This process (the
model) is pinned to CPU 0 with one torch thread; the server to CPU 1 (``taskset``), as on a GPU
host where the server has cores of its own.

Per size and batch, four ways to generate the same number of new tokens from the same prompts,
alternating, ``rounds`` times (median):

* **none**: no constraint (EOS disabled, every row generates ``tokens`` tokens);
* **sync**: :class:`guidance_client.transformers.GuidanceLogitsProcessor`, one ``/step`` after
  each forward pass;
* **pipelined**: the same, the step sent from the stopping-criteria hook, overlapping the next
  forward pass;
* **in-process**: the constraint in this process, as engines embed llguidance today (``core``'s
  ``GuidanceGrammar``: accept and fill each row's mask after the forward pass, same mask apply).

The rows cycle through a JSON schema (a long array: sparse masks), a template with a free-text
slot (dense masks) and a regex, all long enough to outlast ``tokens``. tokens/s counts every
generated token up to a row's EOS. The worker-side cost of applying a step's masks to the logits
(``MaskPlan`` + torch) is reported per step, beside the naive route (unpack to a boolean
``[batch, vocab]``, ``masked_fill``) on the same masks.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.harness import ROOT, free_port, machine, median, wait_ready

SPECS: list[dict[str, Any]] = [
    {
        "json_schema": {
            "type": "array",
            "minItems": 60,
            "items": {
                "type": "object",
                "properties": {"id": {"type": "integer"}, "name": {"type": "string", "maxLength": 12}},
                "required": ["id", "name"],
                "additionalProperties": False,
            },
        }
    },
    {"template": "Summary: {{gen 'summary' max_tokens=1000}}"},
    {"regex": "(?:[a-z]{1,8} ){200,}"},
]
TARGETS_MS = (10.0, 20.0, 40.0)
SIZES = ((10.0, 96), (20.0, 192), (40.0, 384))  # (target forward ms, hidden size), idle machine
HIDDEN = (32, 64, 96, 128, 192, 256, 320, 384, 448, 512, 640, 768)
VOCAB = 131_072


def _torch() -> Any:
    import torch

    torch.set_num_threads(1)
    return torch


def build_model(hidden: int, seed: int = 0) -> Any:
    import transformers

    torch = _torch()
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        eos_token_id=2,
        pad_token_id=0,
        bos_token_id=None,
    )
    return transformers.LlamaForCausalLM(config).eval()


def forward_ms(model: Any, batch: int = 8, reps: int = 5) -> float:
    """Median time of one decoding forward pass (one new token, short context) at ``batch``."""
    torch = _torch()
    ids = torch.randint(1000, VOCAB, (batch, 16))
    step = torch.randint(1000, VOCAB, (batch, 1))
    times = []
    with torch.no_grad():
        for _ in range(reps + 1):
            cache = model(input_ids=ids, use_cache=True).past_key_values  # the prefill, not timed
            t = time.perf_counter()
            model(input_ids=step, past_key_values=cache, use_cache=True)
            times.append(time.perf_counter() - t)
    times = times[1:]  # the first call warms up
    return median(times) * 1000


def calibrate() -> list[tuple[float, int, float]]:
    """For each target forward time, the hidden size whose batch-8 forward pass comes closest."""
    measured: dict[int, float] = {}
    chosen = []
    for target in TARGETS_MS:
        best = None
        for hidden in HIDDEN:
            if hidden not in measured:
                measured[hidden] = forward_ms(build_model(hidden))
            if best is None or abs(measured[hidden] - target) < abs(measured[best] - target):
                best = hidden
            if measured[hidden] > target * 1.5:
                break
        assert best is not None
        chosen.append((target, best, measured[best]))
    return chosen


class InProcess:
    """A logits processor with the constraint in this process (llguidance through ``core``)."""

    def __init__(self, backend: Any, specs: list[dict[str, Any]]) -> None:
        from core import GuidanceGrammar

        tok = backend.tokenizer
        self.grammars = []
        for spec in specs:
            if "json_schema" in spec:
                program = backend.compile_json_schema(spec["json_schema"])
            elif "template" in spec:
                program = backend.compile_template(spec["template"], variables={})
            else:
                program = backend.compile_regex(spec["regex"])
            self.grammars.append(GuidanceGrammar(program, tok))
        self.bitmask = backend.allocate_bitmask(len(specs))
        self.vocab = tok.vocab_size
        self.sent: int | None = None

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        from guidance_client.logits import MaskPlan
        from guidance_client.transformers import apply_plan

        rows = [i for i, g in enumerate(self.grammars) if not g.is_terminated()]
        if self.sent is not None:
            new = input_ids[:, self.sent :].numpy()
            for i in rows:
                if not self.grammars[i].accept_tokens(new[i].tolist()):
                    raise RuntimeError(f"row {i}: token refused")
            rows = [i for i in rows if not self.grammars[i].is_terminated()]
        self.sent = input_ids.shape[1]
        for k, i in enumerate(rows):
            self.grammars[i].fill_next_token_bitmask(self.bitmask, k)
        if rows:
            apply_plan(
                scores, MaskPlan.build(self.bitmask[: len(rows)], self.vocab, scores.shape[-1], np.asarray(rows))
            )
        return scores


def generate(model: Any, batch: int, tokens: int, mode: str, url: str, backend: Any, seed: int) -> dict[str, float]:
    """One generate call; returns tokens/s and the mask-apply figures."""
    import transformers

    from guidance_client import GuidanceClient
    from guidance_client.transformers import GuidanceLogitsProcessor

    torch = _torch()
    torch.manual_seed(seed)
    prompt = torch.randint(1000, VOCAB, (batch, 8))
    specs = [SPECS[i % len(SPECS)] for i in range(batch)]
    kwargs: dict[str, Any] = {"do_sample": True, "top_k": 0, "max_new_tokens": tokens}
    processor: Any = None
    with GuidanceClient(url) as client:
        if mode == "none":
            kwargs["eos_token_id"] = None
        elif mode == "in-process":
            processor = InProcess(backend, specs)
            kwargs["logits_processor"] = transformers.LogitsProcessorList([processor])
        else:
            processor = GuidanceLogitsProcessor(client, specs, pipelined=mode == "pipelined")
            kwargs["logits_processor"] = transformers.LogitsProcessorList([processor])
            kwargs["stopping_criteria"] = transformers.StoppingCriteriaList([processor.stopping_criteria])
        start = time.perf_counter()
        out = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), **kwargs)
        elapsed = time.perf_counter() - start
        if isinstance(processor, GuidanceLogitsProcessor):
            processor.finish(out)
    new = out[:, prompt.shape[1] :].tolist()
    produced = sum(row.index(2) + 1 if 2 in row and mode != "none" else len(row) for row in new)
    figures = {"tokens_per_s": produced / elapsed, "tokens": produced}
    if isinstance(processor, GuidanceLogitsProcessor):
        figures["apply_ms_per_step"] = processor.apply_seconds / max(1, processor.applies) * 1000
    return figures


def apply_costs(url: str, batch: int, steps: int = 24) -> dict[str, float]:
    """Mask-apply time per step, planned vs naive, on the masks of a real walk of the specs."""
    torch = _torch()
    from guidance_client import GrammarBatch, GuidanceClient
    from guidance_client.wire import allowed_tokens

    specs = [SPECS[i % len(SPECS)] for i in range(batch)]
    rng = np.random.default_rng(0)
    planned, naive = [], []
    with GuidanceClient(url) as client:
        grammars = [client.grammar(**spec) for spec in specs]
        gb = GrammarBatch(client, grammars, forced_tokens=False)
        bitmask = np.zeros((batch, grammars[0].mask_words), dtype=np.int32)
        tokens: list[list[int]] = [[] for _ in specs]
        for _ in range(steps):
            gb.step(tokens, bitmask)
            _time_apply(torch.randn(batch, VOCAB), bitmask, planned, naive)
            tokens = [[int(rng.choice(allowed_tokens(bitmask[i], VOCAB)))] for i in range(batch)]
        for g in grammars:
            g.close()
    return {"planned_ms": median(planned) * 1000, "naive_ms": median(naive) * 1000}


def _time_apply(scores: Any, masks: Any, planned: list[float], naive: list[float]) -> None:
    """Apply ``masks`` to copies of ``scores`` both ways, appending each route's seconds; both
    routes must give the same logits."""
    torch = _torch()
    from guidance_client.logits import MaskPlan
    from guidance_client.transformers import apply_plan

    a, b = scores.clone(), scores.clone()  # both routes work in place on their own copy
    t = time.perf_counter()
    apply_plan(a, MaskPlan.build(masks, VOCAB, VOCAB))
    planned.append(time.perf_counter() - t)
    t = time.perf_counter()
    bits = np.unpackbits(masks.view(np.uint8), axis=1, bitorder="little")[:, :VOCAB].view(bool)
    b.masked_fill_(~torch.from_numpy(bits), float("-inf"))
    naive.append(time.perf_counter() - t)
    assert torch.equal(a, b)


def apply_synthetic(reps: int = 30) -> list[dict[str, Any]]:
    """Mask-apply time per step on made-up masks: every row sparse (12 ids), every row dense (all
    but 500 ids), and half and half; planned vs naive, batch 8 and 32, tekken's width."""
    torch = _torch()
    from guidance_client.wire import pack_tokens

    rng = np.random.default_rng(0)
    out = []
    for batch in (8, 32):
        for kind in ("sparse", "dense", "mixed"):
            sizes = [12 if kind == "sparse" or (kind == "mixed" and i % 2) else VOCAB - 500 for i in range(batch)]
            masks = np.stack([pack_tokens(rng.choice(VOCAB, k, replace=False), VOCAB) for k in sizes])
            scores = torch.randn(batch, VOCAB)
            planned, naive = [], []
            for _ in range(reps):
                _time_apply(scores, masks, planned, naive)
            out.append(
                {"batch": batch, "rows": kind, "planned_ms": median(planned) * 1000, "naive_ms": median(naive) * 1000}
            )
    return out


def start_server() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "service", "--log-level", "warning", "--port", str(port)]
    if len(os.sched_getaffinity(0)) > 1:
        cmd = ["taskset", "-c", "1", *cmd]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_ready(port, proc)
    return proc, f"http://127.0.0.1:{port}"


def run(quick: bool = False, calibrated: bool = False) -> dict[str, Any]:
    from core import GuidanceBackend

    cpus = os.sched_getaffinity(0)
    proc, url = start_server()
    if len(cpus) > 1:
        os.sched_setaffinity(0, {min(cpus)})  # the model: one core (threads made later inherit it)
    torch = _torch()
    tokens = 16 if quick else 24
    rounds = 1 if quick else 2
    modes = ["none", "sync", "pipelined", "in-process"]
    rows: list[dict[str, Any]] = []
    result: dict[str, Any] = {"machine": machine(), "torch": torch.__version__, "rows": rows}
    try:
        backend = GuidanceBackend()
        sizes = [(t, h) for t, h, _ in calibrate()] if calibrated else list(SIZES)
        for target, hidden in sizes:
            model = build_model(hidden)
            for batch in (8, 32):
                fwd = forward_ms(model, batch)
                for mode in modes:  # warm-up: first generate calls are slow
                    generate(model, batch, 4, mode, url, backend, seed=99)
                runs: dict[str, list[dict[str, float]]] = {m: [] for m in modes}
                for r in range(rounds):
                    for mode in modes:
                        runs[mode].append(generate(model, batch, tokens, mode, url, backend, seed=r))
                tps = {m: median([x["tokens_per_s"] for x in runs[m]]) for m in modes}
                row = {
                    "target_ms": target,
                    "hidden": hidden,
                    "batch": batch,
                    "forward_ms": round(fwd, 2),
                    **{f"{m}_tok_s": round(tps[m], 1) for m in modes},
                    **{f"{m}_vs_none": round(tps[m] / tps["none"], 3) for m in modes if m != "none"},
                    "apply_ms_in_loop": round(median([x["apply_ms_per_step"] for x in runs["sync"]]), 3),
                    **{k: round(v, 3) for k, v in apply_costs(url, batch).items()},
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    result["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    return result


def table(result: dict[str, Any]) -> str:
    head = (
        "| forward (B8 target) | hidden | batch | forward ms | none tok/s | sync | pipelined | in-process "
        "| apply ms/step (planned / naive) |\n|---|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for r in result["rows"]:
        lines.append(
            f"| {r['target_ms']:.0f} ms | {r['hidden']} | {r['batch']} | {r['forward_ms']:.1f} | {r['none_tok_s']:.0f} "
            f"| {r['sync_tok_s']:.0f} ({r['sync_vs_none']:.2f}x) "
            f"| {r['pipelined_tok_s']:.0f} ({r['pipelined_vs_none']:.2f}x) "
            f"| {r['in-process_tok_s']:.0f} ({r['in-process_vs_none']:.2f}x) "
            f"| {r['planned_ms']:.2f} / {r['naive_ms']:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.engines", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer tokens, one round")
    parser.add_argument("--calibrate", action="store_true", help="pick hidden sizes from measured forward times")
    parser.add_argument("--apply", action="store_true", help="only the mask-apply comparison on made-up masks")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "engines.json")
    args = parser.parse_args()
    if args.apply:
        cpus = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {min(cpus)})
        print("| batch | rows | planned ms | naive ms |\n|---|---|---|---|")
        for r in apply_synthetic():
            print(f"| {r['batch']} | {r['rows']} | {r['planned_ms']:.2f} | {r['naive_ms']:.2f} |")
        return
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # the server is stopped on the way out
    result = run(args.quick, args.calibrate)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))


if __name__ == "__main__":
    main()
