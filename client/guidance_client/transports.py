"""The transports: they move a :class:`~guidance_client.protocol.Request` and nothing else.

Each client has one. The decode-loop calls (``/step`` and masks, ``Request.hot``) go through a
keep-alive HTTP/1.1 connection of the standard library (:class:`HotPath`: ``http.client``;
:class:`AsyncHotPath`: asyncio streams), everything else through httpx. A caller may hand in its
own httpx client (a custom transport, an ASGI app in tests); then every call goes through it.
Failures leave here as :class:`~guidance_client.errors.TransportError` (or its
:class:`~guidance_client.errors.TimeoutError`), whichever library was underneath.
"""

from __future__ import annotations

import asyncio
import builtins
import http.client
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx

from guidance_client.errors import TimeoutError, TransportError
from guidance_client.protocol import Answer, Request, check

__all__ = ["AsyncHotPath", "AsyncTransport", "HotPath", "SyncTransport"]


def _transport_error(method: str, path: str, e: BaseException) -> TransportError:
    """Ours for a failure of the network or of the library below."""
    # asyncio.TimeoutError is the builtin from Python 3.11 on, a class of its own before
    timed_out = isinstance(e, (builtins.TimeoutError, asyncio.TimeoutError, httpx.TimeoutException))
    return (TimeoutError if timed_out else TransportError)(f"{method} {path}: {e!r}")


