"""API keys: who may use the server, whose sessions are whose, who may change the server."""

from __future__ import annotations

import hmac
import logging
import struct
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from pydantic import ValidationError

from core import Tokenizer
from guidance_client import AsyncGuidanceClient, AsyncRemoteGrammar
from service import Settings
from service.auth import KeyConfigError, KeyRing, read_key_file
from service.cli import main as cli_main
from service.sessions import SessionStore
from tests.service.helpers import PERSON_SCHEMA, TEMPLATE, AppFactory, assert_problem, serve
from tests.service.test_api import _tiny_hf_tokenizer_json

KEY_A = "key-a-0123456789abcdefghij"
KEY_B = "key-b-0123456789abcdefghij"
ADMIN = "admin-0123456789abcdefghij"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# Every route that needs a key: (method, path, JSON body). ``SID`` is replaced by a live session.
SID = "{sid}"
PROTECTED: list[tuple[str, str, Any]] = [
    ("POST", "/compile", {"regex": "[a-z]+"}),
    ("POST", "/sessions", {"regex": "[a-z]+"}),
    ("POST", f"/sessions/{SID}/accept", {"tokens": []}),
    ("GET", f"/sessions/{SID}/mask", None),
    ("POST", f"/sessions/{SID}/rollback", {"tokens": 0}),
    ("POST", f"/sessions/{SID}/fork", None),
    ("GET", f"/sessions/{SID}", None),
    ("GET", "/sessions", None),
    ("DELETE", f"/sessions/{SID}", None),
    ("POST", "/step", {"sessions": [{"session_id": SID, "tokens": []}]}),
    ("GET", "/stats", None),
    ("GET", "/tokenizers", None),
    ("POST", "/tokenizers?name=x", {}),
    ("POST", "/tokenize", {"text": "a"}),
    ("POST", "/detokenize", {"tokens": [1]}),
]


def _fill(value: Any, sid: str) -> Any:
    return orjson.loads(orjson.dumps(value).replace(SID.encode(), sid.encode())) if value is not None else None


async def _open(http: httpx.AsyncClient, key: str, **body: Any) -> str:
    body = {**(body or {"template": TEMPLATE}), "open_session": True}
    resp = await http.post("/compile", json=body, headers=bearer(key))
    assert resp.status_code == 200, resp.text
    return str(resp.json()["session_id"])


def _step_statuses(resp: httpx.Response) -> tuple[list[dict[str, Any]], bytes]:
    assert resp.status_code == 200, resp.text
    (length,) = struct.unpack_from("<I", resp.content)
    header = orjson.loads(resp.content[4 : 4 + length])
    return header["sessions"], resp.content[4 + length :]


# -- who may use it --------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_without_keys_no_header_is_needed_and_any_header_is_ignored(make_app: AppFactory) -> None:
    async with serve(make_app()) as http:
        sid = await _open(http, "anything-at-all-0000")
        assert (await http.get(f"/sessions/{sid}")).status_code == 200
        assert (await http.get(f"/sessions/{sid}/mask", headers=bearer("other-key-000000000"))).status_code == 200


@pytest.mark.asyncio
@pytest.mark.parametrize(("method", "path", "body"), PROTECTED, ids=[f"{m} {p}" for m, p, _ in PROTECTED])
async def test_every_route_needs_a_valid_key(make_app: AppFactory, method: str, path: str, body: Any) -> None:
    async with serve(make_app(api_keys=[KEY_A])) as http:
        sid = await _open(http, KEY_A)
        url, payload = path.replace(SID, sid), _fill(body, sid)
        for headers, invalid in (
            ({}, False),
            (bearer("not-a-key-of-this-server-000"), True),
            (bearer(KEY_A + "x"), True),
            (bearer(KEY_A[:-1]), True),
            ({"Authorization": f"Basic {KEY_A}"}, False),  # the key, but not as a bearer token
            ({"Authorization": "Bearer "}, False),
        ):
            resp = await http.request(method, url, json=payload, headers=headers)
            problem = assert_problem(resp, 401, "unauthorized")
            challenge = resp.headers["www-authenticate"]
            assert challenge.startswith("Bearer ")
            assert ('error="invalid_token"' in challenge) is invalid
            assert KEY_A not in resp.text and KEY_A not in str(problem)
        # the session was not touched by any of them
        state = (await http.get(f"/sessions/{sid}", headers=bearer(KEY_A))).json()
        assert state["tokens"] == []
        ok = await http.request(method, url, json=payload, headers=bearer(KEY_A))
        # the owner's own key reaches the route and its session (an empty tokenizer.json: 400)
        assert ok.status_code < 400 or (path.startswith("/tokenizers") and ok.status_code == 400), ok.text


