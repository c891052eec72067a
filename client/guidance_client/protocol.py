"""The client without I/O: requests built, answers parsed, retries decided.

Nothing here touches a socket. Each API call is a function returning a :class:`Request` (method,
path, body, headers, and how to parse the answer); a transport sends it and gives back an
:class:`Answer`; ``request.parse(answer)`` turns that into the call's result or raises
:class:`~guidance_client.errors.RemoteError`. The sync and async clients
(:mod:`guidance_client._async.client`, and the sync module generated from it) only move
requests through their transport and retry.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, NamedTuple, TypeVar
from urllib.parse import quote

import numpy as np
from numpy.typing import NDArray

from guidance_client import wire
from guidance_client.errors import GuidanceClientError, ProtocolError, RemoteError, TransportError
from guidance_client.events import EventReader, SessionEvent, watch_headers, watch_path
from guidance_client.specs import program_spec

__all__ = [
    "AUTHORIZATION_HEADER",
    "AcceptResult",
    "Answer",
    "EventReader",
    "GONE",
    "ProgramInfo",
    "REFUSED",
    "REPLAY_CHUNK",
    "Request",
    "SessionEvent",
    "SessionInfo",
    "StepResult",
    "StepStatus",
    "WORKER_HEADER",
    "accept",
    "base_headers",
    "check",
    "compile_program",
    "create_session",
    "delay",
    "delete",
    "detokenize",
    "fork",
    "get",
    "mask",
    "parse_step",
    "program_spec",
    "ready",
    "retryable",
    "rollback",
    "stats",
    "step",
    "tokenize",
    "tokenizers",
    "watch_headers",
    "watch_path",
]

_T = TypeVar("_T")

WORKER_HEADER = "X-Worker-Id"
"""The header a balancer hashes on to keep a worker's sessions on one replica."""

AUTHORIZATION_HEADER = "Authorization"
"""Carries ``Bearer <api_key>`` on every request when the client has a key."""

# Codes for which accept_tokens answers False (like core's GuidanceGrammar) rather than raising.
REFUSED = ("token-rejected", "token-out-of-range")
# Codes meaning the server does not hold the session (a restarted or different replica): replay.
GONE = ("session-not-found", "session-expired")
REPLAY_CHUNK = 1024  # tokens per accept while replaying (below the server's per-accept limit)

_JSON = {"content-type": "application/json"}
_STEP_HEADERS = {"content-type": "application/json", "accept": wire.STEP_MEDIA_TYPE}
_MASK_HEADERS = {"accept": wire.MASK_MEDIA_TYPE}
_NO_HEADERS: dict[str, str] = {}


def base_headers(worker_id: str | None = None, api_key: str | None = None) -> dict[str, str]:
    """The headers every request of a client carries (worker id, API key)."""
    headers: dict[str, str] = {}
    if worker_id:
        headers[WORKER_HEADER] = worker_id
    if api_key:
        headers[AUTHORIZATION_HEADER] = f"Bearer {api_key}"
    return headers


# -- answers -----------------------------------------------------------------------------------


class Answer(NamedTuple):
    """An HTTP answer as a transport hands it over: status, lower-cased headers, body."""

    status: int
    headers: Mapping[str, str]
    body: bytes


def check(answer: Answer) -> bytes:
    """The body of a successful answer; raises :class:`RemoteError` for an error answer."""
    if answer.status < 400:
        return answer.body
    problem: Any = {}
    if "json" in answer.headers.get("content-type", ""):
        try:
            problem = json.loads(answer.body)
        except ValueError:
            problem = {}
    if not isinstance(problem, dict):
        problem = {}
    problem.setdefault("detail", answer.body[:200].decode("utf-8", "replace"))
    if "retry_after" not in problem and "retry-after" in answer.headers:
        try:
            problem["retry_after"] = float(answer.headers["retry-after"])
        except ValueError:
            pass
    raise RemoteError(answer.status, problem)


def _json(answer: Answer) -> Any:
    body = check(answer)
    if not body:
        return None
    try:
        return json.loads(body)
    except ValueError as e:
        raise ProtocolError(f"answer is not JSON: {body[:80]!r}") from e


@dataclass(frozen=True, slots=True)
class Request(Generic[_T]):
    """One API call, ready for a transport.

    Attributes:
        method: the HTTP method.
        path: the path below the client's base URL.
        body: the body, if any.
        headers: the call's own headers (the client adds its own to every request).
        parse: turns the answer into the call's result (raising :class:`RemoteError`).
        hot: a decode-loop call (``/step``, masks), sent through the fast keep-alive path.
    """

    method: str
    path: str
    body: bytes | None
    headers: Mapping[str, str]
    parse: Callable[[Answer], _T]
    hot: bool = False


