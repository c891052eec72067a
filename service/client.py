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

import http.client
import json
import struct
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import httpx
import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from typing import Self  # annotations only: the client also runs on Python 3.10

__all__ = [
    "AcceptResult",
    "AsyncGuidanceClient",
    "AsyncGrammarBatch",
    "AsyncRemoteGrammar",
    "GrammarBatch",
    "GuidanceClient",
    "ProgramInfo",
    "RemoteError",
    "RemoteGrammar",
    "SessionInfo",
    "StepResult",
    "StepStatus",
    "program_spec",
]

_WIRE = np.dtype("<i4")
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

    def __init__(self, base_url: str, timeout: float) -> None:
        url = urlsplit(base_url)
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
                conn.request(method, self._prefix + path, body=body, headers=dict(headers))
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


@dataclass(frozen=True)
class StepStatus:
    """One session's answer in a batched step.

    Attributes:
        session_id: the session.
        status: ``ok`` (tokens accepted), ``rejected`` (a token refused; the session is
            unchanged) or ``error`` (see ``error``: unknown or expired session, invalid ids...).
        accepted: tokens accepted (0 unless ``ok``).
        terminated: the session accepted EOS.
        accepting: EOS is allowed now.
        forced_tokens: tokens the constraint forces next.
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


def _step_body(items: Sequence[tuple[Any, ...]], variables: bool) -> bytes:
    sessions = []
    for item in items:
        entry: dict[str, Any] = {"session_id": item[0], "tokens": [int(t) for t in item[1]]}
        if len(item) > 2 and item[2]:
            entry["draft_tokens"] = [int(t) for t in item[2]]
        sessions.append(entry)
    return json.dumps({"sessions": sessions, "variables": variables}, separators=(",", ":")).encode()


def _parse_step(content: bytes) -> StepResult:
    (length,) = struct.unpack_from("<I", content, 0)
    header = json.loads(content[4 : 4 + length])
    words = int(header["mask_words"])
    masks: NDArray[np.int32] = np.frombuffer(content, dtype=_WIRE, offset=4 + length).reshape(-1, words)
    statuses = [
        StepStatus(
            session_id=s["session_id"],
            status=s["status"],
            accepted=int(s.get("accepted", 0)),
            terminated=bool(s.get("terminated", False)),
            accepting=bool(s.get("accepting", False)),
            forced_tokens=list(s.get("forced_tokens", ())),
            row=int(s["row"]),
            rows=int(s["rows"]),
            index=s.get("index"),
            variables=s.get("variables"),
            error=s.get("error"),
        )
        for s in header["sessions"]
    ]
    return StepResult(statuses, masks, int(header["vocab_size"]))


_STEP_HEADERS = {"content-type": "application/json", "accept": "application/vnd.guidance.step"}
_MASK_HEADERS = {"accept": "application/octet-stream"}


# -- the sync client ---------------------------------------------------------------------------


class GuidanceClient:
    """A synchronous client of one server.

    Args:
        base_url: the server, e.g. ``http://127.0.0.1:8000``.
        timeout: seconds per request.
        http: an ``httpx.Client`` to use instead of making one (its ``base_url`` applies).
    """

    def __init__(
        self, base_url: str = "http://127.0.0.1:8000", timeout: float = 30.0, *, http: httpx.Client | None = None
    ) -> None:
        self._owns = http is None
        self.http = http if http is not None else httpx.Client(base_url=base_url, timeout=timeout)
        # the decode-loop endpoints use the stdlib (see _HotPath); a caller's own httpx client
        # (a custom transport, in tests) is used for everything
        self._hot = _HotPath(base_url, timeout) if http is None else None

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
    def step(self, items: Sequence[tuple[Any, ...]], *, variables: bool = False) -> StepResult:
        """One batched step; ``items`` are ``(session_id, tokens[, draft_tokens])`` (``POST /step``)."""
        body = _step_body(items, variables)
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


class RemoteGrammar:
    """A ``core.GuidanceGrammar`` whose state lives on the server.

    Keeps the program spec and the tokens accepted so far, which is everything needed to
    re-create the session on another replica.

    Attributes:
        spec: the compile body of the program.
        program: the compiled program's description.
        session_id: the server-side session.
        tokens: tokens accepted so far.
    """

    def __init__(
        self,
        client: GuidanceClient,
        spec: Mapping[str, Any],
        program: ProgramInfo,
        session_id: str,
        tokens: Sequence[int] = (),
        terminated: bool = False,
        variables: Mapping[str, Any] | None = None,
    ) -> None:
        self.client = client
        self.spec = dict(spec)
        self.program = program
        self.session_id = session_id
        self.tokens = list(tokens)
        self._terminated = terminated
        self._variables = dict(variables or {})

    @classmethod
    def open(cls, client: GuidanceClient, spec: Mapping[str, Any]) -> RemoteGrammar:
        """Compile ``spec`` and open a session on it."""
        info = client.compile_spec(spec, open_session=True)
        assert info.session_id is not None
        return cls(client, spec, info, info.session_id)

    @property
    def vocab_size(self) -> int:
        return self.program.vocab_size

    @property
    def mask_words(self) -> int:
        return self.program.mask_words

    def accept_tokens(self, tokens: Sequence[int]) -> bool:
        """Advance by ``tokens``; False, with nothing changed, if any is not allowed."""
        tokens = [int(t) for t in tokens]
        try:
            result = self.client.accept(self.session_id, tokens)
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
            return tokens[: self.client.accept(self.session_id, tokens, dry_run=True).accepted]
        except RemoteError as e:
            if e.code == "token-out-of-range" and e.index is not None:
                return tokens[: e.index]
            raise

    def rollback(self, num_tokens: int) -> None:
        """Undo the last ``num_tokens`` tokens."""
        info = self.client.rollback(self.session_id, num_tokens)
        self.tokens = info.tokens
        self._update(info.terminated, info.variables)

    def fill_next_token_bitmask(self, bitmask: NDArray[np.int32], idx: int = 0) -> None:
        """Write the allowed next tokens into row ``idx`` of an int32 ``[batch, words]`` array."""
        self.client.mask(self.session_id, bitmask, idx)

    def is_terminated(self) -> bool:
        """True once EOS has been accepted."""
        return self._terminated

    def reset(self) -> None:
        """Back to the start of the program."""
        if self.tokens:
            self.rollback(len(self.tokens))

    def get_variable_values(self) -> dict[str, Any]:
        """The values captured so far, by name."""
        return dict(self._variables)

    def fork(self) -> RemoteGrammar:
        """An independent copy at the same position (a new server-side session)."""
        sid = self.client.fork(self.session_id)
        return RemoteGrammar(self.client, self.spec, self.program, sid, self.tokens, self._terminated, self._variables)

    def close(self) -> None:
        """Close the server-side session (already gone is fine)."""
        try:
            self.client.delete(self.session_id)
        except RemoteError as e:
            if e.code not in _GONE:
                raise

    def _update(self, terminated: bool, variables: Mapping[str, Any]) -> None:
        self._terminated = terminated
        self._variables = dict(variables)


# -- the async client --------------------------------------------------------------------------


class AsyncGuidanceClient:
    """An asyncio client of one server; the methods of :class:`GuidanceClient`, awaited.

    Args:
        base_url: the server, e.g. ``http://127.0.0.1:8000``.
        timeout: seconds per request.
        http: an ``httpx.AsyncClient`` to use instead of making one (its ``base_url`` applies).
    """

    def __init__(
        self, base_url: str = "http://127.0.0.1:8000", timeout: float = 30.0, *, http: httpx.AsyncClient | None = None
    ) -> None:
        self._owns = http is None
        self.http = http if http is not None else httpx.AsyncClient(base_url=base_url, timeout=timeout)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections (when this client made them)."""
        if self._owns:
            await self.http.aclose()

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

    async def step(self, items: Sequence[tuple[Any, ...]], *, variables: bool = False) -> StepResult:
        """See :meth:`GuidanceClient.step`."""
        resp = _check(await self.http.post("/step", content=_step_body(items, variables), headers=_STEP_HEADERS))
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


