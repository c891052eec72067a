"""Small pure-ASGI middlewares: the mask fast path, the body's size and time limits, the text guard, the error guard.

Pure ASGI (not ``BaseHTTPMiddleware``) so that the mask path pays a function call, not a task.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.errors import GuidanceError
from core.tokenizers import GGUF_MAGIC
from service.errors import BodyTimeout, BodyTooLarge
from service.problems import count_error, guidance_error_response, internal_error_response
from service.text import body_text_error, url_text_error

__all__ = [
    "BodySizeLimitMiddleware",
    "BodyTimeoutMiddleware",
    "ErrorGuardMiddleware",
    "MaskFastPathMiddleware",
    "TextGuardMiddleware",
    "route_path",
]

# Bodies larger than this are checked in a thread, off the event loop (tokenizer uploads).
_THREAD_CHECK_BYTES = 1 << 20

log = logging.getLogger("service")


def route_path(scope: Scope) -> str:
    """The request's path as the routes see it: without the app's ``root_path`` prefix."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    return path


class _HTTPMiddleware:
    """A middleware for HTTP requests: every other kind of connection passes through untouched.

    Args:
        app: the wrapped application.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self.handle(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one HTTP request (or pass it on to ``self.app``)."""
        raise NotImplementedError


class MaskFastPathMiddleware(_HTTPMiddleware):
    """Serve ``GET /sessions/{id}/mask``: the one path a mask request takes, ahead of FastAPI's router.

    The mask is the request a worker makes every decoding step; FastAPI's routing and request
    machinery cost about as much as computing the mask. Every mask GET is dispatched here to its
    endpoint, and its domain errors answered with the same problem documents as the routes'. The
    route declared in ``service/routes/sessions.py`` documents the operation (and answers other
    methods with 405); it never serves a GET. Every other request passes through untouched.

    Args:
        app: the wrapped application.
        endpoint: ``endpoint(request) -> Response``, reading ``request.path_params["session_id"]``.
    """

    _PREFIX = "/sessions/"
    _SUFFIX = "/mask"

    def __init__(self, app: ASGIApp, endpoint: Callable[[Request], Awaitable[Response]]) -> None:
        super().__init__(app)
        self.endpoint = endpoint

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] == "GET":
            path = route_path(scope)
            if path.startswith(self._PREFIX) and path.endswith(self._SUFFIX):
                session_id = path[len(self._PREFIX) : -len(self._SUFFIX)]
                if session_id and "/" not in session_id:
                    scope["path_params"] = {"session_id": session_id}
                    try:
                        if not path.isascii():  # percent-escapes: they must decode as UTF-8 (text guard's rule)
                            raw_path = scope.get("raw_path") or path.encode("utf-8", "surrogatepass")
                            error = url_text_error(raw_path, scope["query_string"])
                            if error is not None:
                                raise error
                        response = await self.endpoint(Request(scope, receive))
                    except GuidanceError as exc:
                        response = guidance_error_response(scope.get("app"), exc)
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)


class BodySizeLimitMiddleware(_HTTPMiddleware):
    """Refuse request bodies over a limit with 413 ``body-too-large``.

    A declared ``Content-Length`` over the limit is refused before anything is read; a body
    streamed without one (chunked) is counted as it arrives and refused when it crosses the limit.

    Args:
        app: the wrapped application.
        max_bytes: the limit for every path not in ``path_limits``.
        path_limits: per-path limits (e.g. a larger one for tokenizer uploads).
    """

    def __init__(self, app: ASGIApp, max_bytes: int, path_limits: Mapping[str, int] | None = None) -> None:
        super().__init__(app)
        self.max_bytes = max_bytes
        self.path_limits = dict(path_limits or {})

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = self.path_limits.get(scope["path"], self.max_bytes)
        has_body = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > limit:
                    await guidance_error_response(scope.get("app"), BodyTooLarge(limit))(scope, receive, send)
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
                    # Raised inside the body read, which the text guard (inside this middleware)
                    # does for every request with a body: it answers the 413.
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, counting_receive, send)


