"""Watching sessions over Server-Sent Events, against a real server process (keys on)."""

from __future__ import annotations

import contextlib
import struct
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from tests.server import start, stop

USER = "user-key-aaaaaaaaaaaaaaaa"
OTHER = "user-key-bbbbbbbbbbbbbbbb"
ADMIN = "admin-key-cccccccccccccccc"
TEMPLATE = "Name: {{gen 'name' regex='[A-Z][a-z]+'}}\nAge: {{gen 'age' regex='[0-9]{1,3}'}}"
TEXT = "Name: Adalbert\nAge: 36"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    running = start(
        env={
            "GUIDANCE_SERVER_API_KEYS": f"{USER},{OTHER}",
            "GUIDANCE_SERVER_ADMIN_API_KEYS": ADMIN,
            "GUIDANCE_SERVER_MAX_WATCHERS_PER_SESSION": "2",
            "GUIDANCE_SERVER_MAX_WATCHERS": "3",
            "GUIDANCE_SERVER_EVENTS_HEARTBEAT_SECONDS": "0.2",
        }
    )
    try:
        yield running.url
    finally:
        status, err = stop(running)
        assert "Traceback" not in err, err[-2000:]


@pytest.fixture()
def http(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, headers=bearer(USER), timeout=20) as c:
        yield c


class Events:
    """A minimal reader of one SSE stream: events as (id, name, data), comments counted."""

    def __init__(self, response: httpx.Response) -> None:
        self.lines = response.iter_lines()
        self.comments = 0

    def next(self) -> tuple[str, str, dict[str, Any]]:
        fields: dict[str, str] = {}
        for line in self.lines:
            if line == "":
                if fields:
                    return fields["id"], fields["event"], orjson.loads(fields["data"])
                continue
            if line.startswith(":"):
                self.comments += 1
                continue
            key, _, value = line.partition(": ")
            fields[key] = value
        raise EOFError("the stream closed")


@contextlib.contextmanager
def watch(http: httpx.Client, sid: str, key: str = USER, last_event_id: str | None = None) -> Iterator[Events]:
    headers = {**bearer(key), **({"Last-Event-ID": last_event_id} if last_event_id else {})}
    with http.stream("GET", f"/sessions/{sid}/events", headers=headers) as resp:
        assert resp.status_code == 200, resp.read()
        assert resp.headers["content-type"].startswith("text/event-stream")
        yield Events(resp)


def open_session(http: httpx.Client, key: str = USER) -> str:
    resp = http.post("/sessions", json={"template": TEMPLATE}, headers=bearer(key))
    assert resp.status_code == 201, resp.text
    return str(resp.json()["session_id"])


def tokens(http: httpx.Client, text: str) -> list[int]:
    return list(http.post("/tokenize", json={"text": text}).json()["tokens"])


def accept(http: httpx.Client, sid: str, toks: list[int], key: str = USER) -> dict[str, Any]:
    resp = http.post(f"/sessions/{sid}/accept", json={"tokens": toks}, headers=bearer(key))
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def test_one_event_per_accept_in_order_then_end(http: httpx.Client) -> None:
    sid = open_session(http)
    ids = tokens(http, TEXT)
    with watch(http, sid) as events:
        _, name, snap = events.next()
        assert name == "snapshot" and snap["text"] == "" and snap["tokens"] == 0 and snap["variables"] == {}
        text, seen, last_seq = "", {}, 0
        for t in ids:
            accept(http, sid, [t])
            eid, name, ev = events.next()
            assert name == "accept" and ev["accepted"] == 1
            seq = int(eid.rsplit("-", 1)[1])
            assert seq == last_seq + 1  # in order, none missing
            last_seq = seq
            text += ev["text"]
            for k, v in ev["variables"].items():
                old = seen.get(k)
                if old is not None:
                    assert v["value"].startswith(old["value"]) and not (old["complete"] and old != v)
                seen[k] = v
        assert text == TEXT
        assert seen["name"] == {"value": "Adalbert", "complete": True}
        assert seen["age"]["value"] == "36" and not seen["age"]["complete"]
        eos = int(http.get("/tokenizers").json()["tokenizers"][0]["eos_token_ids"][0])
        accept(http, sid, [eos])
        _, name, ev = events.next()
        assert name == "accept" and ev["terminated"] and ev["variables"]["age"]["complete"]
        _, name, ev = events.next()
        assert (name, ev) == ("end", {"reason": "terminated"})
        with pytest.raises(EOFError):
            events.next()


def test_resume_with_last_event_id_gets_the_events_missed(http: httpx.Client) -> None:
    sid = open_session(http)
    ids = tokens(http, TEXT)
    with watch(http, sid) as events:
        events.next()
        accept(http, sid, ids[:1])
        accept(http, sid, ids[1:2])
        events.next()
        last_id, _, _ = events.next()
    accept(http, sid, ids[2:3])  # while nobody watches: kept for a resume
    accept(http, sid, ids[3:4])
    with watch(http, sid, last_event_id=last_id) as events:
        got = [events.next(), events.next()]
    assert [name for _, name, _ in got] == ["accept", "accept"]
    assert [int(i.rsplit("-", 1)[1]) for i, _, _ in got] == [
        int(last_id.rsplit("-", 1)[1]) + 1,
        int(last_id.rsplit("-", 1)[1]) + 2,
    ]
    resumed = "".join(ev["text"] for _, _, ev in got)
    assert resumed == http.post("/detokenize", json={"tokens": ids[2:4]}).json()["text"]
    # an id this server does not hold: a fresh snapshot instead
    with watch(http, sid, last_event_id="nope-3") as events:
        _, name, snap = events.next()
    assert name == "snapshot" and snap["tokens"] == 4


