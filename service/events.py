"""Watching a session: its accepts as Server-Sent Events (``GET /sessions/{id}/events``).

A session nobody watches costs nothing: it has no channel (``Session.channel`` is None) and the
accept paths check that one attribute. The first watcher creates the channel; from then on each
change of the session (an accept, a rollback, its end) publishes one event, computed under the
session's lock where the change happened, so events are in the order of the changes. A channel
outlives its last watcher by ``events_resume_seconds`` so that a watcher that lost its connection
can resume with ``Last-Event-ID``; then it is dropped and the session is unwatched again.

Events (``event:`` name, ``id:``, one JSON ``data:`` line)::

    snapshot  {"session_id", "program_id", "tokens", "text", "variables", "terminated", "accepting"}
    accept    {"tokens", "accepted", "text", "variables", "terminated", "accepting"}
    rollback  like snapshot: the whole state after the rollback
    end       {"reason": "terminated" | "deleted" | "expired" | "shutdown"}

``text`` of an accept is the new text since the previous event (whole UTF-8 characters only: a
character split across tokens comes with the token that completes it); ``variables`` holds the
captures whose partial value changed, each ``{"value", "complete", ...}`` as in
``core.partial``. A new watcher first gets a ``snapshot``; one resuming with a ``Last-Event-ID``
this channel still holds gets the events after it instead, and otherwise a snapshot. After
``end`` the stream closes. Comments (``: ping``) every ``events_heartbeat_seconds`` keep proxies
from closing an idle stream.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import orjson

from core.errors import GuidanceError
from service.errors import TooManyWatchers

if TYPE_CHECKING:
    from core.session import GuidanceState
    from service.sessions import Session

__all__ = ["EndReason", "EventHub", "SessionChannel", "Watcher", "format_event"]

EndReason = str  # "terminated" | "deleted" | "expired" | "shutdown"


def format_event(event_id: str, name: str, data: bytes) -> bytes:
    """One SSE event: ``id``, ``event`` and a single ``data`` line (JSON has no raw newline)."""
    return b"id: %s\nevent: %s\ndata: %s\n\n" % (event_id.encode(), name.encode(), data)


def _utf8_whole(data: bytes) -> int:
    """Length of the longest prefix of ``data`` that ends on a whole UTF-8 character.

    Only the last characters are decoded (from a character's first byte at most 8 bytes from the
    end): what comes before them was published, checked, as it came.
    """
    start = max(0, len(data) - 8)
    while start > 0 and data[start] & 0xC0 == 0x80:  # a continuation byte: back to its lead
        start -= 1
    for cut in range(0, min(4, len(data) - start + 1)):
        try:
            data[start : len(data) - cut].decode("utf-8")
            return len(data) - cut
        except UnicodeDecodeError:
            continue
    return len(data)  # not UTF-8 at all: pass it on (decoded with replacement)


class Watcher:
    """One admitted watcher of a channel: counted from its admission until :meth:`EventHub.release`."""

    __slots__ = ("channel", "next_seq", "released", "wake")

    def __init__(self, channel: SessionChannel, next_seq: int = 0) -> None:
        self.channel = channel
        self.next_seq = next_seq
        self.released = False
        self.wake = asyncio.Event()


class SessionChannel:
    """The events of one watched session and the watchers waiting for them.

    Publishing happens under the session's lock, on the event loop or in the slow lane's thread;
    watchers read on the event loop. A small lock guards the ring of events between the two.
    """

    def __init__(self, hub: EventHub, session: Session) -> None:
        self.hub = hub
        self.session = session
        self.session_id = session.id
        self.epoch = secrets.token_hex(4)  # ids of another channel of the same session never match
        self.seq = 0
        self.events: deque[tuple[int, str, bytes]] = deque(maxlen=hub.buffer)
        self.watchers: set[Watcher] = set()
        self.ended: EndReason | None = None
        self.idle_since: float | None = None
        self._lock = threading.Lock()
        self._sent = 0  # bytes of the session's text already published
        self._tokens = 0
        self._variables: dict[str, Any] = {}
        self._flags: tuple[bool, bool] = (False, False)

    def event_id(self, seq: int) -> str:
        return f"{self.epoch}-{seq}"

    # -- publishing (under the session's lock)
    def snapshot(self, session: Session) -> tuple[int, bytes]:
        """The session's whole state now: the last event's number and the data of a ``snapshot``."""
        st = session.state
        data = _body(st)
        whole = _utf8_whole(data)
        variables = st.partial_variables(parse_json=True)
        self._sent, self._tokens, self._variables = whole, len(st.tokens), variables
        self._flags = (st.is_terminated(), st.is_accepting())
        payload = {
            "session_id": session.id,
            "program_id": session.program.program_id,
            "tokens": len(st.tokens),
            "text": data[:whole].decode("utf-8", "replace"),
            "variables": variables,
            "terminated": self._flags[0],
            "accepting": self._flags[1],
        }
        with self._lock:
            seq = self.seq
        return seq, orjson.dumps(payload)

    def changed(self, session: Session) -> None:
        """Publish what an accept changed: new text, changed variables, status; ``end`` after EOS."""
        if self.ended is not None:
            return
        if self.idle_since is not None and time.monotonic() - self.idle_since > self.hub.resume_seconds:
            self.hub.detach(self)  # nobody came back: stop paying for it
            return
        st = session.state
        if len(st.tokens) < self._tokens:  # only a rollback shortens: it publishes its own event
            self.rolled_back(session)
            return
        try:
            variables = st.partial_variables(parse_json=True)
        except GuidanceError:
            return  # an engine limit: the accept's own answer reports it; publishing never fails it
        data = _body(st)
        whole = _utf8_whole(data)
        text = data[self._sent : whole].decode("utf-8", "replace")
        changed = {k: v for k, v in variables.items() if self._variables.get(k) != v}
        flags = (st.is_terminated(), st.is_accepting())
        accepted = len(st.tokens) - self._tokens
        if not (text or changed or accepted or flags != self._flags):
            return
        self._sent, self._tokens, self._variables, self._flags = whole, len(st.tokens), variables, flags
        payload = {
            "tokens": len(st.tokens),
            "accepted": accepted,
            "text": text,
            "variables": changed,
            "terminated": flags[0],
            "accepting": flags[1],
        }
        self._publish("accept", orjson.dumps(payload))
        if flags[0]:
            self.end("terminated")

    def rolled_back(self, session: Session) -> None:
        """Publish the whole state after a rollback."""
        if self.ended is not None:
            return
        try:
            _, data = self.snapshot(session)
        except GuidanceError:
            return  # as in :meth:`changed`
        self._publish("rollback", data)

    def end(self, reason: EndReason) -> None:
        """Publish the last event; watchers close their streams after it."""
        if self.ended is not None:
            return
        self._publish("end", orjson.dumps({"reason": reason}))
        self.ended = reason
        self.hub.forget(self)

    def _publish(self, name: str, data: bytes) -> None:
        with self._lock:
            self.seq += 1
            self.events.append((self.seq, name, data))
            watchers = list(self.watchers)
        for w in watchers:
            self.hub.wake(w)

    # -- watchers (event loop); the lock because publishing may run in another thread
    def attach(self, watcher: Watcher) -> None:
        with self._lock:
            self.watchers.add(watcher)
            self.idle_since = None

    def detach(self, watcher: Watcher) -> None:
        with self._lock:
            self.watchers.discard(watcher)
            if not self.watchers:
                self.idle_since = time.monotonic()

    # -- reading (event loop)
    def after(self, seq: int) -> list[tuple[int, str, bytes]] | None:
        """Events after ``seq``, or None when some of them are no longer kept."""
        with self._lock:
            if seq > self.seq:
                return None
            if seq == self.seq:
                return []
            if not self.events or self.events[0][0] > seq + 1:
                return None
            return [e for e in self.events if e[0] > seq]


def _body(st: GuidanceState) -> bytes:
    return st.data()  # decoded incrementally by the state


class EventHub:
    """Every channel of one app, and the bounds on watchers.

    Args:
        max_watchers: watchers in total (429 ``too-many-watchers`` above).
        max_watchers_per_session: watchers of one session.
        buffer: events kept per channel for ``Last-Event-ID`` resumes.
        resume_seconds: how long a channel outlives its last watcher.
        heartbeat_seconds: seconds between ``: ping`` comments on an idle stream.
        retry_after: seconds suggested in a 429.
        admin_restricted: admin keys are configured: only they may watch others' sessions.
    """

    def __init__(
        self,
        max_watchers: int = 256,
        max_watchers_per_session: int = 8,
        buffer: int = 256,
        resume_seconds: float = 30.0,
        heartbeat_seconds: float = 15.0,
        retry_after: int = 1,
        admin_restricted: bool = False,
    ) -> None:
        self.max_watchers = max_watchers
        self.max_watchers_per_session = max_watchers_per_session
        self.buffer = buffer
        self.resume_seconds = resume_seconds
        self.heartbeat_seconds = heartbeat_seconds
        self.retry_after = retry_after
        self.admin_restricted = admin_restricted
        self.watchers = 0
        self.channels: dict[str, SessionChannel] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def stats(self) -> dict[str, int]:
        """Figures for ``/stats``."""
        return {
            "watchers": self.watchers,
            "watched": len(self.channels),
            "max_watchers": self.max_watchers,
            "max_watchers_per_session": self.max_watchers_per_session,
        }

    def wake(self, watcher: Watcher) -> None:
        loop = self._loop
        if loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            watcher.wake.set()
        else:
            loop.call_soon_threadsafe(watcher.wake.set)

    def forget(self, channel: SessionChannel) -> None:
        if self.channels.get(channel.session_id) is channel:
            del self.channels[channel.session_id]

    def close_all(self, reason: EndReason) -> None:
        """End every stream (the server is stopping)."""
        for channel in list(self.channels.values()):
            channel.end(reason)

    def live_channel(self, session: Session) -> SessionChannel | None:
        """The session's channel if it has one that has not ended."""
        channel = self.channels.get(session.id)
        return channel if channel is not None and channel.session is session and channel.ended is None else None

    def watchers_of(self, session: Session) -> int:
        """How many watch the session now."""
        channel = self.channels.get(session.id)
        return 0 if channel is None or channel.session is not session else len(channel.watchers)

    def channel(self, session: Session) -> SessionChannel:
        """The session's channel, created (and attached to it) if it has none."""
        channel = self.live_channel(session)
        if channel is None:
            channel = SessionChannel(self, session)
            session.channel = channel
            self.channels[session.id] = channel
        return channel

    def sweep(self, now: float | None = None) -> int:
        """Drop channels nobody has watched for ``resume_seconds``: their sessions cost nothing again."""
        now = time.monotonic() if now is None else now
        stale = [
            c for c in self.channels.values()
            if not c.watchers and c.idle_since is not None and now - c.idle_since > self.resume_seconds
        ]  # fmt: skip
        for c in stale:
            self.detach(c)
        return len(stale)

    def detach(self, channel: SessionChannel) -> None:
        """Forget an unwatched channel; its session publishes nothing from now on."""
        self.forget(channel)
        if channel.session.channel is channel:
            channel.session.channel = None

    def admit(self, session: Session) -> Watcher:
        """Admit a new watcher of ``session``: check the bounds and count it, in one step.

        Counted from here, not from when its stream starts: concurrent requests cannot all pass the
        check before any is counted. The caller hands the watcher to :meth:`stream`, or gives it
        back with :meth:`release` when no stream follows.

        Raises:
            TooManyWatchers: a bound is reached (429).
        """
        if self.watchers >= self.max_watchers:
            raise TooManyWatchers(
                f"{self.watchers} event streams are open, the limit is {self.max_watchers}", self.retry_after
            )
        live = self.live_channel(session)
        if live is not None and len(live.watchers) >= self.max_watchers_per_session:
            raise TooManyWatchers(
                f"this session has {len(live.watchers)} watchers, the limit is {self.max_watchers_per_session}",
                self.retry_after,
            )
        self._loop = asyncio.get_running_loop()
        watcher = Watcher(self.channel(session))
        watcher.channel.attach(watcher)
        self.watchers += 1
        return watcher

    def release(self, watcher: Watcher) -> None:
        """Stop counting ``watcher`` (its stream ended, or never started); idempotent."""
        if watcher.released:
            return
        watcher.released = True
        watcher.channel.detach(watcher)
        self.watchers -= 1

    async def stream(self, watcher: Watcher, first: list[bytes], next_seq: int) -> AsyncIterator[bytes]:
        """The bytes of one watcher's stream: ``first``, then the channel's events from ``next_seq``."""
        channel = watcher.channel
        watcher.next_seq = next_seq
        try:
            for chunk in first:
                yield chunk
            while True:
                events = channel.after(watcher.next_seq - 1)
                if events is None:  # fell behind the ring: the client resumes and gets a snapshot
                    return
                for seq, name, data in events:
                    watcher.next_seq = seq + 1
                    yield format_event(channel.event_id(seq), name, data)
                    if name == "end":
                        return
                watcher.wake.clear()
                if channel.after(watcher.next_seq - 1):
                    continue
                try:
                    await asyncio.wait_for(watcher.wake.wait(), self.heartbeat_seconds)
                except TimeoutError:
                    yield b": ping\n\n"
        finally:
            self.release(watcher)
