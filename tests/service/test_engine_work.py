"""No request holds the event loop: late-expensive masks, fresh slow programs, heavy batches.

Each test reproduces an attack and checks what holds it by behaviour: the status the attacker
gets, that a victim's answers arrive and are right, and where the work ran (the slow lane's
count of calls). Speed itself is measured in ``bench/isolation.py``, never here.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import numpy as np
import pytest

from core import GuidanceBackend, Tokenizer
from guidance_client.wire import read_step
from service.dependencies import ServiceResources
from tests.service.helpers import AppFactory, assert_problem, serve

pytestmark = pytest.mark.asyncio

# Cheap at its first mask; after one digit each mask (or forced-token computation) costs about
# 0.4 s here: the regex behind the digit is long, and llguidance's fuel does not count its cost.
LATE = "[0-9](ab|ab){20000}"
LATE_BODIES: dict[str, dict[str, Any]] = {
    "regex": {"regex": LATE},
    "template": {"template": "{{gen 'x' regex='" + LATE + "'}}"},
    "grammar": {"grammar": "start: /" + LATE + "/"},
}


def _service(client: httpx.AsyncClient) -> ServiceResources:
    app = client._transport.app  # type: ignore[attr-defined]  # ASGITransport keeps its app
    state: ServiceResources = app.state.service
    return state


async def _open(client: httpx.AsyncClient, **body: Any) -> str:
    resp = await client.post("/sessions", json=body)
    assert resp.status_code == 201, resp.text
    return str(resp.json()["session_id"])


def _expected_mask(tokenizer: Tokenizer, regex: str, text: str) -> np.ndarray:
    """The mask ``core`` computes for ``regex`` after ``text``: what a right answer holds."""
    state = GuidanceBackend(tokenizer).compile_regex(regex).create_state()
    assert state.accept_tokens(tokenizer.encode(text))
    mask = np.zeros((1, state.program.mask_words), dtype=np.int32)
    state.fill_bitmask(mask, 0)
    return mask[0]


@pytest.mark.parametrize("kind", sorted(LATE_BODIES))
async def test_a_late_expensive_constraint_is_an_engine_limit_for_its_session_only(
    make_app: AppFactory, default_tokenizer: Tokenizer, kind: str
) -> None:
    async with serve(make_app(max_mask_ms=50)) as client:
        service = _service(client)
        attacker = await _open(client, **LATE_BODIES[kind])
        victim = await _open(client, regex="[0-9]+")
        digit = default_tokenizer.encode("7")
        calls = service.scheduler.lane.calls
        attack = asyncio.create_task(client.post(f"/sessions/{attacker}/accept", json={"tokens": digit}))
        served = await client.post(f"/sessions/{victim}/accept", json={"tokens": digit})
        mask = await client.get(f"/sessions/{victim}/mask")
        problem = assert_problem(await attack, 413, "engine-limit")
        assert problem["limit"] == "max_mask_ms"
        assert served.status_code == 200 and served.json()["accepted"] == 1
        assert np.array_equal(np.frombuffer(mask.content, "<i4"), _expected_mask(default_tokenizer, "[0-9]+", "7"))
        # The attacker's session is as it was; its program ran off the event loop, and stays there.
        assert (await client.get(f"/sessions/{attacker}")).json()["tokens"] == []
        assert service.scheduler.lane.calls > calls
        program = service.sessions.get(attacker).program
        assert service.scheduler.lane.is_slow(program)
        created = await client.post("/sessions", json={"program_id": program.program_id})
        assert created.json()["engine_limit"]["limit"] == "max_mask_ms"


async def test_fresh_late_expensive_programs_never_run_their_first_calls_inline(
    make_app: AppFactory, default_tokenizer: Tokenizer
) -> None:
    async with serve(make_app(max_mask_ms=50)) as client:
        lane = _service(client).scheduler.lane
        digit = default_tokenizer.encode("7")
        for n in (20000, 20001):  # each one a new program
            sid = await _open(client, regex=f"[0-9](ab|ab){{{n}}}")
            calls = lane.calls
            assert_problem(await client.post(f"/sessions/{sid}/accept", json={"tokens": digit}), 413, "engine-limit")
            assert lane.calls == calls + 1  # the expensive call ran in the lane, not on the loop


async def test_a_late_expensive_row_fails_alone_in_a_step(make_app: AppFactory, default_tokenizer: Tokenizer) -> None:
    async with serve(make_app(max_mask_ms=50)) as client:
        attacker = await _open(client, regex=LATE)
        victim = await _open(client, regex="[0-9]+")
        digit = default_tokenizer.encode("7")
        batch = [{"session_id": attacker, "tokens": digit}, {"session_id": victim, "tokens": digit}]
        resp = await client.post("/step", json={"sessions": batch})
        assert resp.status_code == 200, resp.text
        header, masks = read_step(resp.content)
        bad, good = header["sessions"]
        assert bad["status"] == "error" and bad["error"]["code"] == "engine-limit" and bad["accepted"] == 0
        # its row is the mask where the session stays (its start), as for any entry in error
        start = await client.get(f"/sessions/{attacker}/mask")
        assert np.array_equal(masks[0], np.frombuffer(start.content, "<i4"))
        assert good["status"] == "ok" and good["accepted"] == 1
        assert np.array_equal(masks[1], _expected_mask(default_tokenizer, "[0-9]+", "7"))
        assert (await client.get(f"/sessions/{attacker}")).json()["tokens"] == []


async def test_a_heavy_step_runs_off_the_event_loop_and_answers_right(
    make_app: AppFactory, default_tokenizer: Tokenizer
) -> None:
    # 16 sessions x 4,096 tokens stands for the 340 x 4,096 (8 MiB) attack: estimated past the
    # inline budget all the same.
    async with serve(make_app(slow_lane_probation_calls=0, max_session_tokens=8192)) as client:
        lane = _service(client).scheduler.lane
        (a,) = default_tokenizer.encode("a")
        ids = [await _open(client, regex="a*") for _ in range(16)]
        victim = await _open(client, regex="[0-9]+")
        small = await client.post("/step", json={"sessions": [{"session_id": victim, "tokens": []}]})
        assert small.status_code == 200 and lane.calls == 0  # a small step of a proven program: inline
        heavy = asyncio.create_task(
            client.post("/step", json={"sessions": [{"session_id": s, "tokens": [a] * 4096} for s in ids]})
        )
        mask = await client.get(f"/sessions/{victim}/mask")
        resp = await heavy
        assert resp.status_code == 200, resp.text
        header, masks = read_step(resp.content)
        assert [s["accepted"] for s in header["sessions"]] == [4096] * 16
        expected = _expected_mask(default_tokenizer, "a*", "a" * 64)
        assert all(np.array_equal(row, expected) for row in masks)
        assert np.array_equal(np.frombuffer(mask.content, "<i4"), _expected_mask(default_tokenizer, "[0-9]+", ""))
        assert lane.calls == 1
        # Reading long histories back (variables) is estimated the same way.
        resp = await client.post("/step", json={"sessions": [{"session_id": ids[0]}], "variables": "partial"})
        assert resp.status_code == 200 and lane.calls == 2


async def test_a_large_step_body_is_refused_as_a_small_one_is(client: httpx.AsyncClient) -> None:
    # Past 256 KiB a body is validated off the event loop, a session at a time: same problems.
    small = {"sessions": [{"session_id": "x", "tokens": [1, "2"]}]}
    large = {"sessions": [{"session_id": f"s{i}", "tokens": [1] * 4096} for i in range(16)]}
    large["sessions"][3]["tokens"][7] = "2"  # type: ignore[index]
    answers = [await client.post("/step", json=body) for body in (small, large)]
    problems = [assert_problem(resp, 422, "validation-error") for resp in answers]
    assert [e["loc"] for e in problems[0]["errors"]] == [["sessions", "0", "tokens", "1"]]
    assert [e["loc"] for e in problems[1]["errors"]] == [["sessions", "3", "tokens", "7"]]
    duplicate = {"sessions": [{"session_id": "same", "tokens": [1] * 4096} for _ in range(16)]}
    assert_problem(await client.post("/step", json=duplicate), 422, "validation-error")


async def test_a_step_of_only_unknown_sessions_answers_their_errors(client: httpx.AsyncClient) -> None:
    resp = await client.post("/step", json={"sessions": [{"session_id": "nobody", "tokens": [1]}]})
    assert resp.status_code == 200, resp.text
    header, masks = read_step(resp.content)
    assert header["sessions"][0]["error"]["code"] == "session-not-found" and not masks.any()
