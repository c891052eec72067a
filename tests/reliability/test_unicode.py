"""Invalid Unicode is a 4xx everywhere: every string the API takes is checked at the edge.

The oracle is independent of ``service.text``: Python's strict UTF-8 decoder and JSON parser
say what the server will see, and a string is invalid exactly when UTF-8 cannot encode it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import orjson
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core import Tokenizer
from service import Settings, create_app
from service.errors import InvalidText
from service.problems import problem_response
from service.text import body_text_error, find_invalid_string, printable, url_text_error

# -- the oracle -------------------------------------------------------------------------------


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _all_strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from _all_strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _all_strings(v)


def _body_is_sound(body: bytes) -> bool:
    """What the server should accept as text: strict UTF-8, and every parsed string encodable."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    try:
        parsed = json.loads(text)
    except ValueError:
        return True  # not JSON: some other 4xx, not ours to judge here
    return all(_encodable(s) for s in _all_strings(parsed))


def _encode(body: Any, ascii_escapes: bool) -> bytes:
    """JSON bytes as a client would send them: ``\\u`` escapes, or raw (lone surrogates as CESU bytes)."""
    if ascii_escapes:
        return json.dumps(body, ensure_ascii=True).encode("ascii")
    return json.dumps(body, ensure_ascii=False).encode("utf-8", "surrogatepass")


# -- service.text against the oracle ----------------------------------------------------------

# Code points JSON can spell, surrogates included, with pairs and lone halves made likely.
any_char = st.characters(exclude_categories=())
text = st.lists(
    st.one_of(any_char, st.sampled_from(["\ud800", "\udbff", "\udc00", "\udfff", "\ud83d\ude00", "\\", "\\u", '"'])),
    max_size=8,
).map("".join)


@settings(max_examples=300, deadline=None)
@given(
    value=st.recursive(
        text, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3), max_leaves=6
    ),
    ascii_escapes=st.booleans(),
)
def test_the_body_check_agrees_with_the_oracle(value: Any, ascii_escapes: bool) -> None:
    body = _encode(value, ascii_escapes)
    error = body_text_error(body)
    assert (error is None) == _body_is_sound(body), (body, error)
    if error is not None:
        assert error.status == 422 and error.code == "unicode-invalid" and error.location == "body"
        orjson.dumps(error.to_dict())  # everything it echoes serialises


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (rb'{"a": "\ud800"}', "/a"),
        (rb'{"a": ["x", "\udc00"]}', "/a/1"),
        (rb'{"a": "\ud800\u0041"}', "/a"),  # a high half followed by something else
        (rb'{"a": "\udc00\ud800"}', "/a"),  # the halves in the wrong order
        (rb'{"a": "\ud800\\udc00"}', "/a"),  # an escaped backslash between them
        (rb'{"a/b~": {"c": "\udfff"}}', "/a~1b~0/c"),
        (rb'{"\ud800": 1}', "/\\ud800"),
        (b'{"a": "\xed\xa0\x80"}', "/a"),  # a surrogate in raw bytes (CESU-8)
        (b'{"a": "\xff"}', "/a"),
        (b'{"a": "\xff', ""),  # not JSON either: the body as a whole
    ],
)
def test_the_body_check_names_the_field(body: bytes, field: str) -> None:
    error = body_text_error(body)
    assert error is not None and error.field == field, error


@pytest.mark.parametrize(
    "body",
    [
        rb'{"a": "\ud83d\ude00"}',
        rb'{"a": "\\ud800"}',
        rb'{"a": "\\\\ud800"}',
        '{"a": "\u00e9\U0001f600"}'.encode(),
        b'{"a": 1}',
        b"",
    ],
)
def test_sound_bodies_pass(body: bytes) -> None:
    assert body_text_error(body) is None


def test_a_utf16_body_is_refused() -> None:
    # Python's JSON parser would guess UTF-16 from the NUL bytes and decode lone surrogates.
    error = body_text_error('{"regex": "\\ud800"}'.encode("utf-16-le"))
    assert error is not None and error.code == "unicode-invalid"


