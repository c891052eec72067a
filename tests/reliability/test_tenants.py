"""Between tenants and against races on the bounds: one key cannot fill the server for the others,
cannot learn what another key compiled, and concurrent watchers cannot all slip under a cap."""

from __future__ import annotations

import re

import httpx
import pytest

from service import Settings
from service.tenants import KeyPrograms
from tests.reliability import asgi
from tests.service.helpers import AppFactory, assert_problem, serve

KEY_A = "tenant-a-key-aaaaaaaaaaaa"
KEY_B = "tenant-b-key-bbbbbbbbbbbb"
A = {"Authorization": f"Bearer {KEY_A}"}
B = {"Authorization": f"Bearer {KEY_B}"}
# A's template, holding a value B might guess (a compile-time variable).
SECRET = {
    "template": "To: {{recipient}}\nBody: {{gen 'body' regex='[a-z ]{1,40}'}}",
    "variables": {"recipient": "alice@example.com"},
}


async def test_one_key_at_its_quota_leaves_room_for_another(make_app: AppFactory) -> None:
    app = make_app(api_keys=[KEY_A, KEY_B], max_sessions=8, max_sessions_per_key=3)
    async with serve(app) as c:
        opened = [await c.post("/sessions", json={"regex": "[a-z]+"}, headers=A) for _ in range(5)]
        assert [r.status_code for r in opened] == [201, 201, 201, 429, 429]
        body = assert_problem(opened[3], 429, "too-many-sessions")
        assert "this key" in body["detail"] and "retry-after" in opened[3].headers
        # B is not affected by A's quota
        assert (await c.post("/sessions", json={"regex": "[a-z]+"}, headers=B)).status_code == 201
        # A closing one gives A room again
        assert (await c.delete(f"/sessions/{opened[0].json()['session_id']}", headers=A)).status_code == 204
        assert (await c.post("/sessions", json={"regex": "[a-z]+"}, headers=A)).status_code == 201


async def test_the_default_quota_stops_one_key_filling_the_server(make_app: AppFactory) -> None:
    app = make_app(api_keys=[KEY_A, KEY_B], max_sessions=8)
    async with serve(app) as c:
        statuses = [(await c.post("/sessions", json={"regex": "a"}, headers=A)).status_code for _ in range(8)]
        assert statuses.count(201) == 2  # a quarter of max_sessions
        assert (await c.post("/sessions", json={"regex": "a"}, headers=B)).status_code == 201


def test_the_default_quota_applies_between_two_keys_or_more() -> None:
    assert Settings().sessions_per_key(0) is None
    assert Settings().sessions_per_key(1) is None
    assert Settings().sessions_per_key(2) == 2500
    assert Settings(max_sessions=3).sessions_per_key(5) == 1
    assert Settings(max_sessions_per_key=7).sessions_per_key(1) == 7


async def test_cached_never_tells_one_key_what_another_compiled(make_app: AppFactory) -> None:
    app = make_app(api_keys=[KEY_A, KEY_B])
    async with serve(app) as c:
        first = (await c.post("/compile", json=SECRET, headers=A)).json()
        assert first["cached"] is False
        # B guesses A's variable: the answer is that of a compile, taking the time A's compile took
        guess = (await c.post("/compile", json=SECRET, headers=B)).json()
        assert guess["program_id"] == first["program_id"]
        assert guess["cached"] is False
        assert guess["compile_ms"] >= first["compile_ms"]
        # each key's own second compile is cached for it
        assert (await c.post("/compile", json=SECRET, headers=B)).json()["cached"] is True
        assert (await c.post("/compile", json=SECRET, headers=A)).json()["cached"] is True


async def test_a_program_id_opens_only_for_a_key_that_compiled_it(make_app: AppFactory) -> None:
    app = make_app(api_keys=[KEY_A, KEY_B])
    async with serve(app) as c:
        program_id = (await c.post("/compile", json=SECRET, headers=A)).json()["program_id"]
        assert (await c.post("/sessions", json={"program_id": program_id}, headers=A)).status_code == 201
        # B computed the id from a guess: answered as a program never compiled
        by_id = await c.post("/sessions", json={"program_id": program_id}, headers=B)
        unknown = await c.post("/sessions", json={"program_id": "0" * 32}, headers=B)
        assert_problem(by_id, 404, "program-not-found")
        assert_problem(unknown, 404, "program-not-found")
        # with the spec (as the client re-sends it), B opens it, and by id from then on
        assert (await c.post("/sessions", json=SECRET, headers=B)).status_code == 201
        assert (await c.post("/sessions", json={"program_id": program_id}, headers=B)).status_code == 201


