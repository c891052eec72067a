"""``POST /step``: a whole batch in one round trip; semantics, not timings."""

from __future__ import annotations

import asyncio
import json
import re
import struct
from typing import Any

import httpx
import numpy as np
import pytest

from core import Tokenizer, allowed_tokens
from guidance_client import AsyncGrammarBatch, AsyncGuidanceClient, AsyncRemoteGrammar
from guidance_client.protocol import Answer, parse_step
from tests.service.helpers import TEMPLATE, AppFactory, assert_problem, sample_next, serve

pytestmark = pytest.mark.asyncio


async def _open(client: httpx.AsyncClient, **body: Any) -> str:
    resp = await client.post("/compile", json={**body, "open_session": True})
    assert resp.status_code == 200, resp.text
    return str(resp.json()["session_id"])


async def _mask(client: httpx.AsyncClient, sid: str) -> np.ndarray:
    resp = await client.get(f"/sessions/{sid}/mask")
    assert resp.status_code == 200
    return np.frombuffer(resp.content, dtype="<i4")


async def _step(client: httpx.AsyncClient, sessions: list[dict[str, Any]], **extra: Any) -> Any:
    resp = await client.post("/step", json={"sessions": sessions, **extra})
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "application/vnd.guidance.step"
    return parse_step(Answer(resp.status_code, resp.headers, resp.content))


async def test_binary_layout_is_as_documented(client: httpx.AsyncClient, default_tokenizer: Tokenizer) -> None:
    sid = await _open(client, regex="[0-9]+")
    resp = await client.post("/step", json={"sessions": [{"session_id": sid, "tokens": []}]})
    body = resp.content
    (length,) = struct.unpack("<I", body[:4])
    assert length % 4 == 0
    header = json.loads(body[4 : 4 + length])
    words = (default_tokenizer.vocab_size + 31) // 32
    assert header["mask_words"] == words and header["rows"] == 1
    assert header["vocab_size"] == default_tokenizer.vocab_size
    assert len(body) == 4 + length + 4 * words
    row = np.frombuffer(body[4 + length :], dtype="<i4")
    assert np.array_equal(row, await _mask(client, sid))


async def test_mixed_batch_keeps_order_and_matches_per_session_masks(
    client: httpx.AsyncClient, default_tokenizer: Tokenizer
) -> None:
    tok = default_tokenizer
    eos = tok.eos_token_id
    a = await _open(client, template=TEMPLATE)
    b = await _open(client, choice=["yes", "no"])
    c = await _open(client, regex="[a-z]+")
    d = await _open(client, regex="[0-9]+")
    before_c = await _mask(client, c)
    result = await _step(
        client,
        [
            {"session_id": a, "tokens": tok.encode("Name: Ada")},  # ok, several tokens
            {"session_id": b, "tokens": tok.encode("yes") + [eos]},  # ok, terminated
            {"session_id": c, "tokens": tok.encode("ab1")},  # rejected at the digit
            {"session_id": "no-such-session", "tokens": [1]},  # error
            {"session_id": d, "tokens": [-3]},  # error: not a token id
        ],
        variables=True,
    )
    st = result.statuses
    assert [s.session_id for s in st] == [a, b, c, "no-such-session", d]
    assert [s.status for s in st] == ["ok", "ok", "rejected", "error", "error"]
    assert st[0].accepted == len(tok.encode("Name: Ada")) and not st[0].terminated
    assert st[1].terminated and st[1].variables == {}
    sent_c = tok.encode("ab1")
    assert st[2].index is not None and "1" in tok.decode([sent_c[st[2].index]])
    assert "1" not in tok.decode(sent_c[: st[2].index])
    assert st[3].error is not None and st[3].error["code"] == "session-not-found"
    assert st[4].error is not None and st[4].error["code"] == "token-out-of-range"
    assert [s.row for s in st] == [0, 1, 2, 3, 4]
    # every row equals what the per-session endpoint serves now; errors are zero rows
    for sid, i in ((a, 0), (b, 1), (c, 2), (d, 4)):
        assert np.array_equal(result.masks[i], await _mask(client, sid)), sid
    assert not result.masks[3].any()
    # the rejected session did not move
    assert np.array_equal(await _mask(client, c), before_c)
    assert (await client.get(f"/sessions/{c}")).json()["tokens"] == []
    assert allowed_tokens(result.masks[1], tok.vocab_size).tolist() == [eos]