def test_the_path_and_query_checks() -> None:
    assert url_text_error(b"/sessions/abc/mask", b"") is None
    assert url_text_error(b"/sessions/%C3%A9", b"name=%C3%A9&x=1+2") is None
    error = url_text_error(b"/sessions/%ED%A0%80/mask", b"")
    assert error is not None and error.location == "path"
    error = url_text_error(b"/tokenizers", b"a=1&na%FFme=x")
    assert error is not None and error.location == "query" and error.field == "na\\xffme"
    error = url_text_error(b"/tokenizers", b"name=%ED%A0%80")
    assert error is not None and error.field == "name"


def test_find_invalid_string_survives_deep_values() -> None:
    value: Any = "\ud800"
    for _ in range(100_000):
        value = [value]
    path = find_invalid_string(value)
    assert path is not None and len(path) == 100_000


def test_printable_never_fails() -> None:
    assert printable("a\ud800b") == "a\\ud800b"
    assert printable("é" * 500).endswith("...")


@pytest.mark.parametrize(
    "extra",
    [
        {"field": "\ud800", "detail2": ["\udfff", {"\udc00": 1}]},
        {"big": 10**40, "neg": -(10**40)},
        {"object": object(), "set": {1, 2}},
        {"bad_str": type("Bad", (), {"__str__": lambda self: 1 / 0})()},
    ],
)
def test_the_problem_builder_never_fails_on_what_it_echoes(extra: dict[str, Any]) -> None:
    resp = problem_response(422, "x-code", "T\ud800", "detail \udfff " + "z" * 10, extra)
    doc = orjson.loads(resp.body)
    assert doc["status"] == 422 and doc["code"] == "x-code" and doc["detail"].startswith("detail \\udfff")
    assert resp.media_type == "application/problem+json"


def test_invalid_text_is_a_documented_problem() -> None:
    error = InvalidText("query", "name", "query parameter name: does not decode as UTF-8")
    assert error.to_dict()["location"] == "query" and error.status == 422


# -- every string field of every endpoint -------------------------------------------------------


@dataclass(frozen=True)
class Field:
    """One string field: how to send ``s`` in it."""

    name: str
    send: Callable[[TestClient, str, str, bool], Any]  # (http, sid, s, ascii_escapes) -> response
    location: str  # where an invalid s is reported
    pointer: str | None = None  # the expected field for an invalid value (None: not checked)


def _post(path: str, make: Callable[[str], Any]) -> Callable[[TestClient, str, str, bool], Any]:
    def send(http: TestClient, sid: str, s: str, ascii_escapes: bool) -> Any:
        return http.post(
            path.replace("{sid}", sid),
            content=_encode(make(s), ascii_escapes),
            headers={"content-type": "application/json"},
        )

    return send


def _in_path(method: str, template: str) -> Callable[[TestClient, str, str, bool], Any]:
    def send(http: TestClient, sid: str, s: str, ascii_escapes: bool) -> Any:
        segment = quote(s.encode("utf-8", "surrogatepass"), safe="")
        body = (
            {"tokens": 0} if template.endswith("rollback") else {"tokens": []} if template.endswith("accept") else None
        )
        return http.request(method, template.replace("{s}", segment), json=body)

    return send


def _in_query(http: TestClient, sid: str, s: str, ascii_escapes: bool) -> Any:
    name = quote(s.encode("utf-8", "surrogatepass"), safe="")
    return http.post(f"/tokenizers?name={name}", content=_TINY_TOKENIZER)


def _in_header(http: TestClient, sid: str, s: str, ascii_escapes: bool) -> Any:
    raw = s.encode("utf-8", "surrogatepass").replace(b"\r", b"").replace(b"\n", b"")
    return http.get(f"/sessions/{sid}/mask", headers={"x-worker-id": raw, "accept": raw})


_TINY_TOKENIZER = json.dumps(
    {
        "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "</s>": 2}, "merges": []},
        "added_tokens": [{"id": 2, "content": "</s>", "special": True}],
    }
).encode()

