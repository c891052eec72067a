"""An llguidance limit met mid-generation, over HTTP: 413 ``engine-limit`` naming the limit, the
session as it was, other sessions untouched, and the program marked for the next ones."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from core import Tokenizer
from guidance_client.wire import read_step
from tests.core.test_engine_limits import WORDY, WORDY_TEXT
from tests.service.helpers import AppFactory, assert_problem, serve

pytestmark = pytest.mark.asyncio


async def _open(http: httpx.AsyncClient, body: dict[str, object]) -> str:
    resp = await http.post("/compile", json={**body, "open_session": True})
    assert resp.status_code == 200, resp.text
    sid: str = resp.json()["session_id"]
    return sid


async def _walk_to_the_limit(http: httpx.AsyncClient, sid: str, tokens: list[int]) -> int:
    """Accept ``tokens`` one by one, reading the mask before each; the index whose mask fails."""
    for i, token in enumerate(tokens):
        resp = await http.get(f"/sessions/{sid}/mask")
        if resp.status_code != 200:
            body = assert_problem(resp, 413, "engine-limit")
            assert body["limit"] == "step_lexer_fuel"
            return i
        assert (await http.post(f"/sessions/{sid}/accept", json={"tokens": [token]})).status_code == 200
    pytest.fail("the walk never met the limit")


async def test_mask_and_accept_answer_413_and_the_session_stays_as_it_was(
    make_app: AppFactory, default_tokenizer: Tokenizer
) -> None:
    tokens = default_tokenizer.encode(WORDY_TEXT)
    async with serve(make_app()) as http:
        other = await _open(http, {"regex": "[0-9]+"})
        sid = await _open(http, {"json_schema": WORDY})
        at = await _walk_to_the_limit(http, sid, tokens)
        state = (await http.get(f"/sessions/{sid}")).json()
        assert state["tokens"] == tokens[:at]
        resp = await http.post(f"/sessions/{sid}/accept", json={"tokens": tokens[at : at + 2]})
        if resp.status_code != 200:  # the accept itself may pass the step that failed the mask
            assert_problem(resp, 413, "engine-limit")
            assert (await http.get(f"/sessions/{sid}")).json()["tokens"] == tokens[:at]
        # the program is marked for whoever opens the next session; that session starts cleanly
        again = await http.post("/sessions", json={"json_schema": WORDY})
        assert again.status_code == 201
        assert again.json()["engine_limit"]["limit"] == "step_lexer_fuel"
        mask = await http.get(f"/sessions/{again.json()['session_id']}/mask")
        assert mask.status_code == 200 and np.frombuffer(mask.content, dtype="<i4").any()
        # and the other tenant's session never noticed
        resp = await http.post(f"/sessions/{other}/accept", json={"tokens": default_tokenizer.encode("42")})
        assert resp.status_code == 200 and resp.json()["accepting"]


async def test_a_step_reports_the_failing_session_alone(make_app: AppFactory, default_tokenizer: Tokenizer) -> None:
    tokens = default_tokenizer.encode(WORDY_TEXT)
    async with serve(make_app()) as http:
        first = await _open(http, {"regex": "[0-9]+"})
        wordy = await _open(http, {"json_schema": WORDY})
        last = await _open(http, {"regex": "[0-9]+"})
        at = await _walk_to_the_limit(http, wordy, tokens)
        body = {"sessions": [{"session_id": s, "tokens": []} for s in (first, wordy, last)], "variables": True}
        resp = await http.post("/step", json=body)
        assert resp.status_code == 200
        header, masks = read_step(resp.content)
        statuses = header["sessions"]
        assert [s["status"] for s in statuses] == ["ok", "error", "ok"]
        assert statuses[1]["error"]["code"] == "engine-limit"
        assert statuses[1]["error"]["limit"] == "step_lexer_fuel"
        assert not masks[1].any() and masks[0].any() and (masks[0] == masks[2]).all()
        assert (await http.get(f"/sessions/{wordy}")).json()["tokens"] == tokens[:at]
