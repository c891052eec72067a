"""One decoding step for a batch: accept each session's tokens, compute every mask, frame the answer.

The batch is one list of records (:class:`_Entry`: the request's item, its rows in the answer,
its session, its status, its draft tokens), walked in one pass:

1. **Before any work** (on the event loop): the limits (batch size, draft tokens, answer size:
   413 ``limit-exceeded``), then every session looked up (an unknown, expired or other key's
   session becomes that entry's error, never the batch's).
2. **The engine work**, handed whole to the scheduler, which runs it inline or in the slow lane
   (a batch estimated past the inline budget: many tokens, many rows, histories read back):
   each entry's tokens accepted and its status read, then every mask filled at once
   (``GuidanceBackend.fill_next_token_bitmasks``), then the draft rows. An entry whose mask fails
   (an engine limit) is put back as it was and its status becomes the error.
3. **The answer**, framed once: the header is written after the masks, from the final statuses.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from fastapi.exceptions import RequestValidationError
from numpy.typing import NDArray

from core.errors import GuidanceError, LimitExceeded, TokenRejected
from core.session import GuidanceState
from guidance_client.wire import (
    blocks_step_answer,
    dense_step_answer,
    dense_step_masks,
    frame_dense_step,
    step_header,
)
from service.dependencies import ServiceResources
from service.memory import LARGE_ANSWER_BYTES
from service.problems import error_problem
from service.scheduling import Tenant
from service.schemas import StepItem, StepRequest
from service.sessions import Session, check_history

__all__ = ["step"]

# The answer's size is checked before any work: the header's fixed part, and per session the
# least its status takes besides its id (captured variables and forced tokens come on top;
# they are bounded by the session's history, max_session_tokens).
_HEADER_BYTES = 4 + 64
_STATUS_BYTES = 96
# What a status may grow by when a mask fails after the header is sized (an error problem: its
# detail quotes at most 500 characters of llguidance's message).
_ERROR_ROOM = 1024


@dataclass(slots=True)
class _Entry:
    """One session of the batch: where its rows are, its session, and what happened to it."""

    item: StepItem
    row: int  # its first row in the answer
    rows: int  # 1 + its draft tokens
    session: Session | None  # None: it could not be looked up (``status`` holds the error)
    status: dict[str, Any]
    accepted: int = 0  # tokens this request accepted into it
    filled: bool = False  # whether its row is computed (else zero)


async def step(service: ServiceResources, body: StepRequest, owner: int | None, tenant: Tenant) -> memoryview:
    """Run one ``/step`` batch and return its binary answer (``guidance_client.wire``).

    Raises:
        LimitExceeded: the batch, a session's draft tokens or the answer is past its limit.
        RequestValidationError: the same session twice.
    """
    entries, live, words, vocab = _entries(service, body, owner)
    rows = entries[-1].row + entries[-1].rows if entries else 0
    tokens = sum(len(e.item.tokens) + len(e.item.draft_tokens or ()) for e in entries)
    masks = rows * (2 if body.forced_tokens else 1)
    seconds = service.scheduler.batch_seconds(live, masks, tokens, bool(body.variables))
    buf = await service.scheduler.run_batch(
        live, lambda: _work(service, body, entries, rows, words, vocab), tenant, seconds=seconds
    )
    service.metrics.step_batch_size.observe(len(entries))
    if len(buf) >= LARGE_ANSWER_BYTES:
        service.large_answers += 1
    return buf


def _entries(
    service: ServiceResources, body: StepRequest, owner: int | None
) -> tuple[list[_Entry], list[Session], int, int]:
    """The batch's records, after every check that comes before any work."""
    items = body.sessions
    settings = service.settings
    if len(items) > settings.max_batch_size:
        raise LimitExceeded(
            f"{len(items)} sessions in one step, above the limit of {settings.max_batch_size}", "max_batch_size"
        )
    for item in items:
        if item.draft_tokens and len(item.draft_tokens) > settings.max_draft_tokens:
            raise LimitExceeded(
                f"{len(item.draft_tokens)} draft tokens for one session, "
                f"above the limit of {settings.max_draft_tokens}",
                "max_draft_tokens",
            )
    ids = [item.session_id for item in items]
    if len(set(ids)) != len(ids):
        twice = {"loc": ("body", "sessions"), "msg": "a session appears twice", "type": "value_error"}
        raise RequestValidationError([twice])
    store = service.sessions
    entries: list[_Entry] = []
    row = 0
    for item in items:
        n_rows = 1 + len(item.draft_tokens) if item.draft_tokens else 1
        try:
            session: Session | None = store.get(item.session_id, owner)
            status: dict[str, Any] = {}
        except GuidanceError as error:
            session, status = None, _error(item, row, n_rows, error)
        entries.append(_Entry(item, row, n_rows, session, status))
        row += n_rows
    live = [e.session for e in entries if e.session is not None]
    words = live[0].program.mask_words if live else 1
    vocab = live[0].program.vocab_size if live else 0
    for e in entries:
        if e.session is not None and e.session.program.mask_words != words:
            mixed = LimitExceeded("every session of one step must use the same vocabulary", "vocabulary")
            e.session, e.status = None, _error(e.item, e.row, e.rows, mixed)
    live = [e.session for e in entries if e.session is not None]
    answer = row * words * 4 + _HEADER_BYTES + sum(len(sid) for sid in ids) + _STATUS_BYTES * len(ids)
    if answer > settings.max_step_answer_bytes:
        raise LimitExceeded(
            f"the answer would be {answer} bytes ({row} rows of {words * 4} bytes and the header), "
            f"above the limit of {settings.max_step_answer_bytes}",
            "max_step_answer_bytes",
        )
    return entries, live, words, vocab


