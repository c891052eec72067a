"""The clients against the app: every call, errors, and grammars that mirror core's."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient

from core import GuidanceBackend, GuidanceGrammar, Tokenizer
from guidance_client import (
    AsyncGuidanceClient,
    AsyncRemoteGrammar,
    GuidanceClient,
    RemoteError,
    RemoteGrammar,
    program_spec,
)
from tests.service.helpers import PERSON_SCHEMA, TEMPLATE, AppFactory, serve


def test_program_spec_wants_exactly_one_kind() -> None:
    assert program_spec(regex="a", tokenizer="gpt2") == {"regex": "a", "tokenizer": "gpt2"}
    assert program_spec(choice=("a", "b")) == {"choice": ["a", "b"]}
    with pytest.raises(ValueError):
        program_spec()
    with pytest.raises(ValueError):
        program_spec("t", regex="a")


def test_program_spec_takes_tools_structural_tags_and_reasoning() -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    assert program_spec(tools=tools, tool_format="hermes", tool_choice="required", reasoning="qwen3") == {
        "tools": tools,
        "tool_format": "hermes",
        "tool_choice": "required",
        "reasoning": "qwen3",
    }
    assert program_spec(structural_tag='{"type": "structural_tag"}') == {"structural_tag": '{"type": "structural_tag"}'}
    with pytest.raises(ValueError, match="tools only"):
        program_spec(regex="a", tool_format="hermes")


@pytest.fixture()
async def aclient(make_app: AppFactory) -> AsyncIterator[AsyncGuidanceClient]:
    async with serve(make_app()) as http:
        yield AsyncGuidanceClient(http=http)


@pytest.fixture()
def sclient(make_app: AppFactory) -> Iterator[GuidanceClient]:
    with TestClient(make_app()) as http:
        yield GuidanceClient(http=http)


async def test_async_client_covers_the_session_api(aclient: AsyncGuidanceClient, default_tokenizer: Tokenizer) -> None:
    tok = default_tokenizer
    info = await aclient.compile(TEMPLATE)
    assert info.variables == ["name", "age"] and info.session_id is None
    sid = await aclient.create_session(info.program_id)
    assert await aclient.tokenize("Name: Ada") == tok.encode("Name: Ada")
    assert await aclient.detokenize(tok.encode("Ada")) == "Ada"
    result = await aclient.accept(sid, tok.encode("Name: Ada\nAge: 4"))
    assert result.accepted == len(tok.encode("Name: Ada\nAge: 4")) and result.accepting
    bitmask = np.zeros((3, info.mask_words + 2), dtype=np.int32)
    bitmask[1, -2:] = 123
    row = await aclient.mask(sid, bitmask, 1)
    assert row.base is bitmask or np.shares_memory(row, bitmask)
    assert bitmask[1, tok.eos_token_id // 32] >> (tok.eos_token_id % 32) & 1
    assert (bitmask[1, -2:] == 0).all() and (bitmask[0] == 0).all()
    assert np.array_equal(await aclient.mask(sid), bitmask[1, : info.mask_words])
    with pytest.raises(RemoteError) as err:
        await aclient.accept(sid, tok.encode("x"))
    assert err.value.status == 409 and err.value.code == "token-rejected" and err.value.index == 0
    child = await aclient.fork(sid)
    state = await aclient.rollback(child, 2)
    assert state.tokens == tok.encode("Name: Ada\nAge: 4")[:-2]
    assert (await aclient.get(sid)).text == "Name: Ada\nAge: 4"
    await aclient.delete(child)
    with pytest.raises(RemoteError) as err:
        await aclient.get(child)
    assert err.value.code == "session-not-found" and err.value.status == 404
    assert await aclient.ready()
    assert (await aclient.stats())["sessions"]["active"] == 1
    assert {t["tokenizer"] for t in await aclient.tokenizers()} == {"default", "tekken"}
    assert await aclient.create_session(regex="a")


async def test_async_remote_grammar_mirrors_core(aclient: AsyncGuidanceClient, default_tokenizer: Tokenizer) -> None:
    tok = default_tokenizer
    remote = await aclient.grammar(json_schema=PERSON_SCHEMA)
    local = GuidanceGrammar(GuidanceBackend(tok).compile_json_schema(PERSON_SCHEMA), tok)
    assert isinstance(remote, AsyncRemoteGrammar) and remote.spec == {"json_schema": PERSON_SCHEMA}
    want = np.zeros((1, remote.mask_words), dtype=np.int32)
    got = np.zeros_like(want)
    steps = [
        tok.encode('{"name":"'),
        tok.encode("x"),
        tok.encode('Al","age":3'),
        tok.encode("}"),
        tok.encode('7,"active":true}'),
        [tok.eos_token_id],
    ]
    for tokens in steps:
        assert await remote.validate_tokens(tokens) == local.validate_tokens(tokens)
        assert await remote.accept_tokens(tokens) == local.accept_tokens(tokens)
        assert remote.is_terminated() == local.is_terminated()
        if not remote.is_terminated():
            local.fill_next_token_bitmask(want, 0)
            await remote.fill_next_token_bitmask(got, 0)
            assert np.array_equal(want, got)
    assert remote.is_terminated()
    assert remote.tokens == local.state.tokens
    fork = await remote.fork()
    await remote.rollback(1)
    local.rollback(1)
    assert not remote.is_terminated() and fork.is_terminated()
    await remote.reset()
    local.reset()
    assert remote.tokens == [] and remote.get_variable_values() == local.get_variable_values() == {}
    await remote.close()
    await remote.close()  # closing twice is fine
    await fork.close()


def test_sync_remote_grammar_mirrors_core(sclient: GuidanceClient, default_tokenizer: Tokenizer) -> None:
    tok = default_tokenizer
    remote = sclient.grammar(TEMPLATE)
    assert isinstance(remote, RemoteGrammar)
    local = GuidanceGrammar(GuidanceBackend(tok).compile_template(TEMPLATE), tok)
    want = np.zeros((2, remote.mask_words), dtype=np.int32)
    got = np.zeros_like(want)
    for tokens in [
        tok.encode("Name: "),
        tok.encode("bob"),
        tok.encode("Bob\nAge: "),
        tok.encode("12"),
        [tok.vocab_size + 5],
        [tok.eos_token_id],
    ]:
        assert remote.validate_tokens(tokens) == local.validate_tokens(tokens)
        assert remote.accept_tokens(tokens) == local.accept_tokens(tokens)
        local.fill_next_token_bitmask(want, 1)
        remote.fill_next_token_bitmask(got, 1)
        assert np.array_equal(want, got)
    assert remote.is_terminated() and local.is_terminated()
    assert remote.get_variable_values() == local.get_variable_values() == {"name": "Bob", "age": "12"}
    other = remote.fork()
    remote.reset()
    assert remote.get_variable_values() == {} and other.get_variable_values() == {"name": "Bob", "age": "12"}
    assert sclient.get(other.session_id).text == "Name: Bob\nAge: 12"
    other.close()
    with pytest.raises(RemoteError):
        sclient.get(other.session_id)


def test_sync_client_raises_remote_errors_with_problem_fields(sclient: GuidanceClient) -> None:
    with pytest.raises(RemoteError) as err:
        sclient.compile("{{gen 'x' regex=}}")
    e = err.value
    assert e.status == 400 and e.code == "template-invalid"
    assert e.problem["line"] == 1 and "line 1" in e.detail
    with pytest.raises(RemoteError) as err:
        sclient.create_session("f" * 32)
    assert err.value.code == "program-not-found"
    assert sclient.ready()


def test_unreachable_server_is_not_ready() -> None:
    with GuidanceClient("http://127.0.0.1:9", timeout=0.5) as client:
        assert not client.ready()