@pytest.mark.asyncio
async def test_the_key_is_checked_before_the_body_is_read(make_app: AppFactory) -> None:
    async with serve(make_app(api_keys=[KEY_A], max_body_bytes=1024)) as http:
        assert_problem(await http.post("/compile", content=b"{not json"), 401, "unauthorized")
        assert_problem(await http.post("/compile", content=b"x" * 4096), 401, "unauthorized")
        assert_problem(await http.post("/step", content=b"[]"), 401, "unauthorized")
        assert_problem(await http.post("/compile", content=b"x" * 4096, headers=bearer(KEY_A)), 413, "body-too-large")


@pytest.mark.asyncio
async def test_scheme_is_case_insensitive(make_app: AppFactory) -> None:
    async with serve(make_app(api_keys=[KEY_A])) as http:
        assert (await http.get("/stats", headers={"Authorization": f"bearer {KEY_A}"})).status_code == 200
        assert (await http.get("/stats", headers={"Authorization": f"BEARER  {KEY_A} "})).status_code == 200


@pytest.mark.asyncio
@pytest.mark.parametrize("probes_open", [True, False])
async def test_health_readiness_and_metrics_are_open_by_setting(make_app: AppFactory, probes_open: bool) -> None:
    async with serve(make_app(api_keys=[KEY_A], public_health_and_metrics=probes_open)) as http:
        for path in ("/healthz", "/readyz", "/metrics"):
            resp = await http.get(path)
            if probes_open:
                assert resp.status_code == 200, (path, resp.text)
            else:
                assert_problem(resp, 401, "unauthorized")
            assert (await http.get(path, headers=bearer(KEY_A))).status_code == 200
        # the page and the API description are always open (the page asks for the key)
        assert (await http.get("/ui")).status_code == 200
        assert (await http.get("/ui/api.js")).status_code == 200
        assert (await http.get("/openapi.json")).status_code == 200


# -- whose session ---------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_another_keys_session_is_unknown_on_every_route(
    make_app: AppFactory, default_tokenizer: Tokenizer
) -> None:
    tok = default_tokenizer
    async with serve(make_app(api_keys=[KEY_A, KEY_B])) as http:
        mine = await _open(http, KEY_A)
        first = tok.encode("Name: Ada")
        resp = await http.post(f"/sessions/{mine}/accept", json={"tokens": first}, headers=bearer(KEY_A))
        assert resp.status_code == 200
        unknown = "x" * len(mine)
        for method, path, body in PROTECTED:
            if SID not in path or path == "/step":
                continue
            answers = []
            for sid in (mine, unknown):
                url = path.replace(SID, sid)
                resp = await http.request(method, url, json=_fill(body, sid), headers=bearer(KEY_B))
                problem = assert_problem(resp, 404, "session-not-found")
                problem["detail"] = problem["detail"].replace(sid, "ID")
                answers.append((dict(problem), resp.headers["content-type"]))
            assert answers[0] == answers[1], (method, path)
        # JSON masks too (the fast path reads the Accept header after the lookup)
        resp = await http.get(f"/sessions/{mine}/mask", headers={**bearer(KEY_B), "Accept": "application/json"})
        assert_problem(resp, 404, "session-not-found")
        # nothing of it touched the owner's session: not deleted, not moved, not forked into B's hands
        state = (await http.get(f"/sessions/{mine}", headers=bearer(KEY_A))).json()
        assert state["tokens"] == first and state["text"] == "Name: Ada"
        assert (await http.get("/stats", headers=bearer(KEY_A))).json()["sessions"]["active"] == 1


