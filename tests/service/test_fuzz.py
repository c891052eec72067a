"""Nothing a client sends makes the server answer 500: property tests over every request body."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core import Tokenizer
from service import Settings, create_app

_FIELDS = [
    "template",
    "json_schema",
    "regex",
    "grammar",
    "choice",
    "variables",
    "tokenizer",
    "options",
    "open_session",
    "program_id",
    "tokens",
    "dry_run",
    "text",
]
_TEMPLATE_PIECES = [
    "{{",
    "}}",
    "gen",
    "select",
    "json",
    "grammar",
    "#repeat",
    "/repeat",
    "#select",
    "/select",
    "{{or}}",
    " 'x'",
    " 'y'",
    " regex=",
    "'[a-z]+'",
    " options=",
    "['a', 'b']",
    " stop=",
    "'\\n'",
    " max_tokens=",
    "3",
    "-1",
    " schema=",
    '{"type": "integer"}',
    " min=",
    " max=",
    " sep=",
    "', '",
    "{{! c }}",
    "\\{{",
    "v",
    "lark=",
    "text ",
    "\n",
    "{{v}}",
    "{{#",
    "{{/",
    " ",
    "'",
    '"',
    "=",
]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
templates = st.lists(st.sampled_from(_TEMPLATE_PIECES), max_size=14).map("".join)
schemas = st.recursive(
    st.sampled_from(
        [
            {"type": "string"},
            {"type": "integer", "minimum": 5, "maximum": 1},
            {"enum": []},
            {"const": None},
            {"type": ["string", "null"]},
            {"pattern": "("},
            {"$ref": "#/nowhere"},
            {"minItems": 1.0},
            True,
            False,
            {"format": "date-time"},
            {"oneOf": [{"type": "string"}, {"type": "string"}]},
            {"type": "bogus"},
        ]
    ),
    lambda inner: (
        st.builds(
            lambda p: {"type": "object", "properties": p}, st.dictionaries(st.text(max_size=5), inner, max_size=3)
        )
        | st.builds(lambda i: {"type": "array", "items": i, "maxItems": 3}, inner)
        | st.builds(lambda a: {"anyOf": a}, st.lists(inner, max_size=3))
    ),
    max_leaves=8,
)
regexes = st.lists(
    st.sampled_from(
        ["a", "[", "]", "(", ")", "*", "+", "?", "{2,1}", "{9999}", "\\", "|", "^", "$", ".", "\\d", "(?P<x>"]
    ),
    max_size=10,
).map("".join)
compile_bodies = st.one_of(
    st.dictionaries(st.sampled_from(_FIELDS), json_values, max_size=4),
    st.fixed_dictionaries(
        {"template": templates}, optional={"variables": st.dictionaries(st.sampled_from(["v", "x"]), json_values)}
    ),
    st.fixed_dictionaries(
        {"json_schema": schemas}, optional={"options": st.dictionaries(st.just("whitespace"), json_values)}
    ),
    st.fixed_dictionaries({"regex": regexes}),
    st.fixed_dictionaries({"grammar": st.text(max_size=40)}),
    st.fixed_dictionaries({"choice": st.lists(st.text(max_size=5), max_size=4)}),
    json_values,
)
token_lists = st.lists(st.integers(-5, 140_000), max_size=6)

_SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def http(default_tokenizer: Tokenizer) -> Iterator[TestClient]:
    app = create_app(Settings(max_sessions=100_000), tokenizers={"default": default_tokenizer})
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


@pytest.fixture(scope="module")
def session_id(http: TestClient) -> str:
    resp = http.post("/compile", json={"template": "Hi {{gen 'x' regex='[a-z]{1,4}'}}", "open_session": True})
    return str(resp.json()["session_id"])


def _check(resp: Any) -> None:
    assert resp.status_code < 500, (resp.status_code, resp.text[:300])
    if resp.status_code >= 400:
        assert resp.headers["content-type"] == "application/problem+json"
        assert isinstance(resp.json()["code"], str)


@_SETTINGS
@given(body=compile_bodies, path=st.sampled_from(["/compile", "/sessions"]))
def test_any_compile_body_is_answered_without_a_500(http: TestClient, body: Any, path: str) -> None:
    _check(http.post(path, json=body))


@_SETTINGS
@given(raw=st.binary(max_size=64) | st.text(max_size=64).map(str.encode))
def test_any_raw_body_is_answered_without_a_500(http: TestClient, session_id: str, raw: bytes) -> None:
    headers = {"content-type": "application/json"}
    for path in ["/compile", "/sessions", f"/sessions/{session_id}/accept", "/tokenize", "/detokenize"]:
        _check(http.post(path, content=raw, headers=headers))
    _check(http.post("/tokenizers", params={"name": "fuzz"}, content=raw))


@_SETTINGS
@given(tokens=token_lists | json_values, dry_run=st.booleans(), n=st.integers(-3, 10) | json_values)
def test_any_session_request_is_answered_without_a_500(
    http: TestClient, session_id: str, tokens: Any, dry_run: bool, n: Any
) -> None:
    fork = http.post(f"/sessions/{session_id}/fork")
    _check(fork)
    sid = fork.json()["session_id"]
    _check(http.post(f"/sessions/{sid}/accept", json={"tokens": tokens, "dry_run": dry_run}))
    _check(http.post(f"/sessions/{sid}/rollback", json={"tokens": n}))
    _check(http.get(f"/sessions/{sid}/mask"))
    _check(http.get(f"/sessions/{sid}/mask", headers={"accept": "application/json"}))
    _check(http.get(f"/sessions/{sid}"))
    _check(http.delete(f"/sessions/{sid}"))


@_SETTINGS
@given(text=st.text(max_size=30) | json_values, tokens=token_lists | json_values, name=st.text(max_size=10))
def test_any_tokenizer_request_is_answered_without_a_500(http: TestClient, text: Any, tokens: Any, name: str) -> None:
    _check(http.post("/tokenize", json={"text": text}))
    _check(http.post("/detokenize", json={"tokens": tokens}))
    _check(http.post("/tokenize", json={"text": "a", "tokenizer": name}))
    _check(http.get(f"/sessions/{json.dumps(name)}/mask"))


@pytest.mark.slow
@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=compile_bodies)
def test_compile_fuzz_soak(http: TestClient, body: Any) -> None:
    _check(http.post("/compile", json=body))


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999", "[" * 5000 + "]" * 5000])
def test_json_oddities_are_answered_without_a_500(http: TestClient, session_id: str, literal: str) -> None:
    # Python's JSON parser takes NaN and Infinity, and deep nesting costs it a RecursionError.
    for body in [
        f'{{"json_schema": {{"type": "number", "maximum": {literal}}}}}',
        f'{{"template": "{{{{gen \'x\'}}}}", "variables": {{"v": {literal}}}}}',
        f'{{"choice": {literal}}}',
        f'{{"regex": "a", "options": {{"whitespace": {literal}}}}}',
    ]:
        _check(http.post("/compile", content=body, headers={"content-type": "application/json"}))
    _check(http.post(f"/sessions/{session_id}/accept", content=f'{{"tokens": [{literal}]}}'))
    _check(http.post(f"/sessions/{session_id}/rollback", content=f'{{"tokens": {literal}}}'))
