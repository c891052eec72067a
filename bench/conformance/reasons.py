"""Why what does not pass does not pass: the reasons written into ``docs/conformance.md``'s tables."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_KEYWORD_REASONS = {
    "contains": 'no llguidance form for "some item matches" (nor an exact rewrite without a bound on the length)',
    "minContains": "needs `contains`",
    "maxContains": "needs `contains`",
    "$dynamicRef": "dynamic references are not implemented",
    "$dynamicAnchor": "dynamic anchors are not implemented",
    "unevaluatedProperties": "what is evaluated depends on which branch (anyOf/oneOf/if/dependentSchemas) "
    "matches; only the static cases are rewritten",
    "unevaluatedItems": "what is evaluated depends on the instance (anyOf/oneOf/if/contains); only the static "
    "cases are rewritten",
    "not": 'the complement needs "a number that is not an integer", an existence (some item, some property '
    "matching a pattern) or the complement of a regex, which llguidance cannot express",
    "propertyNames": "combined with patternProperties, or a pattern with listed properties",
    "uniqueItems": "items are not a small finite domain (distinctness of free values has no llguidance form)",
    "if": "the schema has embedded `$id` resources: structural rewrites are off",
    "then": "the schema has embedded `$id` resources: structural rewrites are off",
    "else": "the schema has embedded `$id` resources: structural rewrites are off",
}


#: Why the valid MaskBench instances that are refused are refused (analysed by hand; llguidance's
#: behaviour in every case, raw llguidance refuses them too where it compiles the schema).
MASKBENCH_REASONS = {
    "Github_easy---o21053.json": "llguidance: `pattern` `^$|(^(?:\\S+\\s+){0,99}\\S+$)` with `maxLength: 5000` "
    'runs out of its lexer budget mid-walk ("too many expressions constructed"; fine with a small maxLength)',
    **dict.fromkeys(
        (
            "Kubernetes---kb_105_Normalized.json",
            "Kubernetes---kb_106_Normalized.json",
            "Kubernetes---kb_1147_Normalized.json",
            "Kubernetes---kb_75_Normalized.json",
        ),
        "OpenAPI `format: byte` asserted as base64; the instance's value is not base64 (\"base64 encoded "
        "certificate\"): the corpus's validator does not know `byte` and ignores it",
    ),
    "Github_hard---o38538.json": "draft-07 ignores keywords beside `$ref`; llguidance applies them "
    "(`additionalProperties: false` next to a `$ref` forbids the referenced properties)",
    "Github_hard---o57716.json": "llguidance: a number with an exponent (`1e-06`) under `minimum: 0`",
    "Github_medium---o74461.json": "llguidance: `75.0` under `multipleOf: 0.25` (only `75`, `75.25`... spellings)",
    "Synthesized---draft2019_09_valid_const_id27_subschema1_not_2.json": "llguidance: `0.0` for `const: 0.0` "
    "(only `0`)",
    "Synthesized---draft2019_09_valid_const_id30_subschema1_not_2.json": "llguidance: `1.0` for `const: 1.0` "
    "(only `1`)",
}


#: MaskBench refusals by cause: (pattern on llguidance's message, cause, why it stays refused).
REFUSAL_CAUSES: tuple[tuple[str, str, str], ...] = (
    (r'Unimplemented keys: \["not"\]', "`not` without an exact complement",
     "the complement needs a number that is not an integer or not a multiple of k, \"some property matching "
     "a pattern\" or \"some item\" (existence: `patternProperties`, `additionalProperties`, `items`), or the "
     "complement of a regex beyond the shapes written (one-character atoms anchored at an end, one class)"),
    (r"oneOf constraints", "`oneOf` whose branches may overlap",
     "overlap not disproved and a branch has no exact complement (same causes as `not`: `type: integer`, "
     "`items`, patterns, formats), or more than 12 branches need complements"),
    (r'Unimplemented keys: \["uniqueItems"\]', "`uniqueItems` over items that are not a small finite domain",
     "distinctness of free values (strings, objects) has no llguidance form; finite domains are enumerated up "
     "to 256 arrays"),
    (r"nsatisfiable", "unsatisfiable (correctly refused)",
     "no instance satisfies the schema (e.g. all five properties required and a `oneOf` over them); the corpus "
     "has no valid instance for these"),
    (r"circular references with sibling keys", "recursive `$ref` with sibling keywords",
     "llguidance does not merge keywords beside a recursive reference"),
    (r"lookaround|regex parse error", "regex syntax llguidance does not read",
     "lookarounds and other ECMA-262-only syntax in `pattern`"),
    (r"Unable to determine if regex is empty", "regex emptiness undecided",
     "llguidance gives up proving that an intersection of several patterns (or of a pattern and its "
     "rewritten complement) is non-empty"),
    (r"patternProperty regexes .* are not disjoint", "overlapping `patternProperties`",
     "llguidance needs the patterns of `patternProperties` (and of property names) to be disjoint"),
    (r"propertyNames", "`propertyNames` beside `patternProperties`", "which names a pattern covers is "
     "llguidance's to decide; not rewritten"),
    (r"contains", "`contains`", "no llguidance form for \"some item matches\""),
    (r"min/maxProperties", "`min/maxProperties` with optional keys",
     "left where an embedded `$id` or a `$ref` keeps the node in place, or over 256 sets of present keys"),
    (r'"if"|unevaluated', "`if`/`unevaluated*` that depend on the instance",
     "the condition has no exact complement, or what is evaluated depends on the branch taken"),
    (r"too complex|too large|stack level", "engine limits", "the schema exceeds llguidance's size or depth limits"),
    (r"has no exact definition here", "`format: regex` or `idn-email` (default mode)",
     "formats of the 2020-12 vocabulary with no exact regular definition are refused in the default "
     "`formats: assert` mode: enforcing them loosely would accept invalid values (the corpus has such "
     "instances, e.g. `\"*\"` for `format: regex`); `formats: annotate` compiles these schemas"),
    (r"Unknown format", "unknown `format`", "a `format` the rewriter did not reach (deeper than 100 levels)"),
)  # fmt: skip


def refusal_cause(error: str) -> tuple[str, str]:
    """The cause and explanation of a MaskBench compile error (``REFUSAL_CAUSES``)."""
    for pattern, cause, why in REFUSAL_CAUSES:
        if re.search(pattern, error):
            return cause, why
    return "other", "not classified"


def failure_reason(file: str, group: Mapping[str, Any], detail: str = "") -> str:
    """A short reason for a Test Suite group or instance that does not pass."""
    status = group["status"]
    if status == "unsupported-remote":
        return "remote `$ref` (http://localhost:1234/...): never fetched"
    if status == "compile-error":
        error = str(group.get("error", ""))
        m = re.search(r"Unimplemented keys: \[([^\]]*)\]", error)
        if m:
            keys = [k.strip().strip('"') for k in m.group(1).split(",")]
            reasons = sorted({_KEYWORD_REASONS.get(k, "not implemented by llguidance") for k in keys})
            return f"`{', '.join(keys)}`: " + "; ".join(reasons)
        if "oneOf constraints" in error:
            return "oneOf: branches may overlap and one has no exact complement (`type: integer`, a pattern)"
        m = re.search(r"Unknown format: ([^ ]+) \(format '[^']*' has no exact definition", error)
        if m:
            return (
                f"`format: {m.group(1)}` has no exact definition: refused in the default `formats: assert` "
                "mode (`formats: annotate` compiles it)"
            )
        if "Unknown format" in error:
            return error.split("SchemaError: ", 1)[-1] + " (a format the rewriter did not reach)"
        if "not disjoint" in error:
            return "llguidance needs disjoint patternProperties"
        if "too many digits" in error:
            return "multipleOf with too many digits for llguidance (limit)"
        return error.split(": ", 1)[-1][:120]
    if detail.startswith("valid refused") and file == "format":
        return (
            "the default `formats: assert` asserts `format` (2020-12 makes it an annotation by default; "
            "`formats: annotate` accepts these)"
        )
    if detail.startswith("valid refused") and ("float" in detail or ".0" in detail or "integer" in group["group"]):
        return "an integral number written with a fraction (`1.0`): llguidance accepts the integer spelling only"
    return "see bench/results/conformance.json"
