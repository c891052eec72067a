"""An oracle for over-constraint: valid instances of the *original* schema, fed to the compiled one.

    python -m bench.overconstraint [--data ../shared/data] [--per-schema 20] [--seed 0]
                                   [--stride 1] [--out bench/results/overconstraint.json]

Sampled walks only show what a mask allows is valid; the corpora's valid instances cover few of the
shapes the rewrites produce. So for every schema whose preparation rewrote anything (MaskBench
sample, JSON Schema Test Suite 2020-12 keyword files, and any list the caller gives), valid instances
are generated from the original schema with ``hypothesis-jsonschema`` (a fixed seed, at most
``--per-schema`` each), kept when ``jsonschema`` confirms them (:func:`is_valid`), written as the
grammar expects (:func:`grammar_text`: compact, keys in the order of :mod:`bench.key_order`,
numbers in their plain spelling) and fed token by token to the compiled program; EOS must be
allowed after the last token. A refused instance is then fed to raw llguidance (the rewrites off)
where raw llguidance compiles the schema: refused there too, it is llguidance's own departure
(``engine``), not a rewrite's. The report counts, per rewrite kind, the schemas and instances tried
and the refusals.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from bench.conformance import DEFAULT_DATA, MASKBENCH_DIR, SUITE_DIR, Runner, compact
from bench.key_order import SchemaOrder
from core import CompiledGuidanceProgram, GuidanceError, Tokenizer, load_default_tokenizer
from core.jsonschema import rewrite_schema_report
from core.jsonschema.formats import ENGINE_FORMATS

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "bench" / "results" / "overconstraint.json"


# ---------------------------------------------------------------------------------------------
# valid instances of the original schema


def _ecma_pattern(pattern: str) -> str:
    """``pattern`` with ``$`` read as ECMA-262 reads it (end of input; Python's also matches before
    a final newline)."""
    out: list[str] = []
    escaped = in_class = False
    for ch in pattern:
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif in_class:
            in_class = ch != "]"
        elif ch == "[":
            in_class = True
        elif ch == "$":
            out.append(r"\Z")
            continue
        out.append(ch)
    return "".join(out)


def _validator_class(base: Any) -> Any:
    import re

    import jsonschema

    def pattern(validator: Any, value: Any, instance: Any, schema: Any) -> Iterator[Any]:
        if not validator.is_type(instance, "string") or not isinstance(value, str):
            return
        try:  # \d and \w are ASCII in ECMA-262 (its \s is wider than ASCII: stricter is safe here)
            found = re.search(_ecma_pattern(value), instance, re.ASCII)
        except re.error:
            found = re.search(value, instance)
        if found is None:
            yield jsonschema.ValidationError(f"{instance!r} does not match {value!r}")

    return jsonschema.validators.extend(base, {"pattern": pattern})


_CACHE: dict[Any, Any] = {}


def is_valid(schema: Any, value: Any) -> bool:
    """Whether ``value`` is valid for ``schema`` under 2020-12, patterns read as ECMA-262 reads them.

    (``$`` at the end of input only, ``\\d`` and ``\\w`` ASCII; Python's ``re`` differs on both.)

    ``format`` is checked as the default ``formats: assert`` mode has it where the two agree:
    jsonschema's checkers for the formats it knows, plus OpenAPI's ``byte`` and ``int32``.
    """
    import jsonschema
    import referencing

    from bench.key_order import _no_retrieve

    registry: Any = referencing.Registry(retrieve=_no_retrieve)  # type: ignore[call-arg]
    try:
        base = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
        if base not in _CACHE:
            _CACHE[base] = _validator_class(base)
        if "checker" not in _CACHE:
            _CACHE["checker"] = _format_checker()
        return bool(_CACHE[base](schema, format_checker=_CACHE["checker"], registry=registry).is_valid(value))
    except Exception:
        return False


def _format_checker() -> Any:
    import base64
    import binascii

    import jsonschema

    checker = jsonschema.FormatChecker()

    def byte(v: object) -> bool:
        if not isinstance(v, str):
            return True
        try:
            return len(v) % 4 == 0 and base64.b64encode(base64.b64decode(v, validate=True)).decode() == v
        except (binascii.Error, ValueError):
            return False

    checker.checks("byte")(byte)
    # llguidance asserts these with its own (approximate) regexes, a documented departure: an
    # instance is held to them, as raw llguidance holds it
    for name in sorted(ENGINE_FORMATS - {"unknown"}):
        checker.checks(name)(_engine_format(name))
    checker.checks("int32")(
        lambda v: (
            not isinstance(v, (int, float)) or isinstance(v, bool) or (float(v).is_integer() and -(2**31) <= v < 2**31)
        )
    )
    return checker


def _engine_format(name: str) -> Callable[[object], bool]:
    def check(value: object) -> bool:
        if not isinstance(value, str):
            return True
        if "engine" not in _CACHE:
            _CACHE["engine"] = Runner(load_default_tokenizer(), rewrite=False, time_masks=False)
        runner = _CACHE["engine"]
        program = _CACHE.get(("format", name))
        if program is None:
            program = _CACHE[("format", name)] = runner.compile({"type": "string", "format": name})[0]
        return program is not None and refusal_point(program, runner.tokenizer, _string(value)) is None

    return check


# Functions Python calls from the collector or a weak reference (an error there is only reported).
_CALLBACKS = frozenset({"remove", "_remove", "gc_callback", "__del__", "_cb", "callback"})


@contextlib.contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    """Raises TimeoutError in the main thread after ``seconds`` (no limit elsewhere)."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        # not inside a weakref or gc callback, where Python would report the error and go on:
        # the timer fires again shortly
        while frame is not None:
            if frame.f_code.co_name in _CALLBACKS:
                return
            frame = frame.f_back
        raise TimeoutError("drawing instances took too long")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds, 0.05)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _draw(from_schema: Any, schema: Any, count: int, seed: int, drawn: list[Any]) -> None:
    from hypothesis import HealthCheck, Phase, Verbosity, given, settings
    from hypothesis import seed as fixed_seed

    strategy = from_schema(copy.deepcopy(schema))  # it canonicalises what it is given in place

    @fixed_seed(seed)
    @settings(max_examples=max(3 * count, 10), database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck), verbosity=Verbosity.quiet)  # fmt: skip
    @given(strategy)
    def collect(value: Any) -> None:
        drawn.append(value)

    collect()


