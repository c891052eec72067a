"""Sessions: open, accept, mask, rollback, fork, read, close.

Each handler parses its request and answers; the operation (``service/operations/sessions.py``)
looks the session up, runs its engine work through the scheduler and counts it.
"""

from __future__ import annotations

import base64
from typing import Any

import orjson
from fastapi import APIRouter, Request, Response

from guidance_client.wire import MASK_MEDIA_TYPE
from service.auth import owner_of
from service.dependencies import OwnerDep, ResourcesDep, TenantDep, resources_of, tenant_of
from service.direct_route import DirectRoute
from service.operations import sessions as operations
from service.problems import problem_responses
from service.schemas import (
    AcceptRequest,
    AcceptResponse,
    MaskJSON,
    RollbackRequest,
    SessionCreated,
    SessionCreateRequest,
    SessionState,
)

__all__ = ["get_mask", "mask_router", "router"]


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


@router.post(
    "",
    summary="Open a session",
    status_code=201,
    response_model=SessionCreated,
    responses=problem_responses(400, 404, 413, 422, 429, 503),
)
async def create_session(
    body: SessionCreateRequest, state: ResourcesDep, owner: OwnerDep, request: Request
) -> SessionCreated:
    """Open a session on a cached program (`program_id`), or compile a body and open one.

    `program_id` answers 404 `program-not-found` when this replica has not compiled it (or
    evicted it): re-send the program itself.
    """
    return await operations.open_session(state, body, owner, request)


@router.post(
    "/{session_id}/accept",
    summary="Accept sampled tokens",
    response_model=AcceptResponse,
    response_model_exclude_none=True,
    responses=problem_responses(404, 409, 410, 413, 422),
)
async def accept_tokens(
    session_id: str, body: AcceptRequest, state: ResourcesDep, owner: OwnerDep, tenant: TenantDep
) -> AcceptResponse:
    """Advance the session by the tokens sampled, all or nothing.

    A token the constraint forbids answers 409 `token-rejected` with its `index`, and the
    session is left exactly as it was. With `dry_run`, only validate. With `partial`, the answer
    also has `partial`: every capture so far, those being generated with their text so far.
    """
    return await operations.accept(state, session_id, body, owner, tenant)


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
    accept = request.headers.get("accept", "")
    as_json = "application/json" in accept and MASK_MEDIA_TYPE not in accept
    mask = await operations.mask(
        resources_of(request), request.path_params["session_id"], owner_of(request), tenant_of(request), as_json=as_json
    )
    if as_json:
        body = {
            "mask": base64.b64encode(mask.raw).decode("ascii"),
            "mask_words": mask.mask_words,
            "vocab_size": mask.vocab_size,
            "terminated": mask.terminated,
        }
        return Response(orjson.dumps(body), media_type="application/json")
    return Response(
        mask.raw,
        media_type=MASK_MEDIA_TYPE,
        headers={
            "X-Vocab-Size": str(mask.vocab_size),
            "X-Mask-Words": str(mask.mask_words),
            "X-Terminated": "true" if mask.terminated else "false",
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
    session_id: str, body: RollbackRequest, state: ResourcesDep, owner: OwnerDep, tenant: TenantDep
) -> SessionState:
    """Undo the last `tokens` accepted tokens (EOS included); answers the session's state."""
    return await operations.rollback(state, session_id, body, owner, tenant)


@router.post(
    "/{session_id}/fork",
    summary="Fork a session",
    status_code=201,
    response_model=SessionCreated,
    responses=problem_responses(404, 410, 422, 429),
)
async def fork(session_id: str, state: ResourcesDep, owner: OwnerDep, tenant: TenantDep) -> SessionCreated:
    """A new, independent session at the same position (n > 1 sampling, beam search)."""
    return await operations.fork(state, session_id, owner, tenant)


@router.get(
    "/{session_id}",
    summary="Read a session",
    response_model=SessionState,
    response_model_exclude_none=True,
    responses=problem_responses(404, 410, 413, 422),
)
async def get_session(
    session_id: str, state: ResourcesDep, owner: OwnerDep, tenant: TenantDep, partial: bool = False
) -> SessionState:
    """The session: program, tokens accepted, their text, captured variables, status.

    With `?partial=true`, also `partial`: every capture so far, those being generated with their
    text so far (a json slot with its value parsed so far).
    """
    return await operations.read(state, session_id, owner, tenant, partial)


@router.delete(
    "/{session_id}",
    summary="Close a session",
    status_code=204,
    response_class=Response,
    responses=problem_responses(404, 410, 422),
)
async def delete_session(session_id: str, state: ResourcesDep, owner: OwnerDep) -> Response:
    """Close the session now (its id then answers 404)."""
    operations.close(state, session_id, owner)
    return Response(status_code=204)