def test_heartbeat_comments_keep_an_idle_stream_open(http: httpx.Client) -> None:
    sid = open_session(http)
    with watch(http, sid) as events:
        events.next()
        accept(http, sid, tokens(http, "Name")[:1])
        events.next()
        deadline = time.monotonic() + 20
        while events.comments < 2 and time.monotonic() < deadline:
            with contextlib.suppress(StopIteration):
                line = next(events.lines)
                events.comments += line.startswith(":")
        assert events.comments >= 2


def test_deleting_the_session_sends_the_last_event(http: httpx.Client) -> None:
    sid = open_session(http)
    with watch(http, sid) as events:
        events.next()
        assert http.delete(f"/sessions/{sid}").status_code == 204
        _, name, ev = events.next()
        assert (name, ev) == ("end", {"reason": "deleted"})


def _until(check: Any) -> None:
    """Poll a condition the server reaches asynchronously (a closed stream noticed)."""
    deadline = time.monotonic() + 20
    while not check():
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_watchers_are_bounded_per_session_and_in_total(http: httpx.Client) -> None:
    a, b = open_session(http), open_session(http)
    with watch(http, a) as e1, watch(http, a) as e2:
        e1.next(), e2.next()
        third = http.get(f"/sessions/{a}/events")
        assert third.status_code == 429 and third.json()["code"] == "too-many-watchers"
        assert "retry-after" in third.headers
        with watch(http, b) as e3:
            e3.next()
            over = http.get(f"/sessions/{b}/events")  # 3 open: the total bound
            assert over.status_code == 429 and "limit is 3" in over.json()["detail"]

    def free() -> bool:
        with http.stream("GET", f"/sessions/{b}/events") as resp:
            return resp.status_code == 200

    _until(free)


def test_only_the_owner_or_an_admin_key_may_watch(http: httpx.Client) -> None:
    sid = open_session(http)
    other = http.get(f"/sessions/{sid}/events", headers=bearer(OTHER))
    assert other.status_code == 404 and other.json()["code"] == "session-not-found"
    with watch(http, sid, key=ADMIN) as events:
        _, name, snap = events.next()
        assert name == "snapshot" and snap["session_id"] == sid
    # the list of sessions: admin keys only (admin keys are configured here)
    assert http.get("/sessions", headers=bearer(USER)).status_code == 403
    listed = http.get("/sessions", headers=bearer(ADMIN)).json()["sessions"]
    assert sid in {s["session_id"] for s in listed}
    assert all(s["kind"] == "template" for s in listed if s["session_id"] == sid)


def test_partial_values_over_http(http: httpx.Client) -> None:
    sid = open_session(http)
    answer = accept(http, sid, tokens(http, "Name: Ada"), USER)
    assert "partial" not in answer and answer["variables"] == {}
    resp = http.post(f"/sessions/{sid}/accept", json={"tokens": [], "partial": True})
    assert resp.json()["partial"] == {"name": {"value": "Ada", "complete": False}}
    state = http.get(f"/sessions/{sid}", params={"partial": "true"}).json()
    assert state["partial"] == {"name": {"value": "Ada", "complete": False}}
    assert "partial" not in http.get(f"/sessions/{sid}").json()


def test_step_answers_partial_values_and_its_accepts_are_events(http: httpx.Client) -> None:
    sid = open_session(http)
    ids = tokens(http, "Name: Ada")
    with watch(http, sid) as events:
        events.next()
        resp = http.post("/step", json={"sessions": [{"session_id": sid, "tokens": ids}], "variables": "partial"})
        assert resp.status_code == 200, resp.text
        (length,) = struct.unpack_from("<I", resp.content)
        (status,) = orjson.loads(resp.content[4 : 4 + length])["sessions"]
        assert status["variables"] == {} and status["partial"] == {"name": {"value": "Ada", "complete": False}}
        _, name, ev = events.next()
        assert name == "accept" and ev["text"] == "Name: Ada" and ev["accepted"] == len(ids)
        assert ev["variables"] == {"name": {"value": "Ada", "complete": False}}
        plain = http.post("/step", json={"sessions": [{"session_id": sid, "tokens": []}], "variables": True})
        (length,) = struct.unpack_from("<I", plain.content)
        assert "partial" not in orjson.loads(plain.content[4 : 4 + length])["sessions"][0]


def test_a_rollback_sends_the_whole_state_again(http: httpx.Client) -> None:
    sid = open_session(http)
    ids = tokens(http, "Name: Ada")
    with watch(http, sid) as events:
        events.next()
        accept(http, sid, ids)
        _, _, ev = events.next()
        assert ev["variables"]["name"]["value"] == "Ada"
        assert http.post(f"/sessions/{sid}/rollback", json={"tokens": 1}).status_code == 200
        _, name, state = events.next()
        assert name == "rollback"
        assert state["tokens"] == len(ids) - 1
        assert state["text"] == http.post("/detokenize", json={"tokens": ids[:-1]}).json()["text"]
        assert state["variables"] == http.get(f"/sessions/{sid}", params={"partial": "true"}).json()["partial"]
        assert "Ada".startswith(state["variables"].get("name", {"value": ""})["value"])


def test_stopping_the_server_ends_every_stream_at_once() -> None:
    running = start()
    try:
        with httpx.Client(base_url=running.url, timeout=20) as client:
            sid = client.post("/sessions", json={"template": TEMPLATE}).json()["session_id"]
            with watch(client, sid, key=USER) as events:
                events.next()
                running.proc.terminate()  # SIGTERM: a graceful shutdown
                _, name, ev = events.next()
                assert (name, ev) == ("end", {"reason": "shutdown"})
                with pytest.raises(EOFError):
                    events.next()
    finally:
        status, err = stop(running)
    assert "Traceback" not in err, err[-2000:]