@pytest.mark.asyncio
async def test_step_treats_another_keys_session_as_unknown(make_app: AppFactory, default_tokenizer: Tokenizer) -> None:
    async with serve(make_app(api_keys=[KEY_A, KEY_B])) as http:
        theirs = await _open(http, KEY_A)
        mine = await _open(http, KEY_B)
        tokens = default_tokenizer.encode("Name")
        body = {"sessions": [{"session_id": mine, "tokens": tokens}, {"session_id": theirs, "tokens": tokens}]}
        statuses, masks = _step_statuses(await http.post("/step", json=body, headers=bearer(KEY_B)))
        assert statuses[0]["status"] == "ok"
        assert statuses[1]["status"] == "error" and statuses[1]["error"]["code"] == "session-not-found"
        assert statuses[1]["error"]["status"] == 404
        row = len(masks) // 2
        assert any(masks[:row]) and not any(masks[row:])  # the other key's row is zeros, as for an unknown id
        unknown = {"sessions": [{"session_id": "y" * len(theirs), "tokens": tokens}]}
        [as_unknown], _ = _step_statuses(await http.post("/step", json=unknown, headers=bearer(KEY_B)))
        assert {k: v for k, v in statuses[1].items() if k not in ("session_id", "row", "error")} == {
            k: v for k, v in as_unknown.items() if k not in ("session_id", "row", "error")
        }
        # and the owner's session did not move
        assert (await http.get(f"/sessions/{theirs}", headers=bearer(KEY_A))).json()["tokens"] == []
        statuses, _ = _step_statuses(await http.post("/step", json=body, headers=bearer(KEY_A)))
        assert [s["status"] for s in statuses] == ["error", "ok"]


@pytest.mark.asyncio
async def test_sessions_belong_to_the_key_that_opened_them_however_opened(make_app: AppFactory) -> None:
    async with serve(make_app(api_keys=[KEY_A, KEY_B])) as http:
        compiled = (await http.post("/compile", json={"json_schema": PERSON_SCHEMA}, headers=bearer(KEY_A))).json()
        program = {"program_id": compiled["program_id"]}
        by_id = (await http.post("/sessions", json=program, headers=bearer(KEY_A))).json()
        by_spec = (await http.post("/sessions", json={"regex": "[0-9]+"}, headers=bearer(KEY_A))).json()
        opened = await _open(http, KEY_A)
        forked = (await http.post(f"/sessions/{opened}/fork", headers=bearer(KEY_A))).json()
        for sid in (by_id["session_id"], by_spec["session_id"], opened, forked["session_id"]):
            assert (await http.get(f"/sessions/{sid}", headers=bearer(KEY_A))).status_code == 200
            assert_problem(await http.get(f"/sessions/{sid}", headers=bearer(KEY_B)), 404, "session-not-found")
            resp = await http.post(f"/sessions/{sid}/fork", headers=bearer(KEY_B))
            assert_problem(resp, 404, "session-not-found")
        # a program is shared, but never revealed: B opens A's program by id only once B has sent
        # its spec (an id alone would tell B what A compiled); the session is B's own
        assert_problem(await http.post("/sessions", json=program, headers=bearer(KEY_B)), 404, "program-not-found")
        spec = {"json_schema": PERSON_SCHEMA}
        theirs = (await http.post("/sessions", json=spec, headers=bearer(KEY_B))).json()
        assert theirs["program_id"] == compiled["program_id"]
        resp = await http.get(f"/sessions/{theirs['session_id']}", headers=bearer(KEY_A))
        assert_problem(resp, 404, "session-not-found")


def test_an_expired_session_is_gone_for_its_owner_and_unknown_for_others(default_tokenizer: Tokenizer) -> None:
    from core import GuidanceBackend
    from core.errors import SessionExpired, UnknownSession

    program = GuidanceBackend(default_tokenizer).compile_regex("[a-z]+")
    now = [0.0]
    store = SessionStore(ttl_seconds=10, clock=lambda: now[0])
    session = store.create(program, "default", owner=0)
    with pytest.raises(UnknownSession) as info:
        store.get(session.id, 1)  # another owner's lookup neither finds it nor refreshes it
    assert type(info.value) is UnknownSession
    now[0] = 11.0
    with pytest.raises(UnknownSession) as info:
        store.get(session.id, 1)  # it expires on this lookup, still unknown to another owner
    assert type(info.value) is UnknownSession
    with pytest.raises(SessionExpired):
        store.get(session.id, 0)
    with pytest.raises(UnknownSession):
        store.delete(store.create(program, "default", owner=0).id, 1)
    assert len(store) == 1


# -- who may change the server ---------------------------------------------------------------