def valid_instances(schema: Any, count: int, seed: int, seconds: float = 10.0) -> list[Any]:
    """Up to ``count`` distinct instances drawn from ``schema`` by hypothesis-jsonschema and confirmed valid.

    Drawing stops after ``seconds`` (hypothesis-jsonschema can take long to canonicalise a large
    schema), keeping what was drawn by then.
    """
    from hypothesis_jsonschema import from_schema

    drawn: list[Any] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with _time_limit(seconds):
                _draw(from_schema, schema, count, seed, drawn)
        except Exception:  # hypothesis-jsonschema refuses the schema, or gives up: what was drawn stays
            pass
    seen: set[str] = set()
    out: list[Any] = []
    for value in drawn:
        key = compact(value)
        if key in seen:
            continue
        seen.add(key)
        if is_valid(schema, value):
            out.append(value)
        if len(out) >= count:
            break
    return out


# ---------------------------------------------------------------------------------------------
# writing and feeding an instance


def _number(value: float) -> str:
    """A float in the spelling a constrained model writes: integral as an integer, no exponent."""
    if value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return format(Decimal(repr(value)), "f")


def _string(value: str) -> str:
    # DEL is valid JSON as it is, but llguidance takes it escaped only
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")


def _dump(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ",".join(_string(k) + ":" + _dump(v) for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_dump(v) for v in value) + "]"
    if isinstance(value, float):
        return _number(value)
    if isinstance(value, str):
        return _string(value)
    return json.dumps(value, ensure_ascii=False)


def grammar_text(schema: Any, value: Any) -> str:
    """``value`` as the compiled ``schema`` expects it written: compact, keys in the order of
    :mod:`bench.key_order`, integral numbers as integers and others without an exponent, DEL
    escaped (``\\u007f``)."""
    ordered = SchemaOrder(schema).reorder(value) if isinstance(value, (dict, list)) else value
    return _dump(ordered)


def refusal_point(program: CompiledGuidanceProgram, tokenizer: Tokenizer, text: str) -> str | None:
    """None when every token of ``text`` and then EOS are accepted; else the text accepted before the refusal."""
    state = program.create_state()
    done: list[int] = []
    try:
        for token in tokenizer.encode(text):
            if not state.accept_token(token):
                return tokenizer.decode(done)
            done.append(token)
        if not state.accept_token(tokenizer.eos_token_id) or not state.is_terminated():
            return tokenizer.decode(done) + "<EOS>"
    except (RuntimeError, GuidanceError) as e:  # an llguidance limit mid-walk
        return tokenizer.decode(done) + f"<engine error: {str(e)[:80]}>"
    return None


# ---------------------------------------------------------------------------------------------
# the sweep


@dataclass
class Refusal:
    source: str
    kinds: list[str]
    text: str
    accepted_prefix: str
    # raw llguidance on the same text: "refused" there too at that point (llguidance's own departure);
    # "accepted" or refused only "later" (the rewrite's); "no-compile" (raw cannot compile the schema)
    raw: str


@dataclass
class Sweep:
    """What one oracle run tried and found, per rewrite kind."""

    schemas: dict[str, int] = field(default_factory=dict)
    instances: dict[str, int] = field(default_factory=dict)
    tried: int = 0  # schemas with at least one instance fed
    instances_tried: int = 0
    refusals: list[Refusal] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)  # not compiled, or no instance drawn
    seconds: float = 0.0

    def add(self, kinds: Iterable[str], instances: int) -> None:
        self.tried += 1
        self.instances_tried += instances
        for kind in kinds:
            self.schemas[kind] = self.schemas.get(kind, 0) + 1
            self.instances[kind] = self.instances.get(kind, 0) + instances

    def rewrite_refusals(self) -> list[Refusal]:
        """Refusals that raw llguidance does not share (accepted raw, or raw cannot compile the schema)."""
        return [r for r in self.refusals if r.raw != "refused"]

    def table(self) -> list[dict[str, Any]]:
        rows = []
        for kind in sorted(self.schemas, key=lambda k: (-self.schemas[k], k)):
            found = [r for r in self.refusals if kind in r.kinds]
            rows.append({
                "rewrite": kind, "schemas": self.schemas[kind], "instances": self.instances[kind],
                "refused": len([r for r in found if r.raw != "refused"]),
                "refused_by_llguidance_too": len([r for r in found if r.raw == "refused"]),
            })  # fmt: skip
        return rows


