"""JSON-schema conformance of the engine on two corpora, with and without the exact rewrites.

    python -m bench.conformance [--data ../shared/data] [--quick] [--no-rewrite]
                                [--out bench/results/conformance.json]

Corpora (read from ``--data``, never copied into the repository):

* JSON Schema Test Suite, draft 2020-12: the 46 keyword files of ``tests/draft2020-12/``; the
  ``optional/`` files are run too but reported separately (they test optional behaviour:
  format assertion, big numbers, ECMA-262 regexes) and are not part of the headline figures.
* MaskBench sample: ``jsonschemabench/maskbench/data/*.json`` (schema plus valid and invalid
  instances).

For every schema: compile with the embedded tekken tokenizer (``core.GuidanceBackend()``); for every
instance, serialise it compactly (``json.dumps(x, separators=(",", ":"), ensure_ascii=False)``),
encode it with the backend's tokenizer and feed it token by token, each token checked against the
mask first and then accepted, then EOS. A valid instance must be accepted with EOS allowed at the
end; an invalid one must be refused somewhere (a token outside the mask, or EOS not allowed).

Property order: llguidance fixes object keys to the order of the schema's ``properties`` (then
``required``), so each instance is also tried with its keys reordered to that order
(:func:`schema_order`). A valid instance counts as accepted when either form is accepted;
one accepted only after reordering is counted separately as an order-only failure. An invalid
instance counts as refused only when both forms are refused.

The default run evaluates every schema with the rewrites of ``core/jsonschema/`` (what the
engine does) and then again without them (raw llguidance, the hook replaced by the identity) for
the schemas the rewrites change, giving the two columns side by side; ``--no-rewrite`` runs the
raw engine only. ``--quick`` runs a fixed subset for CI (see :data:`QUICK_FILES`).

Modules: :mod:`~bench.conformance.corpora` (where the corpora are, and running each),
:mod:`~bench.conformance.instances` (one schema's instances through the masks),
:mod:`~bench.conformance.report` (summaries, the printed and markdown tables),
:mod:`~bench.conformance.reasons` (why what fails fails) and :mod:`~bench.conformance.evaluation`
(the whole run and its command line).
"""

from __future__ import annotations

from bench.conformance.corpora import (
    DEFAULT_DATA,
    MASKBENCH_DIR,
    QUICK_FILES,
    QUICK_STRIDE,
    REMOTE,
    REPO,
    SUITE_DIR,
    changed_by_rewrite,
    classify_file,
    maskbench_files,
    raw_maskbench,
    rewrite_kinds,
    run_maskbench,
    run_suite_file,
    run_test_suite,
    summarise_groups,
    summarise_maskbench,
)
from bench.conformance.evaluation import (
    DEFAULT_OUT,
    EXPECTED,
    expected_figures,
    main,
    run,
)
from bench.conformance.instances import (
    InstanceResult,
    Runner,
    Timings,
    check_instances,
    compact,
)
from bench.conformance.reasons import (
    MASKBENCH_REASONS,
    REFUSAL_CAUSES,
    failure_reason,
    refusal_cause,
)
from bench.conformance.report import (
    BASELINES,
    distribution,
    headline,
    markdown_report,
    pct,
    print_distribution,
    print_suite,
    print_summary,
    refused_where_raw_accepts,
    same_as_raw,
)

__all__ = [
    "BASELINES",
    "DEFAULT_DATA",
    "DEFAULT_OUT",
    "EXPECTED",
    "InstanceResult",
    "MASKBENCH_DIR",
    "MASKBENCH_REASONS",
    "QUICK_FILES",
    "QUICK_STRIDE",
    "REFUSAL_CAUSES",
    "REMOTE",
    "REPO",
    "Runner",
    "SUITE_DIR",
    "Timings",
    "changed_by_rewrite",
    "check_instances",
    "classify_file",
    "compact",
    "distribution",
    "expected_figures",
    "failure_reason",
    "headline",
    "main",
    "markdown_report",
    "maskbench_files",
    "pct",
    "print_distribution",
    "print_suite",
    "print_summary",
    "raw_maskbench",
    "refusal_cause",
    "refused_where_raw_accepts",
    "rewrite_kinds",
    "run",
    "run_maskbench",
    "run_suite_file",
    "run_test_suite",
    "same_as_raw",
    "summarise_groups",
    "summarise_maskbench",
]
