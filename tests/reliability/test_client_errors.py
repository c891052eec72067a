"""Clients' mistakes are theirs: a body cut short by a client that left, a token id past the
vocabulary, too much whitespace, a name spelled in another case. Each is a 4xx or nothing at all,
never a 500, an error logged or a count of our errors."""

from __future__ import annotations

import logging

import httpx
import pytest

from core import Tokenizer
from service.errors import TokenizerExists
from service.tokenizers import TokenizerRegistry
from tests.reliability import asgi
from tests.service.helpers import AppFactory, assert_problem, serve


@pytest.mark.parametrize("path", ["/step", "/tokenizers?name=cut", "/compile", "/sessions"])
async def test_a_client_leaving_mid_body_is_not_our_error(
    make_app: AppFactory, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app()
    async with serve(app) as c:
        with caplog.at_level(logging.INFO, logger="service"):
            cut = asgi.start(app, "POST", path, body=b'{"sessions": [{"session_id": "ab', declared_length=4000)
            await asgi.finish([cut])
        assert cut.status is None  # nobody to answer
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text[:2000]
        assert "guidance_errors_total{" not in (await c.get("/metrics")).text


@pytest.mark.parametrize(
    "grammar", ["start: <[999999]>", 'start: "a" <[5-131072]>', "start: <[99999999999999999999999]>"]
)
async def test_a_token_id_past_the_vocabulary_in_lark_is_a_bad_grammar(client: httpx.AsyncClient, grammar: str) -> None:
    assert_problem(await client.post("/compile", json={"grammar": grammar}), 400, "grammar-invalid")


async def test_a_token_range_inside_the_vocabulary_compiles(client: httpx.AsyncClient) -> None:
    assert (await client.post("/compile", json={"grammar": "start: <[5-131071]>"})).status_code == 200


async def test_template_and_schema_whitespace_share_one_bound(client: httpx.AsyncClient) -> None:
    schema = '{"type": "object"}'
    for ws, status in ((64, 200), (65, 400), (1_000_000_000, 400)):
        template = await client.post("/compile", json={"template": f"{{{{json 'x' schema={schema} whitespace={ws}}}}}"})
        direct = await client.post("/compile", json={"json_schema": {"type": "object"}, "options": {"whitespace": ws}})
        assert (template.status_code, direct.status_code) == (status, status), (template.text, direct.text)
        if status == 400:
            assert "0 to 64" in template.json()["detail"] and "0 to 64" in direct.json()["detail"]


async def test_tokenizer_names_are_case_insensitive_over_http(client: httpx.AsyncClient) -> None:
    ids = set()
    for name in ("default", "Default", "DEFAULT", "Tekken"):
        resp = await client.post("/compile", json={"regex": "[a-z]+", "tokenizer": name})
        assert resp.status_code == 200, resp.text
        ids.add(resp.json()["program_id"])
    assert len(ids) == 1
    listed = [t["tokenizer"] for t in (await client.get("/tokenizers")).json()["tokenizers"]]
    assert sorted(listed) == ["default", "tekken"]


def test_a_name_in_another_case_is_the_same_name(default_tokenizer: Tokenizer) -> None:
    other = Tokenizer.from_vocabulary(
        "tiny", [bytes([b]) for b in range(256)] + [b"</s>"], eos_token_id=256, special_token_ids=[256]
    )
    registry = TokenizerRegistry(default_tokenizer)
    with pytest.raises(TokenizerExists):
        registry.add("Default", other)
    registry.add("Tiny", other)
    assert registry.get("TINY") is other and registry.get("tiny") is other
    assert registry.add("tiny", other) == (other, False)  # the same content under the same name
    assert registry.name_of(other) == "Tiny"  # listed as first spelled
    assert [name for name, _ in registry.items()] == ["Tiny", "default", "tekken"]
