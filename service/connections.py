"""Connections: a cap on open connections and a deadline on each request's head.

uvicorn reads a request's head for as long as the client takes, and accepts every connection
the kernel hands it, so clients that connect and send half a request (or nothing) each hold a
file descriptor forever; at the process's descriptor limit nobody else can connect. This module
adds what uvicorn lacks, in a subclass of its HTTP protocol (whichever implementation it picks):

* **A deadline on the request head.** From the moment a connection opens, or a kept-alive one
  sends the first byte of its next request, the whole head (request line and headers) must
  arrive within ``header_timeout`` seconds, or the connection is closed. Sending slowly does not
  extend it. (An idle kept-alive connection is closed by uvicorn's ``timeout_keep_alive``.)
* **A cap on open connections.** At ``max_connections``, a new connection first takes the place
  of the oldest one that is waiting for a request head (idle between requests, or sending one
  slowly): such connections are cheap to open again, and the slow ones are the attack. Only when
  every connection has a request in flight is the new one refused: a 503 problem, then closed.

Bodies have their own deadline, kept at the ASGI level (``service/middleware.py``,
:class:`~service.middleware.BodyTimeoutMiddleware`): a body must arrive whole within
``body_timeout`` seconds of its head, or the answer is 408 and the connection is closed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import time
from typing import Any

__all__ = ["ConnectionGuard", "RESERVED_DESCRIPTORS", "fit_descriptor_limit", "guarded_protocol"]

log = logging.getLogger("service")

_REPORT_SECONDS = 60.0  # at most one warning a minute about connections closed at the cap

RESERVED_DESCRIPTORS = 128
"""Descriptors kept for everything but client connections: the listening socket, the event loop,
compile workers' pipes, tokenizer files being read, logs (an idle server holds about 20)."""

_REFUSAL_BODY = json.dumps(
    {
        "type": "urn:guidance:problem:too-many-connections",
        "title": "Too many connections",
        "status": 503,
        "detail": "the server holds as many connections as it may, each with a request in flight; retry later",
        "code": "too-many-connections",
    }
).encode()
_REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\nretry-after: 1\r\n"
    b"connection: close\r\ncontent-length: %d\r\n\r\n" % len(_REFUSAL_BODY)
) + _REFUSAL_BODY


class ConnectionGuard:
    """The open connections of one server, and which of them wait for a request head.

    Used from the event loop only.

    Args:
        max_connections: most connections open at once.
        header_timeout: seconds a request head may take to arrive whole.
    """

    def __init__(self, max_connections: int, header_timeout: float) -> None:
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self.open: set[Any] = set()
        # Connections waiting for a request head, oldest first, each with its deadline's timer
        # (None: idle between requests, closed by uvicorn's keep-alive timeout instead).
        self.waiting: dict[Any, asyncio.TimerHandle | None] = {}
        self.refused = 0
        self.evicted = 0
        self.timed_out = 0
        self._reported_at = float("-inf")

    def admit(self, protocol: Any) -> bool:
        """A connection opened: True when it may stay (the oldest waiting one may be closed for it)."""
        if len(self.open) >= self.max_connections:
            oldest = next(iter(self.waiting), None)
            if oldest is None:
                self.refused += 1
                self._report()
                return False
            self.evicted += 1
            self._report()
            self._close(oldest)
        self.open.add(protocol)
        return True

    def await_head(self, protocol: Any, loop: asyncio.AbstractEventLoop, deadline: bool) -> None:
        """``protocol`` waits for a request head: with a deadline (bytes of one have come, or the
        connection is new), or idle between requests (without one). An existing deadline stays."""
        if protocol not in self.open:
            return
        timer = self.waiting.get(protocol)
        if timer is None and deadline:
            timer = loop.call_later(self.header_timeout, self._expire, protocol)
        elif protocol in self.waiting:
            return
        self.waiting[protocol] = timer

    def head_received(self, protocol: Any) -> None:
        """A request head arrived whole: no deadline on it any more."""
        timer = self.waiting.pop(protocol, None)
        if timer is not None:
            timer.cancel()

    def closed(self, protocol: Any) -> None:
        """The connection is gone."""
        self.head_received(protocol)
        self.open.discard(protocol)

    def _report(self) -> None:
        now = time.monotonic()
        if now - self._reported_at >= _REPORT_SECONDS:
            self._reported_at = now
            log.warning(
                "at max_connections=%d: %d connections closed for newer ones, %d refused, %d heads timed out so far",
                self.max_connections,
                self.evicted,
                self.refused,
                self.timed_out,
            )

    def _expire(self, protocol: Any) -> None:
        self.timed_out += 1
        self._close(protocol)

    def _close(self, protocol: Any) -> None:
        self.closed(protocol)
        transport = protocol.transport
        if transport is not None and not transport.is_closing():
            transport.close()


def guarded_protocol(base: type[asyncio.Protocol], guard: ConnectionGuard) -> type[asyncio.Protocol]:
    """A subclass of uvicorn's HTTP protocol ``base`` (h11 or httptools) that ``guard`` watches.

    Relies on what both of uvicorn's HTTP/1.1 protocols have: ``connections``, ``loop``,
    ``transport``, ``cycle`` (the current request, replaced when a new request's head is parsed)
    and ``on_response_complete``.
    """
    proto: Any = base  # uvicorn's protocols are typed loosely; their attributes are checked by the tests

    class GuardedProtocol(proto):  # type: ignore[misc]
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            if not guard.admit(self):
                transport.write(_REFUSAL)  # type: ignore[attr-defined]
                transport.close()
                return
            guard.await_head(self, self.loop, deadline=True)

        def data_received(self, data: bytes) -> None:
            cycle = self.cycle
            super().data_received(data)
            if self.cycle is not cycle:
                guard.head_received(self)
            elif cycle is None or cycle.response_complete:
                guard.await_head(self, self.loop, deadline=True)  # part of a head, or of the next one

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if self.cycle is None or self.cycle.response_complete:  # not a pipelined request next
                guard.await_head(self, self.loop, deadline=False)

        def connection_lost(self, exc: Exception | None) -> None:
            guard.closed(self)
            super().connection_lost(exc)

    GuardedProtocol.__name__ = GuardedProtocol.__qualname__ = f"Guarded{base.__name__}"
    result: type[asyncio.Protocol] = GuardedProtocol
    return result


def fit_descriptor_limit(max_connections: int, reserve: int = RESERVED_DESCRIPTORS) -> int:
    """Make room for ``max_connections`` under the process's descriptor limit; returns the cap that fits.

    Raises the soft ``RLIMIT_NOFILE`` towards the hard one as far as ``max_connections`` plus
    ``reserve`` needs (what a systemd unit's ``LimitNOFILE`` or ``ulimit -n`` allow). When even the
    hard limit is too low, the cap is lowered to fit it: connections are then refused at the cap,
    never by the kernel at the limit (which would stop every new connection, probes included).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = max_connections + reserve
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):  # pragma: no cover - a sandbox refusing even the soft limit
            pass
    if soft == resource.RLIM_INFINITY:
        return max_connections
    return max(min(max_connections, soft - reserve), 1)
