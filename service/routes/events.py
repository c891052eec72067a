"""Watching sessions: the list of live sessions and each one's events (Server-Sent Events)."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from core.errors import UnknownSession, excerpt
from service.auth import may_watch, principal_of, require_admin
from service.dependencies import ResourcesDep, ServiceResources
from service.events import format_event
from service.problems import problem_responses
from service.schemas import SessionList, SessionSummary
from service.sessions import Session

__all__ = ["router"]

router = APIRouter(prefix="/sessions", tags=["events"])

EVENT_STREAM = "text/event-stream"

_EVENTS_DOC = (
    "Server-Sent Events, one per change of the session: `snapshot` first (the whole state), then "
    "`accept` (new text, changed captures with partial values, `terminated`, `accepting`), "
    "`rollback` (the whole state again) and a last `end` (`reason`: terminated, deleted, expired, "
    "shutdown), after which the stream closes. Each event has an `id`; reconnect with "
    "`Last-Event-ID` to get the events missed (or a new snapshot when they are no longer kept). "
    "Comment lines `: ping` keep an idle stream open."
)


def _watchable(request: Request, state: ServiceResources, session_id: str) -> Session:
    principal = principal_of(request)
    owner = None if principal is None else principal.owner
    session = state.sessions.peek(session_id)
    if session is not None and session.owner == owner:
        return state.sessions.get(session_id, owner)
    if session is None or not may_watch(principal, session.owner, state.events.admin_restricted):
        state.sessions.get(session_id, owner)  # raises what an unknown (or expired) id answers
        raise UnknownSession(f"no session {excerpt(session_id, 64)}")  # pragma: no cover
    return session


# An event's number: ASCII digits only (``str.isdigit`` also passes "²" and "١", which ``int``
# refuses or reads), and short enough for ``int`` (which refuses past 4,300 digits).
_SEQ = re.compile(r"[0-9]{1,18}")


def _resume_seq(last_event_id: str | None, epoch: str) -> int | None:
    """The event number a ``Last-Event-ID`` of this channel names; None for anything else."""
    if not last_event_id:
        return None
    head, _, seq = last_event_id.strip().partition("-")
    if head != epoch or not _SEQ.fullmatch(seq):
        return None
    return int(seq)


@router.get(
    "/{session_id}/events",
    summary="Watch a session",
    response_class=StreamingResponse,
    responses={
        200: {"description": _EVENTS_DOC, "content": {EVENT_STREAM: {"schema": {"type": "string"}}}},
        **problem_responses(404, 410, 429),
    },
)
async def watch_session(session_id: str, request: Request, state: ResourcesDep) -> StreamingResponse:
    """The session's changes as they happen, as Server-Sent Events.

    Only the key that opened the session may watch it, or an admin key where admin keys are
    configured. Bounded by `max_watchers_per_session` and `max_watchers` (429 `too-many-watchers`).
    A session that nobody watches pays nothing for this.
    """
    session = _watchable(request, state, session_id)
    hub = state.events
    watcher = hub.admit(session)
    try:
        channel = watcher.channel
        first: list[bytes] = []
        resume = _resume_seq(request.headers.get("last-event-id"), channel.epoch)
        if resume is not None and channel.after(resume) is not None:
            seq = resume
        else:
            seq, data = await state.scheduler.run(session, lambda: channel.snapshot(session))
            first.append(format_event(channel.event_id(seq), "snapshot", data))
            if session.state.is_terminated() and channel.ended is None:
                channel.end("terminated")
        return _EventStream(
            hub.stream(watcher, first, seq + 1),
            release=lambda: hub.release(watcher),
            media_type=EVENT_STREAM,
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    except BaseException:
        hub.release(watcher)
        raise


class _EventStream(StreamingResponse):
    """A stream that gives its watcher back however it ends: a stream whose client left before its
    first byte never starts its generator, so the generator's own cleanup would not run."""

    def __init__(self, content: AsyncIterator[bytes], release: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()


@router.get(
    "",
    summary="List live sessions",
    response_model=SessionList,
    responses=problem_responses(403),
    dependencies=[Depends(require_admin)],
)
async def list_sessions(request: Request, state: ResourcesDep) -> SessionList:
    """The live sessions the key may watch, newest first (for the playground's Sessions view).

    With API keys, this needs an admin key where admin keys are configured (403 `forbidden`);
    a key lists only the sessions it may watch.
    """
    principal = principal_of(request)
    now = time.monotonic()
    out = [
        SessionSummary(
            session_id=s.id,
            program_id=s.program.program_id,
            kind=s.program.kind,
            tokens=len(s.state.tokens),
            age_seconds=round(now - s.created, 3),
            idle_seconds=round(now - s.last_used, 3),
            terminated=s.state.is_terminated(),
            watchers=state.events.watchers_of(s),
        )
        for s in state.sessions.sessions()
        if may_watch(principal, s.owner, state.events.admin_restricted)
    ]
    out.sort(key=lambda s: s.age_seconds)
    return SessionList(sessions=out)
