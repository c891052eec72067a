"""The transports: raw HTTP/1.1 on the hot path, headers on every request, and the client's errors.

The servers here are small loopback stand-ins, so each test controls exactly what comes back.
"""

from __future__ import annotations

import asyncio
import builtins
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import numpy as np
import pytest

from guidance_client import (
    AsyncGrammarBatch,
    AsyncGuidanceClient,
    AsyncRemoteGrammar,
    GrammarBatch,
    GuidanceClient,
    RemoteGrammar,
    TimeoutError,
    TransportError,
)
from guidance_client.transports import AsyncHotPath
from guidance_client.wire import step_frame

# -- a scripted stand-in for the server ------------------------------------------------------------


class _Stub(ThreadingHTTPServer):
    """Answers compile, accept, mask, step and delete like the server, and records every request.

    The first ``/step`` after :attr:`lose_next_step` is set answers "session-not-found" for
    every session, as a restarted replica would: the client must replay and step again.
    """

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.seen: list[tuple[str, str, dict[str, str]]] = []
        self.sessions = 0
        self.lose_next_step = False
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as uvicorn
    server: _Stub

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        pass

    def _answer(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _handle(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        stub = self.server
        with stub.lock:
            stub.seen.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()}))
        if self.path == "/compile":
            with stub.lock:
                stub.sessions += 1
                sid = f"s{stub.sessions}"
            program = {"program_id": "p", "cached": False, "vocab_size": 64, "mask_words": 2, "variables": []}
            self._answer(200, json.dumps({**program, "compile_ms": 0.1, "session_id": sid}).encode())
        elif self.path.endswith("/accept"):
            answer = {"accepted": len(body["tokens"]), "terminated": False, "accepting": True}
            self._answer(200, json.dumps({**answer, "forced_tokens": [], "variables": {}}).encode())
        elif self.path.endswith("/mask"):
            self._answer(200, bytes([3, 0, 0, 0, 0, 0, 0, 0]), "application/octet-stream")
        elif self.path == "/step":
            lose, stub.lose_next_step = stub.lose_next_step, False
            statuses = []
            for row, item in enumerate(body["sessions"]):
                status: dict[str, Any] = {"session_id": item["session_id"], "row": row, "rows": 1}
                if lose:
                    status |= {"status": "error", "error": {"code": "session-not-found"}}
                else:
                    status |= {"status": "ok", "accepted": len(item["tokens"]), "accepting": True}
                statuses.append(status)
            rows = len(statuses)
            head = {"mask_words": 2, "vocab_size": 64, "rows": rows, "sessions": statuses}
            buf, offset = step_frame(json.dumps(head).encode(), rows * 8)
            buf[offset:] = np.tile(np.array([5, 0], dtype="<i4"), rows).view(np.uint8)
            self._answer(200, buf.tobytes(), "application/vnd.guidance.step")
        elif self.command == "DELETE":
            self.send_response(204)
            self.send_header("content-length", "0")
            self.end_headers()
        else:
            self._answer(404, b'{"code":"not-found","title":"Not found"}', "application/problem+json")

    do_GET = do_POST = do_DELETE = _handle


@pytest.fixture()
def stub() -> Iterator[_Stub]:
    server = _Stub()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _assert_every_request_authenticated(stub: _Stub) -> None:
    paths = [(method, path) for method, path, _ in stub.seen]
    # the hot paths (mask, step) and the replay (compile, accept, step again) are all there
    assert ("GET", "/sessions/s1/mask") in paths and paths.count(("POST", "/compile")) == 2
    assert ("POST", "/sessions/s2/accept") in paths and paths.count(("POST", "/step")) == 3
    for method, path, headers in stub.seen:
        assert headers.get("authorization") == "Bearer k-123", (method, path)
        assert headers.get("x-worker-id") == "w7", (method, path)


def test_sync_client_sends_the_api_key_on_every_request_and_replay(stub: _Stub) -> None:
    with GuidanceClient(stub.url, api_key="k-123", worker_id="w7", backoff=0.0) as client:
        grammar = RemoteGrammar.open(client, {"regex": "[a-z]+"})
        bitmask = np.zeros((1, 2), dtype=np.int32)
        grammar.fill_next_token_bitmask(bitmask, 0)
        assert bitmask.tolist() == [[3, 0]]
        batch = GrammarBatch(client, [grammar])
        batch.step([[7]], bitmask)
        stub.lose_next_step = True
        statuses = batch.submit([[8]], bitmask).result(timeout=30)  # the pipelined path too
        batch.close()
        assert [s.status for s in statuses] == ["ok"] and client.replays == 1
        assert grammar.session_id == "s2" and grammar.tokens == [7, 8] and bitmask.tolist() == [[5, 0]]
        grammar.close()
    _assert_every_request_authenticated(stub)


async def test_async_client_sends_the_api_key_on_every_request_and_replay(stub: _Stub) -> None:
    async with AsyncGuidanceClient(stub.url, api_key="k-123", worker_id="w7", backoff=0.0) as client:
        grammar = await AsyncRemoteGrammar.open(client, {"regex": "[a-z]+"})
        bitmask = np.zeros((1, 2), dtype=np.int32)
        await grammar.fill_next_token_bitmask(bitmask, 0)
        assert bitmask.tolist() == [[3, 0]]
        batch = AsyncGrammarBatch(client, [grammar])
        await batch.step([[7]], bitmask)
        stub.lose_next_step = True
        statuses = await batch.step([[8]], bitmask)
        assert [s.status for s in statuses] == ["ok"] and client.replays == 1
        assert grammar.session_id == "s2" and grammar.tokens == [7, 8] and bitmask.tolist() == [[5, 0]]
        await grammar.close()
    _assert_every_request_authenticated(stub)