def _has_body(scope: Scope) -> bool:
    return any(name in (b"content-length", b"transfer-encoding") for name, _ in scope["headers"])


class BodyTimeoutMiddleware(_HTTPMiddleware):
    """Refuse a request body that does not arrive whole within ``timeout`` seconds of its head (408).

    The deadline is for the whole body, however it trickles in: a client sending a byte now and
    then holds a connection (and a file descriptor) no longer than this. Raised inside the body
    read (the text guard, inside this middleware, reads every body) and answered there with 408
    ``request-timeout`` and ``Connection: close``. Once the body is whole, later reads (a wait for
    the client's disconnect) pass through untouched. The request head has its own deadline
    (``service/connections.py``).

    Args:
        app: the wrapped application.
        timeout: seconds the whole body may take.
    """

    def __init__(self, app: ASGIApp, timeout: float) -> None:
        super().__init__(app)
        self.timeout = timeout

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not _has_body(scope):
            await self.app(scope, receive, send)
            return
        deadline = asyncio.get_running_loop().time() + self.timeout
        whole = False

        async def timed_receive() -> Message:
            nonlocal whole
            if whole:
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise BodyTimeout(self.timeout) from None
            whole = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        await self.app(scope, timed_receive, send)


class TextGuardMiddleware(_HTTPMiddleware):
    """Refuse a request whose text UTF-8 cannot hold with 422 ``unicode-invalid``, before routing.

    Checks the path and query (percent-escapes must decode as UTF-8) and, for a request with a
    body, the whole body (read here, already bounded by :class:`BodySizeLimitMiddleware`, then
    handed on unchanged): see ``service.text``. Every string a route then reads is encodable.
    A binary file (a GGUF tokenizer, by its magic) posted to one of ``binary_paths`` is handed on
    unread: the route parses it as what it is.

    Args:
        app: the wrapped application.
        binary_paths: the paths that take binary files as bodies.
    """

    def __init__(self, app: ASGIApp, binary_paths: frozenset[str] = frozenset()) -> None:
        super().__init__(app)
        self.binary_paths = binary_paths

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw_path = scope.get("raw_path") or scope["path"].encode("utf-8", "surrogatepass")
        error = url_text_error(raw_path, scope["query_string"])
        if error is None and _has_body(scope):
            chunks: list[bytes] = []
            complete = False
            try:
                while not complete:
                    message = await receive()
                    if message["type"] != "http.request":
                        break
                    chunks.append(message.get("body", b""))
                    complete = not message.get("more_body", False)
            except (BodyTooLarge, BodyTimeout) as exc:  # the body's limits, raised while reading
                await guidance_error_response(scope.get("app"), exc)(scope, receive, send)
                return
            if not complete:
                # The client went away before its body was whole: nobody to answer, and not our
                # error (no route runs, nothing is logged or counted).
                return
            body = b"".join(chunks)
            if scope["path"] in self.binary_paths and body.startswith(GGUF_MAGIC):
                error = None
            elif len(body) > _THREAD_CHECK_BYTES:
                error = await asyncio.to_thread(body_text_error, body)
            else:
                error = body_text_error(body)
            receive = _replay([{"type": "http.request", "body": body, "more_body": False}], receive)
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


class ErrorGuardMiddleware(_HTTPMiddleware):
    """Turn any exception that escapes the routes into a 500 problem, logged, not re-raised.

    Starlette's own server-error handler re-raises after answering (the server then logs the
    traceback a second time, and test clients raise); this guard answers and stops there.

    Args:
        app: the wrapped application.
    """

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except ClientDisconnect:
            # A client that went away mid-request (a route reading its own body): nobody to answer.
            log.debug("client went away during %s %s", scope.get("method"), scope.get("path"))
        except Exception:
            log.exception("unhandled error in %s %s", scope.get("method"), scope.get("path"))
            if started:
                raise
            count_error(scope.get("app"), "internal-error")
            await internal_error_response()(scope, receive, send)
