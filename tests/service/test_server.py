"""The real server: ``python -m service`` under uvicorn on loopback, driven over HTTP by the client.

Outputs are sampled at random from the served masks until EOS, then checked by independent
oracles (``re.fullmatch``, ``jsonschema``), and the captured variables against the regex groups.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
from collections.abc import Iterator
from typing import Any

import jsonschema
import numpy as np
import pytest
from numpy.typing import NDArray

from core import Tokenizer
from guidance_client import AsyncGuidanceClient, AsyncRemoteGrammar, GuidanceClient, RemoteGrammar
from tests.server import start, stop
from tests.service.helpers import PERSON_SCHEMA, TEMPLATE, TEMPLATE_ORACLE


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """A real server process on a free port; yields its base URL once ``/readyz`` answers 200."""
    running = start()
    try:
        yield running.url
    finally:
        status, err = stop(running)  # SIGTERM: a graceful shutdown
    # uvicorn shuts down gracefully, then re-raises the signal so the exit status reports it.
    assert status in (0, -signal.SIGTERM), err[-2000:]
    assert "Traceback" not in err, err[-2000:]


@pytest.fixture(scope="module")
def newline_tokens(default_tokenizer: Tokenizer) -> NDArray[np.bool_]:
    """Per id: whether the token contains a newline (how a sampler steers out of a free field)."""
    tok = default_tokenizer
    return np.array([b"\n" in tok.token_bytes(i) for i in range(tok.vocab_size)], dtype=np.bool_)


def _allowed(row: NDArray[np.int32], vocab_size: int) -> NDArray[np.int64]:
    bits = np.unpackbits(row.view(np.uint8), bitorder="little")[:vocab_size]
    return np.flatnonzero(bits)


def _pick(
    allowed: NDArray[np.int64], step: int, eos: int, rng: np.random.Generator, steer: NDArray[np.bool_] | None
) -> int:
    assert allowed.size > 0, "empty mask"
    if eos in allowed and (allowed.size == 1 or rng.random() < 0.7):
        return eos
    choices = allowed[allowed != eos]
    if steer is not None and step >= 6:
        preferred = choices[steer[choices]]
        if preferred.size:
            choices = preferred
    return int(choices[rng.integers(choices.size)])


def _walk(grammar: RemoteGrammar, eos: int, rng: np.random.Generator, steer: NDArray[np.bool_] | None = None) -> None:
    bitmask = np.zeros((1, grammar.mask_words), dtype=np.int32)
    for step in range(300):
        grammar.fill_next_token_bitmask(bitmask, 0)
        token = _pick(_allowed(bitmask[0], grammar.vocab_size), step, eos, rng, steer)
        assert grammar.accept_tokens([token]), f"token {token} from the mask was refused"
        if grammar.is_terminated():
            return
    raise AssertionError("no EOS within 300 steps")


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_template_walks_to_eos_and_matches_the_regex(
    server: str, default_tokenizer: Tokenizer, newline_tokens: NDArray[np.bool_], seed: int
) -> None:
    tok = default_tokenizer
    with GuidanceClient(server) as client:
        grammar = client.grammar(TEMPLATE)
        _walk(grammar, tok.eos_token_id, np.random.default_rng(seed), newline_tokens)
        text = client.get(grammar.session_id).text
        grammar.close()
    assert grammar.tokens[-1] == tok.eos_token_id
    assert tok.decode(grammar.tokens[:-1]) == text
    match = re.fullmatch(TEMPLATE_ORACLE, text)
    assert match, text
    assert grammar.get_variable_values() == {"name": match[1], "age": match[2]}


@pytest.mark.parametrize("seed", [10, 11, 12])
def test_json_schema_walks_to_eos_and_validates(server: str, default_tokenizer: Tokenizer, seed: int) -> None:
    tok = default_tokenizer
    with GuidanceClient(server) as client:
        grammar = client.grammar(json_schema=PERSON_SCHEMA)
        _walk(grammar, tok.eos_token_id, np.random.default_rng(seed))
        text = client.get(grammar.session_id).text
        grammar.close()
    assert tok.decode(grammar.tokens[:-1]) == text
    value: Any = json.loads(text)
    jsonschema.validate(value, PERSON_SCHEMA)
    assert "\n" not in text and ", " not in text.replace('", "', "")  # compact by default


async def _async_walk(grammar: AsyncRemoteGrammar, eos: int, rng: np.random.Generator) -> None:
    bitmask = np.zeros((1, grammar.mask_words), dtype=np.int32)
    for step in range(300):
        await grammar.fill_next_token_bitmask(bitmask, 0)
        token = _pick(_allowed(bitmask[0], grammar.vocab_size), step, eos, rng, None)
        assert await grammar.accept_tokens([token])
        if grammar.is_terminated():
            return
    raise AssertionError("no EOS within 300 steps")


@pytest.mark.asyncio
async def test_concurrent_async_sessions_each_validate(server: str, default_tokenizer: Tokenizer) -> None:
    eos = default_tokenizer.eos_token_id
    async with AsyncGuidanceClient(server) as client:
        grammars = [await client.grammar(json_schema=PERSON_SCHEMA) for _ in range(4)]
        assert len({g.session_id for g in grammars}) == 4
        assert len({g.program.program_id for g in grammars}) == 1
        await asyncio.gather(*(_async_walk(g, eos, np.random.default_rng(20 + i)) for i, g in enumerate(grammars)))
        texts = [(await client.get(g.session_id)).text for g in grammars]
        for g in grammars:
            await g.close()
    for text in texts:
        jsonschema.validate(json.loads(text), PERSON_SCHEMA)


def test_errors_and_metrics_over_the_wire(server: str) -> None:
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    with httpx.Client(base_url=server) as http:
        resp = http.post("/compile", content=b"x" * (9 * 1024 * 1024))
        assert resp.status_code == 413 and resp.json()["code"] == "body-too-large"
        resp = http.post("/compile", json={"template": "{{gen 'x' regex=}}"})
        assert resp.status_code == 400 and resp.headers["content-type"] == "application/problem+json"
        metrics = http.get("/metrics").text
    names = {f.name for f in text_string_to_metric_families(metrics)}
    assert {"guidance_compiles", "guidance_tokens_accepted", "guidance_mask_duration_seconds"} <= names


@pytest.mark.asyncio
async def test_async_and_sync_batches_serve_the_same_masks(server: str, default_tokenizer: Tokenizer) -> None:
    from guidance_client import AsyncGrammarBatch, GrammarBatch

    tok = default_tokenizer
    texts = [
        '{"name":"Ada","age":36,"active":true}',
        '{"name":"Bo","age":7,"tags":["a"],"active":false}',
        '{"name":"Cyd","age":101,"active":true}',
    ]
    seqs = [tok.encode(t) for t in texts]
    with GuidanceClient(server) as sync_client:
        sync_batch = GrammarBatch(sync_client, [sync_client.grammar(json_schema=PERSON_SCHEMA) for _ in texts])
        async with AsyncGuidanceClient(server) as async_client:
            grammars = [await async_client.grammar(json_schema=PERSON_SCHEMA) for _ in texts]
            async_batch = AsyncGrammarBatch(async_client, grammars, mask_encoding="blocks")
            expected = np.zeros((len(texts), grammars[0].program.mask_words), dtype=np.int32)
            got = np.zeros_like(expected)
            sent: list[list[int]] = [[] for _ in texts]
            for k in range(max(len(s) for s in seqs) + 2):
                pending = asyncio.create_task(async_batch.step(sent, got))  # pipelined: sent, then awaited
                sync_batch.step(sent, expected)
                statuses = await pending
                assert np.array_equal(got, expected), k
                assert [s.status for s in statuses] == ["ok"] * len(texts)
                sent = [[s[k]] if k < len(s) else ([tok.eos_token_id] if k == len(s) else []) for s in seqs]
            assert [g.is_terminated() for g in grammars] == [True] * len(texts)
            for g in grammars:
                await g.close()
        for g in sync_batch.grammars:
            g.close()


def test_the_command_line_server_keeps_its_start_up_objects_out_of_full_collections(server: str) -> None:
    with GuidanceClient(server) as client:
        figures = client.stats()["gc"]
    assert figures["frozen_objects"] > 10_000  # the tokenizer tables, the app, the imported modules
    assert len(figures["collections"]) == 3
