"""``POST /step``: one decoding step for a whole batch in one round trip.

Request (JSON, small)::

    {"sessions": [{"session_id": "...", "tokens": [17], "draft_tokens": [5, 9]}, ...],
     "variables": false, "mask_encoding": "dense"}

For each session, in order: accept ``tokens`` (possibly none, possibly several), all or nothing,
then compute its next mask; with ``draft_tokens`` (speculative decoding), also one mask after
each draft token, the session itself staying where ``tokens`` left it. The batch's masks are
filled together (in parallel threads when they are costly: see ``GuidanceBackend``).

Response (``application/vnd.guidance.step``, binary, little-endian)::

    uint32 H                      length of the header
    H bytes                       UTF-8 JSON header, padded with spaces to a multiple of 4 bytes
    rows x mask_words x int32     the masks, one row per session (plus its draft rows), in order

The layout (this framing, the mask words, the block-sparse encoding) is defined once, in
``guidance_client.wire``, and the client reads answers with the same module. With
``"mask_encoding": "blocks"`` the masks come block-sparse instead: a bitmap of the 64-word blocks
that hold a set bit, then those blocks only; the header then also has ``"mask_encoding": "blocks"`` and ``"block_words": 64``. A JSON schema's batch of 64 tekken
masks shrinks from 1 MB to about 200 kB that way.

The header is ``{"mask_words", "vocab_size", "rows", "sessions": [status, ...]}``; a status is
``{"session_id", "row", "rows", "status": "ok"|"rejected"|"error", "accepted", "terminated",
"accepting", "forced_tokens"?, "variables"?, "partial"?, "index"?, "token"?, "error"?}``:
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
import sys
import time
from typing import Any, Literal, NamedTuple

import numpy as np
import orjson
from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.errors import GuidanceError, LimitExceeded, TokenRejected
from core.session import GuidanceState
from guidance_client.wire import BLOCK_WORDS, STEP_MEDIA_TYPE, MaskEncoding, encode_blocks, step_frame, to_bytes
from service.auth import owner_of
from service.dependencies import ServiceState, state_of
from service.memory import LARGE_ANSWER_BYTES
from service.problems import problem_responses
from service.routes.sessions import DirectRoute
from service.schemas import TOKEN_ID_MAX, TOKEN_ID_MIN, TokenId
from service.sessions import Session, check_history

__all__ = ["STEP_MEDIA_TYPE", "StepItem", "StepRequest", "openapi_components", "router"]


router = APIRouter(tags=["step"], route_class=DirectRoute)


class StepItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    session_id: str = Field(description="The session to advance.")
    tokens: list[TokenId] = Field(default_factory=list, description="Tokens sampled for it, in order (may be empty).")
    draft_tokens: list[TokenId] | None = Field(
        None, description="Draft tokens: one extra mask row after each (speculative decoding); the session does not move."
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


def _problem(e: GuidanceError) -> dict[str, Any]:
    return {"type": f"urn:guidance:problem:{e.code}", "status": e.status, **e.to_dict()}


# One session of a request: (session_id, tokens, draft_tokens or None).
_Item = tuple[str, list[int], list[int] | None]


class _Options(NamedTuple):
    """What a request asks for besides its batch."""

    variables: bool | str
    forced_tokens: bool
    mask_encoding: str


def _read_request(raw: bytes) -> tuple[list[_Item], _Options]:
    """The batch of a request body, checked against :class:`StepRequest`.

    A plain check of the parsed JSON, which is several times cheaper than building the models;
    anything it does not recognise as well-formed goes through the models, which then raise the
    detailed 422 (or accept it: the models are the contract).
    """
    fast = _read_fast(raw)
    if fast is not None:
        return fast
    try:
        body = StepRequest.model_validate_json(raw)
    except ValidationError as e:
        raise RequestValidationError(e.errors(include_url=False, include_input=False)) from None
    items = [(i.session_id, list(i.tokens), None if i.draft_tokens is None else list(i.draft_tokens)) for i in body.sessions]
    return items, _Options(body.variables, body.forced_tokens, body.mask_encoding)


def _int_list(value: Any) -> bool:
    # bool is not a token; the range is TokenId's (outside it, the models answer the 422)
    return type(value) is list and all(type(t) is int and TOKEN_ID_MIN <= t <= TOKEN_ID_MAX for t in value)


def _read_fast(raw: bytes) -> tuple[list[_Item], _Options] | None:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if type(data) is not dict or not data.keys() <= _REQUEST_KEYS:
        return None
    sessions = data.get("sessions")
    options = _Options(data.get("variables", False), data.get("forced_tokens", True), data.get("mask_encoding", "dense"))
    if type(sessions) is not list or type(options.forced_tokens) is not bool:
        return None
    if type(options.variables) is not bool and options.variables != "partial":
        return None
    if options.mask_encoding not in _ENCODINGS:
        return None
    items: list[_Item] = []
    for entry in sessions:
        if type(entry) is not dict or not entry.keys() <= _ITEM_KEYS:
            return None
        sid = entry.get("session_id")
        tokens = entry.get("tokens", [])
        draft = entry.get("draft_tokens")
        if type(sid) is not str or not _int_list(tokens) or (draft is not None and not _int_list(draft)):
            return None
        items.append((sid, tokens, draft))
    return items, options


_ENCODINGS = ("dense", "blocks")
# The answer's size is checked before any work: the header's fixed part, and per session the
# least its status takes besides its id (captured variables and forced tokens come on top;
# they are bounded by the session's history, max_session_tokens).
_HEADER_BYTES = 4 + 64
_STATUS_BYTES = 96
_REQUEST_KEYS = frozenset(StepRequest.model_fields)
_ITEM_KEYS = frozenset(StepItem.model_fields)


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
    items, options = _read_request(await request.body())
    settings = service.settings
    limit = settings.max_batch_size
    if len(items) > limit:
        raise LimitExceeded(f"{len(items)} sessions in one step, above the limit of {limit}", "max_batch_size")
    rows = len(items)
    for sid, _, draft in items:
        if draft:
            if len(draft) > settings.max_draft_tokens:
                raise LimitExceeded(
                    f"{len(draft)} draft tokens for one session, above the limit of {settings.max_draft_tokens}",
                    "max_draft_tokens",
                )
            rows += len(draft)
    ids = [item[0] for item in items]
    if len(set(ids)) != len(ids):
        raise RequestValidationError([{"loc": ("body", "sessions"), "msg": "a session appears twice", "type": "value_error"}])
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
    work = functools.partial(_advance_and_fill, service, items, options, found, errors, words, vocab)
    slow = next((s.program for s in live if service.slow_lane.is_slow(s.program)), None)
    if slow is None and not any(s.lock.locked() for s in live):
        # No other request holds any of these sessions, and the work below never awaits: it runs
        # to its end before any other request can start, so it needs no locks.
        buf = work()
    else:
        # Hold every session's lock (in id order: no deadlock with another step) while the batch
        # is advanced and filled; inline, or in the slow lane when a session's program is slow.
        async with contextlib.AsyncExitStack() as stack:
            for s in sorted(live, key=lambda s: s.id):
                await stack.enter_async_context(s.lock)
            buf = work() if slow is None else await service.slow_lane.run_locked(slow, work)
    service.metrics.step_batch_size.observe(len(items))
    if len(buf) >= LARGE_ANSWER_BYTES:
        service.large_answers += 1
    return Response(buf, media_type=STEP_MEDIA_TYPE)


def _advance_and_fill(
    service: ServiceState,
    items: list[_Item],
    options: _Options,
    found: list[Session | None],
    errors: dict[int, GuidanceError],
    words: int,
    vocab: int,
) -> memoryview:
    """Advance every session of the batch and compute the whole answer (no one else holds them)."""
    metrics = service.metrics
    statuses: list[dict[str, Any]] = []
    fill_states: list[GuidanceState] = []
    fill_statuses: list[dict[str, Any]] = []  # the status of each state filled (changed if its mask fails)
    fill_rows: list[int] = []
    drafts: list[tuple[GuidanceState, int, list[int]]] = []
    blank: list[tuple[int, int]] = []  # rows no mask is computed into: (first, count)
    row = 0
    accepted_total = rejected_total = 0
    for i, (sid, tokens, draft) in enumerate(items):
        session = found[i]
        n_rows = 1 + len(draft) if draft else 1
        if session is not None and session.program.mask_words != words:
            errors[i] = LimitExceeded("every session of one step must use the same vocabulary", "vocabulary")
            session = None
        if session is None:
            statuses.append({"session_id": sid, "row": row, "rows": n_rows, "status": "error", "error": _problem(errors[i])})
            blank.append((row, n_rows))
            row += n_rows
            continue
        st = session.state
        before = len(st.tokens)
        try:
            try:
                check_history(st, len(tokens), service.sessions.max_tokens)
                st.advance(tokens)
                accepted_total += len(tokens)
                status: dict[str, Any] = {"session_id": sid, "row": row, "rows": n_rows, "status": "ok", "accepted": len(tokens)}
            except TokenRejected as e:
                rejected_total += 1
                status = {"session_id": sid, "row": row, "rows": n_rows, "status": "rejected", "accepted": 0, "index": e.index, "token": e.token}
            status["terminated"] = st.is_terminated()
            status["accepting"] = st.is_accepting()
            if options.forced_tokens:
                status["forced_tokens"] = st.forced_tokens()
            if options.variables:
                status["variables"] = st.variables
                if options.variables == "partial":
                    status["partial"] = st.partial_variables(parse_json=True)
        except GuidanceError as e:  # bad ids, a limit, an engine limit met: the session as it was
            _undo(st, before)
            status = _error_status(sid, row, n_rows, e, st)
        if session.channel is not None:
            session.channel.changed(session)
        statuses.append(status)
        fill_states.append(st)
        fill_statuses.append(status)
        fill_rows.append(row)
        if draft:
            drafts.append((st, row, draft))
            blank.append((row + 1, n_rows - 1))  # draft rows after a refused draft token stay zero
        row += n_rows

    # One buffer for the whole answer; dense masks are computed straight into it (no copies). It
    # is np.empty, not a zeroed bytearray: a zeroed buffer of this size comes from calloc, as
    # fresh pages the kernel must fault in and clear (about 1 ms per MB measured here), where
    # np.empty reuses pages the process already has. Rows no mask is computed into are zeroed.
    head: dict[str, Any] = {"mask_words": words, "vocab_size": vocab, "rows": row, "sessions": statuses}
    if options.mask_encoding == "blocks":
        head["mask_encoding"] = "blocks"
        head["block_words"] = BLOCK_WORDS
        bitmask = np.empty((row, words), dtype=np.int32)
        _fill(service, bitmask, blank, fill_states, fill_rows, drafts, fill_statuses)
        bitmap, blocks = encode_blocks(bitmask)
        buf, offset = step_frame(orjson.dumps(head), bitmap.nbytes + blocks.nbytes)
        buf[offset : offset + bitmap.nbytes] = bitmap
        buf[offset + bitmap.nbytes :] = blocks.astype("<i4", copy=False).view(np.uint8).reshape(-1)
    else:
        buf, offset = step_frame(orjson.dumps(head), row * words * 4)
        bitmask = buf[offset:].view(np.int32).reshape(row, words)
        if sys.byteorder != "little":  # pragma: no cover - the wire is little-endian
            bitmask = np.zeros((row, words), dtype=np.int32)
        if _fill(service, bitmask, blank, fill_states, fill_rows, drafts, fill_statuses):
            # A mask failed (an engine limit): its status changed after the header was written.
            # Rare: the answer is framed again around the masks already computed.
            masks = buf[offset:]
            buf, offset = step_frame(orjson.dumps(head), row * words * 4)
            buf[offset:] = masks
        if sys.byteorder != "little":  # pragma: no cover
            buf[offset:] = np.frombuffer(to_bytes(bitmask), dtype=np.uint8)

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


def _error_status(sid: str, row: int, rows: int, e: GuidanceError, st: GuidanceState) -> dict[str, Any]:
    return {
        "session_id": sid, "row": row, "rows": rows, "status": "error", "accepted": 0, "error": _problem(e),
        "terminated": st.is_terminated(), "accepting": st.is_accepting(),
    }


def _fill(
    service: ServiceState,
    bitmask: np.ndarray,
    blank: list[tuple[int, int]],
    states: list[GuidanceState],
    rows: list[int],
    drafts: list[tuple[GuidanceState, int, list[int]]],
    statuses: list[dict[str, Any]],
) -> bool:
    """Compute every mask of the answer; True when a session's mask failed (its status is changed)."""
    for first, count in blank:
        bitmask[first : first + count] = 0
    start = time.perf_counter()
    failed: dict[int, GuidanceError] = {}
    try:
        if states:
            failed = service.backend.backend.fill_next_token_bitmasks(states, bitmask, rows)
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
        error = _error_status(status["session_id"], status["row"], status["rows"], e, st)
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
