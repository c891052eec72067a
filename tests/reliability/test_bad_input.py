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
from tests.core.test_derivation import lark_chain, schema_chain
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
    extra: dict[str, Any] = field(default_factory=dict)  # fields the problem must have (limit, location...)


def _chunks(total: int) -> AsyncIterator[bytes]:
    async def gen() -> AsyncIterator[bytes]:
        yield b'{"template": "'
        for _ in range(total // 65536 + 1):
            yield b"y" * 65536
        yield b'"}'

    return gen()


JSON = {"content-type": "application/json"}
# fmt: off
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
    Case("template: unbalanced block", "POST", "/compile", 400, "template-invalid",
         json={"template": "{{#select 'a'}}x"}),
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
         json={"json_schema": {"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}},
                               "$ref": "#/$defs/a"}}),
    Case("schema: $ref to itself", "POST", "/compile", 400, "grammar-invalid", json={"json_schema": {"$ref": "#"}}),
    Case("schema: const of 100,000 characters", "POST", "/compile", 413, "limit-exceeded",
         json={"json_schema": {"const": "z" * 100_000}}),
    Case("schema: unknown type", "POST", "/compile", 400, "schema-invalid", json={"json_schema": {"type": "frob"}}),
    Case("choice: 20,000 options", "POST", "/compile", 413, "limit-exceeded",
         json={"choice": [f"o{i}" for i in range(20_000)]}),
    # -- text UTF-8 cannot hold (JSON escapes of lone surrogates, raw bytes that are not UTF-8)
    Case("unicode: lone surrogate in a template", "POST", "/compile", 422, "unicode-invalid",
         content=rb'{"template": "Hi \ud800"}', headers=JSON, extra={"location": "body", "field": "/template"}),
    Case("unicode: lone surrogate in a variable's name", "POST", "/compile", 422, "unicode-invalid",
         content=rb'{"template": "x", "variables": {"\udc00": "v"}}', headers=JSON,
         extra={"field": "/variables/\\udc00"}),
    Case("unicode: lone surrogate in a schema key", "POST", "/compile", 422, "unicode-invalid",
         content=rb'{"json_schema": {"properties": {"\udfff": {}}}}', headers=JSON,
         extra={"field": "/json_schema/properties/\\udfff"}),
    Case("unicode: lone surrogate in a choice", "POST", "/compile", 422, "unicode-invalid",
         content=rb'{"choice": ["a", "\ud800"]}', headers=JSON, extra={"field": "/choice/1"}),
    Case("unicode: lone surrogate in a step's session id", "POST", "/step", 422, "unicode-invalid",
         content=rb'{"sessions": [{"session_id": "\ud800"}]}', headers=JSON, extra={"field": "/sessions/0/session_id"}),
    Case("unicode: lone surrogate in /tokenize text", "POST", "/tokenize", 422, "unicode-invalid",
         content=rb'{"text": "\ud800"}', headers=JSON, extra={"field": "/text"}),
    Case("unicode: surrogate as raw bytes (CESU-8)", "POST", "/compile", 422, "unicode-invalid",
         content=b'{"regex": "\xed\xa0\x80"}', headers=JSON, extra={"field": "/regex"}),
    Case("unicode: bytes that are not UTF-8", "POST", "/compile", 422, "unicode-invalid",
         content=b'{"regex": "\xff"}', headers=JSON, extra={"field": "/regex"}),
    Case("unicode: a UTF-16 body", "POST", "/compile", 422, "unicode-invalid",
         content='{"regex": "\\ud800"}'.encode("utf-16-le"), headers=JSON, extra={"location": "body"}),
    Case("unicode: percent-escaped surrogate in a path", "GET", "/sessions/%ED%A0%80/mask", 422, "unicode-invalid",
         extra={"location": "path"}),
    Case("unicode: percent-escaped bytes that are not UTF-8 in a query", "POST", "/tokenizers?name=%FF", 422,
         "unicode-invalid", content=b"{}", headers=JSON, extra={"location": "query", "field": "name"}),
    # -- memory one request multiplies (see also tests/reliability/test_memory.py)
    Case("step: 17 draft tokens for one session", "POST", "/step", 413, "limit-exceeded",
         json={"sessions": [{"session_id": "{sid}", "draft_tokens": [1000] * 17}]},
         extra={"limit": "max_draft_tokens"}),
    Case("step: an answer over max_step_answer_bytes", "POST", "/step", 413, "limit-exceeded",
         json={"sessions": [{"session_id": "{sid}", "draft_tokens": [1000] * 16}]},
         extra={"limit": "max_step_answer_bytes"}),
    Case("/tokenize: text over max_tokenize_chars", "POST", "/tokenize", 413, "limit-exceeded",
         json={"text": "a" * 100_001}, extra={"limit": "max_tokenize_chars"}),
    Case("/detokenize: more ids than max_session_tokens", "POST", "/detokenize", 413, "limit-exceeded",
         json={"tokens": [1000] * 131_073}, extra={"limit": "max_session_tokens"}),
    Case("variables: 1,001 of them", "POST", "/compile", 413, "limit-exceeded",
         json={"template": "x", "variables": {f"v{i}": "" for i in range(1001)}}, extra={"limit": "max_variables"}),
    Case("variables: 200,000 bytes", "POST", "/compile", 413, "limit-exceeded",
         json={"template": "x", "variables": {"v": "x" * 200_000}}, extra={"limit": "max_variables_bytes"}),
    Case("tokenizer upload: an id of 2,000,000", "POST", "/tokenizers?name=wide", 413, "limit-exceeded",
         json={"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []},
               "added_tokens": [{"id": 2_000_000, "content": "</s>", "special": True}]},
         extra={"limit": "max_vocab_size"}),
    # -- neighbours: big integers, deep bodies, huge enums
    Case("a 4,000-digit token id", "POST", "/sessions/{sid}/accept", 422, "validation-error",
         content=b'{"tokens": [' + b"9" * 4000 + b"]}", headers=JSON),
    Case("a 4,000-digit token id in /step", "POST", "/step", 422, "validation-error",
         content=b'{"sessions": [{"session_id": "x", "tokens": [' + b"9" * 4000 + b"]}]}", headers=JSON),
    Case("a 4,000-digit rollback", "POST", "/sessions/{sid}/rollback", 422, "validation-error",
         content=b'{"tokens": ' + b"9" * 4000 + b"}", headers=JSON),
    Case("a 5,000-digit integer (past Python's parsing limit)", "POST", "/sessions/{sid}/accept", 422, "json-invalid",
         content=b'{"tokens": [' + b"9" * 5000 + b"]}", headers=JSON),
    Case("schema: a 4,000-digit maximum", "POST", "/compile", 400, "schema-invalid",
         content=b'{"json_schema": {"type": "integer", "maximum": ' + b"9" * 4000 + b"}}", headers=JSON),
    Case("step: JSON nested 100,000 levels", "POST", "/step", 422, "json-invalid",
         content=b'{"sessions": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", headers=JSON),
    Case("variables: JSON nested 100,000 levels", "POST", "/compile", 422, "json-invalid",
         content=b'{"template": "x", "variables": {"v": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}", headers=JSON),
    Case("tokenizer upload: JSON nested 100,000 levels", "POST", "/tokenizers?name=deep", 400, "tokenizer-invalid",
         content=b"[" * 100_000 + b"]" * 100_000, headers=JSON),
    Case("schema: enum of 43,000 strings (over max_source_bytes)", "POST", "/compile", 413, "limit-exceeded",
         json={"json_schema": {"enum": [f"{i:020d}" for i in range(43_000)]}}, extra={"limit": "max_source_bytes"}),
    # -- derivation chains that overflowed the engine's native stack (SIGSEGV) before the bound
    Case("schema: $ref chain 3,000 levels deep", "POST", "/compile", 413, "limit-exceeded",
         json={"json_schema": schema_chain("ref", 3000)}, extra={"limit": "max_derivation_depth"}),
    Case("schema: properties chain 2,000 levels deep", "POST", "/compile", 413, "limit-exceeded",
         json={"json_schema": schema_chain("properties", 2000)}, extra={"limit": "max_derivation_depth"}),
    Case("Lark: rule chain 10,000 levels deep", "POST", "/compile", 413, "limit-exceeded",
         json={"grammar": lark_chain("alt", 10_000)}, extra={"limit": "max_derivation_depth"}),
    Case("template: json slot with an anyOf chain 1,500 levels deep", "POST", "/compile", 413, "limit-exceeded",
         json={"template": "{{json 'x' schema=s}}", "variables": {"s": schema_chain("anyOf", 1500)}},
         extra={"limit": "max_derivation_depth"}),
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
# fmt: on


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
    async with serve(
        make_app(
            max_body_bytes=MAX_BODY,
            max_batch_size=8,
            max_step_answer_bytes=256 * 1024,  # 16 rows of 16 kB fit, 17 do not
            max_tokenize_chars=100_000,
            max_variables_bytes=150_000,
        )
    ) as client:
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
        if case.chunked:
            resp = await client.request(case.method, path, content=_chunks(MAX_BODY), headers=JSON)
        elif case.content is not None:
            resp = await client.request(case.method, path, content=case.content, headers=case.headers)
        else:
            resp = await client.request(case.method, path, json=body)
        try:
            doc = assert_problem(resp, case.status, case.code or "")
            for key, value in case.extra.items():
                assert doc.get(key) == value, (key, doc.get(key))
            assert len(resp.content) < 4096, "the answer quotes too much of the input"
        except AssertionError as e:
            failures.append(f"{case.name}: {e}")
    assert not failures, "\n".join(failures)
    # The case's own session is unchanged by every refused accept and rollback.
    assert (await client.get(f"/sessions/{sid}/mask")).content == mask_before
    assert (await client.get(f"/sessions/{sid}")).json()["tokens"] == []
    await _assert_unharmed(client, witnesses)


@pytest.mark.parametrize(("name", "body", "text"), COMPILES, ids=[c[0] for c in COMPILES])
async def test_inputs_that_compile_work(
    client: httpx.AsyncClient, default_tokenizer: Tokenizer, name: str, body: dict[str, Any], text: str
) -> None:
    tok = default_tokenizer
    witnesses = await _witnesses(client, tok)
    resp = await client.post("/compile", json={**body, "open_session": True})
    assert resp.status_code == 200, resp.text
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
    for _ in range(50):
        again = await client.post("/compile", json=body)
        assert again.json() == first.json()  # the same problem document, byte for byte
    after = (await client.get("/stats")).json()["cache"]
    assert after["compile_errors"] == before["compile_errors"]  # no compile ran again
    assert after["negative_hits"] - before["negative_hits"] == 50
    assert after["negative_entries"] >= 1
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


async def test_many_small_requests_hold_bounded_state(make_app: AppFactory, default_tokenizer: Tokenizer) -> None:
    # Each request is cheap; what they leave behind is bounded by a setting: programs by the
    # cache, failed compiles by the negative cache, sessions by the cap (refused, not evicted).
    app = make_app(cache_max_entries=16, negative_cache_max_entries=8, max_sessions=40)
    async with serve(app) as client:
        witnesses = await _witnesses(client, default_tokenizer)
        statuses: dict[int, int] = {}
        for i in range(100):
            for body in ({"regex": f"x{i}[a-z]*"}, {"regex": f"(?=x{i})"}):
                resp = await client.post("/compile", json=body)
                statuses[resp.status_code] = statuses.get(resp.status_code, 0) + 1
        assert statuses == {200: 100, 400: 100}
        cache = (await client.get("/stats")).json()["cache"]
        assert cache["entries"] <= 16 and cache["negative_entries"] <= 8, cache
        opened = [await client.post("/sessions", json={"regex": "[a-z]+"}) for _ in range(50)]
        refused = [r for r in opened if r.status_code == 429]
        assert len(refused) == 50 - (40 - len(witnesses))
        assert all(r.headers["retry-after"] and r.json()["code"] == "too-many-sessions" for r in refused)
        for _ in range(300):
            assert (await client.post("/tokenize", json={"text": "many small requests"})).status_code == 200
        assert (await client.get("/stats")).json()["sessions"]["active"] == 40
        await _assert_unharmed(client, witnesses)
