"""Sessions: open, accept, mask, rollback, fork, read, close.

Each handler's engine work (accept, mask, rollback, fork, read) is a plain function handed to the
scheduler (``service/scheduling.py``): inline on the event loop, serialised with every other
request on the session, or in the slow lane for a slow program.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

import numpy as np
import orjson
from fastapi import APIRouter, Request, Response
from fastapi.routing import APIRoute

from core.errors import GuidanceError, TokenRejected, UnknownProgram, excerpt
from core.session import GuidanceState
from guidance_client.wire import MASK_MEDIA_TYPE, to_bytes
from service.auth import owner_of
from service.dependencies import MetricsDep, OwnerDep, SessionsDep, StateDep, state_of
from service.errors import NotReady, RollbackOutOfRange
from service.operations.compile import compile_program
from service.problems import problem_responses
from service.schemas import (
    AcceptRequest,
    AcceptResponse,
    EngineLimitNote,
    MaskJSON,
    RollbackRequest,
    SessionCreated,
    SessionCreateRequest,
    SessionState,
)
from service.sessions import Session, check_history

__all__ = ["DirectRoute", "get_mask", "mask_router", "router"]


class DirectRoute(APIRoute):
    """An APIRoute documented like any other but called as ``endpoint(request)``, directly.

    No dependency solving, parameter validation or response serialisation, for the hot paths:
    the endpoint reads the request itself and returns a ``Response``; its parameters and body are
    documented through ``openapi_extra``. ``/step`` is served this way. The mask's route is
    declared the same way for the schema (and answers other methods with 405), but its GETs never
    reach the router: ``MaskFastPathMiddleware`` serves them all, calling the same endpoint.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        endpoint: Callable[[Request], Coroutine[Any, Any, Response]] = self.endpoint
        return endpoint


router = APIRouter(prefix="/sessions", tags=["sessions"])
# Its own router, included first: its route is matched before every other route.
mask_router = APIRouter(prefix="/sessions", tags=["sessions"], route_class=DirectRoute)

MASK_LAYOUT = (
    "`mask_words = ceil(vocab_size / 32)` little-endian int32 words, in order; bit `t % 32` of word "
    "`t // 32` set means token `t` is allowed next; bits past `vocab_size` are 0 (the layout of "
    "vLLM, xgrammar and llguidance). Read it with `numpy.frombuffer(body, '<i4')`."
)

_MASK_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The allowed next tokens as a packed bitmask. " + MASK_LAYOUT,
        "model": MaskJSON,
        "content": {
            MASK_MEDIA_TYPE: {
                "schema": {"type": "string", "format": "binary", "description": MASK_LAYOUT},
            }
        },
        "headers": {
            "X-Vocab-Size": {"description": "Vocabulary size (bits in use).", "schema": {"type": "integer"}},
            "X-Mask-Words": {"description": "int32 words in the body.", "schema": {"type": "integer"}},
            "X-Terminated": {
                "description": "`true` once EOS has been accepted.",
                "schema": {"type": "string", "enum": ["true", "false"]},
            },
        },
    }
}

_MASK_EXTRA: dict[str, Any] = {
    "parameters": [
        {"name": "session_id", "in": "path", "required": True, "schema": {"type": "string", "title": "Session Id"}}
    ],
    "x-mask-layout": {
        "word_type": "int32",
        "byte_order": "little",
        "words": "ceil(vocab_size / 32)",
        "bit_of_token": "word t // 32, bit t % 32",
        "bits_past_vocab": 0,
    },
}


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


@router.post(
    "",
    summary="Open a session",
    status_code=201,
    response_model=SessionCreated,
    responses=problem_responses(400, 404, 413, 422, 429, 503),
)
async def create_session(body: SessionCreateRequest, state: StateDep, owner: OwnerDep) -> SessionCreated:
    """Open a session on a cached program (`program_id`), or compile a body and open one.

    `program_id` answers 404 `program-not-found` when this replica has not compiled it (or
    evicted it): re-send the program itself.
    """
    if state.draining:
        raise NotReady(
            "the server is shutting down: open the session on another replica", state.settings.retry_after_seconds
        )
    if body.program_id is not None:
        program = state.backend.get_program(body.program_id)
        if program is None or not state.key_programs.knows(owner, body.program_id):  # service/tenants.py
            raise UnknownProgram(f"program {excerpt(body.program_id, 64)} is not in this server's cache; send its spec")
        tokenizer_name = state.tokenizers.name_of(program.tokenizer)
    else:
        compiled = await compile_program(body, state, owner)
        program, tokenizer_name = compiled.program, compiled.tokenizer_name
    session = state.sessions.create(program, tokenizer_name, owner=owner)
    return SessionCreated(
        session_id=session.id,
        program_id=program.program_id,
        engine_limit=EngineLimitNote.of(program.stats.engine_limit),
    )


