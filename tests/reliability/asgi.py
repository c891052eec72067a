"""Requests driven straight through an app's ASGI interface, for what an HTTP client library hides:
many streams held open at once, a body cut short by a client that goes away."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI


@dataclass
class Exchange:
    """One request in flight: what the app sent back, and a switch to make the client go away."""

    status: int | None = None
    body: bytearray = field(default_factory=bytearray)
    started: asyncio.Event = field(default_factory=asyncio.Event)
    gone: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    def leave(self) -> None:
        """The client disconnects."""
        self.gone.set()


def start(
    app: FastAPI,
    method: str,
    path: str,
    *,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    declared_length: int | None = None,
) -> Exchange:
    """Start a request to ``app`` as a task; ``body`` is what arrives of a body of ``declared_length``
    bytes (default: all of it). A body shorter than declared ends with the client going away."""
    path, _, query = path.partition("?")
    length = len(body) if declared_length is None else declared_length
    raw = [(k.lower().encode(), v.encode("latin-1")) for k, v in (headers or {}).items()]  # as on the wire
    if body or declared_length is not None:
        raw.append((b"content-length", str(length).encode()))
    scope: dict[str, Any] = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": query.encode(), "root_path": "",
        "headers": [(b"host", b"testserver"), *raw], "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80), "state": {}, "app": app,
    }  # fmt: skip
    exchange = Exchange()
    pending: list[dict[str, Any]] = [{"type": "http.request", "body": body, "more_body": len(body) < length}]
    if len(body) < length:
        exchange.gone.set()

    async def receive() -> dict[str, Any]:
        if pending:
            return pending.pop(0)
        await exchange.gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            exchange.status = message["status"]
            exchange.started.set()
        elif message["type"] == "http.response.body":
            exchange.body += message.get("body", b"")

    exchange.task = asyncio.create_task(app(scope, receive, send))
    return exchange


async def settle(exchanges: list[Exchange], timeout: float = 60) -> None:
    """Until every exchange has its status (a hang guard, not a timing)."""
    async with asyncio.timeout(timeout):
        await asyncio.gather(*(e.started.wait() for e in exchanges))


async def received(exchange: Exchange, marker: bytes, timeout: float = 60) -> None:
    """Until the answer's body holds ``marker`` (a hang guard, not a timing)."""
    async with asyncio.timeout(timeout):
        while marker not in exchange.body:
            await asyncio.sleep(0.01)


async def finish(exchanges: list[Exchange], timeout: float = 60) -> None:
    """Every client leaves; until every request's task has ended."""
    for e in exchanges:
        e.leave()
    async with asyncio.timeout(timeout):
        await asyncio.gather(*(e.task for e in exchanges if e.task is not None))