def corpus_schemas(data: Path, stride: int = 1) -> Iterator[tuple[str, Any]]:
    """(name, schema) for the MaskBench sample and the Test Suite's 2020-12 keyword files."""
    for path in sorted((data / SUITE_DIR).glob("*.json"))[::stride]:
        for i, group in enumerate(json.loads(path.read_text(encoding="utf-8"))):
            yield f"suite/{path.stem}#{i}", group["schema"]
    for path in sorted((data / MASKBENCH_DIR).glob("*.json"))[::stride]:
        yield f"maskbench/{path.name}", json.loads(path.read_text(encoding="utf-8"))["schema"]


class Oracle:
    """Compiles each schema (rewrites on, then off for a refusal) and feeds it generated valid instances."""

    def __init__(self, tokenizer: Tokenizer | None = None) -> None:
        self.tokenizer = tokenizer or load_default_tokenizer()
        self.served = Runner(self.tokenizer, rewrite=True, time_masks=False)
        self.raw = Runner(self.tokenizer, rewrite=False, time_masks=False)

    def check(self, name: str, schema: Any, count: int, seed: int, sweep: Sweep, seconds: float = 10.0) -> None:
        """Try ``schema`` if its preparation rewrites anything; record what was tried and refused."""
        if not isinstance(schema, dict):
            return
        try:
            kinds = rewrite_schema_report(schema)[1].kinds()
        except Exception:
            return
        if not kinds:
            return
        program, _ = self.served.compile(schema)
        if program is None:
            sweep.skipped["not compiled"] = sweep.skipped.get("not compiled", 0) + 1
            return
        values = valid_instances(schema, count, seed, seconds)
        if not values:
            sweep.skipped["no instance drawn"] = sweep.skipped.get("no instance drawn", 0) + 1
            return
        sweep.add(kinds, len(values))
        raw_program: CompiledGuidanceProgram | None | bool = False  # False: not compiled yet
        for value in values:
            text = grammar_text(schema, value)
            prefix = refusal_point(program, self.tokenizer, text)
            if prefix is None:
                continue
            if raw_program is False:
                raw_program = self.raw.compile(schema)[0]
            if raw_program is None:
                raw = "no-compile"
            else:
                assert not isinstance(raw_program, bool)
                raw_prefix = refusal_point(raw_program, self.tokenizer, text)
                # refused at the same point or before: llguidance's own; further on: the rewrite's
                raw = "accepted" if raw_prefix is None else "refused" if len(raw_prefix) <= len(prefix) else "later"
            sweep.refusals.append(Refusal(name, kinds, text[:2000], prefix[-200:], raw))