def test_a_caller_supplied_httpx_client_gets_the_headers_too(stub: _Stub) -> None:
    with httpx.Client(base_url=stub.url) as http:
        client = GuidanceClient(http=http, api_key="k-123", worker_id="w7")
        client.mask("s1")
        client.step([("s1", [])])
        client.compile(regex="a")
    assert [h.get("authorization") for _, _, h in stub.seen] == ["Bearer k-123"] * 3


# -- the client's own errors -----------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_failures_are_the_clients_errors_not_a_librarys() -> None:
    with GuidanceClient(f"http://127.0.0.1:{_closed_port()}", timeout=2, retries=0) as client:
        for call in (lambda: client.compile(regex="a"), lambda: client.step([("s", [1])]), lambda: client.mask("s")):
            with pytest.raises(TransportError) as err:
                call()
            assert not isinstance(err.value, httpx.TransportError)
        assert not client.ready()


async def test_async_failures_are_the_clients_errors_not_a_librarys() -> None:
    async with AsyncGuidanceClient(f"http://127.0.0.1:{_closed_port()}", timeout=2, retries=0) as client:
        with pytest.raises(TransportError):
            await client.compile(regex="a")
        with pytest.raises(TransportError):
            await client.step([("s", [1])])
        assert not await client.ready()


@pytest.fixture()
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield int(s.getsockname()[1])


def test_a_timeout_is_a_transport_error_and_a_builtin_timeout(silent_port: int) -> None:
    with GuidanceClient(f"http://127.0.0.1:{silent_port}", timeout=0.2, retries=0) as client:
        with pytest.raises(TimeoutError) as hot:
            client.step([("s", [1])])
        with pytest.raises(TimeoutError) as cold:
            client.tokenize("a")
    for err in (hot.value, cold.value):
        assert isinstance(err, TransportError) and isinstance(err, builtins.TimeoutError)


async def test_an_async_timeout_is_a_transport_error(silent_port: int) -> None:
    async with AsyncGuidanceClient(f"http://127.0.0.1:{silent_port}", timeout=0.2, retries=0) as client:
        with pytest.raises(TimeoutError):
            await client.step([("s", [1])])
        with pytest.raises(TimeoutError):
            await client.tokenize("a")


# -- the asyncio hot path (stdlib streams), against a raw HTTP/1.1 server --------------------------


class _RawServer:
    """A loopback server answering each request with the next scripted raw answer.

    An answer of ``None`` closes the connection without answering. Records every request line.
    """

    def __init__(self, answers: list[bytes | None]) -> None:
        self.answers = answers
        self.requests: list[bytes] = []
        self.heads: list[bytes] = []
        self.connections = 0

    async def handle(self, reader: Any, writer: Any) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.requests.append(head.split(b"\r\n")[0])
                self.heads.append(head)
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length")
                    ),
                    0,
                )
                await reader.readexactly(length)
                answer = self.answers.pop(0)
                if answer is None:
                    break
                writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.mark.asyncio
async def test_async_hot_path_reads_lengths_chunks_and_reconnects() -> None:
    answers: list[bytes | None] = [
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Thing: a\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=1\r\nde\r\n0\r\n\r\n",
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
        None,  # the next GET finds its connection dropped: sent again on a fresh one
        b"HTTP/1.1 204 No Content\r\n\r\n",
        None,  # a POST on a dropped connection is not sent again
    ]
    raw = _RawServer(answers)
    server = await asyncio.start_server(raw.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    hot = AsyncHotPath(f"http://127.0.0.1:{port}/base", 5.0, {"X-Worker-Id": "w1"})
    try:
        assert await hot.request("GET", "/a", None, {}) == (200, {"content-length": "5", "x-thing": "a"}, b"hello")
        status, _, data = await hot.request("POST", "/b", b'{"x":1}', {"content-type": "application/json"})
        assert (status, data) == (200, b"abcde")
        status, _, data = await hot.request("GET", "/c", None, {})
        assert (status, data) == (404, b"{}")
        assert raw.connections == 1  # kept alive until the server said close
        status, _, data = await hot.request("GET", "/d", None, {})
        assert (status, data) == (204, b"")
        assert raw.connections == 3  # /d's first connection was dropped; the retry opened another
        with pytest.raises(TransportError):
            await hot.request("POST", "/e", b"{}", {})
        assert b"\r\nX-Worker-Id: w1\r\n" in raw.heads[0] and b"\r\nHost: 127.0.0.1:" in raw.heads[0]
        assert b"\r\nContent-Length: 7\r\n" in raw.heads[1]
        assert raw.requests == [
            b"GET /base/a HTTP/1.1",
            b"POST /base/b HTTP/1.1",
            b"GET /base/c HTTP/1.1",
            b"GET /base/d HTTP/1.1",
            b"GET /base/d HTTP/1.1",
            b"POST /base/e HTTP/1.1",
        ]
    finally:
        hot.close()
        server.close()
        await server.wait_closed()
