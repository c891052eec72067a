"""Event channels without HTTP: what ends a stream, what a resume can still get, when a channel goes."""

from __future__ import annotations

import orjson

from core import GuidanceBackend, Tokenizer
from service.events import EventHub
from service.sessions import SessionStore
from tests.service.helpers import TEMPLATE


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _store(default_tokenizer: Tokenizer, clock: Clock) -> tuple[SessionStore, GuidanceBackend]:
    return SessionStore(ttl_seconds=10, clock=clock), GuidanceBackend(default_tokenizer)


def test_expiry_and_deletion_send_the_last_event(default_tokenizer: Tokenizer) -> None:
    clock = Clock()
    store, backend = _store(default_tokenizer, clock)
    program = backend.compile_template(TEMPLATE)
    hub = EventHub()
    a, b = store.create(program, "default"), store.create(program, "default")
    ca, cb = hub.channel(a), hub.channel(b)
    assert hub.stats()["watched"] == 2
    store.delete(b.id)
    clock.now = 11
    store.sweep()
    for channel, reason in ((ca, "expired"), (cb, "deleted")):
        _, name, data = channel.events[-1]
        assert (name, orjson.loads(data)) == ("end", {"reason": reason}) and channel.ended == reason
    assert a.channel is None and b.channel is None and hub.stats()["watched"] == 0


def test_a_resume_gets_what_the_ring_still_holds(default_tokenizer: Tokenizer) -> None:
    clock = Clock()
    store, backend = _store(default_tokenizer, clock)
    session = store.create(backend.compile_template(TEMPLATE), "default")
    hub = EventHub(buffer=3)
    channel = hub.channel(session)
    seq, _ = channel.snapshot(session)
    assert seq == 0 and channel.after(0) == []
    for token in default_tokenizer.encode("Name: Adalbert"):
        session.state.advance([token])
        channel.changed(session)
    assert channel.seq >= 4
    assert channel.after(channel.seq - 3) is not None  # the last three are kept
    assert channel.after(0) is None  # older ones are gone: the watcher gets a snapshot instead
    assert channel.after(channel.seq + 5) is None  # an id from the future is not trusted


def test_an_accept_that_changes_nothing_visible_publishes_nothing(default_tokenizer: Tokenizer) -> None:
    clock = Clock()
    store, backend = _store(default_tokenizer, clock)
    session = store.create(backend.compile_template(TEMPLATE), "default")
    channel = EventHub().channel(session)
    channel.snapshot(session)
    session.state.advance([])
    channel.changed(session)
    assert channel.seq == 0


def test_an_unwatched_channel_is_dropped_after_the_resume_window(default_tokenizer: Tokenizer) -> None:
    clock = Clock()
    store, backend = _store(default_tokenizer, clock)
    session = store.create(backend.compile_template(TEMPLATE), "default")
    hub = EventHub(resume_seconds=5)
    channel = hub.channel(session)
    channel.idle_since = 100.0
    assert hub.sweep(now=104.0) == 0 and session.channel is channel
    assert hub.sweep(now=106.0) == 1 and session.channel is None and hub.channels == {}
