"""Client replay: a lost session is re-created from its spec and tokens, nothing applied twice."""

from __future__ import annotations

import numpy as np
import pytest

from core import Tokenizer
from guidance_client import AsyncGrammarBatch, AsyncGuidanceClient, AsyncRemoteGrammar, RemoteError
from tests.service.helpers import TEMPLATE, AppFactory, serve

pytestmark = pytest.mark.asyncio


async def test_a_lost_session_is_replayed_and_the_call_retried(
    make_app: AppFactory, default_tokenizer: Tokenizer
) -> None:
    tok = default_tokenizer
    async with serve(make_app()) as http:
        client = AsyncGuidanceClient(http=http, backoff=0.0)
        g = await AsyncRemoteGrammar.open(client, {"template": TEMPLATE})
        assert await g.accept_tokens(tok.encode("Name: Ada"))
        old = g.session_id
        assert (await http.delete(f"/sessions/{old}")).status_code == 204  # "the replica died"
        assert await g.accept_tokens(tok.encode("\nAge: 4") + [tok.eos_token_id])
        assert g.session_id != old and client.replays == 1
        assert g.get_variable_values() == {"name": "Ada", "age": "4"}
        server = (await http.get(f"/sessions/{g.session_id}")).json()
        assert server["tokens"] == g.tokens and server["text"] == "Name: Ada\nAge: 4"


async def test_a_rejected_token_is_not_retried(make_app: AppFactory, default_tokenizer: Tokenizer) -> None:
    async with serve(make_app()) as http:
        client = AsyncGuidanceClient(http=http, backoff=0.0)
        g = await AsyncRemoteGrammar.open(client, {"regex": "[0-9]+"})
        assert not await g.accept_tokens(default_tokenizer.encode("x"))
        assert client.replays == 0 and g.tokens == []


async def test_batch_replays_only_the_lost_sessions(make_app: AppFactory, default_tokenizer: Tokenizer) -> None:
    tok = default_tokenizer
    async with serve(make_app()) as http:
        client = AsyncGuidanceClient(http=http, backoff=0.0)
        grammars = [await AsyncRemoteGrammar.open(client, {"regex": "[a-z]{1,20}"}) for _ in range(4)]
        batch = AsyncGrammarBatch(client, grammars)
        bitmask = np.zeros((4, grammars[0].mask_words), dtype=np.int32)
        await batch.step([tok.encode("ab")] * 4, bitmask)
        lost = grammars[2].session_id
        await http.delete(f"/sessions/{lost}")
        statuses = await batch.step([tok.encode("cd")] * 4, bitmask)
        assert [s.status for s in statuses] == ["ok"] * 4
        assert client.replays == 1 and grammars[2].session_id != lost
        for g in grammars:  # every session holds "abcd" exactly once
            assert (await http.get(f"/sessions/{g.session_id}")).json()["text"] == "abcd"
            assert g.tokens == tok.encode("ab") + tok.encode("cd")
        reference = (await http.get(f"/sessions/{grammars[0].session_id}/mask")).content
        assert all(bitmask[i].tobytes() == reference for i in range(4))


async def test_retries_are_bounded(make_app: AppFactory, default_tokenizer: Tokenizer) -> None:
    async with serve(make_app()) as http:
        client = AsyncGuidanceClient(http=http, backoff=0.0, retries=2)
        g = await AsyncRemoteGrammar.open(client, {"regex": "[a-z]+"})
        g.spec = {"regex": "(?=lookaround)"}  # a replay that can only fail: the error surfaces
        await http.delete(f"/sessions/{g.session_id}")
        with pytest.raises(RemoteError) as info:
            await g.accept_tokens(default_tokenizer.encode("a"))
        assert info.value.status == 400
