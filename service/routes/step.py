"""``POST /step``: one decoding step for a whole batch in one round trip.

Request (JSON, small)::

    {"sessions": [{"session_id": "...", "tokens": [17], "draft_tokens": [5, 9]}, ...],
     "variables": false, "mask_encoding": "dense"}

For each session, in order: accept ``tokens`` (possibly none, possibly several), all or nothing,
then compute its next mask; with ``draft_tokens`` (speculative decoding), also one mask after
each draft token, the session itself staying where ``tokens`` left it. The batch's masks are
filled together (in parallel threads when they are costly: see ``GuidanceBackend``).

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

import contextlib
import functools
import time
from typing import Any, Literal

import numpy as np
import orjson
from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.errors import GuidanceError, LimitExceeded, TokenRejected
from core.session import GuidanceState
from guidance_client.wire import STEP_MEDIA_TYPE, MaskEncoding, blocks_step_answer, dense_step_answer, step_header
from service.auth import owner_of
from service.dependencies import ServiceState, state_of
from service.memory import LARGE_ANSWER_BYTES
from service.problems import error_problem, problem_responses
from service.routes.sessions import DirectRoute
from service.schemas import TokenId
from service.sessions import Session, check_history

__all__ = ["STEP_MEDIA_TYPE", "StepItem", "StepRequest", "openapi_components", "router"]


router = APIRouter(tags=["step"], route_class=DirectRoute)


class StepItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    session_id: str = Field(description="The session to advance.")
    tokens: list[TokenId] = Field(default_factory=list, description="Tokens sampled for it, in order (may be empty).")
    draft_tokens: list[TokenId] | None = Field(
        None,
        description="Draft tokens: one extra mask row after each (speculative decoding); the session does not move.",
    )


class StepRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sessions: list[StepItem] = Field(description="The batch, in the order the masks come back.")
    variables: bool | Literal["partial"] = Field(
        False,
        description=(
            "Include each session's captured variables in its status; `\"partial\"` also includes "
            "`partial`: every capture so far, the ones still being generated with their text so far "
            "(computed only when asked)."
        ),
    )
    forced_tokens: bool = Field(
        True,
        description=(
            "Include each session's forced tokens (what the constraint fixes next) in its status; "
            "`false` leaves them out and skips computing them (one more llguidance call per session)."
        ),
    )
    mask_encoding: MaskEncoding = Field(
        "dense", description="`dense`: packed bitmask rows; `blocks`: block-sparse (see `x-step-layout`)."
    )


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


# The answer's size is checked before any work: the header's fixed part, and per session the
# least its status takes besides its id (captured variables and forced tokens come on top;
# they are bounded by the session's history, max_session_tokens).
_HEADER_BYTES = 4 + 64
_STATUS_BYTES = 96


def _read_request(raw: bytes) -> StepRequest:
    """The request body, validated by its model (a 422 problem when it does not fit)."""
    try:
        return StepRequest.model_validate_json(raw)
    except ValidationError as e:
        raise RequestValidationError(e.errors(include_url=False, include_input=False)) from None


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
    service = state_of(request)
    body = _read_request(await request.body())
    items = body.sessions
    settings = service.settings
    limit = settings.max_batch_size
    if len(items) > limit:
        raise LimitExceeded(f"{len(items)} sessions in one step, above the limit of {limit}", "max_batch_size")
    rows = len(items)
    for item in items:
        draft = item.draft_tokens
        if draft:
            if len(draft) > settings.max_draft_tokens:
                raise LimitExceeded(
                    f"{len(draft)} draft tokens for one session, above the limit of {settings.max_draft_tokens}",
                    "max_draft_tokens",
                )
            rows += len(draft)
    ids = [item.session_id for item in items]
    if len(set(ids)) != len(ids):
        raise RequestValidationError(
            [{"loc": ("body", "sessions"), "msg": "a session appears twice", "type": "value_error"}]
        )
    store = service.sessions
    owner = owner_of(request)

    # Look every session up first; unknown, expired and other keys' ones become per-session errors.
    found: list[Session | None] = []
    errors: dict[int, GuidanceError] = {}
    for i, sid in enumerate(ids):
        try:
            found.append(store.get(sid, owner))
        except GuidanceError as e:
            found.append(None)
            errors[i] = e
    live = [s for s in found if s is not None]
    words = live[0].program.mask_words if live else 1
    vocab = live[0].program.vocab_size if live else 0
    answer = rows * words * 4 + _HEADER_BYTES + sum(len(sid) for sid in ids) + _STATUS_BYTES * len(ids)
    if answer > settings.max_step_answer_bytes:
        raise LimitExceeded(
            f"the answer would be {answer} bytes ({rows} rows of {words * 4} bytes and the header), "
            f"above the limit of {settings.max_step_answer_bytes}",
            "max_step_answer_bytes",
        )
    work = functools.partial(_advance_and_fill, service, body, found, errors, words, vocab)
    buf = await service.scheduler.run_batch(live, work)
    service.metrics.step_batch_size.observe(len(items))
    if len(buf) >= LARGE_ANSWER_BYTES:
        service.large_answers += 1
    return Response(buf, media_type=STEP_MEDIA_TYPE)


def _status(
    item: StepItem,
    row: int,
    rows: int,
    st: GuidanceState | None,
    options: StepRequest | None = None,
    rejected: TokenRejected | None = None,
    error: GuidanceError | None = None,
) -> dict[str, Any]:
    """One session's status in the answer's header (see the module documentation).

    ``options`` None: an error status. ``st`` None: a session that could not be looked up.
    """
    if error is not None:
        status: dict[str, Any] = {"session_id": item.session_id, "row": row, "rows": rows, "status": "error"}
        if st is None:
            status["error"] = error_problem(error)
            return status
        status["accepted"] = 0
        status["error"] = error_problem(error)
    elif rejected is not None:
        status = {
            "session_id": item.session_id, "row": row, "rows": rows, "status": "rejected", "accepted": 0,
            "index": rejected.index, "token": rejected.token,
        }  # fmt: skip
    else:
        status = {"session_id": item.session_id, "row": row, "rows": rows, "status": "ok", "accepted": len(item.tokens)}
    assert st is not None  # only a session that could not be looked up has no state, and it has an error
    status["terminated"] = terminated = st.is_terminated()
    if terminated:
        status["eos_token_id"] = st.end_token
    status["accepting"] = st.is_accepting()
    if options is not None:
        if options.forced_tokens:
            status["forced_tokens"] = st.forced_tokens()
        if options.variables:
            status["variables"] = st.variables
            if options.variables == "partial":
                status["partial"] = st.partial_variables(parse_json=True)
    return status


def _advance_and_fill(
    service: ServiceState,
    body: StepRequest,
    found: list[Session | None],
    errors: dict[int, GuidanceError],
    words: int,
    vocab: int,
) -> memoryview:
    """Advance every session of the batch and compute the whole answer (no one else holds them)."""
    metrics = service.metrics
    statuses: list[dict[str, Any]] = []
    fill_states: list[GuidanceState] = []
    fill_items: list[StepItem] = []
    fill_statuses: list[dict[str, Any]] = []  # the status of each state filled (rewritten if its mask fails)
    fill_rows: list[int] = []
    drafts: list[tuple[GuidanceState, int, list[int]]] = []
    blank: list[tuple[int, int]] = []  # rows no mask is computed into: (first, count)
    row = 0
    accepted_total = rejected_total = 0
    max_tokens = service.sessions.max_tokens
    for i, item in enumerate(body.sessions):
        session = found[i]
        draft = item.draft_tokens
        n_rows = 1 + len(draft) if draft else 1
        if session is not None and session.program.mask_words != words:
            errors[i] = LimitExceeded("every session of one step must use the same vocabulary", "vocabulary")
            session = None
        if session is None:
            statuses.append(_status(item, row, n_rows, None, error=errors[i]))
            blank.append((row, n_rows))
            row += n_rows
            continue
        st = session.state
        before = len(st.tokens)
        try:
            rejected = None
            try:
                check_history(st, len(item.tokens), max_tokens)
                st.advance(item.tokens)
                accepted_total += len(item.tokens)
            except TokenRejected as e:
                rejected_total += 1
                rejected = e
            status = _status(item, row, n_rows, st, body, rejected)
        except GuidanceError as e:  # bad ids, a limit, an engine limit met: the session as it was
            _undo(st, before)
            status = _status(item, row, n_rows, st, error=e)
        session.publish()
        statuses.append(status)
        fill_states.append(st)
        fill_items.append(item)
        fill_statuses.append(status)
        fill_rows.append(row)
        if draft:
            drafts.append((st, row, draft))
            blank.append((row + 1, n_rows - 1))  # draft rows after a refused draft token stay zero
        row += n_rows

    # Dense masks are computed straight into the answer's buffer (no copies). It is np.empty, not
    # a zeroed buffer: a zeroed buffer of this size comes from calloc, as fresh pages the kernel
    # must fault in and clear, where np.empty reuses pages the process already has. Rows no mask
    # is computed into are zeroed.
    head = step_header(words, vocab, row, statuses, body.mask_encoding)
    if body.mask_encoding == "blocks":
        masks = np.empty((row, words), dtype=np.int32)
        _fill(service, masks, blank, fill_states, fill_rows, drafts, fill_items, fill_statuses)
        buf = blocks_step_answer(orjson.dumps(head), masks)
    else:
        buf, masks = dense_step_answer(orjson.dumps(head), row, words)
        if _fill(service, masks, blank, fill_states, fill_rows, drafts, fill_items, fill_statuses):
            # A mask failed (an engine limit): its status changed after the header was written.
            # Rare: the answer is framed again around the masks already computed.
            buf, framed = dense_step_answer(orjson.dumps(head), row, words)
            framed[:] = masks

    metrics.masks_batch.inc(len(fill_states))
    if accepted_total:
        metrics.tokens_accepted.inc(accepted_total)
    if rejected_total:
        metrics.tokens_rejected.inc(rejected_total)
    return buf.data


def _undo(st: GuidanceState, keep: int) -> None:
    """Take back what this request accepted (the session is left as it was before it)."""
    if len(st.tokens) > keep:
        with contextlib.suppress(GuidanceError):
            st.rollback(len(st.tokens) - keep)


def _fill(
    service: ServiceState,
    bitmask: np.ndarray,
    blank: list[tuple[int, int]],
    states: list[GuidanceState],
    rows: list[int],
    drafts: list[tuple[GuidanceState, int, list[int]]],
    items: list[StepItem],
    statuses: list[dict[str, Any]],
) -> bool:
    """Compute every mask of the answer; True when a session's mask failed (its status is changed)."""
    for first, count in blank:
        bitmask[first : first + count] = 0
    start = time.perf_counter()
    failed: dict[int, GuidanceError] = {}
    try:
        if states:
            failed = service.scheduler.fill(states, bitmask, rows)
        for st, first, draft in drafts:
            _fill_drafts(st, first, draft, bitmask)
    finally:
        # A program remembers the last array it filled; this one is the request's answer, which
        # must be freed with the request (else every program pins its last batch's answer).
        for program in {st.program for st in states}:
            program.bitmask_views.forget(bitmask)
    service.metrics.mask_seconds.observe(time.perf_counter() - start)
    for k, e in failed.items():
        st, status = states[k], statuses[k]
        _undo(st, len(st.tokens) - status.get("accepted", 0))
        error = _status(items[k], status["row"], status["rows"], st, error=e)
        status.clear()
        status.update(error)  # the header holds this very dict
    return bool(failed)


def _fill_drafts(st: GuidanceState, first: int, draft: list[int], bitmask: np.ndarray) -> None:
    """Rows after each draft token, computed on a copy (the session does not move).

    Rows after a draft token the constraint refuses stay zero.
    """
    probe = st.fork()
    for k, token in enumerate(draft, start=1):
        try:
            if not probe.accept_tokens((token,)):
                break
            probe.fill_bitmask(bitmask, first + k)
        except GuidanceError:  # an engine limit on the copy: the rows from here stay zero
            break


def openapi_components() -> dict[str, Any]:
    """JSON schemas of the request models, for ``components/schemas`` (the route reads the body itself)."""
    schema = StepRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    defs = schema.pop("$defs", {})
    return {"StepRequest": schema, **defs}
