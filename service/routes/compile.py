"""``POST /compile``: a constraint in, a shareable ``program_id`` out."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import orjson

from fastapi import APIRouter

from core.errors import GuidanceError, LimitExceeded
from core.program import CompiledGuidanceProgram
from core.spec import spec_from_kwargs
from service.dependencies import OwnerDep, ServiceState, StateDep
from service.errors import CompileQueueFull, NotReady
from service.problems import problem_responses
from service.schemas import CompileRequest, CompileResponse, EngineLimitNote, ProgramFields

__all__ = ["Compiled", "check_variables", "compile_program", "program_variables", "router"]

router = APIRouter(tags=["programs"])


@dataclass(frozen=True)
class Compiled:
    """A compile request's outcome."""

    program: CompiledGuidanceProgram
    cached: bool
    compile_ms: float
    tokenizer_name: str


def program_variables(program: CompiledGuidanceProgram) -> list[str]:
    """The names a program captures, in template order (internal names start with ``#``)."""
    return [name for name in program.layout.scope if not name.startswith("#")]


def check_variables(variables: dict[str, Any], max_count: int, max_bytes: int) -> None:
    """Refuse compile-time variables past ``max_variables`` or ``max_variables_bytes`` (413).

    Raises:
        LimitExceeded: too many variables, too many bytes of them, or nested too deeply to measure.
    """
    if len(variables) > max_count:
        raise LimitExceeded(f"{len(variables)} variables, above the limit of {max_count}", "max_variables")
    if not variables:
        return
    try:
        size = len(orjson.dumps(variables))
    except orjson.JSONEncodeError:  # an integer past 64 bits, or nested past orjson's 254 levels
        try:
            size = len(json.dumps(variables, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
        except RecursionError:
            raise LimitExceeded("the variables are nested too deeply", "max_nesting_depth") from None
    if size > max_bytes:
        raise LimitExceeded(f"{size} bytes of variables, above the limit of {max_bytes}", "max_variables_bytes")


async def compile_program(body: ProgramFields, state: ServiceState) -> Compiled:
    """Compile (or fetch from the cache) the program a request describes, counting it.

    Raises:
        UnknownTokenizer: ``body.tokenizer`` is not loaded.
        CompileQueueFull: too many compiles are already pending (and this one is not cached).
        NotReady: the server is draining (SIGTERM): compile on another replica.
        GuidanceError: the constraint does not compile (400) or breaks a limit.
    """
    if state.draining:
        raise NotReady("the server is shutting down: compile on another replica", state.settings.retry_after_seconds)
    tok = state.tokenizers.get(body.tokenizer)
    check_variables(body.variables, state.settings.max_variables, state.settings.max_variables_bytes)
    kind, source = body.kind_and_source()
    spec = spec_from_kwargs(kind, source, body.variables, body.kind_options(), body.reasoning)
    backend, metrics = state.backend, state.metrics
    start = time.perf_counter()
    pending, limit = state.compiles_pending, state.settings.max_pending_compiles
    if pending >= limit and backend.get_program(state.engine.program_id(spec, tok)) is None:
        raise CompileQueueFull(
            f"{pending} compiles are pending, the limit is {limit}", state.settings.retry_after_seconds
        )
    state.compiles_pending += 1
    metrics.compiles_pending.inc()
    try:
        program, cached = await backend.compile(spec, tok)
    except GuidanceError:
        metrics.compiles.labels(kind, "error").inc()
        raise
    except RecursionError:
        metrics.compiles.labels(kind, "error").inc()
        raise LimitExceeded("the constraint is nested too deeply", "max_nesting_depth") from None
    finally:
        state.compiles_pending -= 1
        metrics.compiles_pending.dec()
    elapsed = time.perf_counter() - start
    metrics.compiles.labels(kind, "cached" if cached else "compiled").inc()
    if not cached:
        metrics.compile_seconds.labels(kind).observe(elapsed)
    return Compiled(program, cached, elapsed * 1000, state.tokenizers.name_of(tok))


@router.post(
    "/compile",
    summary="Compile a constraint",
    response_model=CompileResponse,
    response_model_exclude_none=True,
    responses=problem_responses(400, 404, 413, 422, 429, 503),
)
async def compile_endpoint(body: CompileRequest, state: StateDep, owner: OwnerDep) -> CompileResponse:
    """Compile a constraint for a vocabulary (or take it from the shared cache).

    Give exactly one kind: `template`, `json_schema`, `regex`, `grammar` (Lark), `gbnf`, `choice`,
    `llguidance`, `structural_tag`, `tools` (with `tool_format`), or another engine's request form
    as its users write it: `response_format` (OpenAI), `structured_outputs` (vLLM), `ebnf` (SGLang).
    Any of them may take `reasoning`.
    The `program_id` is a content hash, equal on every replica: keep it to open sessions later
    (`POST /sessions {program_id}`), and keep the spec to re-send if that answers 404.
    """
    compiled = await compile_program(body, state)
    program = compiled.program
    # per key: never whether another key compiled it (service/tenants.py)
    cached, compile_ms = await state.key_programs.answer(
        owner, program.program_id, compiled.cached, compiled.compile_ms
    )
    session_id = None
    if body.open_session:
        session_id = state.sessions.create(program, compiled.tokenizer_name, owner=owner).id
    return CompileResponse(
        program_id=program.program_id,
        cached=cached,
        vocab_size=program.vocab_size,
        mask_words=program.mask_words,
        variables=program_variables(program),
        compile_ms=round(compile_ms, 3),
        session_id=session_id,
        ignored=list(program.ignored),
        engine_limit=EngineLimitNote.of(program.stats.engine_limit),
    )
