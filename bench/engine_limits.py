"""How the llguidance limits that bind mid-generation are sized: MaskBench walks at several budgets.

    python -m bench.engine_limits [--data ../shared/data] [--fuel 200000 1000000 ...] [--limit N]

For each ``step_lexer_fuel`` given: every MaskBench-sample schema that compiles is walked along
each of its valid instances (compact JSON, the tokenizer's own encoding), a mask before every
token, as a worker would (with the forced tokens, as the service's answers compute them). Reported
per budget: schemas and instances that meet an engine limit (413 ``engine-limit`` in the service),
parser rebuilds after a spent shared lexer, and the CPU time of masks (median, p99, max) and of the
forced tokens (max): ``max_mask_ms`` must stay above both maxima. The defaults in
``core.limits.Limits`` come from this run
(``docs/reliability.md``, "Engine limits mid-generation").
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any

from core import EngineLimitReached, GuidanceBackend, GuidanceError, Limits, load_default_tokenizer
from core.tokenizers import Tokenizer

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"
MASKBENCH_DIR = Path("jsonschemabench") / "maskbench" / "data"


def walk_corpus(files: list[Path], tokenizer: Tokenizer, fuel: int) -> dict[str, Any]:
    """Walk every valid instance of every compiling schema with ``step_lexer_fuel=fuel``."""
    backend = GuidanceBackend(tokenizer, max_cache_size=1, limits=Limits(step_lexer_fuel=fuel))
    row = backend.allocate_bitmask(1)
    mask_seconds: list[float] = []
    forced_max = 0.0
    limits: Counter[str] = Counter()
    schemas_hit: set[str] = set()
    instances = compiled = renewals = 0
    for path in files:
        case = json.loads(path.read_text())
        valid = [t["data"] for t in case.get("tests", []) if t.get("valid")]
        if not valid:
            continue
        try:
            program = backend.compile_json_schema(case["schema"])
        except GuidanceError:
            continue
        compiled += 1
        for data in valid:
            instances += 1
            state = program.create_state()
            try:
                for token in tokenizer.encode(json.dumps(data, separators=(",", ":"), ensure_ascii=False)):
                    # CPU time of this thread, as max_mask_ms counts it (not load from elsewhere)
                    start = time.thread_time()
                    state.fill_bitmask(row, 0)
                    mask_seconds.append(time.thread_time() - start)
                    start = time.thread_time()
                    state.forced_tokens()
                    forced_max = max(forced_max, time.thread_time() - start)
                    if not state.accept_tokens([token]):
                        break  # a refusal (key order, number spelling): conformance's business
            except EngineLimitReached as e:
                limits[e.limit] += 1
                schemas_hit.add(path.name)
        renewals += program.stats.shard_renewals
    mask_seconds.sort()
    return {
        "step_lexer_fuel": fuel,
        "schemas_compiled": compiled,
        "instances_walked": instances,
        "instances_meeting_a_limit": sum(limits.values()),
        "limits_met": dict(limits),
        "schemas_meeting_a_limit": sorted(schemas_hit),
        "parser_rebuilds": renewals,
        "masks": len(mask_seconds),
        "mask_median_us": round(statistics.median(mask_seconds) * 1e6, 1) if mask_seconds else None,
        "mask_p99_us": round(mask_seconds[int(len(mask_seconds) * 0.99)] * 1e6, 1) if mask_seconds else None,
        "mask_max_ms": round(mask_seconds[-1] * 1e3, 2) if mask_seconds else None,
        "forced_tokens_max_ms": round(forced_max * 1e3, 2),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.engine_limits", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="corpora root (default: ../shared/data)")
    parser.add_argument("--fuel", type=int, nargs="+", default=[200_000, 1_000_000, 2_000_000])
    parser.add_argument("--limit", type=int, default=0, help="first N schemas only (0: all)")
    args = parser.parse_args(argv)
    files = sorted((args.data / MASKBENCH_DIR).glob("*.json"))
    if args.limit:
        files = files[: args.limit]
    tokenizer = load_default_tokenizer()
    for fuel in args.fuel:
        print(json.dumps(walk_corpus(files, tokenizer, fuel)), flush=True)


if __name__ == "__main__":
    main()
