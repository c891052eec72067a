"""The worker-side client: httpx and numpy only (no FastAPI, no llguidance, no ``core``).

Two clients with the same methods, :class:`GuidanceClient` (sync) and
:class:`AsyncGuidanceClient`, and two drop-in grammar objects shaped like
``core.GuidanceGrammar`` (vLLM's ``StructuredOutputGrammar``), :class:`RemoteGrammar` and
:class:`AsyncRemoteGrammar`::

    from service.client import GuidanceClient

    with GuidanceClient("http://127.0.0.1:8000") as client:
        grammar = client.grammar(json_schema={"type": "object", "properties": {"a": {"type": "integer"}}})
        bitmask = numpy.zeros((batch, grammar.mask_words), dtype=numpy.int32)
        grammar.fill_next_token_bitmask(bitmask, 0)      # row 0: the allowed next tokens
        grammar.accept_tokens([token])                   # False if the constraint forbids it

Masks travel as raw little-endian int32 words and land in a numpy row with one ``frombuffer``
and one slice copy. Errors raise :class:`RemoteError` with the server's problem fields.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import struct
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar
from urllib.parse import quote, urlsplit

import httpx
import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from typing import Self  # annotations only: the client also runs on Python 3.10

__all__ = [
    "AcceptResult",
    "AsyncGrammarBatch",
    "AsyncGuidanceClient",
    "AsyncRemoteGrammar",
    "GrammarBatch",
    "GuidanceClient",
    "ProgramInfo",
    "RemoteError",
    "RemoteGrammar",
    "SessionInfo",
    "StepResult",
    "StepStatus",
    "WORKER_HEADER",
    "program_spec",
]

_WIRE = np.dtype("<i4")

MaskEncoding = Literal["dense", "blocks"]  # how /step sends masks (see openapi.yaml, x-step-layout)
_T = TypeVar("_T")
_Client = TypeVar("_Client", "GuidanceClient", "AsyncGuidanceClient")
_Grammar = TypeVar("_Grammar", "RemoteGrammar", "AsyncRemoteGrammar")

WORKER_HEADER = "X-Worker-Id"
"""The header a balancer hashes on to keep a worker's sessions on one replica."""
_KINDS = ("template", "json_schema", "regex", "grammar", "choice")
# Codes for which accept_tokens answers False (like core's GuidanceGrammar) rather than raising.
_REFUSED = ("token-rejected", "token-out-of-range")
_GONE = ("session-not-found", "session-expired")


class RemoteError(Exception):
    """An error answer from the server (an RFC 9457 problem document).

    Attributes:
        status: the HTTP status.
        code: the problem's stable code (``token-rejected``, ``session-expired``, ...).
        title: the problem's title.
        detail: the explanation.
        index: for ``token-rejected``: the position of the refused token in the request.
        retry_after: seconds to wait, for 429 and 503 answers.
        problem: the whole problem document.
    """

    def __init__(self, status: int, problem: Mapping[str, Any]) -> None:
        self.status = status
        self.problem = dict(problem)
        self.code: str = str(problem.get("code") or f"http-{status}")
        self.title: str = str(problem.get("title") or "")
        self.detail: str = str(problem.get("detail") or self.title)
        index = problem.get("index")
        self.index: int | None = index if isinstance(index, int) else None
        retry = problem.get("retry_after")
        self.retry_after: float | None = float(retry) if isinstance(retry, (int, float)) else None
        super().__init__(f"{status} {self.code}: {self.detail}")


@dataclass(frozen=True)
class ProgramInfo:
    """A compiled program (``POST /compile``)."""

    program_id: str
    cached: bool
    vocab_size: int
    mask_words: int
    variables: list[str]
    compile_ms: float
    session_id: str | None = None


@dataclass(frozen=True)
class AcceptResult:
    """The session after an accept (``POST /sessions/{id}/accept``)."""

    accepted: int
    terminated: bool
    accepting: bool
    forced_tokens: list[int]
    variables: dict[str, Any]


@dataclass(frozen=True)
class SessionInfo:
    """A session's state (``GET /sessions/{id}``, rollback)."""

    program_id: str
    tokens: list[int]
    text: str
    variables: dict[str, Any]
    terminated: bool
    accepting: bool


# -- requests and answers, shared by both clients (sans I/O) ---------------------------------


def program_spec(
    template: str | None = None,
    *,
    json_schema: Mapping[str, Any] | bool | str | None = None,
    regex: str | None = None,
    grammar: str | None = None,
    choice: Sequence[str] | None = None,
    variables: Mapping[str, Any] | None = None,
    options: Mapping[str, Any] | None = None,
    tokenizer: str | None = None,
) -> dict[str, Any]:
    """A compile body: exactly one of the five kinds, plus the optional fields given."""
    given = {
        k: v
        for k, v in zip(_KINDS, (template, json_schema, regex, grammar, list(choice) if choice is not None else None))
        if v is not None
    }
    if len(given) != 1:
        raise ValueError("give exactly one of template, json_schema, regex, grammar, choice")
    spec: dict[str, Any] = dict(given)
    if variables:
        spec["variables"] = dict(variables)
    if options:
        spec["options"] = dict(options)
    if tokenizer is not None:
        spec["tokenizer"] = tokenizer
    return spec


def _sid(session_id: str) -> str:
    return "/sessions/" + quote(session_id, safe="")


