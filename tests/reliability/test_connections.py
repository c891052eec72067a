"""Slow and silent clients against a real server on loopback, over raw sockets: request heads
and bodies have deadlines, connections a cap, and the cap fits the descriptor limit, so no
client (with or without a key) can hold descriptors until others are refused.

The deadlines here are short (1 s for a head, 3 s for a body) so that the tests wait little;
what they assert is what the server did (closed, answered), never how long it took: the socket
timeouts are hang guards only."""

from __future__ import annotations

import contextlib
import resource
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.connections import ConnectionGuard, guarded_protocol
from tests.server import ROOT, Server, free_port, start, stop

GUARD = 30.0  # seconds a socket read may block before the test fails (a hang guard)
HEAD = b"POST /compile HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    srv = start(
        env={
            "GUIDANCE_SERVER_HEADER_TIMEOUT_SECONDS": "1",
            "GUIDANCE_SERVER_BODY_TIMEOUT_SECONDS": "3",
            "GUIDANCE_SERVER_MAX_CONNECTIONS": "16",
        }
    )
    try:
        yield srv
    finally:
        code, err = stop(srv)
        assert "Traceback" not in err, err[-2000:]


def _connect(server: Server) -> socket.socket:
    host, port = server.url.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)), timeout=GUARD)
    return s