class AsyncRemoteGrammar:
    """:class:`RemoteGrammar` for asyncio: the same methods, awaited (``is_terminated``,
    ``get_variable_values`` and the properties are local and stay plain)."""

    def __init__(
        self,
        client: AsyncGuidanceClient,
        spec: Mapping[str, Any],
        program: ProgramInfo,
        session_id: str,
        tokens: Sequence[int] = (),
        terminated: bool = False,
        variables: Mapping[str, Any] | None = None,
    ) -> None:
        self.client = client
        self.spec = dict(spec)
        self.program = program
        self.session_id = session_id
        self.tokens = list(tokens)
        self._terminated = terminated
        self._variables = dict(variables or {})

    @classmethod
    async def open(cls, client: AsyncGuidanceClient, spec: Mapping[str, Any]) -> AsyncRemoteGrammar:
        """Compile ``spec`` and open a session on it."""
        info = await client.compile_spec(spec, open_session=True)
        assert info.session_id is not None
        return cls(client, spec, info, info.session_id)

    @property
    def vocab_size(self) -> int:
        return self.program.vocab_size

    @property
    def mask_words(self) -> int:
        return self.program.mask_words

    async def accept_tokens(self, tokens: Sequence[int]) -> bool:
        """See :meth:`RemoteGrammar.accept_tokens`."""
        tokens = [int(t) for t in tokens]
        try:
            result = await self.client.accept(self.session_id, tokens)
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
            return tokens[: (await self.client.accept(self.session_id, tokens, dry_run=True)).accepted]
        except RemoteError as e:
            if e.code == "token-out-of-range" and e.index is not None:
                return tokens[: e.index]
            raise

    async def rollback(self, num_tokens: int) -> None:
        """See :meth:`RemoteGrammar.rollback`."""
        info = await self.client.rollback(self.session_id, num_tokens)
        self.tokens = info.tokens
        self._update(info.terminated, info.variables)

    async def fill_next_token_bitmask(self, bitmask: NDArray[np.int32], idx: int = 0) -> None:
        """See :meth:`RemoteGrammar.fill_next_token_bitmask`."""
        await self.client.mask(self.session_id, bitmask, idx)

    def is_terminated(self) -> bool:
        """True once EOS has been accepted."""
        return self._terminated

    async def reset(self) -> None:
        """See :meth:`RemoteGrammar.reset`."""
        if self.tokens:
            await self.rollback(len(self.tokens))

    def get_variable_values(self) -> dict[str, Any]:
        """The values captured so far, by name."""
        return dict(self._variables)

    async def fork(self) -> AsyncRemoteGrammar:
        """See :meth:`RemoteGrammar.fork`."""
        sid = await self.client.fork(self.session_id)
        return AsyncRemoteGrammar(
            self.client, self.spec, self.program, sid, self.tokens, self._terminated, self._variables
        )

    async def close(self) -> None:
        """See :meth:`RemoteGrammar.close`."""
        try:
            await self.client.delete(self.session_id)
        except RemoteError as e:
            if e.code not in _GONE:
                raise

    def _update(self, terminated: bool, variables: Mapping[str, Any]) -> None:
        self._terminated = terminated
        self._variables = dict(variables)