@pytest.mark.asyncio
async def test_tokenizer_upload_needs_an_admin_key_when_admin_keys_are_configured(make_app: AppFactory) -> None:
    spec = _tiny_hf_tokenizer_json()
    async with serve(make_app(api_keys=[KEY_A], admin_api_keys=[ADMIN])) as http:
        resp = await http.post("/tokenizers", params={"name": "tiny"}, content=spec, headers=bearer(KEY_A))
        assert_problem(resp, 403, "forbidden")
        assert 'error="insufficient_scope"' in resp.headers["www-authenticate"]
        # refused before the body is looked at
        resp = await http.post("/tokenizers", params={"name": "t"}, content=b"junk", headers=bearer(KEY_A))
        assert_problem(resp, 403, "forbidden")
        listed = (await http.get("/tokenizers", headers=bearer(KEY_A))).json()["tokenizers"]
        names = {t["tokenizer"] for t in listed}
        assert "tiny" not in names
        resp = await http.post("/tokenizers", params={"name": "tiny"}, content=spec, headers=bearer(ADMIN))
        assert resp.status_code == 201, resp.text
        # the admin key is a key like the others: it opens sessions of its own
        sid = await _open(http, ADMIN, choice=["yes", "no"], tokenizer="tiny")
        assert_problem(await http.get(f"/sessions/{sid}", headers=bearer(KEY_A)), 404, "session-not-found")


@pytest.mark.asyncio
async def test_without_admin_keys_every_key_may_upload(make_app: AppFactory) -> None:
    async with serve(make_app(api_keys=[KEY_A])) as http:
        spec = _tiny_hf_tokenizer_json()
        resp = await http.post("/tokenizers", params={"name": "tiny"}, content=spec, headers=bearer(KEY_A))
        assert resp.status_code == 201, resp.text


@pytest.mark.asyncio
async def test_admin_keys_alone_turn_keys_on(make_app: AppFactory) -> None:
    async with serve(make_app(admin_api_keys=[ADMIN])) as http:
        assert_problem(await http.get("/stats"), 401, "unauthorized")
        assert (await http.get("/stats", headers=bearer(ADMIN))).status_code == 200


# -- constant time, and keys kept out of sight ---------------------------------------------