async def test_draft_rows_are_the_masks_after_each_draft_token(
    client: httpx.AsyncClient, default_tokenizer: Tokenizer
) -> None:
    tok = default_tokenizer
    sid = await _open(client, template=TEMPLATE)
    twin = await _open(client, template=TEMPLATE)
    draft = tok.encode("Name: Bob\nAge")
    result = await _step(client, [{"session_id": sid, "tokens": [], "draft_tokens": draft}])
    assert result.statuses[0].rows == 1 + len(draft) and result.masks.shape[0] == 1 + len(draft)
    assert (await client.get(f"/sessions/{sid}")).json()["tokens"] == []  # the session did not move
    for k in range(len(draft) + 1):
        if k:
            assert (await client.post(f"/sessions/{twin}/accept", json={"tokens": [draft[k - 1]]})).status_code == 200
        assert np.array_equal(result.masks[k], await _mask(client, twin)), k


async def test_block_sparse_answer_carries_the_same_masks(
    client: httpx.AsyncClient, default_tokenizer: Tokenizer
) -> None:
    tok = default_tokenizer
    a = await _open(client, template=TEMPLATE)
    b = await _open(client, json_schema={"type": "object", "properties": {"s": {"type": "string"}}})
    c = await _open(client, regex="[0-9]+")
    sessions: list[dict[str, Any]] = [
        {"session_id": a, "tokens": tok.encode("Name: Ada"), "draft_tokens": tok.encode("\nAge: 1") + [999]},
        {"session_id": b, "tokens": tok.encode('{"s":"x')},  # inside a free string: a dense row
        {"session_id": "no-such-session", "tokens": [1]},
        {"session_id": c, "tokens": tok.encode("12")},
    ]
    resp = await client.post("/step", json={"sessions": sessions, "mask_encoding": "blocks"})
    assert resp.status_code == 200, resp.text
    body = resp.content
    (length,) = struct.unpack("<I", body[:4])
    header = json.loads(body[4 : 4 + length])
    assert header["mask_encoding"] == "blocks" and header["block_words"] == 64
    rows, words = header["rows"], header["mask_words"]
    # the documented layout, read by hand: bitmap (padded to 4 bytes), then the present blocks
    per_row = -(-words // 64)
    bitmap = body[4 + length : 4 + length + -(-rows * per_row // 8)]
    present = [bool(bitmap[k // 8] >> (k % 8) & 1) for k in range(rows * per_row)]
    start = 4 + length + len(bitmap) + -len(bitmap) % 4
    assert len(body) == start + sum(present) * 64 * 4
    blocks = iter(np.frombuffer(body[start:], dtype="<i4").reshape(-1, 64))
    by_hand = np.zeros((rows, per_row * 64), dtype=np.int32)
    for k, here in enumerate(present):
        if here:
            r, blk = divmod(k, per_row)
            by_hand[r, blk * 64 : (blk + 1) * 64] = next(blocks)
    assert len(body) < 4 + length + rows * words * 4 // 2  # most blocks of these masks are empty
    # the same rows as a dense answer (nothing moves on a step without tokens) and the client's
    result = parse_step(Answer(200, {}, body))
    again = await _step(client, [{**s, "tokens": []} for s in sessions])
    assert np.array_equal(by_hand[:, :words], again.masks)
    assert np.array_equal(result.masks, again.masks)
    assert [s.status for s in result.statuses] == ["ok", "ok", "error", "ok"]
    assert not result.masks[1 + len(sessions[0]["draft_tokens"]) - 1].any()  # after the refused draft
    assert allowed_tokens(result.masks[1 + len(sessions[0]["draft_tokens"])], tok.vocab_size).size > 1000


async def test_forced_tokens_can_be_left_out(client: httpx.AsyncClient, default_tokenizer: Tokenizer) -> None:
    tok = default_tokenizer
    sid = await _open(client, template=TEMPLATE)
    with_forced = await client.post("/step", json={"sessions": [{"session_id": sid, "tokens": []}]})
    without = await client.post("/step", json={"sessions": [{"session_id": sid, "tokens": []}], "forced_tokens": False})
    heads = []
    for resp in (with_forced, without):
        assert resp.status_code == 200
        (length,) = struct.unpack("<I", resp.content[:4])
        heads.append(json.loads(resp.content[4 : 4 + length])["sessions"][0])
    assert tok.decode(heads[0]["forced_tokens"]).startswith("Name:")  # the template's literal start
    assert "forced_tokens" not in heads[1]
    assert parse_step(Answer(200, {}, without.content)).statuses[0].forced_tokens == []
    assert np.array_equal(
        parse_step(Answer(200, {}, with_forced.content)).masks, parse_step(Answer(200, {}, without.content)).masks
    )


async def test_bad_batches_are_refused_whole(make_app: AppFactory) -> None:
    async with serve(make_app(max_batch_size=2)) as client:
        sid = await _open(client, regex="a+")
        resp = await client.post("/step", json={"sessions": [{"session_id": sid}] * 2})
        assert_problem(resp, 422, "validation-error")
        resp = await client.post("/step", json={"sessions": [{"session_id": f"s{i}"} for i in range(3)]})
        assert_problem(resp, 413, "limit-exceeded")
        resp = await client.post("/step", json={"sessions": [{"session_id": sid, "tokens": ["x"]}]})
        assert_problem(resp, 422, "validation-error")
        resp = await client.post("/step", content=b"{not json", headers={"content-type": "application/json"})
        assert resp.status_code == 422
        assert (await client.get("/healthz")).status_code == 200


async def test_step_counts_in_metrics(client: httpx.AsyncClient, default_tokenizer: Tokenizer) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    sids = [await _open(client, regex="[a-z]+") for _ in range(3)]
    await _step(client, [{"session_id": s, "tokens": default_tokenizer.encode("ab")} for s in sids])
    metrics = {
        s.name + str(sorted(s.labels.items())): s.value
        for fam in text_string_to_metric_families((await client.get("/metrics")).text)
        for s in fam.samples
    }
    assert metrics["guidance_masks_served_total[('format', 'batch')]"] == 3
    assert metrics["guidance_step_batch_size_count[]"] == 1
    assert metrics["guidance_tokens_accepted_total[]"] == 3 * len(default_tokenizer.encode("ab"))


async def test_async_batch_walks_every_session_to_an_oracle_valid_end(
    make_app: AppFactory, default_tokenizer: Tokenizer
) -> None:
    tok = default_tokenizer
    eos = tok.eos_token_id
    rng = np.random.default_rng(7)
    async with serve(make_app()) as http:
        client = AsyncGuidanceClient(http=http)
        bounded = "Name: {{gen 'name' regex='[A-Z][a-z]{1,5}'}}\nAge: {{gen 'age' regex='[0-9]{1,2}'}}"
        grammars = [await AsyncRemoteGrammar.open(client, {"template": bounded}) for _ in range(6)]
        batch = AsyncGrammarBatch(client, grammars, variables=True)
        bitmask = np.zeros((len(grammars), grammars[0].mask_words), dtype=np.int32)
        pending: list[list[int]] = [[] for _ in grammars]
        for _ in range(60):
            # pipelined: the step runs as a task while "the forward pass" (sampling) is prepared
            task = asyncio.create_task(batch.step(pending, bitmask))
            statuses = await task
            assert all(s.status == "ok" for s in statuses)
            if all(g.is_terminated() for g in grammars):
                break
            done = [g.is_terminated() for g in grammars]
            pending = sample_next(done, bitmask, tok.vocab_size, eos, [rng] * len(grammars), 0.5)
        assert all(g.is_terminated() for g in grammars)
        for g in grammars:
            text = tok.decode([t for t in g.tokens if t != eos])
            m = re.fullmatch(r"Name: ([A-Z][a-z]{1,5})\nAge: ([0-9]{1,2})", text)
            assert m, text
            assert g.get_variable_values() == {"name": m.group(1), "age": m.group(2)}
