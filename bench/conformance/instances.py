"""One schema's instances fed through the engine's masks, token by token, with and without the rewrites."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import core.jsonschema.prepare
from bench.key_order import SchemaOrder
from core import CompiledGuidanceProgram, GuidanceBackend, GuidanceError, Tokenizer
from core.jsonschema import RewriteReport, rewrite_schema

_MESSAGE = 240


def compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


@dataclass
class Timings:
    compile_ms: list[float] = field(default_factory=list)
    mask_us: list[float] = field(default_factory=list)


class Runner:
    """Compiles schemas and feeds instances through masks, collecting timings."""

    def __init__(self, tokenizer: Tokenizer, rewrite: bool, time_masks: bool = True) -> None:
        self.backend = GuidanceBackend(tokenizer, max_cache_size=8)
        self.tokenizer = tokenizer
        self.rewrite = rewrite
        self.timings = Timings()
        self.time_masks = time_masks
        self.mask_stricter = 0
        self.mask_stricter_unforced = 0  # of those, where no bytes were forced (unexplained)
        self.mask_looser = 0
        self.engine_errors = 0  # instances the engine stopped on mid-walk (an llguidance limit)
        self._bitmask = self.backend.allocate_bitmask(1)

    @contextlib.contextmanager
    def _mode(self) -> Iterator[None]:
        if self.rewrite:
            yield
            return
        # the hook is one name in core.jsonschema.prepare: swap it for the identity while compiling
        hook = getattr(core.jsonschema.prepare, "rewrite_schema_report")
        setattr(core.jsonschema.prepare, "rewrite_schema_report", _identity)
        try:
            yield
        finally:
            setattr(core.jsonschema.prepare, "rewrite_schema_report", hook)

    def compile(self, schema: Any) -> tuple[CompiledGuidanceProgram | None, str | None]:
        # Each schema compiled afresh, so that compile times are compile times, not cache hits.
        self.backend.clear_cache()
        start = time.perf_counter()
        try:
            with self._mode():
                program = self.backend.compile_json_schema(schema)
        except GuidanceError as e:
            return None, f"{type(e).__name__}: {e.detail[:_MESSAGE]}"
        self.timings.compile_ms.append((time.perf_counter() - start) * 1000)
        return program, None

    def accepts(self, program: CompiledGuidanceProgram, text: str) -> bool:
        """Token by token (mask, then accept), then EOS; True when every token is accepted.

        The decision is ``accept_token``'s. Each token is also looked up in the mask computed just
        before it: a token the mask refuses but ``accept_token`` takes is counted in
        ``mask_stricter`` (llguidance allows only the canonical token where the next bytes are
        forced); one the mask allows but ``accept_token`` refuses in ``mask_looser`` (a bug: a
        sampled token would be refused).

        An engine error mid-walk (llguidance runs out of a lexer budget: "too many expressions
        constructed") stops the session as a refusal would; it is counted in ``engine_errors`` and
        the instance is not accepted.
        """
        try:
            return self._walk(program, text)
        except (RuntimeError, GuidanceError):
            self.engine_errors += 1
            return False

    def _walk(self, program: CompiledGuidanceProgram, text: str) -> bool:
        tokens = self.tokenizer.encode(text) + [self.tokenizer.eos_token_id]
        state = program.create_state()
        bitmask = self._bitmask
        row = bitmask[0]
        masks = self.timings.mask_us
        for t in tokens:
            if self.time_masks:
                start = time.perf_counter()
                state.fill_bitmask(bitmask, 0)
                masks.append((time.perf_counter() - start) * 1e6)
            else:
                state.fill_bitmask(bitmask, 0)
            allowed = bool((int(row[t >> 5]) >> (t & 31)) & 1)
            forced = bool(state.forced_tokens()) if not allowed else False
            accepted = state.accept_token(t)
            if accepted and not allowed:
                self.mask_stricter += 1
                self.mask_stricter_unforced += not forced
            elif allowed and not accepted:
                self.mask_looser += 1
            if not accepted:
                return False
        return state.is_terminated()


def _identity(
    schema: Any, formats: str = "assert", *, limits: Any = None, keywords: Any = None
) -> tuple[Any, RewriteReport]:
    return schema, RewriteReport()


@dataclass
class InstanceResult:
    valid: bool
    ok: bool  # accepted when valid, refused when invalid
    order_only: bool = False  # valid, refused as given but accepted once reordered
    description: str = ""


def check_instances(
    runner: Runner, program: CompiledGuidanceProgram, schema: Any, tests: Sequence[Mapping[str, Any]]
) -> list[InstanceResult]:
    # the order llguidance imposes is the compiled schema's: after the rewrites when they are on
    compiled = rewrite_schema(schema) if runner.rewrite and isinstance(schema, dict) else schema
    order = SchemaOrder(compiled)
    out: list[InstanceResult] = []
    for test in tests:
        data, valid = test["data"], bool(test["valid"])
        given = compact(data)
        accepted = runner.accepts(program, given)
        reordered = compact(order.reorder(data)) if isinstance(data, (dict, list)) else given
        accepted_reordered = accepted if reordered == given else runner.accepts(program, reordered)
        if valid:
            ok = accepted or accepted_reordered
            out.append(InstanceResult(True, ok, ok and not accepted, str(test.get("description", ""))))
        else:
            ok = not accepted and not accepted_reordered
            out.append(InstanceResult(False, ok, False, str(test.get("description", ""))))
    return out
