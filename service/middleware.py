"""Small pure-ASGI middlewares: the mask fast path, the body-size limit, the text guard, the error guard.

Pure ASGI (not ``BaseHTTPMiddleware``) so that the mask path pays a function call, not a task.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping

from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.errors import GuidanceError
from service.problems import (
    BodyTooLarge,
    count_error,
    guidance_error_response,
    http_problem_response,
    internal_error_response,
)
from service.text import body_text_error, url_text_error

__all__ = ["BodySizeLimitMiddleware", "ErrorGuardMiddleware", "MaskFastPathMiddleware", "TextGuardMiddleware"]

# Bodies larger than this are checked in a thread, off the event loop (tokenizer uploads).
_THREAD_CHECK_BYTES = 1 << 20

log = logging.getLogger("service")


class MaskFastPathMiddleware:
    """Send ``GET /sessions/{id}/mask`` straight to its endpoint, ahead of FastAPI's router.

    The mask is the request a worker makes every decoding step; FastAPI's routing and request
    machinery cost about as much as computing the mask. This dispatches it directly to the same
    endpoint function the (documented) route uses, and answers its domain errors with the same
    problem documents. Every other request passes through untouched.

    Args:
        app: the wrapped application.
        endpoint: ``endpoint(request) -> Response``, reading ``request.path_params["session_id"]``.
    """

    _PREFIX = "/sessions/"
    _SUFFIX = "/mask"

    def __init__(self, app: ASGIApp, endpoint: Callable[[Request], Awaitable[Response]]) -> None:
        self.app = app
        self.endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            path: str = scope["path"]
            root: str = scope.get("root_path", "")
            if root and path.startswith(root):
                path = path[len(root) :]
            # A path that is not ASCII once decoded (percent-escapes) goes the long way, through
            # the text guard; session ids are ASCII.
            if path.startswith(self._PREFIX) and path.endswith(self._SUFFIX) and path.isascii():
                session_id = path[len(self._PREFIX) : -len(self._SUFFIX)]
                if session_id and "/" not in session_id:
                    scope["path_params"] = {"session_id": session_id}
                    try:
                        response = await self.endpoint(Request(scope, receive))
                    except GuidanceError as exc:
                        response = guidance_error_response(scope.get("app"), exc)
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)


class BodySizeLimitMiddleware:
    """Refuse request bodies over a limit with 413 ``body-too-large``.

    A declared ``Content-Length`` over the limit is refused before anything is read; a body
    streamed without one (chunked) is counted as it arrives and refused when it crosses the limit.

    Args:
        app: the wrapped application.
        max_bytes: the limit for every path not in ``path_limits``.
        path_limits: per-path limits (e.g. a larger one for tokenizer uploads).
    """

    def __init__(self, app: ASGIApp, max_bytes: int, path_limits: Mapping[str, int] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.path_limits = dict(path_limits or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.path_limits.get(scope["path"], self.max_bytes)
        has_body = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > limit:
                    response = http_problem_response(scope.get("app"), 413, str(BodyTooLarge(limit).detail))
                    await response(scope, receive, send)
                    return
                has_body = True
            elif name == b"transfer-encoding":
                has_body = True
        if not has_body:  # no Content-Length, not chunked: no body (the mask GET takes this path)
            await self.app(scope, receive, send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # Raised inside the body read: FastAPI re-raises HTTPExceptions as they are,
                    # and the problem handler answers 413.
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, counting_receive, send)


class TextGuardMiddleware:
    """Refuse a request whose text UTF-8 cannot hold with 422 ``unicode-invalid``, before routing.

    Checks the path and query (percent-escapes must decode as UTF-8) and, for a request with a
    body, the whole body (read here, already bounded by :class:`BodySizeLimitMiddleware`, then
    handed on unchanged): see ``service.text``. Every string a route then reads is encodable.

    Args:
        app: the wrapped application.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw_path = scope.get("raw_path") or scope["path"].encode("utf-8", "surrogatepass")
        error = url_text_error(raw_path, scope["query_string"])
        if error is None and any(name in (b"content-length", b"transfer-encoding") for name, _ in scope["headers"]):
            chunks: list[bytes] = []
            messages: list[Message] = []
            complete = False
            try:
                while not complete:
                    message = await receive()
                    messages.append(message)
                    if message["type"] != "http.request":
                        break  # the client went away: hand on what came, as it came
                    chunks.append(message.get("body", b""))
                    complete = not message.get("more_body", False)
            except StarletteHTTPException as exc:  # the body limit, raised while reading
                detail = exc.detail if isinstance(exc.detail, str) else ""
                await http_problem_response(scope.get("app"), exc.status_code, detail)(scope, receive, send)
                return
            if complete:
                body = b"".join(chunks)
                if len(body) > _THREAD_CHECK_BYTES:
                    error = await asyncio.to_thread(body_text_error, body)
                else:
                    error = body_text_error(body)
                messages = [{"type": "http.request", "body": body, "more_body": False}]
            receive = _replay(messages, receive)
        if error is not None:
            await guidance_error_response(scope.get("app"), error)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """A receive that gives ``messages`` first, then whatever ``receive`` gives."""
    pending = list(messages)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay


class ErrorGuardMiddleware:
    """Turn any exception that escapes the routes into a 500 problem, logged, not re-raised.

    Starlette's own server-error handler re-raises after answering (the server then logs the
    traceback a second time, and test clients raise); this guard answers and stops there.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            log.exception("unhandled error in %s %s", scope.get("method"), scope.get("path"))
            if started:
                raise
            count_error(scope.get("app"), "internal-error")
            await internal_error_response()(scope, receive, send)