def _read_all(s: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a reset counts as closed)."""
    out = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := s.recv(65536):
            out += chunk
    return out


def _read_answer(s: socket.socket) -> bytes:
    """One whole answer with a ``Content-Length`` body, however the bytes arrive."""
    out = b""
    while b"\r\n\r\n" not in out:
        out += s.recv(65536)
    head, _, body = out.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += s.recv(65536)
    return head + b"\r\n\r\n" + body


def test_a_connection_that_sends_nothing_is_closed(server: Server) -> None:
    with _connect(server) as s:
        assert _read_all(s) == b""


def test_a_half_sent_request_head_is_closed(server: Server) -> None:
    with _connect(server) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # no blank line: the head never ends
        assert _read_all(s) == b""


def test_a_head_sent_a_byte_at_a_time_does_not_extend_its_deadline(server: Server) -> None:
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Padding: " + b"a" * 200 + b"\r\n\r\n"
    sent = 0
    with _connect(server) as s:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for byte in head:
                s.sendall(bytes([byte]))
                sent += 1
                time.sleep(0.05)
        answer = _read_all(s)
    # closed before the head was whole (it would take 12 s at this pace): never answered
    assert sent < len(head)
    assert answer == b""


def test_a_kept_alive_connection_starting_a_head_and_stalling_is_closed(server: Server) -> None:
    with _connect(server) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        first = _read_answer(s)
        assert first.startswith(b"HTTP/1.1 200")
        s.sendall(b"GET /healthz HTTP/1.1\r\n")  # the next request's head, half of it
        assert _read_all(s) == b""


def test_a_body_sent_too_slowly_is_answered_408_and_closed(server: Server) -> None:
    with _connect(server) as s:
        s.sendall(HEAD + b"Content-Length: 100\r\n\r\n" + b'{"regex": ')
        answer = _read_all(s)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"request-timeout" in answer and b"connection: close" in answer.lower()


def test_a_whole_body_is_served_as_usual(server: Server) -> None:
    body = b'{"regex": "[a-z]+"}'
    with _connect(server) as s:
        s.sendall(HEAD + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
        answer = _read_all(s)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]


def test_silent_clients_past_the_cap_cannot_lock_others_out(server: Server) -> None:
    fds = server.open_fds()
    silent = [_connect(server) for _ in range(200)]  # past the cap of 16: the oldest make room
    try:
        for s in silent:
            s.sendall(b"GET /healthz HTTP/1.1\r\n")
        with httpx.Client(base_url=server.url, timeout=GUARD) as http:
            assert http.get("/healthz").status_code == 200
        assert server.open_fds() <= fds + 16 + 2
    finally:
        for s in silent:
            s.close()


def test_at_the_cap_with_every_request_in_flight_a_new_connection_is_refused(server: Server) -> None:
    busy = [_connect(server) for _ in range(16)]
    try:
        for s in busy:  # each holds a request in flight: its body is coming (slowly)
            s.sendall(HEAD + b"Content-Length: 100\r\nExpect: 100-continue\r\n\r\n")
        for s in busy:  # the server asks for the body once it has read the head
            assert s.recv(65536).startswith(b"HTTP/1.1 100")
            s.sendall(b"{")
        with _connect(server) as s:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = _read_all(s)
        assert answer == b"" or answer.startswith(b"HTTP/1.1 503"), answer[:200]
        if answer:
            assert b"too-many-connections" in answer and b"retry-after" in answer.lower()
        # the slow bodies meet their deadline (408, closed): the server serves again
        answers = [_read_all(s) for s in busy]
        assert all(a.startswith(b"HTTP/1.1 408") for a in answers), answers
        with httpx.Client(base_url=server.url, timeout=GUARD) as http:
            assert http.get("/healthz").status_code == 200
    finally:
        for s in busy:
            s.close()


def test_more_slow_clients_than_descriptors_leave_the_server_serving() -> None:
    # A descriptor limit of 400 and the default cap (2,048): the server lowers its cap to fit.
    srv = start(env={"GUIDANCE_SERVER_HEADER_TIMEOUT_SECONDS": "30"}, descriptors=400)
    slow: list[socket.socket] = []
    try:
        for _ in range(600):
            s = _connect(srv)
            s.sendall(b"GET /healthz HTTP/1.1\r\n")
            slow.append(s)
        assert srv.open_fds() < 400
        with httpx.Client(base_url=srv.url, timeout=GUARD) as http:
            assert http.get("/healthz").status_code == 200
    finally:
        for s in slow:
            s.close()
        code, err = stop(srv)
    assert "descriptor limit holds 272 connections" in err
    assert "at max_connections=272: " in err  # the operator hears of it (once a minute at most)
    assert "Traceback" not in err and "Too many open files" not in err, err[-2000:]


def _fit_in_child(soft: int, hard: int, max_connections: int) -> tuple[int, int]:
    code = (
        "import resource; from service.connections import fit_descriptor_limit; "
        f"cap = fit_descriptor_limit({max_connections}); "
        "print(cap, resource.getrlimit(resource.RLIMIT_NOFILE)[0])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard)),
    ).stdout.split()
    return int(out[0]), int(out[1])


def test_the_descriptor_limit_is_raised_to_fit_the_cap() -> None:
    assert _fit_in_child(soft=1024, hard=8192, max_connections=2048) == (2048, 2048 + 128)


def test_the_cap_is_lowered_to_fit_a_hard_descriptor_limit() -> None:
    assert _fit_in_child(soft=512, hard=1024, max_connections=2048) == (1024 - 128, 1024)


@contextlib.contextmanager
def _uvicorn_with(base: type, guard: ConnectionGuard) -> Iterator[tuple[str, int]]:
    """A bare uvicorn server, on its own thread, with ``base`` guarded (a trivial app)."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, http=guarded_protocol(base, guard), ws="none",
                            lifespan="off", log_level="warning")  # fmt: skip
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + GUARD
    while not srv.started:
        assert time.monotonic() < deadline and thread.is_alive()
        time.sleep(0.02)
    try:
        yield "127.0.0.1", port
    finally:
        srv.should_exit = True
        thread.join(GUARD)


@pytest.mark.parametrize("base", [H11Protocol, HttpToolsProtocol], ids=["h11", "httptools"])
def test_both_of_uvicorns_protocols_are_guarded(base: type) -> None:
    guard = ConnectionGuard(max_connections=4, header_timeout=0.5)
    with _uvicorn_with(base, guard) as address:
        with socket.create_connection(address, timeout=GUARD) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert s.recv(65536).startswith(b"HTTP/1.1 200")
            s.sendall(b"GET / HTTP/1.1\r\n")
            assert _read_all(s) == b""
        silent = [socket.create_connection(address, timeout=GUARD) for _ in range(12)]
        try:
            with socket.create_connection(address, timeout=GUARD) as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                assert _read_all(s).startswith(b"HTTP/1.1 200")
            assert guard.evicted >= 9 and len(guard.open) <= 4
        finally:
            for s in silent:
                s.close()
    assert guard.timed_out >= 1