def _check(resp: httpx.Response) -> httpx.Response:
    if resp.status_code < 400:
        return resp
    problem: Any = {}
    if "json" in resp.headers.get("content-type", ""):
        try:
            problem = resp.json()
        except ValueError:
            problem = {}
    if not isinstance(problem, dict):
        problem = {}
    problem.setdefault("detail", resp.text[:200])
    if "retry_after" not in problem and "retry-after" in resp.headers:
        try:
            problem["retry_after"] = float(resp.headers["retry-after"])
        except ValueError:
            pass
    raise RemoteError(resp.status_code, problem)


class _HotPath:
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

    def _connection(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        now = time.monotonic()
        if conn is not None and now - getattr(self._local, "used", now) > self._IDLE_SECONDS:
            conn.close()
            conn = None
        if conn is None:
            cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            conn = cls(self._host, self._port, timeout=self._timeout)
            self._local.conn = conn
        self._local.used = now
        return conn

    def request(self, method: str, path: str, body: bytes | None, headers: Mapping[str, str]) -> tuple[int, dict[str, str], bytes]:
        """Send one request; returns status, lower-cased headers and the body."""
        for attempt in (0, 1):
            conn = self._connection()
            try:
                conn.request(method, self._prefix + path, body=body, headers={**self._headers, **headers})
                resp = conn.getresponse()
                data = resp.read()
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                self._local.conn = None
                if method == "GET" and attempt == 0:
                    continue  # idempotent: one retry on a fresh connection
                raise httpx.TransportError(f"{method} {path}: {e!r}") from e
            if resp.will_close:
                conn.close()
                self._local.conn = None
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


class _AsyncHotPath:
    """:class:`_HotPath` for asyncio: keep-alive HTTP/1.1 connections over asyncio streams.

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

    async def request(self, method: str, path: str, body: bytes | None, headers: Mapping[str, str]) -> tuple[int, dict[str, str], bytes]:
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
                        asyncio.open_connection(self._host, self._port, ssl=True if self._https else None), self._timeout
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
            except (OSError, EOFError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError, ValueError) as e:
                if method == "GET" and attempt == 0:
                    continue  # idempotent: one retry on a fresh connection
                raise httpx.TransportError(f"{method} {path}: {e!r}") from e
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
        while self._idle:
            self._idle.pop()[1].close()


def _check_raw(status: int, headers: Mapping[str, str], data: bytes) -> bytes:
    """:func:`_check` for :class:`_HotPath` answers."""
    if status < 400:
        return data
    return _check(httpx.Response(status, headers=headers, content=data)).content


def _program(data: Mapping[str, Any]) -> ProgramInfo:
    return ProgramInfo(
        program_id=data["program_id"],
        cached=data["cached"],
        vocab_size=data["vocab_size"],
        mask_words=data["mask_words"],
        variables=list(data["variables"]),
        compile_ms=data["compile_ms"],
        session_id=data.get("session_id"),
    )


def _accepted(data: Mapping[str, Any]) -> AcceptResult:
    return AcceptResult(
        accepted=data["accepted"],
        terminated=data["terminated"],
        accepting=data["accepting"],
        forced_tokens=list(data["forced_tokens"]),
        variables=dict(data["variables"]),
    )


def _session(data: Mapping[str, Any]) -> SessionInfo:
    return SessionInfo(
        program_id=data["program_id"],
        tokens=list(data["tokens"]),
        text=data["text"],
        variables=dict(data["variables"]),
        terminated=data["terminated"],
        accepting=data["accepting"],
    )


def _mask(content: bytes, out: NDArray[np.int32] | None, row: int) -> NDArray[np.int32]:
    words = np.frombuffer(content, dtype=_WIRE)
    if out is None:
        return words.astype(np.int32)  # a writable, native-order copy
    target: NDArray[np.int32] = out[row]
    if target.shape[0] < words.shape[0]:
        raise ValueError(f"bitmask rows have {target.shape[0]} words, the mask has {words.shape[0]}")
    target[: words.shape[0]] = words
    target[words.shape[0] :] = 0
    return target


def _tok_body(key: str, value: Any, tokenizer: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {key: value}
    if tokenizer is not None:
        body["tokenizer"] = tokenizer
    return body


@dataclass(slots=True)
class StepStatus:
    """One session's answer in a batched step.

    Attributes:
        session_id: the session.
        status: ``ok`` (tokens accepted), ``rejected`` (a token refused; the session is
            unchanged) or ``error`` (see ``error``: unknown or expired session, invalid ids...).
        accepted: tokens accepted (0 unless ``ok``).
        terminated: the session accepted EOS.
        accepting: EOS is allowed now.
        forced_tokens: tokens the constraint forces next (empty if the step did not ask for them).
        row: the session's first mask row; ``rows``: its rows (1 + draft tokens).
        index: for ``rejected``, the position of the refused token.
        variables: captured values, when asked for.
        error: for ``error``, the problem document.
    """

    session_id: str
    status: str
    accepted: int
    terminated: bool
    accepting: bool
    forced_tokens: list[int]
    row: int
    rows: int
    index: int | None = None
    variables: dict[str, Any] | None = None
    error: dict[str, Any] | None = None


@dataclass(frozen=True)
class StepResult:
    """A batched step's answer: a status per session and the masks, ``[rows, mask_words]`` int32."""

    statuses: list[StepStatus]
    masks: NDArray[np.int32]
    vocab_size: int


def _step_body(
    items: Sequence[tuple[Any, ...]], variables: bool, mask_encoding: MaskEncoding = "dense", forced_tokens: bool = True
) -> bytes:
    # Written by hand (a step is built for every decoding step): ids are JSON-quoted, tokens ints.
    dumps = json.dumps
    parts = []
    for item in items:
        tokens = ",".join([str(int(t)) for t in item[1]])
        entry = f'{{"session_id":{dumps(item[0])},"tokens":[{tokens}]'
        if len(item) > 2 and item[2]:
            draft = ",".join([str(int(t)) for t in item[2]])
            entry += f',"draft_tokens":[{draft}]'
        parts.append(entry + "}")
    flag = "true" if variables else "false"
    extra = "" if mask_encoding == "dense" else f',"mask_encoding":"{mask_encoding}"'  # defaults left out
    if not forced_tokens:
        extra += ',"forced_tokens":false'
    return f'{{"sessions":[{",".join(parts)}],"variables":{flag}{extra}}}'.encode()


def _parse_step(content: bytes) -> StepResult:
    (length,) = struct.unpack_from("<I", content, 0)
    header = json.loads(content[4 : 4 + length])
    words = int(header["mask_words"])
    masks: NDArray[np.int32]
    if header.get("mask_encoding", "dense") == "blocks":
        masks = _decode_blocks(content, 4 + length, int(header["rows"]), words, int(header["block_words"]))
    else:
        masks = np.frombuffer(content, dtype=_WIRE, offset=4 + length).reshape(-1, words)
    get = dict.get
    statuses = [
        StepStatus(
            s["session_id"],
            s["status"],
            get(s, "accepted", 0),
            get(s, "terminated", False),
            get(s, "accepting", False),
            get(s, "forced_tokens") or [],
            s["row"],
            s["rows"],
            get(s, "index"),
            get(s, "variables"),
            get(s, "error"),
        )
        for s in header["sessions"]
    ]
    return StepResult(statuses, masks, int(header["vocab_size"]))


def _decode_blocks(content: bytes, offset: int, rows: int, words: int, block_words: int) -> NDArray[np.int32]:
    """Block-sparse masks (``mask_encoding: blocks``, see ``openapi.yaml``) as ``[rows, words]`` int32."""
    per_row = -(-words // block_words)
    n_bits = rows * per_row
    n_bytes = (n_bits + 7) // 8
    bitmap = np.frombuffer(content, dtype=np.uint8, count=n_bytes, offset=offset)
    present = np.unpackbits(bitmap, count=n_bits, bitorder="little").view(bool)
    blocks = np.frombuffer(content, dtype=_WIRE, offset=offset + n_bytes + (-n_bytes % 4)).reshape(-1, block_words)
    if blocks.shape[0] != int(np.count_nonzero(present)):
        raise ValueError("block-sparse masks: the bitmap and the blocks disagree")
    out = np.empty((rows, per_row * block_words), dtype=np.int32)
    view = out.reshape(-1, block_words)
    view[~present] = 0
    view[present] = blocks
    return out[:, :words]


_STEP_HEADERS = {"content-type": "application/json", "accept": "application/vnd.guidance.step"}
_MASK_HEADERS = {"accept": "application/octet-stream"}


# -- the sync client ---------------------------------------------------------------------------


class GuidanceClient:
    """A synchronous client of one server, or of replicas behind a balancer.

    Args:
        base_url: the server or balancer, e.g. ``http://127.0.0.1:8000``.
        timeout: seconds per request.
        http: an ``httpx.Client`` to use instead of making one (its ``base_url`` applies).
        worker_id: sent as ``X-Worker-Id`` on every request, for a balancer that hashes on it
            (all of a worker's sessions then live on one replica).
        retries: how many times a grammar replays its session and retries after a lost
            connection, replica or session (see :class:`RemoteGrammar`).
        backoff: seconds before the first retry; doubled at each further one.

    Attributes:
        replays: sessions re-created from their spec and tokens so far.
    """

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        timeout: float = 30.0,
        *,
        http: httpx.Client | None = None,
        worker_id: str | None = None,
        retries: int = 4,
        backoff: float = 0.05,
    ) -> None:
        headers = {WORKER_HEADER: worker_id} if worker_id else {}
        self._owns = http is None
        self.http = http if http is not None else httpx.Client(base_url=base_url, timeout=timeout, headers=headers)
        # the decode-loop endpoints use the stdlib (see _HotPath); a caller's own httpx client
        # (a custom transport, in tests) is used for everything
        self._hot = _HotPath(base_url, timeout, headers) if http is None else None
        self.retries = retries
        self.backoff = backoff
        self.replays = 0

    def retrying(self, fn: Callable[[], _T], on_failure: Callable[[], None] | None = None) -> _T:
        """Call ``fn``; after a failure a replay can mend, call ``on_failure``, wait, try again."""
        for attempt in range(self.retries + 1):
            try:
                return fn()
            except (httpx.TransportError, RemoteError) as e:
                if attempt == self.retries or not _retryable(e):
                    raise
                if on_failure is not None:
                    on_failure()
                time.sleep(_delay(self.backoff, attempt, e))
        raise AssertionError("unreachable")  # pragma: no cover

    def __enter__(self) -> Self:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections (when this client made them)."""
        if self._owns:
            self.http.close()
        if self._hot is not None:
            self._hot.close()

    def _json(self, method: str, path: str, body: Any = None) -> Any:
        resp = _check(self.http.request(method, path, json=body))
        return resp.json() if resp.content else None

    # -- programs
    def compile_spec(self, spec: Mapping[str, Any], *, open_session: bool = False) -> ProgramInfo:
        """Compile a raw compile body (see :func:`program_spec`)."""
        body = dict(spec)
        if open_session:
            body["open_session"] = True
        return _program(self._json("POST", "/compile", body))

    def compile(self, template: str | None = None, *, open_session: bool = False, **kwargs: Any) -> ProgramInfo:
        """Compile one of ``template``, ``json_schema``, ``regex``, ``grammar``, ``choice``."""
        return self.compile_spec(program_spec(template, **kwargs), open_session=open_session)

    # -- sessions
    def create_session(self, program_id: str | None = None, **spec: Any) -> str:
        """Open a session on ``program_id``, or on a program given like :meth:`compile`."""
        body = {"program_id": program_id} if program_id is not None else program_spec(**spec)
        return str(self._json("POST", "/sessions", body)["session_id"])

    def accept(self, session_id: str, tokens: Sequence[int], *, dry_run: bool = False) -> AcceptResult:
        """Accept tokens all or nothing (raises :class:`RemoteError` ``token-rejected``, 409)."""
        body: dict[str, Any] = {"tokens": [int(t) for t in tokens]}
        if dry_run:
            body["dry_run"] = True
        return _accepted(self._json("POST", _sid(session_id) + "/accept", body))

    def mask(self, session_id: str, out: NDArray[np.int32] | None = None, row: int = 0) -> NDArray[np.int32]:
        """The allowed next tokens: into ``out[row]`` if given (and returned), else a new row."""
        if self._hot is not None:
            content = _check_raw(*self._hot.request("GET", _sid(session_id) + "/mask", None, _MASK_HEADERS))
        else:
            content = _check(self.http.get(_sid(session_id) + "/mask")).content
        return _mask(content, out, row)

    def rollback(self, session_id: str, num_tokens: int) -> SessionInfo:
        """Undo the last ``num_tokens`` tokens."""
        return _session(self._json("POST", _sid(session_id) + "/rollback", {"tokens": int(num_tokens)}))

    def fork(self, session_id: str) -> str:
        """A new session at the same position; returns its id."""
        return str(self._json("POST", _sid(session_id) + "/fork")["session_id"])

    def get(self, session_id: str) -> SessionInfo:
        """The session's tokens, text, variables and status."""
        return _session(self._json("GET", _sid(session_id)))

    def delete(self, session_id: str) -> None:
        """Close the session."""
        _check(self.http.delete(_sid(session_id)))

    # -- the batched step
    def step(
        self,
        items: Sequence[tuple[Any, ...]],
        *,
        variables: bool = False,
        mask_encoding: MaskEncoding = "dense",
        forced_tokens: bool = True,
    ) -> StepResult:
        """One batched step; ``items`` are ``(session_id, tokens[, draft_tokens])`` (``POST /step``).

        ``mask_encoding="blocks"`` has the masks sent block-sparse (smaller for most constraints);
        the result's ``masks`` are dense either way. ``forced_tokens=False`` skips computing each
        session's forced tokens (their statuses then have none).
        """
        body = _step_body(items, variables, mask_encoding, forced_tokens)
        if self._hot is not None:
            return _parse_step(_check_raw(*self._hot.request("POST", "/step", body, _STEP_HEADERS)))
        return _parse_step(_check(self.http.post("/step", content=body, headers=_STEP_HEADERS)).content)

    # -- tokenizers and operations
    def tokenize(self, text: str, tokenizer: str | None = None) -> list[int]:
        """Token ids of ``text`` with a server-side tokenizer."""
        return list(self._json("POST", "/tokenize", _tok_body("text", text, tokenizer))["tokens"])

    def detokenize(self, tokens: Sequence[int], tokenizer: str | None = None) -> str:
        """Text of token ids with a server-side tokenizer."""
        body = _tok_body("tokens", [int(t) for t in tokens], tokenizer)
        return str(self._json("POST", "/detokenize", body)["text"])

    def tokenizers(self) -> list[dict[str, Any]]:
        """The server's tokenizers."""
        return list(self._json("GET", "/tokenizers")["tokenizers"])

    def stats(self) -> dict[str, Any]:
        """The server's statistics."""
        return dict(self._json("GET", "/stats"))

    def ready(self) -> bool:
        """Whether the server is ready (``/readyz`` answers 200); False if unreachable."""
        try:
            return self.http.get("/readyz").status_code == 200
        except httpx.TransportError:
            return False

    def grammar(self, template: str | None = None, **kwargs: Any) -> RemoteGrammar:
        """Compile a program and open a session on it: a drop-in ``GuidanceGrammar``."""
        return RemoteGrammar.open(self, program_spec(template, **kwargs))


def _delay(backoff: float, attempt: int, e: Exception) -> float:
    """Exponential backoff, at least what a 429/503 ``Retry-After`` asked (capped at 5 s)."""
    delay = backoff * float(2**attempt)
    if isinstance(e, RemoteError) and e.retry_after:
        delay = max(delay, min(e.retry_after, 5.0))
    return delay


def _retryable(e: Exception) -> bool:
    """Failures after which a session is rebuilt from its spec and tokens (replay).

    A lost connection, a session the server does not know (a restarted or different replica),
    or a gateway/unavailable answer (a dead or draining replica behind a balancer).
    """
    if isinstance(e, httpx.TransportError):
        return True
    return isinstance(e, RemoteError) and (e.code in _GONE or e.status in (502, 503, 504))


_REPLAY_CHUNK = 1024  # tokens per accept while replaying (below the server's per-accept limit)


class _RemoteState(Generic[_Client]):
    """What both remote grammars keep locally: the spec, the program, the session, the tokens."""

    def __init__(
        self,
        client: _Client,
        spec: Mapping[str, Any],
        program: ProgramInfo,
        session_id: str,
        tokens: Sequence[int] = (),
        terminated: bool = False,
        variables: Mapping[str, Any] | None = None,
    ) -> None:
        self.client: _Client = client
        self.spec = dict(spec)
        self.program = program
        self.session_id = session_id
        self.tokens = list(tokens)
        self._terminated = terminated
        self._variables = dict(variables or {})
        self._lost = False

    @property
    def vocab_size(self) -> int:
        return self.program.vocab_size

    @property
    def mask_words(self) -> int:
        return self.program.mask_words

    def is_terminated(self) -> bool:
        """True once EOS has been accepted."""
        return self._terminated

    def get_variable_values(self) -> dict[str, Any]:
        """The values captured so far, by name."""
        return dict(self._variables)

    def _update(self, terminated: bool, variables: Mapping[str, Any]) -> None:
        self._terminated = terminated
        self._variables = dict(variables)


class RemoteGrammar(_RemoteState["GuidanceClient"]):
    """A ``core.GuidanceGrammar`` whose state lives on the server, and survives losing it.

    Keeps the program spec and the tokens accepted so far: when a call fails because the
    connection dropped, the replica died or restarted, or the session expired, the grammar opens
    a new session from the spec (on whichever replica the balancer now picks), re-accepts its
    tokens, and retries the call, up to ``client.retries`` times with exponential backoff. The
    caller never sees a wrong mask, only the time it took.

    Attributes:
        spec: the compile body of the program.
        program: the compiled program's description.
        session_id: the server-side session.
        tokens: tokens accepted so far.
    """

    @classmethod
    def open(cls, client: GuidanceClient, spec: Mapping[str, Any]) -> RemoteGrammar:
        """Compile ``spec`` and open a session on it."""
        info = client.retrying(lambda: client.compile_spec(spec, open_session=True))
        assert info.session_id is not None
        return cls(client, spec, info, info.session_id)

    def replay(self) -> None:
        """Open a new session from the spec and re-accept the tokens accepted so far."""
        info = self.client.compile_spec(self.spec, open_session=True)
        assert info.session_id is not None
        for i in range(0, len(self.tokens), _REPLAY_CHUNK):
            self.client.accept(info.session_id, self.tokens[i : i + _REPLAY_CHUNK])
        self.program, self.session_id, self._lost = info, info.session_id, False
        self.client.replays += 1

    def _call(self, fn: Callable[[], _T]) -> _T:
        def attempt() -> _T:
            if self._lost:
                self.replay()
            return fn()

        def lost() -> None:
            self._lost = True

        return self.client.retrying(attempt, on_failure=lost)

    def accept_tokens(self, tokens: Sequence[int]) -> bool:
        """Advance by ``tokens``; False, with nothing changed, if any is not allowed."""
        tokens = [int(t) for t in tokens]
        try:
            result = self._call(lambda: self.client.accept(self.session_id, tokens))
        except RemoteError as e:
            if e.code in _REFUSED:
                return False
            raise
        self._update(result.terminated, result.variables)
        self.tokens.extend(tokens)
        return True

    def validate_tokens(self, tokens: Sequence[int]) -> list[int]:
        """The longest allowed prefix of ``tokens``, without advancing."""
        tokens = [int(t) for t in tokens]
        try:
            return tokens[: self._call(lambda: self.client.accept(self.session_id, tokens, dry_run=True)).accepted]
        except RemoteError as e:
            if e.code == "token-out-of-range" and e.index is not None:
                return tokens[: e.index]
            raise

    def rollback(self, num_tokens: int) -> None:
        """Undo the last ``num_tokens`` tokens."""
        info = self._call(lambda: self.client.rollback(self.session_id, num_tokens))
        self.tokens = info.tokens
        self._update(info.terminated, info.variables)

    def fill_next_token_bitmask(self, bitmask: NDArray[np.int32], idx: int = 0) -> None:
        """Write the allowed next tokens into row ``idx`` of an int32 ``[batch, words]`` array."""
        self._call(lambda: self.client.mask(self.session_id, bitmask, idx))

    def reset(self) -> None:
        """Back to the start of the program."""
        if self.tokens:
            self.rollback(len(self.tokens))

    def fork(self) -> RemoteGrammar:
        """An independent copy at the same position (a new server-side session)."""
        sid = self._call(lambda: self.client.fork(self.session_id))
        return RemoteGrammar(self.client, self.spec, self.program, sid, self.tokens, self._terminated, self._variables)

    def close(self) -> None:
        """Close the server-side session (already gone, or unreachable, is fine)."""
        try:
            self.client.delete(self.session_id)
        except (RemoteError, httpx.TransportError) as e:
            if not _retryable(e):
                raise



# -- the async client --------------------------------------------------------------------------


class AsyncGuidanceClient:
    """An asyncio client; the methods and arguments of :class:`GuidanceClient`, awaited."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        timeout: float = 30.0,
        *,
        http: httpx.AsyncClient | None = None,
        worker_id: str | None = None,
        retries: int = 4,
        backoff: float = 0.05,
    ) -> None:
        headers = {WORKER_HEADER: worker_id} if worker_id else {}
        self._owns = http is None
        self.http = (
            http if http is not None else httpx.AsyncClient(base_url=base_url, timeout=timeout, headers=headers)
        )
        # as in GuidanceClient: the decode-loop endpoints go through _AsyncHotPath
        self._hot = _AsyncHotPath(base_url, timeout, headers) if http is None else None
        self.retries = retries
        self.backoff = backoff
        self.replays = 0

    async def retrying(
        self, fn: Callable[[], Awaitable[_T]], on_failure: Callable[[], None] | None = None
    ) -> _T:
        """See :meth:`GuidanceClient.retrying`."""
        for attempt in range(self.retries + 1):
            try:
                return await fn()
            except (httpx.TransportError, RemoteError) as e:
                if attempt == self.retries or not _retryable(e):
                    raise
                if on_failure is not None:
                    on_failure()
                await asyncio.sleep(_delay(self.backoff, attempt, e))
        raise AssertionError("unreachable")  # pragma: no cover

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections (when this client made them)."""
        if self._owns:
            await self.http.aclose()
        if self._hot is not None:
            self._hot.close()

    async def _json(self, method: str, path: str, body: Any = None) -> Any:
        resp = _check(await self.http.request(method, path, json=body))
        return resp.json() if resp.content else None

    async def compile_spec(self, spec: Mapping[str, Any], *, open_session: bool = False) -> ProgramInfo:
        """See :meth:`GuidanceClient.compile_spec`."""
        body = dict(spec)
        if open_session:
            body["open_session"] = True
        return _program(await self._json("POST", "/compile", body))

    async def compile(self, template: str | None = None, *, open_session: bool = False, **kwargs: Any) -> ProgramInfo:
        """See :meth:`GuidanceClient.compile`."""
        return await self.compile_spec(program_spec(template, **kwargs), open_session=open_session)

    async def create_session(self, program_id: str | None = None, **spec: Any) -> str:
        """See :meth:`GuidanceClient.create_session`."""
        body = {"program_id": program_id} if program_id is not None else program_spec(**spec)
        return str((await self._json("POST", "/sessions", body))["session_id"])

    async def accept(self, session_id: str, tokens: Sequence[int], *, dry_run: bool = False) -> AcceptResult:
        """See :meth:`GuidanceClient.accept`."""
        body: dict[str, Any] = {"tokens": [int(t) for t in tokens]}
        if dry_run:
            body["dry_run"] = True
        return _accepted(await self._json("POST", _sid(session_id) + "/accept", body))

    async def mask(self, session_id: str, out: NDArray[np.int32] | None = None, row: int = 0) -> NDArray[np.int32]:
        """See :meth:`GuidanceClient.mask`."""
        if self._hot is not None:
            content = _check_raw(*await self._hot.request("GET", _sid(session_id) + "/mask", None, _MASK_HEADERS))
            return _mask(content, out, row)
        resp = _check(await self.http.get(_sid(session_id) + "/mask"))
        return _mask(resp.content, out, row)

    async def rollback(self, session_id: str, num_tokens: int) -> SessionInfo:
        """See :meth:`GuidanceClient.rollback`."""
        return _session(await self._json("POST", _sid(session_id) + "/rollback", {"tokens": int(num_tokens)}))

    async def fork(self, session_id: str) -> str:
        """See :meth:`GuidanceClient.fork`."""
        return str((await self._json("POST", _sid(session_id) + "/fork"))["session_id"])

    async def get(self, session_id: str) -> SessionInfo:
        """See :meth:`GuidanceClient.get`."""
        return _session(await self._json("GET", _sid(session_id)))

    async def delete(self, session_id: str) -> None:
        """See :meth:`GuidanceClient.delete`."""
        _check(await self.http.delete(_sid(session_id)))

    async def step(
        self,
        items: Sequence[tuple[Any, ...]],
        *,
        variables: bool = False,
        mask_encoding: MaskEncoding = "dense",
        forced_tokens: bool = True,
    ) -> StepResult:
        """See :meth:`GuidanceClient.step`."""
        body = _step_body(items, variables, mask_encoding, forced_tokens)
        if self._hot is not None:
            return _parse_step(_check_raw(*await self._hot.request("POST", "/step", body, _STEP_HEADERS)))
        resp = _check(await self.http.post("/step", content=body, headers=_STEP_HEADERS))
        return _parse_step(resp.content)

    async def tokenize(self, text: str, tokenizer: str | None = None) -> list[int]:
        """See :meth:`GuidanceClient.tokenize`."""
        return list((await self._json("POST", "/tokenize", _tok_body("text", text, tokenizer)))["tokens"])

    async def detokenize(self, tokens: Sequence[int], tokenizer: str | None = None) -> str:
        """See :meth:`GuidanceClient.detokenize`."""
        body = _tok_body("tokens", [int(t) for t in tokens], tokenizer)
        return str((await self._json("POST", "/detokenize", body))["text"])

    async def tokenizers(self) -> list[dict[str, Any]]:
        """See :meth:`GuidanceClient.tokenizers`."""
        return list((await self._json("GET", "/tokenizers"))["tokenizers"])

    async def stats(self) -> dict[str, Any]:
        """See :meth:`GuidanceClient.stats`."""
        return dict(await self._json("GET", "/stats"))

    async def ready(self) -> bool:
        """See :meth:`GuidanceClient.ready`."""
        try:
            return (await self.http.get("/readyz")).status_code == 200
        except httpx.TransportError:
            return False

    async def grammar(self, template: str | None = None, **kwargs: Any) -> AsyncRemoteGrammar:
        """See :meth:`GuidanceClient.grammar`."""
        return await AsyncRemoteGrammar.open(self, program_spec(template, **kwargs))


class AsyncRemoteGrammar(_RemoteState["AsyncGuidanceClient"]):
    """:class:`RemoteGrammar` for asyncio: the same methods, awaited (``is_terminated``,
    ``get_variable_values`` and the properties are local and stay plain), the same replay."""

    @classmethod
    async def open(cls, client: AsyncGuidanceClient, spec: Mapping[str, Any]) -> AsyncRemoteGrammar:
        """Compile ``spec`` and open a session on it."""
        info = await client.retrying(lambda: client.compile_spec(spec, open_session=True))
        assert info.session_id is not None
        return cls(client, spec, info, info.session_id)

    async def replay(self) -> None:
        """See :meth:`RemoteGrammar.replay`."""
        info = await self.client.compile_spec(self.spec, open_session=True)
        assert info.session_id is not None
        for i in range(0, len(self.tokens), _REPLAY_CHUNK):
            await self.client.accept(info.session_id, self.tokens[i : i + _REPLAY_CHUNK])
        self.program, self.session_id, self._lost = info, info.session_id, False
        self.client.replays += 1

    async def _call(self, fn: Callable[[], Awaitable[_T]]) -> _T:
        async def attempt() -> _T:
            if self._lost:
                await self.replay()
            return await fn()

        def lost() -> None:
            self._lost = True

        return await self.client.retrying(attempt, on_failure=lost)

    async def accept_tokens(self, tokens: Sequence[int]) -> bool:
        """See :meth:`RemoteGrammar.accept_tokens`."""
        tokens = [int(t) for t in tokens]
        try:
            result = await self._call(lambda: self.client.accept(self.session_id, tokens))
        except RemoteError as e:
            if e.code in _REFUSED:
                return False
            raise
        self._update(result.terminated, result.variables)
        self.tokens.extend(tokens)
        return True

    async def validate_tokens(self, tokens: Sequence[int]) -> list[int]:
        """See :meth:`RemoteGrammar.validate_tokens`."""
        tokens = [int(t) for t in tokens]
        try:
            result = await self._call(lambda: self.client.accept(self.session_id, tokens, dry_run=True))
            return tokens[: result.accepted]
        except RemoteError as e:
            if e.code == "token-out-of-range" and e.index is not None:
                return tokens[: e.index]
            raise

    async def rollback(self, num_tokens: int) -> None:
        """See :meth:`RemoteGrammar.rollback`."""
        info = await self._call(lambda: self.client.rollback(self.session_id, num_tokens))
        self.tokens = info.tokens
        self._update(info.terminated, info.variables)

    async def fill_next_token_bitmask(self, bitmask: NDArray[np.int32], idx: int = 0) -> None:
        """See :meth:`RemoteGrammar.fill_next_token_bitmask`."""
        await self._call(lambda: self.client.mask(self.session_id, bitmask, idx))

    async def reset(self) -> None:
        """See :meth:`RemoteGrammar.reset`."""
        if self.tokens:
            await self.rollback(len(self.tokens))

    async def fork(self) -> AsyncRemoteGrammar:
        """See :meth:`RemoteGrammar.fork`."""
        sid = await self._call(lambda: self.client.fork(self.session_id))
        return AsyncRemoteGrammar(
            self.client, self.spec, self.program, sid, self.tokens, self._terminated, self._variables
        )

    async def close(self) -> None:
        """See :meth:`RemoteGrammar.close`."""
        try:
            await self.client.delete(self.session_id)
        except (RemoteError, httpx.TransportError) as e:
            if not _retryable(e):
                raise



# -- batches: one round trip per decoding step --------------------------------------------------


class _StepPlan:
    """The sans-I/O part of a batched step with replay: which grammars still need an answer.

    A step goes out for every pending grammar; answers for sessions the server lost (unknown or
    expired: a restarted or different replica) mark those grammars lost and pending again, so
    they are replayed and stepped alone. Tokens are applied exactly once per grammar.
    """

    def __init__(
        self,
        grammars: Sequence[RemoteGrammar | AsyncRemoteGrammar],
        tokens: Sequence[Sequence[int]],
        bitmask: NDArray[np.int32] | None,
    ) -> None:
        if len(tokens) != len(grammars):
            raise ValueError(f"{len(tokens)} token lists for {len(grammars)} grammars")
        self.grammars = grammars
        self.tokens = [[int(t) for t in ts] for ts in tokens]
        self.bitmask = bitmask
        self.pending = list(range(len(grammars)))
        self.statuses: list[StepStatus | None] = [None] * len(grammars)

    def items(self) -> list[tuple[Any, ...]]:
        return [(self.grammars[i].session_id, self.tokens[i]) for i in self.pending]

    def lost(self) -> list[int]:
        return [i for i in self.pending if self.grammars[i]._lost]

    def fail_all(self) -> None:
        for i in self.pending:
            self.grammars[i]._lost = True

    def apply(self, result: StepResult) -> None:
        """Take the answers; grammars whose session was gone stay pending (and marked lost)."""
        still: list[int] = []
        masks = result.masks
        words = masks.shape[1]
        if self.bitmask is not None and self.bitmask.shape[1] < words:
            raise ValueError(f"bitmask rows have {self.bitmask.shape[1]} words, the masks have {words}")
        done_rows: list[int] = []
        done_src: list[int] = []
        for i, st in zip(self.pending, result.statuses):
            g = self.grammars[i]
            if st.status == "error" and st.error is not None and st.error.get("code") in _GONE:
                g._lost = True
                still.append(i)
                continue
            if st.status == "ok":
                g.tokens.extend(self.tokens[i])
            if st.status != "error":
                g._terminated = st.terminated
                if st.variables is not None:
                    g._variables = dict(st.variables)
            self.statuses[i] = st
            done_rows.append(i)
            done_src.append(st.row)
        if self.bitmask is not None and done_rows:
            n = len(done_rows)
            if done_rows == done_src == list(range(n)):  # the usual step: one contiguous copy
                self.bitmask[:n, :words] = masks[:n]
                self.bitmask[:n, words:] = 0
            else:
                self.bitmask[done_rows, :words] = masks[done_src]
                self.bitmask[done_rows, words:] = 0
        self.pending = still

    def result(self) -> list[StepStatus]:
        assert not self.pending
        return [st for st in self.statuses if st is not None]


class _Batch(Generic[_Client, _Grammar]):
    """What both batch classes hold: a client, the batch's grammars, the step's options."""

    def __init__(
        self,
        client: _Client,
        grammars: Sequence[_Grammar],
        *,
        variables: bool = False,
        mask_encoding: MaskEncoding = "dense",
        forced_tokens: bool = True,
    ) -> None:
        self.client: _Client = client
        self.grammars: list[_Grammar] = list(grammars)
        self.variables = variables
        self.mask_encoding: MaskEncoding = mask_encoding
        self.forced_tokens = forced_tokens

    def _options(self) -> dict[str, Any]:
        return {"variables": self.variables, "mask_encoding": self.mask_encoding, "forced_tokens": self.forced_tokens}


class GrammarBatch(_Batch["GuidanceClient", "RemoteGrammar"]):
    """The sequences of one decoding batch: one ``POST /step`` per step for all of them.

    Row ``i`` of the bitmask belongs to ``grammars[i]``. :meth:`submit` sends a step in the
    background and returns a future, so a worker can send step t's tokens, run its forward pass,
    and only then wait for step t+1's masks (pipelining). Lost sessions are replayed as in
    :class:`RemoteGrammar`, and their part of the step is sent again; nothing is applied twice.

    Args:
        client: the client of the server (or balancer) holding the sessions.
        grammars: the batch's grammars.
        variables: ask for captured variables at every step.
        mask_encoding: how the masks travel: ``"dense"`` (the default) or ``"blocks"``
            (block-sparse: about a fifth of the bytes for a JSON schema's masks, for links where
            bandwidth counts; over loopback encoding and decoding cost more than the bytes saved).
        forced_tokens: have the server compute each sequence's forced tokens at every step
            (``StepStatus.forced_tokens``); ``False`` saves it an llguidance call per sequence.
    """

    _pool: ThreadPoolExecutor | None = None

    def step(self, tokens: Sequence[Sequence[int]], bitmask: NDArray[np.int32] | None = None) -> list[StepStatus]:
        """Accept ``tokens[i]`` into grammar i (possibly none) and fill every mask into ``bitmask``."""
        plan = _StepPlan(self.grammars, tokens, bitmask)

        def attempt() -> None:
            for i in plan.lost():
                self.grammars[i].replay()
            plan.apply(self.client.step(plan.items(), **self._options()))
            if plan.pending:
                raise RemoteError(404, {"code": "session-not-found", "detail": "sessions lost; replaying"})

        self.client.retrying(attempt, on_failure=plan.fail_all)
        return plan.result()

    def submit(self, tokens: Sequence[Sequence[int]], bitmask: NDArray[np.int32]) -> Future[list[StepStatus]]:
        """:meth:`step` in the background; do not read ``bitmask`` before the future is done."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="guidance-step")
        return self._pool.submit(self.step, [list(t) for t in tokens], bitmask)

    def close(self) -> None:
        """Stop the background sender (the sessions stay open)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


class AsyncGrammarBatch(_Batch["AsyncGuidanceClient", "AsyncRemoteGrammar"]):
    """:class:`GrammarBatch` for asyncio; pipeline with ``asyncio.create_task(batch.step(...))``."""

    async def step(self, tokens: Sequence[Sequence[int]], bitmask: NDArray[np.int32] | None = None) -> list[StepStatus]:
        """See :meth:`GrammarBatch.step`."""
        plan = _StepPlan(self.grammars, tokens, bitmask)

        async def attempt() -> None:
            for i in plan.lost():
                await self.grammars[i].replay()
            plan.apply(await self.client.step(plan.items(), **self._options()))
            if plan.pending:
                raise RemoteError(404, {"code": "session-not-found", "detail": "sessions lost; replaying"})

        await self.client.retrying(attempt, on_failure=plan.fail_all)
        return plan.result()
