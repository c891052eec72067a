"""Compiling: a request's constraint in, a program (and perhaps a session on it) out.

The service owns the compile executor (:attr:`~service.dependencies.ServiceResources.compile_executor`),
as vLLM's structured-output manager owns its compile executor over plain backends: the backend
(:class:`~core.backend.GuidanceBackend`) compiles, the cache merges concurrent compiles of one
program, and this module decides whether a compile may start at all (draining, the queue
bound), counts it, and stops it when its client goes away. The memory budget is checked before
the body is read (:mod:`service.admission`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from starlette.requests import ClientDisconnect, Request

from core.errors import GuidanceError, LimitExceeded
from core.program import CompiledGuidanceProgram
from core.spec import spec_from_kwargs
from service.dependencies import ServiceResources
from service.errors import CompileQueueFull, NotReady
from service.schemas import ProgramFields
from service.sessions import Session

__all__ = ["Compiled", "check_variables", "compile_and_open", "compile_program", "program_variables"]

T = TypeVar("T")


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


async def _gone(request: Request) -> None:
    """Returns when the client has gone (its body is read: nothing but a disconnect can come)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _unless_gone(work: Awaitable[T], request: Request | None) -> T:
    """``work``'s result; cancelled, with :class:`ClientDisconnect`, when the client goes first."""
    task = asyncio.ensure_future(work)
    if request is None or task.done():
        return await task
    watch = asyncio.ensure_future(_gone(request))
    try:
        await asyncio.wait((task, watch), return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not task.done():  # the client went, or this request was cancelled
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        watch.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await watch
    if task.cancelled():
        raise ClientDisconnect()
    return task.result()


async def compile_program(
    body: ProgramFields, state: ServiceResources, owner: int | None, request: Request | None = None
) -> Compiled:
    """Compile (or fetch from the cache) the program a request describes, counting it.

    Args:
        body: the request's constraint fields.
        state: the running app.
        owner: the asking key: ``cached`` and ``compile_ms`` are answered as this key alone sees
            them, never telling whether another key compiled the program (:mod:`service.tenants`).
        request: the HTTP request: when its client goes, the compile stops waiting (and stops,
            when nobody else waits for the same program).

    Raises:
        UnknownTokenizer: ``body.tokenizer`` is not loaded.
        CompileQueueFull: too many compiles are already pending (and this one is not cached).
        NotReady: the server is draining (SIGTERM): compile on another replica.
        GuidanceError: the constraint does not compile (400) or breaks a limit.
        ClientDisconnect: the client went away before the compile ended.
    """
    settings = state.settings
    if state.draining:
        raise NotReady("the server is shutting down: compile on another replica", settings.retry_after_seconds)
    tok = state.tokenizers.get(body.tokenizer)
    check_variables(body.variables, settings.max_variables, settings.max_variables_bytes)
    kind, source = body.kind_and_source()
    backend, metrics = state.backend, state.metrics
    job = backend.job(spec_from_kwargs(kind, source, body.variables, body.kind_options(), body.reasoning), tok)
    start = time.perf_counter()
    pending, limit = state.compiles_pending, settings.max_pending_compiles
    hit = backend.get_program(job.key) is not None
    if pending >= limit and not hit:
        raise CompileQueueFull(f"{pending} compiles are pending, the limit is {limit}", settings.retry_after_seconds)
    state.compiles_pending += 1
    metrics.compiles_pending.inc()
    try:
        # A cached program is answered at once: nothing to watch the client for.
        compiling = backend.compile_async(job, state.compile_executor)
        program, cached = await _unless_gone(compiling, None if hit else request)
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
    seen_cached, compile_ms = await state.key_programs.answer(owner, program.program_id, cached, elapsed * 1000)
    return Compiled(program, seen_cached, compile_ms, state.tokenizers.name_of(tok))


async def compile_and_open(
    body: ProgramFields, state: ServiceResources, owner: int | None, request: Request | None = None
) -> tuple[Compiled, Session]:
    """Compile the program a request describes and open a session on it (see :func:`compile_program`).

    Raises:
        TooManySessions: the open-session cap is reached.
        GuidanceError: as :func:`compile_program`.
    """
    compiled = await compile_program(body, state, owner, request)
    return compiled, state.sessions.create(compiled.program, compiled.tokenizer_name, owner=owner)