FIELDS = [
    Field("compile template", _post("/compile", lambda s: {"template": s}), "body", "/template"),
    Field("compile regex", _post("/compile", lambda s: {"regex": s}), "body", "/regex"),
    Field("compile grammar", _post("/compile", lambda s: {"grammar": s}), "body", "/grammar"),
    Field("compile choice", _post("/compile", lambda s: {"choice": ["a", s]}), "body", "/choice/1"),
    Field("compile schema text", _post("/compile", lambda s: {"json_schema": s}), "body", "/json_schema"),
    Field(
        "compile schema const", _post("/compile", lambda s: {"json_schema": {"const": s}}), "body", "/json_schema/const"
    ),
    Field(
        "compile schema enum",
        _post("/compile", lambda s: {"json_schema": {"enum": ["a", s]}}),
        "body",
        "/json_schema/enum/1",
    ),
    Field(
        "compile schema pattern",
        _post("/compile", lambda s: {"json_schema": {"type": "string", "pattern": s}}),
        "body",
        "/json_schema/pattern",
    ),
    Field(
        "compile schema key",
        _post("/compile", lambda s: {"json_schema": {"type": "object", "properties": {s: {}}}}),
        "body",
    ),
    Field(
        "compile variable value",
        _post("/compile", lambda s: {"template": "{{v}}", "variables": {"v": s}}),
        "body",
        "/variables/v",
    ),
    Field("compile variable name", _post("/compile", lambda s: {"template": "x", "variables": {s: "x"}}), "body"),
    Field("compile tokenizer", _post("/compile", lambda s: {"regex": "a", "tokenizer": s}), "body", "/tokenizer"),
    Field("compile option name", _post("/compile", lambda s: {"json_schema": {}, "options": {s: 1}}), "body"),
    Field(
        "compile option value",
        _post("/compile", lambda s: {"json_schema": {}, "options": {"whitespace": s}}),
        "body",
        "/options/whitespace",
    ),
    Field("compile unknown key", _post("/compile", lambda s: {"regex": "a", s: 1}), "body"),
    Field("sessions program_id", _post("/sessions", lambda s: {"program_id": s}), "body", "/program_id"),
    Field("sessions template", _post("/sessions", lambda s: {"template": s}), "body", "/template"),
    Field(
        "step session_id", _post("/step", lambda s: {"sessions": [{"session_id": s}]}), "body", "/sessions/0/session_id"
    ),
    Field(
        "step mask_encoding", _post("/step", lambda s: {"sessions": [], "mask_encoding": s}), "body", "/mask_encoding"
    ),
    Field("accept body key", _post("/sessions/{sid}/accept", lambda s: {"tokens": [], s: 1}), "body"),
    Field("tokenize text", _post("/tokenize", lambda s: {"text": s}), "body", "/text"),
    Field("tokenize tokenizer", _post("/tokenize", lambda s: {"text": "a", "tokenizer": s}), "body", "/tokenizer"),
    Field(
        "detokenize tokenizer", _post("/detokenize", lambda s: {"tokens": [1], "tokenizer": s}), "body", "/tokenizer"
    ),
    Field(
        "tokenizer upload body",
        lambda http, sid, s, a: http.post(
            "/tokenizers?name=up", content=_encode({"model": {"type": "BPE", "vocab": {s: 0}, "merges": []}}, a)
        ),
        "body",
    ),
    Field("tokenizer upload name", _in_query, "query", "name"),
    Field("mask path", _in_path("GET", "/sessions/{s}/mask"), "path"),
    Field("session path", _in_path("GET", "/sessions/{s}"), "path"),
    Field("delete path", _in_path("DELETE", "/sessions/{s}"), "path"),
    Field("accept path", _in_path("POST", "/sessions/{s}/accept"), "path"),
    Field("rollback path", _in_path("POST", "/sessions/{s}/rollback"), "path"),
    Field("fork path", _in_path("POST", "/sessions/{s}/fork"), "path"),
    Field("ui path", _in_path("GET", "/ui/{s}"), "path"),
    Field("headers", _in_header, "header"),
]


@pytest.fixture(scope="module")
def http(default_tokenizer: Tokenizer) -> Iterator[TestClient]:
    app = create_app(Settings(max_tokenizers=4), tokenizers={"default": default_tokenizer})
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


