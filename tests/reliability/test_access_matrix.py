"""The bad-input matrix's access rows, on a server with API keys: each case answered with its
status and problem code and a small answer that names no key, and the server alive with other
sessions' masks byte-identical afterwards (docs/reliability.md lists them; the rules in detail:
tests/service/test_auth.py)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from core import Tokenizer
from tests.reliability.test_bad_input import _assert_unharmed, _witnesses
from tests.service.helpers import AppFactory, assert_problem

KEY = "matrix-key-0123456789abcdef"
OTHER = "other-key-0123456789abcdefg"
ADMIN = "admin-key-0123456789abcdefg"
WRONG = "wrong-key-0123456789abcdefg"

# (case, method, path ("{sid}": a session of KEY's), JSON body, the key sent (None: no header),
#  status, code)
ACCESS_CASES: list[tuple[str, str, str, Any, str | None, int, str]] = [
    ("no key: compile", "POST", "/compile", {"regex": "a"}, None, 401, "unauthorized"),
    ("no key: mask (fast path)", "GET", "/sessions/{sid}/mask", None, None, 401, "unauthorized"),
    ("no key: step", "POST", "/step", {"sessions": [{"session_id": "{sid}"}]}, None, 401, "unauthorized"),
    ("wrong key: accept", "POST", "/sessions/{sid}/accept", {"tokens": []}, WRONG, 401, "unauthorized"),
    ("wrong key: stats", "GET", "/stats", None, WRONG, 401, "unauthorized"),
    (
        "other key's session: accept",
        "POST",
        "/sessions/{sid}/accept",
        {"tokens": [1000]},
        OTHER,
        404,
        "session-not-found",
    ),
    ("other key's session: mask", "GET", "/sessions/{sid}/mask", None, OTHER, 404, "session-not-found"),
    (
        "other key's session: rollback",
        "POST",
        "/sessions/{sid}/rollback",
        {"tokens": 0},
        OTHER,
        404,
        "session-not-found",
    ),
    ("other key's session: fork", "POST", "/sessions/{sid}/fork", None, OTHER, 404, "session-not-found"),
    ("other key's session: read", "GET", "/sessions/{sid}", None, OTHER, 404, "session-not-found"),
    ("other key's session: delete", "DELETE", "/sessions/{sid}", None, OTHER, 404, "session-not-found"),
    ("non-admin key: tokenizer upload", "POST", "/tokenizers?name=x", {"model": {}}, OTHER, 403, "forbidden"),
]


@pytest.mark.asyncio
async def test_access_matrix(make_app: AppFactory, default_tokenizer: Tokenizer) -> None:
    app = make_app(api_keys=[KEY, OTHER], admin_api_keys=[ADMIN])
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        owner = {"Authorization": f"Bearer {KEY}"}
        async with (
            httpx.AsyncClient(transport=transport, base_url="http://testserver", headers=owner) as client,
            httpx.AsyncClient(transport=transport, base_url="http://testserver") as bare,
        ):
            witnesses = await _witnesses(client, default_tokenizer)
            sid = (await client.post("/sessions", json={"regex": "[a-z]{0,20}"})).json()["session_id"]
            mask_before = (await client.get(f"/sessions/{sid}/mask")).content
            failures = []
            for name, method, path, body, key, status, code in ACCESS_CASES:
                sent = {"Authorization": f"Bearer {key}"} if key else {}
                payload = json.loads(json.dumps(body).replace("{sid}", sid)) if body is not None else None
                resp = await bare.request(method, path.replace("{sid}", sid), json=payload, headers=sent)
                try:
                    assert_problem(resp, status, code)
                    assert len(resp.content) < 4096
                    assert all(k not in resp.text for k in (KEY, OTHER, ADMIN, WRONG))
                except AssertionError as e:
                    failures.append(f"{name}: {e}")
            assert not failures, "\n".join(failures)
            # the owner's session was neither moved nor closed by any of them
            assert (await client.get(f"/sessions/{sid}/mask")).content == mask_before
            assert (await client.get(f"/sessions/{sid}")).json()["tokens"] == []
            await _assert_unharmed(client, witnesses)
