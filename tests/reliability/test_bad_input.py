"""The bad-input matrix: every case answered with its status and problem code, fast, and the
server alive with other sessions' masks byte-identical afterwards (docs/reliability.md lists it).

Some inputs legitimately compile (a DFA-style engine has no backtracking to blow up): for those
the test asserts the compile is fast and the masks work.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from core import Tokenizer
from tests.service.helpers import PERSON_SCHEMA, TEMPLATE, AppFactory, assert_problem, serve

pytestmark = pytest.mark.asyncio

MAX_BODY = 1024 * 1024


def _deep_schema_text(levels: int) -> str:
    return '{"json_schema": ' + '{"type": "array", "items": ' * levels + '{"type": "integer"}' + "}" * levels + "}"


@dataclass(frozen=True)
class Case:
    name: str
    method: str
    path: str  # "{sid}" is the case's own session
    status: int
    code: str | None  # None: a 2xx answer
    json: Any = None
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    chunked: bool = False


def _chunks(total: int) -> AsyncIterator[bytes]:
    async def gen() -> AsyncIterator[bytes]:
        yield b'{"template": "'
        for _ in range(total // 65536 + 1):
            yield b"y" * 65536
        yield b'"}'

    return gen()


JSON = {"content-type": "application/json"}
CASES = [
    # -- the request itself
    Case("body over the limit (Content-Length)", "POST", "/compile", 413, "body-too-large",
         content=b'{"template": "' + b"x" * (MAX_BODY + 10) + b'"}', headers=JSON),
    Case("body over the limit (chunked, no Content-Length)", "POST", "/compile", 413, "body-too-large", chunked=True),
    Case("malformed JSON", "POST", "/compile", 422, "json-invalid", content=b'{"regex": ', headers=JSON),
    Case("JSON nested 10,000 levels", "POST", "/compile", 422, "json-invalid",
         content=_deep_schema_text(10_000).encode(), headers=JSON),
    Case("wrong type", "POST", "/compile", 422, "validation-error", json={"template": 12}),
    Case("unknown field", "POST", "/compile", 422, "validation-error", json={"regex": "a", "frobnicate": 1}),
    Case("two kinds at once", "POST", "/compile", 422, "validation-error", json={"regex": "a", "template": "b"}),
    Case("token id negative", "POST", "/sessions/{sid}/accept", 422, "token-out-of-range", json={"tokens": [-1]}),
    Case("token id out of vocabulary", "POST", "/sessions/{sid}/accept", 422, "token-out-of-range",
         json={"tokens": [131_072]}),
    Case("token id not an integer", "POST", "/sessions/{sid}/accept", 422, "validation-error", json={"tokens": [1.5]}),
    Case("token id a string", "POST", "/sessions/{sid}/accept", 422, "validation-error", json={"tokens": ["1"]}),
    Case("5,000 tokens in one accept", "POST", "/sessions/{sid}/accept", 413, "limit-exceeded",
         json={"tokens": [1000] * 5000}),
    Case("rollback negative", "POST", "/sessions/{sid}/rollback", 422, "validation-error", json={"tokens": -1}),
    Case("rollback past the start", "POST", "/sessions/{sid}/rollback", 422, "rollback-out-of-range",
         json={"tokens": 10**6}),
    Case("step batch over the limit", "POST", "/step", 413, "limit-exceeded",
         json={"sessions": [{"session_id": f"s{i}"} for i in range(9)]}),
    Case("step names a session twice", "POST", "/step", 422, "validation-error",
         json={"sessions": [{"session_id": "{sid}"}, {"session_id": "{sid}"}]}),
    # -- unknown names
    Case("unknown session", "GET", "/sessions/nope/mask", 404, "session-not-found"),
    Case("unknown program", "POST", "/sessions", 404, "program-not-found", json={"program_id": "0" * 32}),
    Case("unknown tokenizer", "POST", "/compile", 404, "tokenizer-not-found", json={"regex": "a", "tokenizer": "x"}),
    # -- templates
    Case("template: unbalanced block", "POST", "/compile", 400, "template-invalid", json={"template": "{{#select 'a'}}x"}),
    Case("template: stray closing tag", "POST", "/compile", 400, "template-invalid", json={"template": "x{{/select}}"}),
    Case("template: unknown tag", "POST", "/compile", 400, "template-invalid", json={"template": "{{frobnicate 'x'}}"}),
    Case("template: blocks nested 10,000 deep", "POST", "/compile", 400, "template-invalid",
         json={"template": "{{#select 'a'}}" * 10_000 + "x" + "{{/select}}" * 10_000}),
    Case("template: 100,000-character literal", "POST", "/compile", 413, "limit-exceeded",
         json={"template": "ab" * 50_000}),
    Case("template: interpolated value 100,000 characters", "POST", "/compile", 413, "limit-exceeded",
         json={"template": "Hi {{v}}", "variables": {"v": "x" * 100_000}}),
    Case("template: repeat max=100000", "POST", "/compile", 400, "template-invalid",
         json={"template": "{{#repeat 'r' max=100000}}x{{/repeat}}"}),
    Case("template: gen regex a{100000}", "POST", "/compile", 413, "limit-exceeded",
         json={"template": "{{gen 'x' regex='a{100000}'}}"}),
    # -- regexes
    Case("regex: parentheses nested 10,000 deep", "POST", "/compile", 400, "grammar-invalid",
         json={"regex": "(" * 10_000 + "a" + ")" * 10_000}),
    Case("regex: a{100000}", "POST", "/compile", 413, "limit-exceeded", json={"regex": "a{100000}"}),
    Case("regex: (a{1000}){1000}", "POST", "/compile", 413, "limit-exceeded", json={"regex": "(a{1000}){1000}"}),
    Case("regex: x{2147483648}", "POST", "/compile", 413, "limit-exceeded", json={"regex": "x{2147483648}"}),
    Case("regex: backreference", "POST", "/compile", 400, "grammar-invalid", json={"regex": r"(a)\1"}),
    Case("regex: lookahead", "POST", "/compile", 400, "grammar-invalid", json={"regex": "(?=a)a"}),
    Case("regex: negative lookahead", "POST", "/compile", 400, "grammar-invalid", json={"regex": "(?!a)b"}),
    Case("regex: lookbehind", "POST", "/compile", 400, "grammar-invalid", json={"regex": "(?<=a)b"}),
    Case("regex: word boundary", "POST", "/compile", 400, "grammar-invalid", json={"regex": r"\bfoo\b"}),
    Case("regex: atomic group", "POST", "/compile", 400, "grammar-invalid", json={"regex": "(?>a+)b"}),
    Case("regex: unclosed group", "POST", "/compile", 400, "grammar-invalid", json={"regex": "(a"}),
    # -- grammars and schemas
    Case("lark: parentheses nested 10,000 deep", "POST", "/compile", 400, "grammar-invalid",
         json={"grammar": "start: " + "(" * 10_000 + '"a"' + ")" * 10_000}),
    Case("lark: recursion without a base case", "POST", "/compile", 400, "grammar-invalid",
         json={"grammar": 'start: a\na: a "x"'}),
    Case("lark: undefined rule", "POST", "/compile", 400, "grammar-invalid", json={"grammar": "start: nowhere"}),
    Case('lark: "a"{100000}', "POST", "/compile", 413, "limit-exceeded", json={"grammar": 'start: "a"{100000}'}),
    Case("schema: cyclic $ref", "POST", "/compile", 400, "grammar-invalid",
         json={"json_schema": {"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}}),
    Case("schema: $ref to itself", "POST", "/compile", 400, "grammar-invalid", json={"json_schema": {"$ref": "#"}}),
    Case("schema: const of 100,000 characters", "POST", "/compile", 413, "limit-exceeded",
         json={"json_schema": {"const": "z" * 100_000}}),
    Case("schema: unknown type", "POST", "/compile", 400, "schema-invalid", json={"json_schema": {"type": "frob"}}),
    Case("choice: 20,000 options", "POST", "/compile", 413, "limit-exceeded",
         json={"choice": [f"o{i}" for i in range(20_000)]}),
]

# Inputs that compile (no backtracking engine to blow up, or a legitimate language): compile
# fast, open a session, and the masks work. (case name, body, text the session accepts)
COMPILES = [
    ("regex: state explosion [ab]*a[ab]{20}", {"regex": "[ab]*a[ab]{20}"}, "ab" * 5 + "a" + "b" * 20),
    ("regex: state explosion (a|b)*a(a|b){20}", {"regex": "(a|b)*a(a|b){20}"}, "a" * 21),
    ("regex: catastrophic backtracking (a+)+b", {"regex": "(a+)+b"}, "a" * 50 + "b"),
    ("regex: (a|aa)+b", {"regex": "(a|aa)+b"}, "a" * 30 + "b"),
    ("regex: (.*a){20}", {"regex": "(.*a){20}"}, "xa" * 20),
    ("regex: possessive-looking a++b (a plain repeat here)", {"regex": "a++b"}, "aaab"),
    ("template: interpolated value that looks like template syntax",
     {"template": "Hi {{v}}!", "variables": {"v": "{{gen 'x'}} {{/select}}"}}, "Hi {{gen 'x'}} {{/select}}!"),
    ("schema: recursive $ref with a base case",
     {"json_schema": {"type": "object", "properties": {"c": {"$ref": "#"}}}}, '{"c":{"c":{}}}'),
]


async def _witnesses(client: httpx.AsyncClient, tok: Tokenizer) -> dict[str, bytes]:
    """Two sessions other clients are using, part-way through; their masks, to compare later."""
    out = {}
    for body, text in [({"template": TEMPLATE}, "Name: Ada\nAg"), ({"json_schema": PERSON_SCHEMA}, '{"name":"Bo')]:
        sid = (await client.post("/sessions", json=body)).json()["session_id"]
        assert (await client.post(f"/sessions/{sid}/accept", json={"tokens": tok.encode(text)})).status_code == 200
        out[sid] = (await client.get(f"/sessions/{sid}/mask")).content
    return out


async def _assert_unharmed(client: httpx.AsyncClient, witnesses: dict[str, bytes]) -> None:
    assert (await client.get("/healthz")).status_code == 200
    assert (await client.get("/readyz")).status_code == 200
    for sid, mask in witnesses.items():
        assert (await client.get(f"/sessions/{sid}/mask")).content == mask


@pytest.fixture()
async def matrix_client(make_app: AppFactory, default_tokenizer: Tokenizer) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(make_app(max_body_bytes=MAX_BODY, max_batch_size=8)) as client:
        yield client


async def test_bad_input_matrix(matrix_client: httpx.AsyncClient, default_tokenizer: Tokenizer) -> None:
    client = matrix_client
    witnesses = await _witnesses(client, default_tokenizer)
    sid = (await client.post("/sessions", json={"regex": "[a-z]{0,20}"})).json()["session_id"]
    mask_before = (await client.get(f"/sessions/{sid}/mask")).content
    failures = []
    for case in CASES:
        path = case.path.replace("{sid}", sid)
        body = json.loads(json.dumps(case.json).replace("{sid}", sid)) if case.json is not None else None
        start = time.perf_counter()
        if case.chunked:
            resp = await client.request(case.method, path, content=_chunks(MAX_BODY), headers=JSON)
        elif case.content is not None:
            resp = await client.request(case.method, path, content=case.content, headers=case.headers)
        else:
            resp = await client.request(case.method, path, json=body)
        elapsed = time.perf_counter() - start
        try:
            assert_problem(resp, case.status, case.code or "")
            assert elapsed < 2.0, f"{elapsed:.2f} s"
            assert len(resp.content) < 4096, "the answer quotes too much of the input"
        except AssertionError as e:
            failures.append(f"{case.name}: {e}")
    assert not failures, "\n".join(failures)
    # The case's own session is unchanged by every refused accept and rollback.
    assert (await client.get(f"/sessions/{sid}/mask")).content == mask_before
    assert (await client.get(f"/sessions/{sid}")).json()["tokens"] == []
    await _assert_unharmed(client, witnesses)


@pytest.mark.parametrize(("name", "body", "text"), COMPILES, ids=[c[0] for c in COMPILES])
async def test_inputs_that_compile_do_so_fast_and_work(
    client: httpx.AsyncClient, default_tokenizer: Tokenizer, name: str, body: dict[str, Any], text: str
) -> None:
    tok = default_tokenizer
    witnesses = await _witnesses(client, tok)
    start = time.perf_counter()
    resp = await client.post("/compile", json={**body, "open_session": True})
    assert resp.status_code == 200, resp.text
    assert time.perf_counter() - start < 1.0
    sid = resp.json()["session_id"]
    assert (await client.get(f"/sessions/{sid}/mask")).status_code == 200
    resp = await client.post(f"/sessions/{sid}/accept", json={"tokens": [*tok.encode(text), tok.eos_token_id]})
    assert resp.status_code == 200, resp.text
    assert resp.json()["terminated"]
    assert (await client.get(f"/sessions/{sid}")).json()["text"] == text
    await _assert_unharmed(client, witnesses)


async def test_recursion_without_a_base_case_that_never_ends_compiles_and_never_accepts(
    make_app: AppFactory, default_tokenizer: Tokenizer
) -> None:
    # 'a: "x" a' has no finite string either, but its mask is not empty ("x" forever): llguidance
    # cannot tell, and neither can we cheaply. It costs its sender only (and it runs in the slow
    # lane when its masks are slow). Its first mask takes about 0.3 s, 0.9 s on a loaded machine:
    # the first-mask budget is raised here, this test is about what happens after the compile.
    async with serve(make_app(max_first_mask_ms=30_000)) as client:
        await _never_ends(client, default_tokenizer)


async def _never_ends(client: httpx.AsyncClient, default_tokenizer: Tokenizer) -> None:
    resp = await client.post("/compile", json={"grammar": 'start: a\na: "x" a', "open_session": True})
    assert resp.status_code == 200
    sid = resp.json()["session_id"]
    x = default_tokenizer.encode("x")
    for _ in range(3):
        resp = await client.post(f"/sessions/{sid}/accept", json={"tokens": x})
        if resp.status_code == 200:
            assert not resp.json()["accepting"]
        else:  # llguidance's step_max_items stops it after a few steps: a clean 413
            assert assert_problem(resp, 413, "engine-limit")["limit"] in ("step_max_items", "parser")
    resp = await client.post(f"/sessions/{sid}/accept", json={"tokens": [default_tokenizer.eos_token_id]})
    assert resp.status_code in (409, 413)


async def test_a_failed_compile_is_remembered_and_repeats_cost_nothing(client: httpx.AsyncClient) -> None:
    body = {"regex": "(a)\\1"}
    first = await client.post("/compile", json=body)
    assert_problem(first, 400, "grammar-invalid")
    before = (await client.get("/stats")).json()["cache"]
    times = []
    for _ in range(50):
        start = time.perf_counter()
        again = await client.post("/compile", json=body)
        times.append(time.perf_counter() - start)
        assert again.json() == first.json()  # the same problem document, byte for byte
    after = (await client.get("/stats")).json()["cache"]
    assert after["compile_errors"] == before["compile_errors"]  # no compile ran again
    assert after["negative_hits"] - before["negative_hits"] == 50
    assert after["negative_entries"] >= 1
    assert max(times) < 0.05
    metrics = (await client.get("/metrics")).text
    assert "guidance_negative_cache_hits_total 51.0" in metrics or "guidance_negative_cache_hits_total 50.0" in metrics


async def test_the_failed_compile_cache_expires(make_app: AppFactory) -> None:
    async with serve(make_app(negative_cache_ttl_seconds=0.05)) as client:
        assert_problem(await client.post("/compile", json={"regex": "(?=a)"}), 400, "grammar-invalid")
        await asyncio.sleep(0.1)
        assert_problem(await client.post("/compile", json={"regex": "(?=a)"}), 400, "grammar-invalid")
        cache = (await client.get("/stats")).json()["cache"]
        assert cache["compile_errors"] == 2 and cache["negative_hits"] == 0


async def test_a_slow_program_does_not_stall_other_sessions(
    client: httpx.AsyncClient, default_tokenizer: Tokenizer
) -> None:
    # A 20,000-character literal is under max_expansion, but each of its masks takes about
    # 0.1 s: its sessions are served in the slow lane, off the event loop.
    witnesses = await _witnesses(client, default_tokenizer)
    slow = (await client.post("/compile", json={"template": "ab" * 10_000, "open_session": True})).json()["session_id"]
    fast_sid = next(iter(witnesses))
    done_while_slow = 0
    task = asyncio.create_task(client.get(f"/sessions/{slow}/mask"))
    await asyncio.sleep(0)
    deadline = time.monotonic() + 30
    while not task.done():
        assert time.monotonic() < deadline, "the slow mask never finished"
        resp = await client.get(f"/sessions/{fast_sid}/mask")
        assert resp.content == witnesses[fast_sid]
        done_while_slow += 1
        # In-process requests may complete without ever suspending: hand the loop a turn so it
        # can take the slow lane's result (a real server gets one at every socket read).
        await asyncio.sleep(0)
    assert (await task).status_code == 200
    assert done_while_slow >= 3, done_while_slow
    metrics = (await client.get("/metrics")).text
    calls = re.search(r"^guidance_slow_lane_calls_total (\S+)$", metrics, re.MULTILINE)
    assert calls and float(calls[1]) >= 1
    assert re.search(r"^guidance_slow_lane_programs [1-9]", metrics, re.MULTILINE)
    await _assert_unharmed(client, witnesses)
