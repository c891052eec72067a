"""Build the conformance corpora's directory from their public repositories (needs git and a network).

    python -m bench.conformance.fetch [DEST]      # DEST: ../shared/data by default, what --data reads

Two repositories, each at the commit the published figures were measured on:

* the JSON Schema Test Suite (MIT): ``tests/draft2020-12/`` (46 keyword files and ``optional/``),
  ``remotes/`` and its ``LICENSE``, at the same relative paths under ``json-schema-test-suite/``;
* JSONSchemaBench's MaskBench (``maskbench/data/``, 11,306 files upstream): a fixed sample of
  2,819 files, those whose upstream path's SHA-1 is 0 modulo 4 and that are at most 64 KiB
  (:func:`in_maskbench_sample`), under ``jsonschemabench/maskbench/data/``. The schemas come
  from third-party sources; use the data for testing only.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from bench.conformance.corpora import DEFAULT_DATA, MASKBENCH_DIR, SUITE_DIR

SUITE_REPO = "https://github.com/json-schema-org/JSON-Schema-Test-Suite"
SUITE_COMMIT = "44401e0c046704b476ec9d2e2fccdaee618f259d"
MASKBENCH_REPO = "https://github.com/guidance-ai/jsonschemabench"
MASKBENCH_COMMIT = "ba103c73756198dd9b149ddc7db7867da7a077f6"
MASKBENCH_MAX_BYTES = 65_536


def in_maskbench_sample(upstream_path: str, size: int) -> bool:
    """Whether a MaskBench file (``maskbench/data/NAME.json`` upstream, ``size`` bytes) is in the sample."""
    digest = int(hashlib.sha1(upstream_path.encode("utf-8")).hexdigest(), 16)
    return digest % 4 == 0 and size <= MASKBENCH_MAX_BYTES


def checkout(repo: str, commit: str, into: Path) -> Path:
    """A shallow checkout of ``repo`` at ``commit`` in ``into``."""
    into.mkdir(parents=True, exist_ok=True)
    for args in (["init", "-q"], ["fetch", "-q", "--depth", "1", repo, commit], ["checkout", "-q", "FETCH_HEAD"]):
        subprocess.run(["git", "-C", str(into), *args], check=True)
    return into


def extract(suite: Path, maskbench: Path, dest: Path) -> dict[str, int]:
    """Copy what the benchmark reads from the two checkouts into ``dest``; the files copied, by corpus."""
    suite_out = dest / "json-schema-test-suite"
    for part in (SUITE_DIR.relative_to("json-schema-test-suite"), Path("remotes")):
        shutil.copytree(suite / part, suite_out / part, dirs_exist_ok=True)
    shutil.copy2(suite / "LICENSE", suite_out / "LICENSE")
    bench_out = dest / MASKBENCH_DIR
    bench_out.mkdir(parents=True, exist_ok=True)
    kept = 0
    for path in sorted((maskbench / "maskbench" / "data").glob("*.json")):
        if in_maskbench_sample(f"maskbench/data/{path.name}", path.stat().st_size):
            shutil.copy2(path, bench_out / path.name)
            kept += 1
    return {"test_suite": sum(1 for _ in (dest / SUITE_DIR).rglob("*.json")), "maskbench": kept}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.conformance.fetch", description=__doc__.split("\n")[0])
    parser.add_argument("dest", type=Path, nargs="?", default=DEFAULT_DATA, help="where to write (%(default)s)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="guidance-corpora-") as tmp:
        try:
            suite = checkout(SUITE_REPO, SUITE_COMMIT, Path(tmp) / "suite")
            maskbench = checkout(MASKBENCH_REPO, MASKBENCH_COMMIT, Path(tmp) / "maskbench")
        except (OSError, subprocess.CalledProcessError) as e:
            print(f"could not fetch the corpora: {e}", file=sys.stderr)
            return 1
        counts = extract(suite, maskbench, args.dest)
    print(
        f"{args.dest}: {counts['test_suite']} Test Suite files (draft 2020-12), {counts['maskbench']} MaskBench files"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
