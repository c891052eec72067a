"""The client without I/O: requests, answers, the retry policy and the batched step plan."""

from __future__ import annotations

import json

import numpy as np
import pytest

from guidance_client import ProtocolError, RemoteError, TimeoutError, TransportError, protocol
from guidance_client.protocol import Answer, ProgramInfo, StepResult, StepStatus
from guidance_client.replay import GrammarState, StepPlan

_PROGRAM = ProgramInfo("p", False, 64, 2, [], 0.0, "s0")


def test_requests_carry_method_path_and_body() -> None:
    req = protocol.accept("a/b c", [1, np.int64(2)], dry_run=True)
    assert (req.method, req.path, req.hot) == ("POST", "/sessions/a%2Fb%20c/accept", False)
    assert req.body is not None and json.loads(req.body) == {"tokens": [1, 2], "dry_run": True}
    assert req.headers["content-type"] == "application/json"
    mask = protocol.mask("s")
    assert (mask.method, mask.path, mask.body, mask.hot) == ("GET", "/sessions/s/mask", None, True)
    step = protocol.step([("s", [3])], mask_encoding="blocks")
    assert step.hot and step.headers["accept"] == "application/vnd.guidance.step"
    assert step.body is not None and json.loads(step.body)["mask_encoding"] == "blocks"
    compiled = protocol.compile_program({"regex": "a"}, open_session=True)
    assert compiled.body is not None and json.loads(compiled.body) == {"regex": "a", "open_session": True}


def test_every_request_carries_the_worker_id_and_the_api_key() -> None:
    assert protocol.base_headers() == {}
    assert protocol.base_headers("w1", "k1") == {"X-Worker-Id": "w1", "Authorization": "Bearer k1"}


def test_answers_parse_into_results() -> None:
    body = b'{"accepted":2,"terminated":false,"accepting":true,"forced_tokens":[5],"variables":{"a":"1"}}'
    result = protocol.accept("s", [1, 2]).parse(Answer(200, {"content-type": "application/json"}, body))
    assert (result.accepted, result.accepting, result.forced_tokens, result.variables) == (2, True, [5], {"a": "1"})
    row = protocol.mask("s").parse(Answer(200, {}, bytes([1, 0, 0, 0, 0, 0, 0, 0x80])))
    assert row.tolist() == [1, -(2**31)] and row.flags.writeable
    out = np.full((2, 3), 7, dtype=np.int32)
    protocol.mask("s", out, 1).parse(Answer(200, {}, bytes(8)))
    assert out.tolist() == [[7, 7, 7], [0, 0, 0]]  # the row's words past the mask are cleared
    with pytest.raises(ValueError):
        protocol.mask("s", np.zeros((1, 1), dtype=np.int32)).parse(Answer(200, {}, bytes(8)))
    assert protocol.ready().parse(Answer(200, {}, b"")) and not protocol.ready().parse(Answer(503, {}, b""))
    assert protocol.delete("s").parse(Answer(204, {}, b"")) is None


def test_error_answers_raise_the_problem() -> None:
    problem = b'{"code":"token-rejected","title":"Token rejected","detail":"no","index":1}'
    with pytest.raises(RemoteError) as err:
        protocol.accept("s", [1]).parse(Answer(409, {"content-type": "application/problem+json"}, problem))
    assert (err.value.status, err.value.code, err.value.detail, err.value.index) == (409, "token-rejected", "no", 1)
    with pytest.raises(RemoteError) as err:  # a balancer's HTML page: the status and the start of the body
        protocol.stats().parse(Answer(503, {"content-type": "text/html", "retry-after": "2"}, b"<h1>down</h1>"))
    assert (err.value.code, err.value.retry_after, err.value.detail) == ("http-503", 2.0, "<h1>down</h1>")


def test_a_malformed_answer_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        protocol.stats().parse(Answer(200, {"content-type": "application/json"}, b"<html>"))
    with pytest.raises(ProtocolError):
        protocol.step([("s", [])]).parse(Answer(200, {}, b"\x10\0\0\0{}"))


def test_retry_policy() -> None:
    assert protocol.retryable(TransportError("reset")) and protocol.retryable(TimeoutError("slow"))
    assert protocol.retryable(RemoteError(404, {"code": "session-expired"}))
    assert protocol.retryable(RemoteError(503, {}))
    assert not protocol.retryable(RemoteError(409, {"code": "token-rejected"}))
    assert not protocol.retryable(ProtocolError("garbage"))
    assert protocol.delay(0.1, 2, TransportError("x")) == pytest.approx(0.4)
    assert protocol.delay(0.1, 0, RemoteError(503, {"retry_after": 60})) == 5.0  # capped


def _status(sid: str, row: int, status: str = "ok", code: str | None = None) -> StepStatus:
    error = {"code": code} if code else None
    return StepStatus(sid, status, 1 if status == "ok" else 0, False, True, [], row, 1, error=error)


def test_step_plan_applies_tokens_once_and_keeps_lost_sessions_pending() -> None:
    grammars = [GrammarState({"regex": "a"}, _PROGRAM, f"s{i}") for i in range(3)]
    bitmask = np.full((3, 3), 9, dtype=np.int32)
    plan = StepPlan(grammars, [[1], [2], [3]], bitmask)
    assert plan.items() == [("s0", [1]), ("s1", [2]), ("s2", [3])]
    masks = np.array([[1, 1], [2, 2], [3, 3]], dtype=np.int32)
    first = StepResult([_status("s0", 0), _status("s1", 1, "error", "session-not-found"), _status("s2", 2)], masks, 64)
    with pytest.raises(RemoteError) as err:  # the lost session asks for a replay and a retry
        plan.apply(first)
    assert protocol.retryable(err.value)
    assert plan.pending == [1] and plan.lost() == [1] and grammars[1]._lost
    assert bitmask.tolist() == [[1, 1, 0], [9, 9, 9], [3, 3, 0]]
    grammars[1]._reopened(ProgramInfo("p", False, 64, 2, [], 0.0, "s9"))
    assert plan.items() == [("s9", [2])]
    plan.apply(StepResult([_status("s9", 0)], np.array([[5, 5]], dtype=np.int32), 64))
    assert [g.tokens for g in grammars] == [[1], [2], [3]]
    assert bitmask.tolist() == [[1, 1, 0], [5, 5, 0], [3, 3, 0]]
    assert [s.session_id for s in plan.result()] == ["s0", "s9", "s2"]
    with pytest.raises(ValueError):
        StepPlan(grammars, [[1]], None)