@pytest.mark.asyncio
async def test_every_key_is_compared_in_constant_time_on_every_request(
    make_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = [f"key-{i}-0123456789abcdefghij" for i in range(5)]
    calls: list[tuple[int, int]] = []
    compare = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append((len(a), len(b)))
        return compare(a, b)

    monkeypatch.setattr("service.auth.hmac.compare_digest", counting)
    async with serve(make_app(api_keys=keys)) as http:
        sid = await _open(http, keys[0])
        for key in (keys[0], keys[2], keys[4], "wrong-0123456789abcdefghij", "short"):
            calls.clear()
            await http.get(f"/sessions/{sid}/mask", headers=bearer(key))  # the fast path
            await http.post("/step", json={"sessions": []}, headers=bearer(key))  # hand-parsed route
            await http.get("/stats", headers=bearer(key))  # an ordinary route
            # all five keys, every time, whichever matched (or none), as equal-length digests
            assert calls == [(32, 32)] * 15, key


def test_the_key_ring_keeps_no_key() -> None:
    ring = KeyRing([KEY_A, KEY_B, KEY_A], [ADMIN])
    assert len(ring) == 3  # duplicates are one principal
    held = repr([getattr(ring, name) for name in ("_entries", "admin_restricted")])
    assert KEY_A not in held and KEY_B not in held and ADMIN not in held
    a, b, admin = (ring.authenticate(k.encode()) for k in (KEY_A, KEY_B, ADMIN))
    assert a is not None and b is not None and admin is not None
    assert len({a.owner, b.owner, admin.owner}) == 3
    assert admin.admin and not a.admin and not b.admin
    assert ring.authenticate(b"nope") is None
    # no admin keys: every key is an admin
    only = KeyRing([KEY_A]).authenticate(KEY_A.encode())
    assert only is not None and only.admin


@pytest.mark.asyncio
async def test_keys_never_reach_logs_metrics_or_answers(make_app: AppFactory, caplog: pytest.LogCaptureFixture) -> None:
    wrong = "wrong-key-0123456789abcdefghij"
    caplog.set_level(logging.DEBUG)
    async with serve(make_app(api_keys=[KEY_A])) as http:
        answers = []
        for key in (KEY_A, wrong):
            sid = "nope"
            answers += [
                await http.get(f"/sessions/{sid}/mask", headers=bearer(key)),
                await http.post("/compile", json={"regex": "("}, headers=bearer(key)),
                await http.post("/step", json={"sessions": [{"session_id": sid}]}, headers=bearer(key)),
            ]
        metrics = (await http.get("/metrics")).text
        stats = (await http.get("/stats", headers=bearer(KEY_A))).text
    assert 'guidance_errors_total{code="unauthorized"} 3.0' in metrics
    for text in [metrics, stats, caplog.text, *(r.text for r in answers), *(str(r.headers) for r in answers)]:
        assert KEY_A not in text and wrong not in text


# -- settings ---------------------------------------------------------------------------------


def test_keys_come_from_the_environment_as_json_or_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GUIDANCE_SERVER_API_KEYS", f"{KEY_A}, {KEY_B}")
    monkeypatch.setenv("GUIDANCE_SERVER_ADMIN_API_KEYS", f'["{ADMIN}"]')
    settings = Settings()
    assert [k.get_secret_value() for k in settings.api_keys] == [KEY_A, KEY_B]
    assert [k.get_secret_value() for k in settings.admin_api_keys] == [ADMIN]
    assert KEY_A not in repr(settings) and ADMIN not in str(settings)
    assert Settings().public_health_and_metrics is True


@pytest.mark.parametrize("bad", ["short-key", "has space 0123456789abcdef", "comma,0123456789abcdefghij", "é" * 20])
def test_invalid_keys_are_refused_without_being_echoed(bad: str) -> None:
    with pytest.raises(ValidationError) as info:
        Settings(api_keys=[KEY_A, bad])
    assert "key 2 is not a valid API key" in str(info.value)
    assert bad not in str(info.value) and KEY_A not in str(info.value)


def test_key_files_allow_comments(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(f"# the workers\n\n{KEY_A}\n  {KEY_B}   # team b\n#{ADMIN}\n")
    assert read_key_file(path) == [KEY_A, KEY_B]
    path.write_text(f"{KEY_A}\n{KEY_B} team b\n")
    with pytest.raises(KeyConfigError, match="line 2") as info:
        read_key_file(path)
    assert KEY_B not in str(info.value)
    with pytest.raises(KeyConfigError, match="cannot read"):
        read_key_file(tmp_path / "missing")


@pytest.mark.asyncio
async def test_keys_from_files_work_like_listed_keys(make_app: AppFactory, tmp_path: Path) -> None:
    (tmp_path / "keys").write_text(f"{KEY_B}  # from the file\n")
    (tmp_path / "admin").write_text(f"{ADMIN}\n")
    app = make_app(api_keys=[KEY_A], api_keys_file=tmp_path / "keys", admin_api_keys_file=tmp_path / "admin")
    async with serve(app) as http:
        for key in (KEY_A, KEY_B, ADMIN):
            assert (await http.get("/stats", headers=bearer(key))).status_code == 200
        assert_problem(await http.post("/tokenizers?name=t", content=b"{}", headers=bearer(KEY_B)), 403, "forbidden")


def test_the_cli_refuses_a_bad_key_file_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "keys").write_text("not a key\n")
    monkeypatch.setenv("GUIDANCE_SERVER_API_KEYS_FILE", str(tmp_path / "keys"))
    assert cli_main(["--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "invalid settings" in err and "line 1" in err and "not a key" not in err.replace("not an API key", "")


# -- the client with a key ------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_client_with_a_key_replays_into_a_session_of_its_own(
    make_app: AppFactory, default_tokenizer: Tokenizer
) -> None:
    tok = default_tokenizer
    app = make_app(api_keys=[KEY_A, KEY_B])
    async with serve(app) as anonymous:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver", headers=bearer(KEY_A)) as http:
            client = AsyncGuidanceClient(http=http, backoff=0.0)
            g = await AsyncRemoteGrammar.open(client, {"template": TEMPLATE})
            assert await g.accept_tokens(tok.encode("Name: Ada"))
            old = g.session_id
            # another key cannot close it...
            resp = await anonymous.delete(f"/sessions/{old}", headers=bearer(KEY_B))
            assert_problem(resp, 404, "session-not-found")
            # ...the owner's replica "restarting" can: the client replays under its key
            assert (await http.delete(f"/sessions/{old}")).status_code == 204
            assert await g.accept_tokens(tok.encode("\nAge: 4") + [tok.eos_token_id])
            assert g.session_id != old and client.replays == 1
            assert (await http.get(f"/sessions/{g.session_id}")).json()["text"] == "Name: Ada\nAge: 4"
            resp = await anonymous.get(f"/sessions/{g.session_id}", headers=bearer(KEY_B))
            assert_problem(resp, 404, "session-not-found")
