"""CI smoke: the ``--quick`` JSON-schema conformance subset must not regress.

Runs ``bench.conformance`` in-process on its fixed subset (21 Test Suite keyword files, every 25th
MaskBench schema) and holds it to ``bench/results/conformance_expected.json``: at least as many
schemas compiled and valid instances accepted, every invalid instance refused, and no token that a
mask allows but the session refuses. The corpora are read from ``../shared/data`` next to the
repository (where CI has them); without them the test is skipped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data"
EXPECTED = REPO / "bench" / "results" / "conformance_expected.json"


@pytest.fixture(scope="module")
def quick_run() -> dict[str, Any]:
    if not (DATA / "json-schema-test-suite").is_dir() or not (DATA / "jsonschemabench").is_dir():
        pytest.skip(f"conformance corpora not found at {DATA} (expected ../shared/data next to the repository)")
    from bench.conformance import run

    lines: list[str] = []
    return run(DATA, quick=True, rewrite=True, out=lines.append)


@pytest.mark.parametrize("corpus", ["test_suite", "maskbench"])
def test_quick_conformance_does_not_regress(quick_run: dict[str, Any], corpus: str) -> None:
    expected = json.loads(EXPECTED.read_text(encoding="utf-8"))[corpus]
    got = quick_run[corpus]["summary"]
    assert got["compiled"] >= expected["compiled"], (got, expected)
    assert got["valid_accepted"] >= expected["valid_accepted"], (got, expected)
    assert got["invalid_rejected"] >= expected["invalid_rejected"], (got, expected)
    assert got["invalid_rejected"] == got["invalid"], "an invalid instance was accepted"


def test_masks_agree_with_the_session(quick_run: dict[str, Any]) -> None:
    timings = quick_run["timings"]
    assert timings["mask_looser_than_accept"] == 0  # a sampled token would be refused
    # a token left out of the mask but accepted: only where llguidance forces canonical tokens
    assert timings["mask_stricter_where_nothing_forced"] == 0


def test_no_instance_raw_llguidance_accepts_is_refused(quick_run: dict[str, Any]) -> None:
    from bench.conformance import refused_where_raw_accepts

    assert refused_where_raw_accepts(quick_run["maskbench"], quick_run["without_rewrite"]["maskbench"]) == []


def test_rewrites_only_add_schemas(quick_run: dict[str, Any]) -> None:
    for corpus in ("test_suite", "maskbench"):
        with_rewrites = quick_run[corpus]["summary"]
        raw = quick_run["without_rewrite"][corpus]["summary"]
        assert with_rewrites["compiled"] >= raw["compiled"]
        assert raw["invalid_rejected"] == raw["invalid"]
