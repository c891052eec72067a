"""``python -m bench.compile_record OUT [--compare BEFORE]``: what every corpus schema compiles to.

For each schema of the MaskBench sample and of the JSON Schema Test Suite (draft 2020-12, with
``optional/``), one JSON line: the schema prepared for llguidance (:func:`core.jsonschema.prepare_json_schema`:
the rewrites' output and the ignored annotations) or its refusal, and what a whole compile gives
(:meth:`core.GuidanceBackend.compile`: the grammar text and ignored annotations, or the refusal's
class, code and message). Kept to check that a change to the compile path leaves every rewrite and
every refusal byte-identical: ``--compare`` reads an earlier record and counts the lines that differ.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.harness import ROOT
from core import GuidanceBackend, GuidanceError
from core.jsonschema import prepare_json_schema
from core.limits import Limits
from core.spec import ProgramSpec

__all__ = ["main", "record", "schemas"]

DATA = ROOT.parent / "shared" / "data"


def schemas() -> Iterator[tuple[str, Any]]:
    """``(name, schema)`` of every corpus schema, in a fixed order."""
    for path in sorted((DATA / "jsonschemabench" / "maskbench" / "data").glob("*.json")):
        yield f"maskbench/{path.name}", json.loads(path.read_text(encoding="utf-8"))["schema"]
    suite = DATA / "json-schema-test-suite" / "tests" / "draft2020-12"
    for path in sorted(suite.rglob("*.json")):
        for i, group in enumerate(json.loads(path.read_text(encoding="utf-8"))):
            yield f"suite/{path.relative_to(suite)}#{i}", group["schema"]


def _refusal(e: GuidanceError) -> dict[str, Any]:
    return {"class": type(e).__name__, **e.to_dict()}


def record(name: str, schema: Any, backend: GuidanceBackend) -> dict[str, Any]:
    """What ``schema`` prepares and compiles to (or the refusals)."""
    line: dict[str, Any] = {"name": name}
    try:
        prepared, ignored = prepare_json_schema(schema, None, backend.limits)
        line["prepared"] = json.dumps(prepared, ensure_ascii=False)
        line["prepared_ignored"] = ignored
    except GuidanceError as e:
        line["prepare_refused"] = _refusal(e)
    try:
        program, _ = backend.compile(ProgramSpec("json_schema", schema, {}, {}))
        line["grammar_sha256"] = hashlib.sha256(program.grammar.encode()).hexdigest()
        line["ignored"] = list(program.ignored)
    except GuidanceError as e:
        line["refused"] = _refusal(e)
    return line


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.compile_record", description=__doc__.splitlines()[0] if __doc__ else None
    )
    p.add_argument("out", type=Path, help="JSON lines written here")
    p.add_argument("--compare", type=Path, help="an earlier record: count the schemas whose lines differ")
    args = p.parse_args(argv)
    backend = GuidanceBackend(limits=Limits(), max_cache_size=4, negative_cache_entries=1)
    with args.out.open("w", encoding="utf-8") as f:
        for name, schema in schemas():
            f.write(json.dumps(record(name, schema, backend), ensure_ascii=False, sort_keys=True) + "\n")
    lines = args.out.read_text(encoding="utf-8").splitlines()
    refused = sum('"refused"' in line for line in lines)
    rewritten = sum('"prepared"' in line for line in lines)
    print(
        f"{len(lines)} schemas: {rewritten} prepared, {refused} refused by the compile; "
        f"sha256 {hashlib.sha256(args.out.read_bytes()).hexdigest()}"
    )
    if args.compare:
        before = args.compare.read_text(encoding="utf-8").splitlines()
        differ = [json.loads(a)["name"] for a, b in zip(before, lines) if a != b]
        print(f"compared with {args.compare}: {len(before)} vs {len(lines)} lines, {len(differ)} differ")
        for name in differ[:20]:
            print("  differs:", name)
        return 1 if differ or len(before) != len(lines) else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
