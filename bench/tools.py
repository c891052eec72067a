"""``python -m bench.tools [--data ../shared/data] [--repeat N]``: tools compile figures.

Compile plus first mask, cold (a fresh cache each time), for 1, 10, 128 and 512 tools whose
parameter schemas are MaskBench's BFCL files (read from ``--data``, never copied), in a JSON
family (``hermes``), a tag family (``qwen3-coder``) and Gemma 4's notation, on tekken; beside
xgrammar's structural-tag compile of the same tools where xgrammar is installed. Then the mask cost
per token inside one call's arguments against the same schema compiled alone. Targets: 128 tools
ready in under 200 ms, 512 in under 1 s.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from bench.harness import machine, median
from core import GuidanceBackend
from core.tokenizers import load_default_tokenizer

BFCL = Path("jsonschemabench") / "maskbench" / "data"
COUNTS = (1, 10, 128, 512)
FAMILIES = ("hermes", "qwen3-coder", "gemma4")
TARGET_MS = {128: 200.0, 512: 1000.0}


def bfcl_tools(data: Path, n: int) -> list[dict[str, Any]]:
    """``n`` tools from the BFCL files (each file's schema names functions); renamed copies past the set."""
    found: list[tuple[str, dict[str, Any]]] = []
    names: set[str] = set()
    for path in sorted((data / BFCL).glob("BFCL_*.json")):
        schema = json.loads(path.read_text(encoding="utf-8"))["schema"]
        for name, params in (schema.get("properties") or {}).items():
            if isinstance(params, dict) and params.get("type", "object") == "object" and name not in names:
                names.add(name)
                found.append((name, params))
    tools = []
    for i in range(n):
        name, params = found[i % len(found)]
        tools.append({"type": "function", "function": {"name": f"{name}_{i // len(found)}"[:64], "parameters": params}})
    return tools


def _compile_ms(backend: GuidanceBackend, tools: list[dict[str, Any]], family: str) -> float:
    backend.clear_cache()
    start = time.perf_counter()
    program = backend.compile_tools(tools, family)
    state = program.create_state()
    mask = backend.allocate_bitmask(1)
    state.fill_bitmask(mask, 0)
    return (time.perf_counter() - start) * 1000


def _xgrammar_ms(tools: list[dict[str, Any]]) -> float | None:
    try:
        import xgrammar  # type: ignore[import-not-found]
    except ImportError:
        return None
    tok = load_default_tokenizer()
    info = xgrammar.TokenizerInfo([tok.token_bytes(i) for i in range(tok.vocab_size)], vocab_size=tok.vocab_size)
    compiler = xgrammar.GrammarCompiler(info, cache_enabled=False)
    tags = [
        xgrammar.StructuralTagItem(
            begin=f'<tool_call>\n{{"name": "{t["function"]["name"]}", "arguments": ',
            schema=json.dumps(t["function"]["parameters"]),
            end="}\n</tool_call>",
        )
        for t in tools
    ]
    start = time.perf_counter()
    compiled = compiler.compile_structural_tag(tags, ["<tool_call>"])
    matcher = xgrammar.GrammarMatcher(compiled)
    matcher.fill_next_token_bitmask(xgrammar.allocate_token_bitmask(1, tok.vocab_size))
    return (time.perf_counter() - start) * 1000


def _step_us(backend: GuidanceBackend, data: Path) -> dict[str, float]:
    """Mask cost per token inside a call's arguments vs the same schema alone (hermes's separators)."""
    path = sorted((data / BFCL).glob("BFCL_simple_*.json"))[0]
    case = json.loads(path.read_text(encoding="utf-8"))
    name, params = next(iter(case["schema"]["properties"].items()))
    instance = next(t["data"] for t in case["tests"] if t["valid"])[name]
    args = json.dumps(instance)  # the template's tojson separators
    tok = backend.tokenizer
    tools = [{"type": "function", "function": {"name": name, "parameters": params}}]
    schema = {**params, "x-guidance": {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}}
    prefix = f'<tool_call>\n{{"name": "{name}", "arguments": '
    out = {}
    for label, program, head in (
        ("in a call", backend.compile_tools(tools, "hermes", tool_choice="required"), prefix),
        ("schema alone", backend.compile_json_schema(schema), ""),
    ):
        mask = backend.allocate_bitmask(1)
        times = []
        for _ in range(5):
            state = program.create_state()
            assert state.accept_tokens(tok.encode(head)), label
            for t in tok.encode(args):
                start = time.perf_counter()
                state.fill_bitmask(mask, 0)
                times.append(time.perf_counter() - start)
                assert state.accept_token(t), label
        out[label] = median(times) * 1e6
    return out


def run(data: Path, repeat: int) -> dict[str, Any]:
    backend = GuidanceBackend(load_default_tokenizer())
    rows = []
    for n in COUNTS:
        tools = bfcl_tools(data, n)
        row: dict[str, Any] = {"tools": n}
        for family in FAMILIES:
            row[family] = round(median([_compile_ms(backend, tools, family) for _ in range(repeat)]), 1)
        xg = _xgrammar_ms(tools)
        row["xgrammar"] = None if xg is None else round(xg, 1)
        row["target_ms"] = TARGET_MS.get(n)
        rows.append(row)
    return {"machine": machine(), "compile_ms": rows, "mask_us": _step_us(backend, data)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    result = run(args.data, args.repeat)
    print(f"{'tools':>6} " + " ".join(f"{f:>12}" for f in (*FAMILIES, "xgrammar")) + "   target (ms)")
    for row in result["compile_ms"]:
        cells = " ".join(f"{'-' if row[k] is None else row[k]:>12}" for k in (*FAMILIES, "xgrammar"))
        print(f"{row['tools']:>6} {cells}   {row['target_ms'] or ''}")
    print("mask per token inside arguments (us, median):", {k: round(v, 1) for k, v in result["mask_us"].items()})
    out = Path(__file__).resolve().parent / "results" / "tools.json"
    out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
