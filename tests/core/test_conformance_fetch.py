"""``python -m bench.conformance.fetch``: the corpora laid out where the benchmark reads them, and the
MaskBench sample's rule is the one that selected the published sample. (The git checkouts need a
network and are not run here.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.conformance import DEFAULT_DATA, MASKBENCH_DIR, SUITE_DIR, maskbench_files
from bench.conformance.fetch import MASKBENCH_MAX_BYTES, extract, in_maskbench_sample


def test_the_sample_rule_selects_every_file_of_the_published_sample() -> None:
    sample = DEFAULT_DATA / MASKBENCH_DIR
    if not sample.is_dir():
        pytest.skip(f"no MaskBench sample at {sample}")
    files = sorted(sample.glob("*.json"))
    assert len(files) == 2819
    outside = [p.name for p in files if not in_maskbench_sample(f"maskbench/data/{p.name}", p.stat().st_size)]
    assert outside == []


def _names(count: int, sampled: bool) -> list[str]:
    found: list[str] = []
    i = 0
    while len(found) < count:
        name = f"Github_easy---o{i}.json"
        if in_maskbench_sample(f"maskbench/data/{name}", 10) == sampled:
            found.append(name)
        i += 1
    return found


def test_extract_keeps_draft_2020_12_and_the_sample_where_the_benchmark_reads_them(tmp_path: Path) -> None:
    suite, bench, dest = tmp_path / "suite", tmp_path / "bench", tmp_path / "data"
    instance = {"description": "t", "data": 1, "valid": True}
    group = [{"description": "g", "schema": {"type": "integer"}, "tests": [instance]}]
    for rel in ("tests/draft2020-12/type.json", "tests/draft2020-12/optional/format/date.json", "tests/draft7/a.json"):
        (suite / rel).parent.mkdir(parents=True, exist_ok=True)
        (suite / rel).write_text(json.dumps(group))
    (suite / "remotes").mkdir()
    (suite / "remotes" / "integer.json").write_text('{"type": "integer"}')
    (suite / "LICENSE").write_text("MIT")
    data = bench / "maskbench" / "data"
    data.mkdir(parents=True)
    kept, dropped = _names(3, True), _names(3, False)
    for name in kept + dropped:
        (data / name).write_text(json.dumps({"schema": {"type": "integer"}, "tests": []}))
    too_big = _names(4, True)[3]
    (data / too_big).write_text(json.dumps({"schema": {"description": "x" * MASKBENCH_MAX_BYTES}, "tests": []}))

    counts = extract(suite, bench, dest)

    assert counts == {"test_suite": 2, "maskbench": 3}
    assert sorted(p.name for p in maskbench_files(dest, quick=False)) == sorted(kept)
    assert sorted(str(p.relative_to(dest / SUITE_DIR)) for p in (dest / SUITE_DIR).rglob("*.json")) == [
        "optional/format/date.json",
        "type.json",
    ]
    assert (dest / "json-schema-test-suite" / "remotes" / "integer.json").is_file()
    assert (dest / "json-schema-test-suite" / "LICENSE").read_text() == "MIT"
    assert not (dest / "json-schema-test-suite" / "tests" / "draft7").exists()
