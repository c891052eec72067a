"""The session operations: open, accept, mask, rollback, fork, read, close.

Each one looks its session up (an unknown, expired or other key's id: 404/410), hands its engine
work (a plain function that never awaits) to the scheduler (``service/scheduling.py``), which runs
it inline, under the session's lock, or in the slow lane, and counts what it did in the metrics.
The routes (``service/routes/sessions.py``) only parse and answer.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
from starlette.requests import Request

from core.errors import GuidanceError, TokenRejected, UnknownProgram, excerpt
from core.program import CompiledGuidanceProgram
from core.session import GuidanceState
from guidance_client.wire import to_bytes
from service.dependencies import ServiceResources
from service.errors import NotReady, RollbackOutOfRange
from service.operations.compile import compile_program
from service.scheduling import Tenant
from service.schemas import (
    AcceptRequest,
    AcceptResponse,
    EngineLimitNote,
    RollbackRequest,
    SessionCreated,
    SessionCreateRequest,
    SessionState,
)
from service.sessions import Session, check_history

__all__ = ["Mask", "accept", "close", "fork", "mask", "open_session", "read", "rollback"]


async def open_session(
    state: ServiceResources, body: SessionCreateRequest, owner: int | None, request: Request | None = None
) -> SessionCreated:
    """Open a session on a cached program (``program_id``) or on the program ``body`` describes.

    A compile stops when ``request``'s client goes away (see :func:`~service.operations.compile.compile_program`).

    Raises:
        NotReady: the server is draining.
        UnknownProgram: ``program_id`` is not in this replica's cache, or this key never compiled
            it (:mod:`service.tenants`).
        TooManySessions: the store is full.
    """
    if state.draining:
        raise NotReady(
            "the server is shutting down: open the session on another replica", state.settings.retry_after_seconds
        )
    if body.program_id is not None:
        program = state.backend.get_program(body.program_id)
        if program is None or not state.key_programs.knows(owner, body.program_id):
            raise UnknownProgram(f"program {excerpt(body.program_id, 64)} is not in this server's cache; send its spec")
        tokenizer_name = state.tokenizers.name_of(program.tokenizer)
    else:
        compiled = await compile_program(body, state, owner, request)
        program, tokenizer_name = compiled.program, compiled.tokenizer_name
    session = state.sessions.create(program, tokenizer_name, owner=owner)
    note = EngineLimitNote.of(program.stats.engine_limit)
    return SessionCreated(session_id=session.id, program_id=program.program_id, engine_limit=note)


def _forced_and_variables(st: GuidanceState) -> tuple[list[int], dict[str, Any]]:
    # llguidance reports a capture once its parser has looked past it, which computing the
    # forced tokens (or a mask) does: compute them first, so every answer shows the same values.
    forced = st.forced_tokens()
    return forced, st.variables


def _state(session: Session, partial: bool = False) -> SessionState:
    st = session.state
    _, variables = _forced_and_variables(st)
    return SessionState(
        program_id=session.program.program_id,
        tokens=list(st.tokens),
        text=st.text(),
        variables=variables,
        terminated=st.is_terminated(),
        accepting=st.is_accepting(),
        partial=st.partial_variables(parse_json=True) if partial else None,  # type: ignore[arg-type]
    )


async def accept(
    state: ServiceResources, session_id: str, body: AcceptRequest, owner: int | None, tenant: Tenant
) -> AcceptResponse:
    """Advance a session by ``body.tokens``, all or nothing (or only count them, ``dry_run``).

    Raises:
        TokenRejected: a token is not allowed; the session is unchanged.
        LimitExceeded: the history would pass ``max_session_tokens``, or an engine limit was met
            past the tokens (they are taken back).
    """
    sessions, metrics, lane = state.sessions, state.metrics, state.scheduler.lane
    session = sessions.get(session_id, owner)
    st = session.state
    tokens = body.tokens

    def work() -> AcceptResponse:
        if body.dry_run:
            accepted = st.count_valid(tokens)
        else:
            check_history(st, len(tokens), sessions.max_tokens)
            try:
                st.advance(tokens)
            except TokenRejected:
                metrics.tokens_rejected.inc()
                raise
            accepted = len(tokens)
            metrics.tokens_accepted.inc(accepted)
        try:
            if lane.is_slow(session.program):
                # llguidance holds the GIL while it computes forced tokens but not a mask, and a
                # mask warms what they need: off the loop, a mask past max_mask_ms is refused here
                # without holding every other thread.
                st.fill_bitmask(_scratch_row(session.program.mask_words), 0)
            forced, variables = _forced_and_variables(st)
        except GuidanceError:  # an engine limit met past the tokens: all or nothing, so take them back
            if not body.dry_run:
                st.rollback(accepted)
            raise
        if not body.dry_run:
            session.publish()
        return AcceptResponse(
            accepted=accepted,
            terminated=st.is_terminated(),
            eos_token_id=st.end_token,
            accepting=st.is_accepting(),
            forced_tokens=forced,
            variables=variables,
            partial=st.partial_variables(parse_json=True) if body.partial else None,  # type: ignore[arg-type]
        )

    return await state.scheduler.run(session, work, tenant, history=True)


_scratch = threading.local()


def _scratch_row(words: int) -> np.ndarray:
    """A reused one-row bitmask per thread and width (a fresh array per request costs its
    allocation and the engine's check of an array it has not seen). Its bytes are copied out
    before the thread fills it again."""
    rows: dict[int, np.ndarray] | None = getattr(_scratch, "rows", None)
    if rows is None:
        rows = _scratch.rows = {}
    row = rows.get(words)
    if row is None:
        row = rows[words] = np.zeros((1, words), dtype=np.int32)
    return row


class Mask:
    """A session's next-token mask: its packed bytes and what the answer's headers say."""

    __slots__ = ("mask_words", "raw", "terminated", "vocab_size")

    def __init__(self, raw: bytes, terminated: bool, program: CompiledGuidanceProgram) -> None:
        self.raw = raw
        self.terminated = terminated
        self.mask_words = program.mask_words
        self.vocab_size = program.vocab_size


async def mask(state: ServiceResources, session_id: str, owner: int | None, tenant: Tenant, *, as_json: bool) -> Mask:
    """The tokens a session allows next, counted under the format it is answered in."""
    session = state.sessions.get(session_id, owner)
    metrics = state.metrics
    program = session.program

    def work() -> tuple[bytes, bool]:
        start = time.perf_counter()
        row = _scratch_row(program.mask_words)
        session.state.fill_bitmask(row, 0)
        terminated = session.state.is_terminated()
        metrics.mask_seconds.observe(time.perf_counter() - start)
        return to_bytes(row), terminated

    raw, terminated = await state.scheduler.run(session, work, tenant)
    (metrics.masks_json if as_json else metrics.masks_binary).inc()
    return Mask(raw, terminated, program)


async def rollback(
    state: ServiceResources, session_id: str, body: RollbackRequest, owner: int | None, tenant: Tenant
) -> SessionState:
    """Undo a session's last ``body.tokens`` tokens; its state after.

    Raises:
        RollbackOutOfRange: more tokens than the session has accepted.
    """
    session = state.sessions.get(session_id, owner)

    def work() -> SessionState:
        have = len(session.state.tokens)
        if body.tokens > have:
            raise RollbackOutOfRange(f"cannot roll back {body.tokens} tokens: the session has accepted {have}")
        session.state.rollback(body.tokens)
        session.publish()
        return _state(session)

    return await state.scheduler.run(session, work, tenant, history=True)


async def fork(state: ServiceResources, session_id: str, owner: int | None, tenant: Tenant) -> SessionCreated:
    """A new session at the same position as ``session_id`` (its owner's)."""
    sessions = state.sessions
    session = sessions.get(session_id, owner)
    copy = await state.scheduler.run(session, session.state.fork, tenant)
    child = sessions.create(session.program, session.tokenizer_name, copy, owner=session.owner)
    return SessionCreated(session_id=child.id, program_id=session.program.program_id)


async def read(
    state: ServiceResources, session_id: str, owner: int | None, tenant: Tenant, partial: bool
) -> SessionState:
    """A session's program, tokens, text, variables and status (with ``partial`` values)."""
    session = state.sessions.get(session_id, owner)
    return await state.scheduler.run(session, lambda: _state(session, partial), tenant, history=True)


def close(state: ServiceResources, session_id: str, owner: int | None) -> None:
    """Close a session now (its id then answers 404)."""
    state.sessions.delete(session_id, owner)