class HotPath:
    """Keep-alive connections of the standard library's ``http.client`` for the hot endpoints.

    ``POST /step`` answers about 1 MB for 64 masks of a 131k vocabulary; httpx took 1.6 ms to
    fetch such a body over loopback where ``http.client`` took 0.35 ms (``bench/``), so the
    decode-loop calls go through here and everything else through httpx. One connection per
    thread; a connection idle for longer than the server's keep-alive is replaced before use, and
    a failed non-idempotent request is never re-sent (the caller decides: see the replay logic).
    """

    _IDLE_SECONDS = 4.0  # below uvicorn's default keep-alive timeout (5 s)

    def __init__(self, base_url: str, timeout: float, headers: Mapping[str, str] | None = None) -> None:
        url = urlsplit(base_url)
        self._headers = dict(headers or {})
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self._https = url.scheme == "https"
        self._host = url.hostname
        self._port = url.port
        self._prefix = url.path.rstrip("/")
        self._timeout = timeout
        self._local = threading.local()
        # every thread's connection, so close() reaches those of background senders too
        self._open: set[http.client.HTTPConnection] = set()
        self._lock = threading.Lock()

    def _connection(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        now = time.monotonic()
        idle = now - getattr(self._local, "used", now) > self._IDLE_SECONDS
        if conn is not None and (idle or conn not in self._open):
            self._drop(conn)
            conn = None
        if conn is None:
            cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            conn = cls(self._host, self._port, timeout=self._timeout)
            with self._lock:
                self._open.add(conn)
            self._local.conn = conn
        self._local.used = now
        return conn

    def _drop(self, conn: http.client.HTTPConnection) -> None:
        conn.close()
        self._local.conn = None
        with self._lock:
            self._open.discard(conn)

    def request(
        self, method: str, path: str, body: bytes | None, headers: Mapping[str, str]
    ) -> tuple[int, dict[str, str], bytes]:
        """Send one request; returns status, lower-cased headers and the body."""
        for attempt in (0, 1):
            conn = self._connection()
            try:
                conn.request(method, self._prefix + path, body=body, headers={**self._headers, **headers})
                resp = conn.getresponse()
                data = resp.read()
            except (OSError, http.client.HTTPException) as e:
                self._drop(conn)
                if method == "GET" and attempt == 0:
                    continue  # idempotent: one retry on a fresh connection
                raise _transport_error(method, path, e) from e
            if resp.will_close:
                self._drop(conn)
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        """Close every thread's connection (a later request opens a new one)."""
        with self._lock:
            conns, self._open = list(self._open), set()
        for conn in conns:
            conn.close()
        self._local.conn = None


class AsyncHotPath:
    """:class:`HotPath` for asyncio: keep-alive HTTP/1.1 connections over asyncio streams.

    httpx's async client took 4.2 ms for a 64-session ``/step`` whose sync twin took 2.2 ms
    through ``http.client`` (the same server, alternately), most of it in moving the 1 MB body;
    this speaks just the HTTP/1.1 the hot endpoints need (a request with ``Content-Length``, an
    answer with ``Content-Length`` or chunked). Idle connections are kept in a small pool, one per
    concurrent request, and replaced after ``_IDLE_SECONDS``; a failed non-idempotent request is
    never re-sent (the caller decides: see the replay logic).
    """

    _IDLE_SECONDS = 4.0  # below uvicorn's default keep-alive timeout (5 s)
    _POOL = 8

    def __init__(self, base_url: str, timeout: float, headers: Mapping[str, str] | None = None) -> None:
        url = urlsplit(base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self._https = url.scheme == "https"
        self._host = url.hostname
        self._port = url.port or (443 if self._https else 80)
        self._prefix = url.path.rstrip("/")
        self._timeout = timeout
        host = f"[{self._host}]" if ":" in self._host else self._host
        self._host_header = host if url.port is None else f"{host}:{url.port}"
        self._headers = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []

    async def request(
        self, method: str, path: str, body: bytes | None, headers: Mapping[str, str]
    ) -> tuple[int, dict[str, str], bytes]:
        """Send one request; returns status, lower-cased headers and the body."""
        head = f"{method} {self._prefix}{path} HTTP/1.1\r\nHost: {self._host_header}\r\n{self._headers}"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        if body is not None:
            head += f"Content-Length: {len(body)}\r\n"
        message = (head + "\r\n").encode("latin-1") + (body or b"")
        for attempt in (0, 1):
            conn = self._take()
            try:
                if conn is None:
                    reader, writer = await asyncio.wait_for(
                        asyncio.open_connection(self._host, self._port, ssl=True if self._https else None),
                        self._timeout,
                    )
                else:
                    reader, writer = conn
                try:
                    status, answer, data, keep = await asyncio.wait_for(
                        self._exchange(reader, writer, message, method), self._timeout
                    )
                except BaseException:
                    writer.close()  # half-used (failed or cancelled): never back in the pool
                    raise
            except (
                OSError,
                EOFError,
                asyncio.IncompleteReadError,
                asyncio.LimitOverrunError,
                asyncio.TimeoutError,
                ValueError,
            ) as e:
                if method == "GET" and attempt == 0:
                    continue  # idempotent: one retry on a fresh connection
                raise _transport_error(method, path, e) from e
            if keep and len(self._idle) < self._POOL:
                self._idle.append((reader, writer, time.monotonic()))
            else:
                writer.close()
            return status, answer, data
        raise AssertionError("unreachable")  # pragma: no cover

    def _take(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        now = time.monotonic()
        while self._idle:
            reader, writer, used = self._idle.pop()
            if now - used <= self._IDLE_SECONDS and not reader.at_eof():
                return reader, writer
            writer.close()
        return None

    @staticmethod
    async def _exchange(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, message: bytes, method: str
    ) -> tuple[int, dict[str, str], bytes, bool]:
        writer.write(message)
        await writer.drain()
        line = await reader.readuntil(b"\r\n")
        parts = line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            raise ValueError(f"not an HTTP/1.x status line: {line[:80]!r}")
        status = int(parts[1])
        answer: dict[str, str] = {}
        while True:
            line = await reader.readuntil(b"\r\n")
            if line == b"\r\n":
                break
            name, _, value = line.decode("latin-1").partition(":")
            answer[name.strip().lower()] = value.strip()
        keep = answer.get("connection", "").lower() != "close" and parts[0] != b"HTTP/1.0"
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            data = b""
        elif "content-length" in answer:
            data = await reader.readexactly(int(answer["content-length"]))
        elif answer.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
                        pass
                    break
                chunks.append(await reader.readexactly(size))
                await reader.readexactly(2)
            data = b"".join(chunks)
        else:
            data = await reader.read()
            keep = False
        return status, answer, data, keep

    def close(self) -> None:
        """Close the idle connections (those in use close when their request ends)."""
        while self._idle:
            self._idle.pop()[1].close()


class SyncTransport:
    """Sends requests for :class:`~guidance_client.GuidanceClient`.

    Args:
        base_url: the server or balancer.
        timeout: seconds per request.
        headers: sent on every request (worker id, API key).
        http: an ``httpx.Client`` to use for every call instead of making one (its ``base_url``
            and headers apply; ``headers`` are added to each request).
    """

    def __init__(
        self, base_url: str, timeout: float, headers: Mapping[str, str], http: httpx.Client | None = None
    ) -> None:
        self._owns = http is None
        self._headers = dict(headers)
        self.http = (
            http if http is not None else httpx.Client(base_url=base_url, timeout=timeout, headers=self._headers)
        )
        # a caller's own httpx client (a custom transport, in tests) is used for everything
        self._hot = HotPath(base_url, timeout, self._headers) if http is None else None

    def send(self, request: Request[Any]) -> Answer:
        """Send ``request``; the answer, whatever its status."""
        if request.hot and self._hot is not None:
            return Answer(*self._hot.request(request.method, request.path, request.body, request.headers))
        headers = request.headers if self._owns else {**self._headers, **request.headers}
        try:
            resp = self.http.request(request.method, request.path, content=request.body, headers=headers)
        except httpx.TransportError as e:
            raise _transport_error(request.method, request.path, e) from e
        return Answer(resp.status_code, resp.headers, resp.content)

    def lines(self, path: str, headers: Mapping[str, str]) -> Iterator[str]:
        """The lines of a streamed ``GET`` answer as they arrive (an error answer raises)."""
        headers = headers if self._owns else {**self._headers, **headers}
        try:
            with self.http.stream("GET", path, headers=headers, timeout=httpx.Timeout(None, connect=10.0)) as resp:
                if resp.status_code >= 400:
                    check(Answer(resp.status_code, resp.headers, resp.read()))
                yield from resp.iter_lines()
        except httpx.TransportError as e:
            raise _transport_error("GET", path, e) from e

    def sleep(self, seconds: float) -> None:
        """Wait before a retry."""
        time.sleep(seconds)

    def close(self) -> None:
        """Close the connections (the httpx client only if this transport made it)."""
        if self._owns:
            self.http.close()
        if self._hot is not None:
            self._hot.close()


class AsyncTransport:
    """Sends requests for :class:`~guidance_client.AsyncGuidanceClient`; see :class:`SyncTransport`."""

    def __init__(
        self, base_url: str, timeout: float, headers: Mapping[str, str], http: httpx.AsyncClient | None = None
    ) -> None:
        self._owns = http is None
        self._headers = dict(headers)
        self.http = (
            http if http is not None else httpx.AsyncClient(base_url=base_url, timeout=timeout, headers=self._headers)
        )
        self._hot = AsyncHotPath(base_url, timeout, self._headers) if http is None else None

    async def send(self, request: Request[Any]) -> Answer:
        """Send ``request``; the answer, whatever its status."""
        if request.hot and self._hot is not None:
            return Answer(*await self._hot.request(request.method, request.path, request.body, request.headers))
        headers = request.headers if self._owns else {**self._headers, **request.headers}
        try:
            resp = await self.http.request(request.method, request.path, content=request.body, headers=headers)
        except httpx.TransportError as e:
            raise _transport_error(request.method, request.path, e) from e
        return Answer(resp.status_code, resp.headers, resp.content)

    async def lines(self, path: str, headers: Mapping[str, str]) -> AsyncIterator[str]:
        """The lines of a streamed ``GET`` answer as they arrive (an error answer raises)."""
        headers = headers if self._owns else {**self._headers, **headers}
        try:
            async with self.http.stream(
                "GET", path, headers=headers, timeout=httpx.Timeout(None, connect=10.0)
            ) as resp:
                if resp.status_code >= 400:
                    check(Answer(resp.status_code, resp.headers, await resp.aread()))
                async for line in resp.aiter_lines():
                    yield line
        except httpx.TransportError as e:
            raise _transport_error("GET", path, e) from e

    async def sleep(self, seconds: float) -> None:
        """Wait before a retry."""
        await asyncio.sleep(seconds)

    async def aclose(self) -> None:
        """Close the connections (the httpx client only if this transport made it)."""
        if self._owns:
            await self.http.aclose()
        if self._hot is not None:
            self._hot.close()
