"""Every error of the API: its status, an RFC 9457 problem body and a stable code; never a 500."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.middleware import Middleware

from core import Tokenizer
from service.dependencies import get_tokenizers
from tests.service.helpers import TEMPLATE, AppFactory, assert_problem, serve

pytestmark = pytest.mark.asyncio


async def _open(client: httpx.AsyncClient, **body: Any) -> str:
    resp = await client.post("/compile", json={**body, "open_session": True})
    assert resp.status_code == 200, resp.text
    return str(resp.json()["session_id"])


# -- 400: the constraint itself is wrong ---------------------------------------------------------


async def test_bad_template_is_400_with_line_and_column(client: httpx.AsyncClient) -> None:
    resp = await client.post("/compile", json={"template": "Hello\n  {{gen 'x' regex=}}"})
    body = assert_problem(resp, 400, "template-invalid")
    assert body["line"] == 2 and body["column"] >= 1


async def test_unknown_template_variable_is_400(client: httpx.AsyncClient) -> None:
    resp = await client.post("/compile", json={"template": "Hi {{who}}", "variables": {"other": "x"}})
    body = assert_problem(resp, 400, "template-invalid")
    assert body["line"] == 1


async def test_bad_json_schema_is_400(client: httpx.AsyncClient) -> None:
    assert_problem(await client.post("/compile", json={"json_schema": {"type": "frobnicate"}}), 400, "schema-invalid")
    assert_problem(await client.post("/compile", json={"json_schema": "{not json"}), 400, "schema-invalid")


async def test_bad_regex_and_grammar_are_400(client: httpx.AsyncClient) -> None:
    assert_problem(await client.post("/compile", json={"regex": "(unclosed"}), 400, "grammar-invalid")
    assert_problem(await client.post("/compile", json={"grammar": "start: undefined_rule"}), 400, "grammar-invalid")
    assert_problem(await client.post("/compile", json={"choice": []}), 400, "grammar-invalid")
    resp = await client.post("/compile", json={"regex": "a", "options": {"whitespace": 2}})
    assert_problem(resp, 400, "grammar-invalid")


async def test_invalid_tokenizer_upload_is_400(client: httpx.AsyncClient) -> None:
    resp = await client.post("/tokenizers", params={"name": "broken"}, content=b'{"model": {"type": "BPE"}}')
    assert_problem(resp, 400, "tokenizer-invalid")
    resp = await client.post("/tokenizers", params={"name": "broken"}, content=b"not json at all")
    assert_problem(resp, 400, "tokenizer-invalid")


# -- 404 -----------------------------------------------------------------------------------------


async def test_unknown_session_program_tokenizer_and_route_are_404(client: httpx.AsyncClient) -> None:
    for method, path in [
        ("GET", "/sessions/nope"),
        ("GET", "/sessions/nope/mask"),
        ("DELETE", "/sessions/nope"),
        ("POST", "/sessions/nope/fork"),
    ]:
        assert_problem(await client.request(method, path), 404, "session-not-found")
    assert_problem(await client.post("/sessions/nope/accept", json={"tokens": [1]}), 404, "session-not-found")
    assert_problem(await client.post("/sessions/nope/rollback", json={"tokens": 1}), 404, "session-not-found")
    assert_problem(await client.post("/sessions", json={"program_id": "0" * 32}), 404, "program-not-found")
    assert_problem(await client.post("/compile", json={"regex": "a", "tokenizer": "nope"}), 404, "tokenizer-not-found")
    assert_problem(await client.post("/tokenize", json={"text": "a", "tokenizer": "nope"}), 404, "tokenizer-not-found")
    assert_problem(await client.get("/no/such/route"), 404, "not-found")


async def test_wrong_method_is_405_with_allow(client: httpx.AsyncClient) -> None:
    resp = await client.get("/compile")
    assert_problem(resp, 405, "method-not-allowed")
    assert resp.headers["allow"] == "POST"


async def test_every_mask_get_is_served_ahead_of_the_router(make_app: AppFactory) -> None:
    app = make_app()
    routed: list[tuple[str, str]] = []

    class Spy:  # innermost middleware: sees what goes on to FastAPI's routing
        def __init__(self, app: Any) -> None:
            self.app = app

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                routed.append((scope["method"], scope["path"]))
            await self.app(scope, receive, send)

    app.user_middleware.append(Middleware(Spy))
    async with serve(app) as client:
        sid = await _open(client, regex="[0-9]+")
        resp = await client.get(f"/sessions/{sid}/mask")
        assert resp.status_code == 200 and resp.headers["x-mask-words"] == "4096"
        # a path that is not ASCII once decoded: checked as the text guard would, then served alike
        assert_problem(await client.get("/sessions/%C3%A9t%C3%A9/mask"), 404, "session-not-found")
        assert_problem(await client.get("/sessions/%ED%A0%80/mask"), 422, "unicode-invalid")
        assert not [r for r in routed if r[1].endswith("/mask")]
        # the declared route still answers the other methods
        resp = await client.post(f"/sessions/{sid}/mask")
        assert_problem(resp, 405, "method-not-allowed")
        assert resp.headers["allow"] == "GET"
        assert routed[-1] == ("POST", f"/sessions/{sid}/mask")


# -- 409: token rejected, all or nothing ---------------------------------------------------------


async def test_rejected_token_leaves_session_unchanged(client: httpx.AsyncClient, default_tokenizer: Tokenizer) -> None:
    tok = default_tokenizer
    sid = await _open(client, template=TEMPLATE)
    await client.post(f"/sessions/{sid}/accept", json={"tokens": tok.encode("Name: Ada")})
    before_mask = (await client.get(f"/sessions/{sid}/mask")).content
    before_state = (await client.get(f"/sessions/{sid}")).json()
    good, bad = tok.encode("\nAge: "), tok.encode("x")[0]
    resp = await client.post(f"/sessions/{sid}/accept", json={"tokens": [*good, bad, *good]})
    body = assert_problem(resp, 409, "token-rejected")
    assert body["index"] == len(good) and body["token"] == bad
    assert (await client.get(f"/sessions/{sid}/mask")).content == before_mask
    assert (await client.get(f"/sessions/{sid}")).json() == before_state


async def test_tokens_after_eos_are_rejected(client: httpx.AsyncClient, default_tokenizer: Tokenizer) -> None:
    sid = await _open(client, choice=["yes"])
    ids = default_tokenizer.encode("yes") + [default_tokenizer.eos_token_id]
    assert (await client.post(f"/sessions/{sid}/accept", json={"tokens": ids})).json()["terminated"]
    resp = await client.post(f"/sessions/{sid}/accept", json={"tokens": [default_tokenizer.eos_token_id]})
    assert_problem(resp, 409, "token-rejected")


async def test_upload_under_a_taken_name_is_409(client: httpx.AsyncClient) -> None:
    from tests.service.test_api import _tiny_hf_tokenizer_json

    resp = await client.post("/tokenizers", params={"name": "tekken"}, content=_tiny_hf_tokenizer_json())
    assert_problem(resp, 409, "tokenizer-exists")


# -- 410: expired --------------------------------------------------------------------------------


async def test_expired_session_is_410_not_404(make_app: AppFactory) -> None:
    async with serve(make_app(session_ttl_seconds=0.05)) as client:
        sid = await _open(client, regex="a+")
        await asyncio.sleep(0.12)
        assert_problem(await client.get(f"/sessions/{sid}/mask"), 410, "session-expired")
        assert_problem(await client.post(f"/sessions/{sid}/accept", json={"tokens": [1]}), 410, "session-expired")
        assert_problem(await client.get("/sessions/never-existed"), 404, "session-not-found")
        stats = (await client.get("/stats")).json()["sessions"]
        assert stats["expired"] == 1 and stats["active"] == 0


async def test_background_sweep_closes_idle_sessions(make_app: AppFactory) -> None:
    async with serve(make_app(session_ttl_seconds=0.05)) as client:
        await _open(client, regex="a+")
        await asyncio.sleep(0.25)  # the sweeper runs every ttl / 4 (at least 50 ms)
        assert (await client.get("/stats")).json()["sessions"]["active"] == 0


# -- 413: too large ------------------------------------------------------------------------------


async def test_body_over_the_limit_is_413(make_app: AppFactory) -> None:
    async with serve(make_app(max_body_bytes=1024)) as client:
        big = {"template": "x" * 2000}
        assert_problem(await client.post("/compile", json=big), 413, "body-too-large")

        async def chunks() -> AsyncIterator[bytes]:  # streamed without a Content-Length
            yield b'{"template": "'
            for _ in range(10):
                yield b"y" * 200
            yield b'"}'

        resp = await client.post("/compile", content=chunks(), headers={"content-type": "application/json"})
        assert_problem(resp, 413, "body-too-large")
        assert (await client.post("/compile", json={"template": "small"})).status_code == 200


async def test_engine_limits_are_413(make_app: AppFactory, default_tokenizer: Tokenizer) -> None:
    async with serve(make_app(max_tokens_per_accept=4, max_source_bytes=64)) as client:
        for kind, source in (("regex", "a" * 100), ("template", "a" * 100), ("grammar", "start: " + '"a" ' * 30)):
            body = assert_problem(await client.post("/compile", json={kind: source}), 413, "limit-exceeded")
            assert body["limit"] == "max_source_bytes", kind
        sid = await _open(client, regex="a*")
        resp = await client.post(f"/sessions/{sid}/accept", json={"tokens": default_tokenizer.encode("a") * 5})
        assert assert_problem(resp, 413, "limit-exceeded")["limit"] == "max_tokens_per_accept"


# -- 422: malformed requests ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {},  # no kind
        {"template": "a", "regex": "b"},  # two kinds at once
        {"template": 12},  # wrong type
        {"regex": "a", "open_session": "yes"},
        {"choice": "not a list"},
        {"regex": "a", "frobnicate": 1},  # unknown field
        {"regex": "a", "variables": []},
        [],
    ],
)
async def test_malformed_compile_is_422(client: httpx.AsyncClient, body: Any) -> None:
    body_ = assert_problem(await client.post("/compile", json=body), 422, "validation-error")
    assert body_["errors"] and all({"loc", "msg", "type"} == set(e) for e in body_["errors"])


async def test_malformed_session_requests_are_422(client: httpx.AsyncClient, default_tokenizer: Tokenizer) -> None:
    sid = await _open(client, regex="a*")
    for bad in [{}, {"tokens": "1"}, {"tokens": ["1"]}, {"tokens": [1.5]}, {"tokens": [True]}, {"tokens": [1], "x": 1}]:
        assert_problem(await client.post(f"/sessions/{sid}/accept", json=bad), 422, "validation-error")
    assert_problem(await client.post(f"/sessions/{sid}/rollback", json={"tokens": -1}), 422, "validation-error")
    assert_problem(await client.post("/sessions", json={"program_id": "x", "regex": "a"}), 422, "validation-error")
    assert_problem(await client.post("/sessions", json={}), 422, "validation-error")
    assert_problem(await client.post("/tokenizers", params={"name": "../etc"}, content=b"{}"), 422, "validation-error")
    assert_problem(await client.post("/tokenizers", content=b"{}"), 422, "validation-error")
    assert_problem(await client.post("/detokenize", json={"tokens": [-1]}), 422, "token-out-of-range")


async def test_validation_errors_do_not_echo_the_request(client: httpx.AsyncClient) -> None:
    secret = "s3cr3t" * 100
    body = assert_problem(await client.post("/compile", json={"regex": "a", secret: secret}), 422, "validation-error")
    assert secret not in json.dumps(body)
    assert secret[:64] in json.dumps(body)  # the field's name, cut short


async def test_malformed_json_is_422(client: httpx.AsyncClient) -> None:
    resp = await client.post("/compile", content=b'{"regex": ', headers={"content-type": "application/json"})
    assert_problem(resp, 422, "json-invalid")


async def test_token_ids_outside_the_vocabulary_are_422(
    client: httpx.AsyncClient, default_tokenizer: Tokenizer
) -> None:
    sid = await _open(client, regex="a*")
    resp = await client.post(f"/sessions/{sid}/accept", json={"tokens": [default_tokenizer.vocab_size]})
    assert assert_problem(resp, 422, "token-out-of-range")["index"] == 0


async def test_rollback_past_the_start_is_422(client: httpx.AsyncClient) -> None:
    sid = await _open(client, regex="a*")
    assert_problem(await client.post(f"/sessions/{sid}/rollback", json={"tokens": 1}), 422, "rollback-out-of-range")


# -- 429 / 503: limits on sessions and compiles --------------------------------------------------


async def test_session_cap_refuses_with_429_and_retry_after(make_app: AppFactory) -> None:
    async with serve(make_app(max_sessions=2, retry_after_seconds=3)) as client:
        first = await _open(client, regex="a")
        await _open(client, regex="a")
        for resp in [
            await client.post("/compile", json={"regex": "a", "open_session": True}),
            await client.post("/sessions", json={"regex": "a"}),
            await client.post(f"/sessions/{first}/fork"),
        ]:
            assert assert_problem(resp, 429, "too-many-sessions")["retry_after"] == 3
            assert resp.headers["retry-after"] == "3"
        # The live sessions were not evicted; closing one makes room.
        assert (await client.get(f"/sessions/{first}/mask")).status_code == 200
        assert (await client.delete(f"/sessions/{first}")).status_code == 204
        assert (await client.post("/sessions", json={"regex": "a"})).status_code == 201


async def test_compile_queue_full_is_503_with_retry_after(make_app: AppFactory) -> None:
    app = make_app(max_pending_compiles=1)
    async with serve(app) as client:
        backend = app.state.service.backend
        release = asyncio.Event()
        real_compile = backend.compile

        async def slow_compile(*args: Any, **kwargs: Any) -> Any:
            await release.wait()
            return await real_compile(*args, **kwargs)

        backend.compile = slow_compile
        first = asyncio.create_task(client.post("/compile", json={"regex": "a"}))
        while app.state.service.compiles_pending == 0:
            await asyncio.sleep(0.001)
        resp = await client.post("/compile", json={"regex": "b"})
        assert assert_problem(resp, 503, "compile-queue-full")["retry_after"] == 1
        assert resp.headers["retry-after"] == "1"
        release.set()
        assert (await first).status_code == 200


# -- 500: our bugs, never the client's -----------------------------------------------------------


async def test_internal_error_is_a_500_problem_that_leaks_nothing(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    app: FastAPI = make_app()

    async def broken() -> None:
        raise RuntimeError("secret internal detail")

    app.dependency_overrides[get_tokenizers] = broken
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            resp = await client.get("/tokenizers")
    body = assert_problem(resp, 500, "internal-error")
    assert "secret" not in resp.text and "RuntimeError" not in resp.text
    assert body["detail"]
    assert any("secret internal detail" in (r.exc_text or "") or r.exc_info for r in caplog.records)