def _json_request(method: str, path: str, body: Any, parse: Callable[[Any], _T]) -> Request[_T]:
    content = None if body is None else json.dumps(body, separators=(",", ":")).encode()
    return Request(method, path, content, _JSON if content is not None else _NO_HEADERS, lambda a: parse(_json(a)))


# -- results -----------------------------------------------------------------------------------


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
    partial: dict[str, Any] | None = None  # every capture so far, when asked for
    eos_token_id: int | None = None  # the end token that terminated the session, if it has


@dataclass(frozen=True)
class SessionInfo:
    """A session's state (``GET /sessions/{id}``, rollback)."""

    program_id: str
    tokens: list[int]
    text: str
    variables: dict[str, Any]
    terminated: bool
    accepting: bool
    partial: dict[str, Any] | None = None  # every capture so far, when asked for


@dataclass(slots=True)
class StepStatus:
    """One session's answer in a batched step.

    Attributes:
        session_id: the session.
        status: ``ok`` (tokens accepted), ``rejected`` (a token refused; the session is
            unchanged) or ``error`` (see ``error``: unknown or expired session, invalid ids...).
        accepted: tokens accepted (0 unless ``ok``).
        terminated: the session accepted one of its tokenizer's end tokens.
        accepting: an end token is allowed now.
        forced_tokens: tokens the constraint forces next (empty if the step did not ask for them).
        row: the session's first mask row; ``rows``: its rows (1 + draft tokens).
        index: for ``rejected``, the position of the refused token.
        variables: captured values, when asked for.
        error: for ``error``, the problem document.
        partial: with ``variables="partial"``, every capture so far: ``{name: {"value",
            "complete", ...}}``, the ones still being generated with their text so far.
        eos_token_id: the end token that terminated the session, or None.
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
    partial: dict[str, Any] | None = None
    eos_token_id: int | None = None


@dataclass(frozen=True)
class StepResult:
    """A batched step's answer: a status per session and the masks, ``[rows, mask_words]`` int32."""

    statuses: list[StepStatus]
    masks: NDArray[np.int32]
    vocab_size: int


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
        partial=data.get("partial"),
        eos_token_id=data.get("eos_token_id"),
    )


def _session(data: Mapping[str, Any]) -> SessionInfo:
    return SessionInfo(
        program_id=data["program_id"],
        tokens=list(data["tokens"]),
        text=data["text"],
        variables=dict(data["variables"]),
        terminated=data["terminated"],
        accepting=data["accepting"],
        partial=data.get("partial"),
    )


def parse_step(answer: Answer) -> StepResult:
    """A ``/step`` answer as a :class:`StepResult` (raises :class:`RemoteError` for a problem)."""
    try:
        header, masks = wire.read_step(check(answer))
    except ValueError as e:
        raise ProtocolError(str(e)) from e
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
            get(s, "partial"),
            get(s, "eos_token_id"),
        )
        for s in header["sessions"]
    ]
    return StepResult(statuses, masks, int(header["vocab_size"]))


def _write_mask(content: bytes, out: NDArray[np.int32] | None, row: int) -> NDArray[np.int32]:
    words = np.frombuffer(content, dtype=wire.WIRE_DTYPE)
    if out is None:
        return words.astype(np.int32)  # a writable, native-order copy
    target: NDArray[np.int32] = out[row]
    if target.shape[0] < words.shape[0]:
        raise ValueError(f"bitmask rows have {target.shape[0]} words, the mask has {words.shape[0]}")
    target[: words.shape[0]] = words
    target[words.shape[0] :] = 0
    return target


# -- requests ----------------------------------------------------------------------------------


def _sid(session_id: str) -> str:
    return "/sessions/" + quote(session_id, safe="")


def compile_program(spec: Mapping[str, Any], open_session: bool = False) -> Request[ProgramInfo]:
    """``POST /compile`` of a compile body (see :func:`program_spec`)."""
    body = dict(spec)
    if open_session:
        body["open_session"] = True
    return _json_request("POST", "/compile", body, _program)


def create_session(program_id: str | None = None, spec: Mapping[str, Any] | None = None) -> Request[str]:
    """``POST /sessions`` on a compiled program, or on a compile body."""
    body = {"program_id": program_id} if program_id is not None else dict(spec or {})
    return _json_request("POST", "/sessions", body, lambda d: str(d["session_id"]))