@router.post(
    "/{session_id}/accept",
    summary="Accept sampled tokens",
    response_model=AcceptResponse,
    response_model_exclude_none=True,
    responses=problem_responses(404, 409, 410, 413, 422),
)
async def accept_tokens(
    session_id: str, body: AcceptRequest, sessions: SessionsDep, metrics: MetricsDep, state: StateDep, owner: OwnerDep
) -> AcceptResponse:
    """Advance the session by the tokens sampled, all or nothing.

    A token the constraint forbids answers 409 `token-rejected` with its `index`, and the
    session is left exactly as it was. With `dry_run`, only validate. With `partial`, the answer
    also has `partial`: every capture so far, those being generated with their text so far.
    """
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

    return await state.scheduler.run(session, work)


@mask_router.get(
    "/{session_id}/mask",
    summary="The next-token mask",
    response_class=Response,
    responses={**_MASK_RESPONSES, **problem_responses(404, 410, 413, 422)},
    openapi_extra=_MASK_EXTRA,
)
async def get_mask(request: Request) -> Response:
    """The tokens allowed next, as a packed bitmask.

    Binary by default (`application/octet-stream`, headers `X-Vocab-Size`, `X-Mask-Words`,
    `X-Terminated`); JSON with base64 when `Accept` names `application/json` and not
    `application/octet-stream`.
    """
    state = state_of(request)
    session = state.sessions.get(request.path_params["session_id"], owner_of(request))
    metrics = state.metrics
    program = session.program

    def work() -> tuple[bytes, bool]:
        start = time.perf_counter()
        row = _scratch_row(program.mask_words)
        session.state.fill_bitmask(row, 0)
        terminated = session.state.is_terminated()
        metrics.mask_seconds.observe(time.perf_counter() - start)
        return to_bytes(row), terminated

    raw, terminated = await state.scheduler.run(session, work)
    accept = request.headers.get("accept", "")
    if "application/json" in accept and MASK_MEDIA_TYPE not in accept:
        metrics.masks_json.inc()
        body = {
            "mask": base64.b64encode(raw).decode("ascii"),
            "mask_words": program.mask_words,
            "vocab_size": program.vocab_size,
            "terminated": terminated,
        }
        return Response(orjson.dumps(body), media_type="application/json")
    metrics.masks_binary.inc()
    return Response(
        raw,
        media_type=MASK_MEDIA_TYPE,
        headers={
            "X-Vocab-Size": str(program.vocab_size),
            "X-Mask-Words": str(program.mask_words),
            "X-Terminated": "true" if terminated else "false",
        },
    )


@router.post(
    "/{session_id}/rollback",
    summary="Undo tokens",
    response_model=SessionState,
    response_model_exclude_none=True,
    responses=problem_responses(404, 410, 413, 422),
)
async def rollback(
    session_id: str, body: RollbackRequest, sessions: SessionsDep, state: StateDep, owner: OwnerDep
) -> SessionState:
    """Undo the last `tokens` accepted tokens (EOS included); answers the session's state."""
    session = sessions.get(session_id, owner)

    def work() -> SessionState:
        have = len(session.state.tokens)
        if body.tokens > have:
            raise RollbackOutOfRange(f"cannot roll back {body.tokens} tokens: the session has accepted {have}")
        session.state.rollback(body.tokens)
        session.publish()
        return _state(session)

    return await state.scheduler.run(session, work)


@router.post(
    "/{session_id}/fork",
    summary="Fork a session",
    status_code=201,
    response_model=SessionCreated,
    responses=problem_responses(404, 410, 422, 429),
)
async def fork(session_id: str, sessions: SessionsDep, state: StateDep, owner: OwnerDep) -> SessionCreated:
    """A new, independent session at the same position (n > 1 sampling, beam search)."""
    session = sessions.get(session_id, owner)
    copy = await state.scheduler.run(session, session.state.fork)
    child = sessions.create(session.program, session.tokenizer_name, copy, owner=session.owner)
    return SessionCreated(session_id=child.id, program_id=session.program.program_id)


@router.get(
    "/{session_id}",
    summary="Read a session",
    response_model=SessionState,
    response_model_exclude_none=True,
    responses=problem_responses(404, 410, 413, 422),
)
async def get_session(
    session_id: str, sessions: SessionsDep, state: StateDep, owner: OwnerDep, partial: bool = False
) -> SessionState:
    """The session: program, tokens accepted, their text, captured variables, status.

    With `?partial=true`, also `partial`: every capture so far, those being generated with their
    text so far (a json slot with its value parsed so far).
    """
    session = sessions.get(session_id, owner)
    return await state.scheduler.run(session, lambda: _state(session, partial))


@router.delete(
    "/{session_id}",
    summary="Close a session",
    status_code=204,
    response_class=Response,
    responses=problem_responses(404, 410, 422),
)
async def delete_session(session_id: str, sessions: SessionsDep, owner: OwnerDep) -> Response:
    """Close the session now (its id then answers 404)."""
    sessions.delete(session_id, owner)
    return Response(status_code=204)