async def test_without_keys_the_cache_answers_as_it_is(client: httpx.AsyncClient) -> None:
    first = (await client.post("/compile", json=SECRET)).json()
    again = (await client.post("/compile", json=SECRET)).json()
    assert (first["cached"], again["cached"]) == (False, True)
    assert (await client.post("/sessions", json={"program_id": first["program_id"]})).status_code == 201


async def _open(c: httpx.AsyncClient) -> str:
    resp = await c.post("/sessions", json={"regex": "[a-z]{0,9}"})
    assert resp.status_code == 201
    sid: str = resp.json()["session_id"]
    return sid


async def test_concurrent_watchers_of_one_session_are_counted_at_admission(make_app: AppFactory) -> None:
    app = make_app(max_watchers_per_session=8)
    async with serve(app) as c:
        sid = await _open(c)
        watchers = [asgi.start(app, "GET", f"/sessions/{sid}/events") for _ in range(40)]
        await asgi.settle(watchers)
        statuses = [w.status for w in watchers]
        assert statuses.count(200) == 8 and statuses.count(429) == 32
        assert (await c.get("/stats")).json()["events"]["watchers"] == 8
        await asgi.finish(watchers)
        assert (await c.get("/stats")).json()["events"]["watchers"] == 0
        # the places are free again
        again = [asgi.start(app, "GET", f"/sessions/{sid}/events") for _ in range(8)]
        await asgi.settle(again)
        assert [w.status for w in again] == [200] * 8
        await asgi.finish(again)


async def test_concurrent_watchers_stay_under_the_total_cap(make_app: AppFactory) -> None:
    app = make_app(max_watchers=10, max_watchers_per_session=8)
    async with serve(app) as c:
        sids = [await _open(c) for _ in range(20)]
        watchers = [asgi.start(app, "GET", f"/sessions/{sid}/events") for sid in sids for _ in range(3)]
        await asgi.settle(watchers)
        assert [w.status for w in watchers].count(200) == 10
        await asgi.finish(watchers)
        assert (await c.get("/stats")).json()["events"]["watchers"] == 0


@pytest.mark.parametrize("seq", ["\u00b2", "\u00b9", "9" * 5000, "-1", "1_0", "+1"])
async def test_a_malformed_last_event_id_gets_a_fresh_snapshot(make_app: AppFactory, seq: str) -> None:
    app = make_app()
    async with serve(app) as c:
        sid = await _open(c)
        first = asgi.start(app, "GET", f"/sessions/{sid}/events")
        await asgi.received(first, b"\n\n")
        await asgi.finish([first])
        event_id = re.search(rb"^id: (\S+)$", bytes(first.body), re.M)
        assert event_id is not None
        epoch = event_id.group(1).decode().partition("-")[0]
        resumed = asgi.start(app, "GET", f"/sessions/{sid}/events", headers={"Last-Event-ID": f"{epoch}-{seq}"})
        await asgi.settle([resumed])
        assert resumed.status == 200
        await asgi.received(resumed, b"\n\n")
        await asgi.finish([resumed])
        assert b"event: snapshot" in resumed.body
        assert "internal-error" not in (await c.get("/metrics")).text


async def test_what_each_key_compiled_is_remembered_within_a_bound() -> None:
    programs = KeyPrograms(capacity=2)
    assert await programs.answer(1, "p1", cached=False, compile_ms=5.0) == (False, 5.0)
    assert await programs.answer(2, "p1", cached=True, compile_ms=0.1) == (False, 5.0)  # another key's
    assert programs.knows(1, "p1") and programs.knows(2, "p1") and not programs.knows(3, "p1")
    programs.note(3, "p2")  # past the capacity: the least recently used pair is forgotten
    assert not programs.knows(1, "p1") and programs.knows(3, "p2")
    assert programs.knows(None, "anything")  # without keys, one tenant
    assert await programs.answer(None, "p1", cached=True, compile_ms=0.1) == (True, 0.1)