def sweep(
    schemas: Iterable[tuple[str, Any]], count: int, seed: int, oracle: Oracle | None = None,
    progress: Callable[[str], None] | None = None, seconds: float = 10.0,
) -> Sweep:  # fmt: skip
    """The oracle over ``schemas`` (those whose preparation rewrites nothing are passed over)."""
    oracle = oracle or Oracle()
    result = Sweep()
    started = time.perf_counter()
    for i, (name, schema) in enumerate(schemas):
        oracle.check(name, schema, count, seed, result, seconds)
        if progress and i % 200 == 199:
            progress(f"{i + 1} schemas, {len(result.refusals)} refusals, {time.perf_counter() - started:.0f} s")
    result.seconds = round(time.perf_counter() - started, 1)
    return result


def markdown_table(result: Sweep) -> str:
    """The oracle's table for ``docs/conformance.md``."""
    lines = ["| rewrite | schemas | instances tried | refused (rewrite) | refused by raw llguidance too |",
             "|---|---|---|---|---|"]  # fmt: skip
    for row in result.table():
        lines.append(f"| {row['rewrite']} | {row['schemas']} | {row['instances']} | {row['refused']} "
                     f"| {row['refused_by_llguidance_too']} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.overconstraint", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="corpora root (default: ../shared/data)")
    parser.add_argument("--per-schema", type=int, default=20, help="valid instances drawn per schema")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stride", type=int, default=1, help="every N-th corpus file only")
    parser.add_argument("--seconds", type=float, default=10.0, help="time to draw one schema's instances")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    args = parser.parse_args(argv)
    if not (args.data / SUITE_DIR).is_dir() or not (args.data / MASKBENCH_DIR).is_dir():
        print(f"corpora not found under {args.data}", file=sys.stderr)
        return 2
    result = sweep(
        corpus_schemas(args.data, args.stride), args.per_schema, args.seed, progress=print, seconds=args.seconds
    )
    print(markdown_table(result))
    bad = result.rewrite_refusals()
    print(f"{result.tried} schemas, {result.instances_tried} instances tried")
    for r in bad[:50]:
        print(f"{r.source} [{', '.join(r.kinds)}] raw {r.raw}: refused after ...{r.accepted_prefix[-80:]!r}")
    print(f"skipped: {result.skipped}; {len(bad)} refusals not shared by raw llguidance; {result.seconds} s")
    doc = {"table": result.table(), "tried": result.tried, "instances_tried": result.instances_tried,
           "skipped": result.skipped, "seconds": result.seconds,
           "per_schema": args.per_schema, "seed": args.seed, "stride": args.stride,
           "refusals": [r.__dict__ for r in result.refusals]}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