def accept(
    session_id: str, tokens: Sequence[int], dry_run: bool = False, partial: bool = False
) -> Request[AcceptResult]:
    """``POST /sessions/{id}/accept`` (``partial``: the answer has every capture's partial value)."""
    body: dict[str, Any] = {"tokens": [int(t) for t in tokens]}
    if dry_run:
        body["dry_run"] = True
    if partial:
        body["partial"] = True
    return _json_request("POST", _sid(session_id) + "/accept", body, _accepted)


def mask(session_id: str, out: NDArray[np.int32] | None = None, row: int = 0) -> Request[NDArray[np.int32]]:
    """``GET /sessions/{id}/mask``, written into ``out[row]`` if given, else a new row."""
    return Request(
        "GET", _sid(session_id) + "/mask", None, _MASK_HEADERS, lambda a: _write_mask(check(a), out, row), hot=True
    )


def rollback(session_id: str, num_tokens: int) -> Request[SessionInfo]:
    """``POST /sessions/{id}/rollback``."""
    return _json_request("POST", _sid(session_id) + "/rollback", {"tokens": int(num_tokens)}, _session)


def fork(session_id: str) -> Request[str]:
    """``POST /sessions/{id}/fork``: the new session's id."""
    return _json_request("POST", _sid(session_id) + "/fork", None, lambda d: str(d["session_id"]))


def get(session_id: str, partial: bool = False) -> Request[SessionInfo]:
    """``GET /sessions/{id}`` (``partial``: with every capture's partial value)."""
    return _json_request("GET", _sid(session_id) + ("?partial=true" if partial else ""), None, _session)


def delete(session_id: str) -> Request[None]:
    """``DELETE /sessions/{id}``."""
    return Request("DELETE", _sid(session_id), None, _NO_HEADERS, _nothing)


def _nothing(answer: Answer) -> None:
    check(answer)


def step(
    items: Sequence[tuple[Any, ...]],
    variables: bool | str = False,
    mask_encoding: wire.MaskEncoding = "dense",
    forced_tokens: bool = True,
) -> Request[StepResult]:
    """``POST /step``; ``items`` are ``(session_id, tokens[, draft_tokens])``."""
    body = wire.step_request(items, variables, mask_encoding, forced_tokens)
    return Request("POST", "/step", body, _STEP_HEADERS, parse_step, hot=True)


def _tok_body(key: str, value: Any, tokenizer: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {key: value}
    if tokenizer is not None:
        body["tokenizer"] = tokenizer
    return body


def tokenize(text: str, tokenizer: str | None = None) -> Request[list[int]]:
    """``POST /tokenize``."""
    return _json_request("POST", "/tokenize", _tok_body("text", text, tokenizer), lambda d: list(d["tokens"]))


def detokenize(tokens: Sequence[int], tokenizer: str | None = None) -> Request[str]:
    """``POST /detokenize``."""
    body = _tok_body("tokens", [int(t) for t in tokens], tokenizer)
    return _json_request("POST", "/detokenize", body, lambda d: str(d["text"]))


def tokenizers() -> Request[list[dict[str, Any]]]:
    """``GET /tokenizers``."""
    return _json_request("GET", "/tokenizers", None, lambda d: list(d["tokenizers"]))


def stats() -> Request[dict[str, Any]]:
    """``GET /stats``."""
    return _json_request("GET", "/stats", None, dict)


def ready() -> Request[bool]:
    """``GET /readyz``: whether it answers 200."""
    return Request("GET", "/readyz", None, _NO_HEADERS, lambda a: a.status == 200)


# -- retries -----------------------------------------------------------------------------------


def retryable(e: BaseException) -> bool:
    """Failures after which a session is rebuilt from its spec and tokens (replay).

    A lost connection, a session the server does not know (a restarted or different replica),
    or a gateway/unavailable answer (a dead or draining replica behind a balancer).
    """
    if isinstance(e, TransportError):
        return True
    return isinstance(e, RemoteError) and (e.code in GONE or e.status in (502, 503, 504))


MAX_DELAY_SECONDS = 4.0


def delay(backoff: float, attempt: int, e: GuidanceClientError) -> float:
    """Exponential backoff capped at 4 s, at least what a 429/503 ``Retry-After`` asked (capped at 5 s).

    With the clients' defaults (10 retries from 0.05 s) a grammar waits out about 18 s: enough for
    a lone server that crashed to be restarted by its supervisor (2 to 6 s measured, more on a
    loaded machine).
    """
    seconds = min(backoff * float(2**attempt), MAX_DELAY_SECONDS)
    if isinstance(e, RemoteError) and e.retry_after:
        seconds = max(seconds, min(e.retry_after, 5.0))
    return seconds