def _work(
    service: ServiceResources, body: StepRequest, entries: list[_Entry], rows: int, words: int, vocab: int
) -> memoryview:
    """Advance every session of the batch and compute the whole answer (no one else holds them)."""
    metrics = service.metrics
    max_tokens = service.sessions.max_tokens
    lane = service.scheduler.lane
    slow = {p: lane.is_slow(p) for p in {e.session.program for e in entries if e.session is not None}}
    probe: NDArray[np.int32] | None = None
    accepted_total = rejected_total = 0
    for e in entries:
        if e.session is None:
            continue
        st = e.session.state
        before = len(st.tokens)
        try:
            rejected = None
            try:
                check_history(st, len(e.item.tokens), max_tokens)
                st.advance(e.item.tokens)
                e.accepted = len(e.item.tokens)
                accepted_total += e.accepted
            except TokenRejected as r:
                rejected_total += 1
                rejected = r
            if body.forced_tokens and slow[e.session.program]:
                # As for an accept: a mask first (llguidance holds the GIL for forced tokens, not
                # for a mask), so that one past max_mask_ms is refused without holding every thread.
                probe = np.empty((1, words), dtype=np.int32) if probe is None else probe
                try:
                    st.fill_bitmask(probe, 0)
                finally:
                    st.program.bitmask_views.forget(probe)
            e.status = _status(e, st, body, rejected)
        except GuidanceError as error:  # bad ids, a limit, an engine limit met: the session as it was
            _undo(st, before)
            e.accepted = 0
            e.status = _state_error(e, st, error)
        e.session.publish()
        e.filled = True

    # Dense masks are computed straight into the answer's buffer (no copies). It is np.empty, not
    # a zeroed buffer: a zeroed buffer of this size comes from calloc, as fresh pages the kernel
    # must fault in and clear, where np.empty reuses pages the process already has. Rows no mask
    # is computed into are zeroed. The header is written last, from the final statuses.
    if body.mask_encoding == "blocks":
        masks = np.empty((rows, words), dtype=np.int32)
        _fill(service, masks, entries)
        buf = blocks_step_answer(orjson.dumps(_header(entries, words, vocab, rows, body)), masks)
    else:
        # Room for the header as it stands, and for each entry's status becoming an error.
        head = orjson.dumps(_header(entries, words, vocab, rows, body))
        room = 4 + len(head) + _ERROR_ROOM * sum(e.filled for e in entries)
        room += -room % 4
        buf, masks = dense_step_masks(room, rows, words)
        if _fill(service, masks, entries):
            head = orjson.dumps(_header(entries, words, vocab, rows, body))
        framed = frame_dense_step(buf, head, room)
        if framed is None:  # an error status longer than its room: frame it apart (a copy)
            framed, copy = dense_step_answer(head, rows, words)
            copy[:] = masks
        buf = framed
    metrics.masks_batch.inc(sum(e.filled for e in entries))
    if accepted_total:
        metrics.tokens_accepted.inc(accepted_total)
    if rejected_total:
        metrics.tokens_rejected.inc(rejected_total)
    return buf.data