@pytest.fixture(scope="module")
def witness(http: TestClient, default_tokenizer: Tokenizer) -> tuple[str, bytes]:
    """A session part-way through a template, and its mask: unchanged by everything here."""
    sid = http.post("/sessions", json={"template": "Name: {{gen 'n' regex='[A-Z][a-z]+'}}!"}).json()["session_id"]
    assert (
        http.post(f"/sessions/{sid}/accept", json={"tokens": default_tokenizer.encode("Name: Ad")}).status_code == 200
    )
    return sid, http.get(f"/sessions/{sid}/mask").content


def _expected_invalid(field: Field, s: str, ascii_escapes: bool) -> bool:
    if field.location == "header":
        return False  # header bytes are read as Latin-1: nothing to refuse
    if field.location in ("path", "query"):
        return not _encodable(s)  # percent-escaped surrogates are not UTF-8 bytes
    return not _body_is_sound(_encode({"v": s}, ascii_escapes))


def _check(field: Field, http: TestClient, sid: str, s: str, ascii_escapes: bool) -> None:
    resp = field.send(http, sid, s, ascii_escapes)
    assert resp.status_code < 500, (field.name, repr(s), resp.status_code, resp.text[:300])
    if resp.status_code >= 400:
        assert resp.headers["content-type"] == "application/problem+json", (field.name, resp.text[:200])
        doc = resp.json()
        assert isinstance(doc["code"], str) and doc["status"] == resp.status_code
    if _expected_invalid(field, s, ascii_escapes):
        assert resp.status_code == 422, (field.name, repr(s), resp.status_code, resp.text[:300])
        doc = resp.json()
        assert doc["code"] == "unicode-invalid" and doc["location"] == field.location, (field.name, doc)
        if field.pointer is not None:
            assert doc["field"] == field.pointer, (field.name, doc)
    elif field.location != "header":
        assert not (resp.status_code == 422 and resp.json()["code"] == "unicode-invalid"), (field.name, repr(s))


def _assert_healthy(http: TestClient, witness: tuple[str, bytes]) -> None:
    assert http.get("/healthz").status_code == 200
    assert http.get("/readyz").status_code == 200
    sid, mask = witness
    assert http.get(f"/sessions/{sid}/mask").content == mask


@pytest.mark.parametrize("field", FIELDS, ids=[f.name for f in FIELDS])
@pytest.mark.parametrize(
    "s", ["\ud800", "a\udfffb", "\udc00\ud800", "ok \u00e9 \U0001f600"], ids=["high", "low", "swapped", "valid"]
)
def test_every_string_field_refuses_what_utf8_cannot_hold(
    http: TestClient, witness: tuple[str, bytes], field: Field, s: str
) -> None:
    for ascii_escapes in (True, False):
        _check(field, http, witness[0], s, ascii_escapes)
    _assert_healthy(http, witness)


_UNHEALTHY_OK = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]  # module-scoped server


@settings(max_examples=150, deadline=None, suppress_health_check=_UNHEALTHY_OK)
@given(field=st.sampled_from(FIELDS), s=text, ascii_escapes=st.booleans())
def test_any_string_in_any_field_is_answered_without_a_5xx(
    http: TestClient, witness: tuple[str, bytes], field: Field, s: str, ascii_escapes: bool
) -> None:
    _check(field, http, witness[0], s, ascii_escapes)


@pytest.mark.slow
@settings(max_examples=3000, deadline=None, suppress_health_check=_UNHEALTHY_OK)
@given(field=st.sampled_from(FIELDS), s=text | st.text(any_char, max_size=64), ascii_escapes=st.booleans())
def test_any_string_in_any_field_long_run(
    http: TestClient, witness: tuple[str, bytes], field: Field, s: str, ascii_escapes: bool
) -> None:
    _check(field, http, witness[0], s, ascii_escapes)


def test_the_server_is_healthy_after_the_property_runs(http: TestClient, witness: tuple[str, bytes]) -> None:
    # Runs after the property tests of this module (file order): nothing they sent harmed it.
    _assert_healthy(http, witness)
