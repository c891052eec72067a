"""Partial values through the clients, and ``watch()`` (sync and async) against a real server."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from core import Tokenizer
from guidance_client import (
    AsyncGuidanceClient,
    GrammarBatch,
    GuidanceClient,
    RemoteError,
    SessionEvent,
)
from guidance_client.protocol import EventReader
from tests.server import start, stop
from tests.service.helpers import AppFactory

TEMPLATE = "Name: {{gen 'name' regex='[A-Z][a-z]+'}}\nAge: {{gen 'age' regex='[0-9]{1,3}'}}"
TEXT = "Name: Adalbert\nAge: 36"


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    running = start()
    try:
        yield running.url
    finally:
        stop(running)


def test_the_event_reader_parses_the_stream_format() -> None:
    reader = EventReader()
    lines = ["id: e-1", "event: accept", 'data: {"text": "a"}', "", ": ping", "", 'data: {"x": 1}', ""]
    events = [e for e in map(reader.feed, lines) if e is not None]
    assert events == [SessionEvent("e-1", "accept", {"text": "a"}), SessionEvent("e-1", "message", {"x": 1})]


def test_remote_grammars_and_batches_expose_partial_values(make_app: AppFactory, default_tokenizer: Tokenizer) -> None:
    tok = default_tokenizer
    with TestClient(make_app()) as http:
        client = GuidanceClient(http=http)
        grammar = client.grammar(TEMPLATE)
        grammar.partial = True
        assert grammar.accept_tokens(tok.encode("Name: Ada"))
        assert grammar.get_variable_values(partial=True) == {"name": {"value": "Ada", "complete": False}}
        assert grammar.get_variable_values() == {}
        other = client.grammar(TEMPLATE)
        batch = GrammarBatch(client, [grammar, other], variables="partial")
        batch.step([tok.encode("lbert\n"), tok.encode("Name: B")])
        assert grammar.get_variable_values(partial=True)["name"] == {"value": "Adalbert", "complete": True}
        assert grammar.get_variable_values() == {"name": "Adalbert"}
        assert other.get_variable_values(partial=True) == {"name": {"value": "B", "complete": False}}
        info = client.get(grammar.session_id, partial=True)
        assert info.partial is not None and info.partial["name"]["complete"]
        assert client.get(grammar.session_id).partial is None


def test_sync_watch_follows_a_session_to_its_end(server: str) -> None:
    with GuidanceClient(server) as client:
        sid = client.create_session(template=TEMPLATE)
        ids = client.tokenize(TEXT)
        eos = int(client.tokenizers()[0]["eos_token_ids"][0])
        events: list[SessionEvent] = []
        started = threading.Event()

        def watcher() -> None:
            with GuidanceClient(server) as own:
                for event in own.watch(sid):
                    events.append(event)
                    started.set()

        thread = threading.Thread(target=watcher)
        thread.start()
        assert started.wait(30)
        for t in [*ids, eos]:
            client.accept(sid, [t])
        thread.join(30)
        assert not thread.is_alive()
    assert events[0].event == "snapshot" and events[-1].event == "end" and events[-1].data == {"reason": "terminated"}
    accepts = [e for e in events if e.event == "accept"]
    assert "".join(e.data["text"] for e in accepts) == TEXT
    names = [e.data["variables"]["name"]["value"] for e in accepts if "name" in e.data["variables"]]
    assert names == sorted(names, key=len) and names[-1] == "Adalbert"
    # an unknown session: the problem, raised before any event
    with GuidanceClient(server) as client, pytest.raises(RemoteError) as info:
        next(iter(client.watch("no-such-session")))
    assert info.value.status == 404


async def test_async_watch_resumes_after_an_event(server: str) -> None:
    async with AsyncGuidanceClient(server) as client:
        sid = await client.create_session(template=TEMPLATE)
        ids = await client.tokenize(TEXT)
        stream = client.watch(sid)
        first = await anext(stream)
        assert first.event == "snapshot"
        await client.accept(sid, ids[:1])
        second = await anext(stream)
        await stream.aclose()
        await client.accept(sid, ids[1:2])  # nobody watches these two: kept for the resume
        await client.accept(sid, ids[2:3])
        resumed = client.watch(sid, last_event_id=second.id)
        got = [await asyncio.wait_for(anext(resumed), 30) for _ in range(2)]
        await resumed.aclose()
        text = await client.detokenize(ids[:3])
    assert [e.event for e in got] == ["accept", "accept"]
    assert second.data["text"] + "".join(e.data["text"] for e in got) == text
