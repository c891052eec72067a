"""Partial values over HTTP, in-process: computed only when asked, and the request forms."""

from __future__ import annotations

import struct
from typing import Any

import httpx
import orjson
import pytest

from core import Tokenizer
from core.session import GuidanceState
from tests.service.helpers import PERSON_SCHEMA, TEMPLATE, assert_problem


def _statuses(resp: httpx.Response) -> list[dict[str, Any]]:
    assert resp.status_code == 200, resp.text
    (length,) = struct.unpack_from("<I", resp.content)
    return list(orjson.loads(resp.content[4 : 4 + length])["sessions"])


async def _open(client: httpx.AsyncClient, **body: Any) -> str:
    resp = await client.post("/sessions", json=body or {"template": TEMPLATE})
    assert resp.status_code == 201, resp.text
    return str(resp.json()["session_id"])


async def test_nothing_is_computed_for_partial_values_unless_asked(
    client: httpx.AsyncClient, default_tokenizer: Tokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    real = GuidanceState.partial_variables

    def counting(self: GuidanceState, **kwargs: Any) -> dict[str, Any]:
        calls.append(1)
        return real(self, **kwargs)

    monkeypatch.setattr(GuidanceState, "partial_variables", counting)
    sid = await _open(client)
    tok = default_tokenizer
    assert (await client.post(f"/sessions/{sid}/accept", json={"tokens": tok.encode("Name")})).status_code == 200
    _statuses(
        await client.post(
            "/step", json={"sessions": [{"session_id": sid, "tokens": tok.encode(": A")}], "variables": True}
        )
    )
    assert (await client.get(f"/sessions/{sid}")).status_code == 200
    assert (await client.post(f"/sessions/{sid}/rollback", json={"tokens": 1})).status_code == 200
    assert calls == []  # an unwatched session, nobody asking: not once
    (status,) = _statuses(
        await client.post("/step", json={"sessions": [{"session_id": sid, "tokens": []}], "variables": "partial"})
    )
    assert calls == [1] and "partial" in status


async def test_step_partial_values_and_a_bad_variables_option(
    client: httpx.AsyncClient, default_tokenizer: Tokenizer
) -> None:
    a = await _open(client)
    b = await _open(client, json_schema=PERSON_SCHEMA)
    tok = default_tokenizer
    body = {
        "sessions": [
            {"session_id": a, "tokens": tok.encode("Name: Ad")},
            {"session_id": b, "tokens": tok.encode('{"name":"Bo')},
        ],
        "variables": "partial",
    }
    first, second = _statuses(await client.post("/step", json=body))
    assert first["partial"] == {"name": {"value": "Ad", "complete": False}} and first["variables"] == {}
    assert second["partial"] == {}  # a direct schema captures nothing: no partial values either
    for bad in ("full", "Partial", None, ["partial"]):
        resp = await client.post("/step", json={"sessions": [{"session_id": a, "tokens": []}], "variables": bad})
        assert_problem(resp, 422, "validation-error")


async def test_json_slots_come_with_their_parsed_partial_value(
    client: httpx.AsyncClient, default_tokenizer: Tokenizer
) -> None:
    sid = await _open(client, template="P: {{json 'p' schema=s}}", variables={"s": PERSON_SCHEMA})
    resp = await client.post(
        f"/sessions/{sid}/accept", json={"tokens": default_tokenizer.encode('P: {"name":"Ad'), "partial": True}
    )
    assert resp.json()["partial"] == {
        "p": {"value": '{"name":"Ad', "complete": False, "parsed": {"name": "Ad"}, "final": []}
    }
