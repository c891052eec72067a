"""The two corpora, where they are and how each is run: the JSON Schema Test Suite's keyword files
(groups of a schema and its instances) and the MaskBench sample (a schema and its instances per file)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.conformance.instances import Runner, check_instances
from core.jsonschema import rewrite_schema, rewrite_schema_report

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DATA = REPO.parent / "shared" / "data"
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

REMOTE = "http://localhost:1234"


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


# The no-rewrite column: only schemas the rewrites change need a second evaluation.


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
