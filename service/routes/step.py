"""``POST /step``: one decoding step for a whole batch in one round trip.

Request (JSON, small)::

    {"sessions": [{"session_id": "...", "tokens": [17], "draft_tokens": [5, 9]}, ...],
     "variables": false, "mask_encoding": "dense"}

For each session, in order: accept ``tokens`` (possibly none, possibly several), all or nothing,
then compute its next mask; with ``draft_tokens`` (speculative decoding), also one mask after
each draft token, the session itself staying where ``tokens`` left it. The batch's masks are
filled together (in parallel threads when they are costly: see ``GuidanceBackend``).

The route reads the request and writes the answer; the step itself (limits, lookups, where the
work runs, metrics) is ``service/operations/step.py``.

The response (``application/vnd.guidance.step``, binary, little-endian) is a length-prefixed
JSON header, then the masks, one row per session (plus its draft rows), in order: dense rows, or
block-sparse with ``"mask_encoding": "blocks"`` (a bitmap of the blocks that hold a set bit, then
those blocks only). The layout is defined once, in ``guidance_client.wire``: this route writes
answers with its writers, and the client reads them with its reader.

The header is ``{"mask_words", "vocab_size", "rows", "sessions": [status, ...]}``; a status is
``{"session_id", "row", "rows", "status": "ok"|"rejected"|"error", "accepted", "terminated",
"eos_token_id"?, "accepting", "forced_tokens"?, "variables"?, "partial"?, "index"?, "token"?, "error"?}``
(``eos_token_id``, once terminated: the end token that ended it):
``forced_tokens`` unless the request sets ``"forced_tokens": false``, ``variables`` if it sets
``"variables": true`` or ``"partial"``, and ``partial`` (every capture so far with its text so far,
``core/partial.py``) if it sets ``"partial"``.
A rejected session is unchanged and its row holds its current mask; a session in error (unknown,
expired, invalid token ids, another vocabulary) has a row of zeros and an ``error`` problem
object. One bad session never fails the batch; a malformed request does (422), as does the same
session twice (422), and so do requests past a limit (413 ``limit-exceeded``, checked before
any session moves or any buffer exists): more sessions than ``max_batch_size``, more draft
tokens for one session than ``max_draft_tokens``, or an answer larger than
``max_step_answer_bytes`` (rows x mask bytes, plus the header's fixed part per session).
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from guidance_client.wire import STEP_MEDIA_TYPE
from service.auth import owner_of
from service.dependencies import resources_of, tenant_of
from service.direct_route import DirectRoute
from service.operations import step as operation
from service.problems import problem_responses
from service.schemas import StepItem, StepRequest

__all__ = ["STEP_MEDIA_TYPE", "openapi_components", "router"]


router = APIRouter(tags=["step"], route_class=DirectRoute)


_LAYOUT = (
    "uint32 little-endian header length H; H bytes of UTF-8 JSON header (padded with spaces to a "
    "multiple of 4); then `rows` masks of `mask_words` little-endian int32 words each, in request "
    "order (a session's draft rows follow its own row). Bit `t % 32` of word `t // 32` set means "
    "token `t` is allowed. With `mask_encoding: blocks` the masks are block-sparse instead: each "
    "row is cut into blocks of `block_words` (64) words, the last padded with zeros; a bitmap of "
    "ceil(rows * blocks_per_row / 8) bytes (zero-padded to a multiple of 4; bit k in little-endian "
    "bit order, k = row * blocks_per_row + block) marks the blocks holding a set bit; then those "
    "blocks follow in that order, `block_words` little-endian int32 each. Absent blocks are zero."
)

_EXTRA: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/StepRequest"}}},
    },
    "x-step-layout": _LAYOUT,
}

_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Every session's status and every mask in one binary body. " + _LAYOUT,
        "content": {STEP_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary", "description": _LAYOUT}}},
    },
    **problem_responses(413, 422, 503),
}


# Past this size a body is parsed off the event loop, a session at a time: 340 sessions of 4,096
# tokens (4 MB of JSON) take 0.2-0.6 s to validate, in C that holds the GIL.
_LARGE_BODY_BYTES = 256 * 1024


def _validate(raw: bytes) -> StepRequest:
    """The request body, validated by its model (a 422 problem when it does not fit)."""
    try:
        return StepRequest.model_validate_json(raw)
    except ValidationError as e:
        raise RequestValidationError(e.errors(include_url=False, include_input=False)) from None


def _validate_in_pieces(raw: bytes) -> StepRequest:
    """:func:`_validate` for a large body, on a thread: each session's item validated apart, so
    the GIL changes hands between them and the event loop keeps serving. Anything unusual is
    validated whole instead, for the same problem as a small body's."""
    try:
        data = orjson.loads(raw)
        if isinstance(data, dict) and isinstance(data.get("sessions"), list):
            items = [StepItem.model_validate(item) for item in data["sessions"]]
            return StepRequest.model_validate({**data, "sessions": items})
    except (orjson.JSONDecodeError, ValidationError):
        pass
    return _validate(raw)


async def _read_request(request: Request) -> StepRequest:
    raw = await request.body()
    if len(raw) <= _LARGE_BODY_BYTES:
        return _validate(raw)
    return await asyncio.to_thread(_validate_in_pieces, raw)


@router.post(
    "/step",
    summary="Advance a batch and get every mask",
    response_class=Response,
    responses=_RESPONSES,
    openapi_extra=_EXTRA,
)
async def step(request: Request) -> Response:
    """One decoding step for a batch of sessions: accept each one's tokens, return all masks.

    See the module documentation (and `x-step-layout`) for the binary response layout.
    """
    service = resources_of(request)
    body = await _read_request(request)
    answer = await operation.step(service, body, owner_of(request), tenant_of(request))
    return Response(answer, media_type=STEP_MEDIA_TYPE)


def openapi_components() -> dict[str, Any]:
    """JSON schemas of the request models, for ``components/schemas`` (the route reads the body itself)."""
    schema = StepRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    defs = schema.pop("$defs", {})
    return {"StepRequest": schema, **defs}