def _header(entries: list[_Entry], words: int, vocab: int, rows: int, body: StepRequest) -> dict[str, Any]:
    return step_header(words, vocab, rows, [e.status for e in entries], body.mask_encoding)


def _fill(service: ServiceResources, bitmask: NDArray[np.int32], entries: list[_Entry]) -> bool:
    """Compute every mask of the answer; an entry whose mask fails is put back and becomes its error.

    Returns:
        Whether a status changed (a mask failed).
    """
    filled = [e for e in entries if e.filled]
    for e in entries:
        if not e.filled:
            bitmask[e.row : e.row + e.rows] = 0
        elif e.rows > 1:
            bitmask[e.row + 1 : e.row + e.rows] = 0  # draft rows after a refused draft token stay zero
    states = [e.session.state for e in filled if e.session is not None]
    start = time.perf_counter()
    failed: dict[int, GuidanceError] = {}
    try:
        if states:
            failed = service.backend.fill_next_token_bitmasks(states, bitmask, [e.row for e in filled])
        for k, e in enumerate(filled):
            if e.item.draft_tokens and k not in failed:
                _fill_drafts(states[k], e.row, e.item.draft_tokens, bitmask)
    finally:
        # A program remembers the last array it filled; this one is the request's answer, which
        # must be freed with the request (else every program pins its last batch's answer).
        for program in {st.program for st in states}:
            program.bitmask_views.forget(bitmask)
    service.metrics.mask_seconds.observe(time.perf_counter() - start)
    for k, error in failed.items():
        e, st = filled[k], states[k]
        _undo(st, len(st.tokens) - e.accepted)
        e.accepted = 0
        e.status = _state_error(e, st, error)
        e.filled = False
    return bool(failed)


def _undo(st: GuidanceState, keep: int) -> None:
    """Take back what this request accepted (the session is left as it was before it)."""
    if len(st.tokens) > keep:
        with contextlib.suppress(GuidanceError):
            st.rollback(len(st.tokens) - keep)


def _fill_drafts(st: GuidanceState, first: int, draft: list[int], bitmask: NDArray[np.int32]) -> None:
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


def _error(item: StepItem, row: int, rows: int, error: GuidanceError) -> dict[str, Any]:
    """The status of an entry whose session could not be looked up."""
    return {"session_id": item.session_id, "row": row, "rows": rows, "status": "error", "error": error_problem(error)}


def _state_error(e: _Entry, st: GuidanceState, error: GuidanceError) -> dict[str, Any]:
    """The status of an entry put back as it was after an error."""
    status = _error(e.item, e.row, e.rows, error)
    status["accepted"] = 0
    return _flags(status, st)


def _flags(status: dict[str, Any], st: GuidanceState) -> dict[str, Any]:
    status["terminated"] = terminated = st.is_terminated()
    if terminated:
        status["eos_token_id"] = st.end_token
    status["accepting"] = st.is_accepting()
    return status


def _status(e: _Entry, st: GuidanceState, body: StepRequest, rejected: TokenRejected | None) -> dict[str, Any]:
    """An entry's status after its tokens (see ``service/routes/step.py``)."""
    if rejected is not None:
        status: dict[str, Any] = {
            "session_id": e.item.session_id, "row": e.row, "rows": e.rows, "status": "rejected", "accepted": 0,
            "index": rejected.index, "token": rejected.token,
        }  # fmt: skip
    else:
        status = {"session_id": e.item.session_id, "row": e.row, "rows": e.rows, "status": "ok", "accepted": e.accepted}
    _flags(status, st)
    if body.forced_tokens:
        status["forced_tokens"] = st.forced_tokens()
    if body.variables:
        status["variables"] = st.variables
        if body.variables == "partial":
            status["partial"] = st.partial_variables(parse_json=True)
    return status