# -- batches: one round trip per decoding step --------------------------------------------------


def _apply_step(
    grammars: Sequence[RemoteGrammar | AsyncRemoteGrammar],
    tokens: Sequence[Sequence[int]],
    result: StepResult,
    bitmask: NDArray[np.int32] | None,
) -> list[StepStatus]:
    """Update each grammar from its status and copy the masks into ``bitmask`` (row i = grammar i)."""
    for g, sent, st in zip(grammars, tokens, result.statuses):
        if st.status == "ok":
            g.tokens.extend(int(t) for t in sent)
        if st.status != "error":
            g._update(st.terminated, st.variables if st.variables is not None else g._variables)
    if bitmask is not None:
        masks = result.masks
        words = masks.shape[1]
        if bitmask.shape[1] < words:
            raise ValueError(f"bitmask rows have {bitmask.shape[1]} words, the masks have {words}")
        if masks.shape[0] == len(grammars):
            bitmask[: len(grammars), :words] = masks  # the common case: one vectorised copy
        else:
            for i, st in enumerate(result.statuses):
                bitmask[i, :words] = masks[st.row]
        bitmask[: len(grammars), words:] = 0
    return result.statuses


class GrammarBatch:
    """The sequences of one decoding batch: one ``POST /step`` per step for all of them.

    Row ``i`` of the bitmask belongs to ``grammars[i]``. :meth:`submit` sends a step in the
    background and returns a future, so a worker can send step t's tokens, run its forward pass,
    and only then wait for step t+1's masks (pipelining).

    Args:
        client: the client of the server holding the sessions.
        grammars: the batch's grammars (their sessions must all live on that server).
        variables: ask for captured variables at every step.
    """

    def __init__(self, client: GuidanceClient, grammars: Sequence[RemoteGrammar], *, variables: bool = False) -> None:
        self.client = client
        self.grammars = list(grammars)
        self.variables = variables
        self._pool: ThreadPoolExecutor | None = None

    def step(self, tokens: Sequence[Sequence[int]], bitmask: NDArray[np.int32] | None = None) -> list[StepStatus]:
        """Accept ``tokens[i]`` into grammar i (possibly none) and fill every mask into ``bitmask``."""
        if len(tokens) != len(self.grammars):
            raise ValueError(f"{len(tokens)} token lists for {len(self.grammars)} grammars")
        items = [(g.session_id, t) for g, t in zip(self.grammars, tokens)]
        result = self.client.step(items, variables=self.variables)
        return _apply_step(self.grammars, tokens, result, bitmask)

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


class AsyncGrammarBatch:
    """:class:`GrammarBatch` for asyncio; pipeline with ``asyncio.create_task(batch.step(...))``."""

    def __init__(
        self, client: AsyncGuidanceClient, grammars: Sequence[AsyncRemoteGrammar], *, variables: bool = False
    ) -> None:
        self.client = client
        self.grammars = list(grammars)
        self.variables = variables

    async def step(self, tokens: Sequence[Sequence[int]], bitmask: NDArray[np.int32] | None = None) -> list[StepStatus]:
        """See :meth:`GrammarBatch.step`."""
        if len(tokens) != len(self.grammars):
            raise ValueError(f"{len(tokens)} token lists for {len(self.grammars)} grammars")
        items = [(g.session_id, t) for g, t in zip(self.grammars, tokens)]
        result = await self.client.step(items, variables=self.variables)
        return _apply_step(self.grammars, tokens, result, bitmask)
