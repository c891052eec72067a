"""Random walks over served masks, for the request-form tests: every token drawn from the mask the
server answered, the finished text then judged by an oracle that is not our grammar."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np

from core import Tokenizer, allowed_tokens

# Characters that end or separate something in the engines' documented examples: inside free text
# (a JSON string, `\w+`), a walk draws a token holding one of them now and then, so it finishes.
_ENDS = '"}]'
_SEPARATORS = ",@.\n:"


@functools.lru_cache(maxsize=2)
def closer_tokens(tokenizer: Tokenizer) -> tuple[np.ndarray, np.ndarray]:
    """Ids of the tokens whose text holds one of :data:`_ENDS`, and of :data:`_SEPARATORS` (once per tokenizer)."""
    texts = [tokenizer.decode([t]) for t in range(tokenizer.vocab_size)]
    ends = [t for t, text in enumerate(texts) if any(c in text for c in _ENDS)]
    seps = [t for t, text in enumerate(texts) if any(c in text for c in _SEPARATORS)]
    return np.array(ends, dtype=np.int64), np.array(seps, dtype=np.int64)


@dataclass
class Walk:
    text: str
    tokens: list[int]
    variables: dict[str, Any]
    terminated: bool


async def walk(
    client: httpx.AsyncClient, body: dict[str, Any], tokenizer: Tokenizer, seed: int, max_steps: int = 250
) -> Walk:
    """Compile ``body`` with a session, then draw each token from the served mask until EOS."""
    resp = await client.post("/compile", json={**body, "open_session": True})
    assert resp.status_code == 200, resp.text[:500]
    sid = resp.json()["session_id"]
    vocab = resp.json()["vocab_size"]
    eos = tokenizer.eos_token_id
    ends, seps = closer_tokens(tokenizer)
    rng = np.random.default_rng(seed)
    terminated = False
    for _ in range(max_steps):
        mask = await client.get(f"/sessions/{sid}/mask")
        assert mask.status_code == 200
        row = np.frombuffer(mask.content, dtype=np.int32)
        allowed = allowed_tokens(row, vocab)
        assert allowed.size, "a live session must allow some token"
        others = allowed[allowed != eos]
        if eos in allowed and (others.size == 0 or rng.random() < 0.3):
            token = eos
        else:
            pick = others
            if others.size > 20:  # free text: now and then, a token that ends or separates
                r = rng.random()
                near = np.intersect1d(others, ends if r < 0.4 else seps) if r < 0.55 else others
                pick = near if near.size else others
            token = int(pick[rng.integers(pick.size)])
        accepted = await client.post(f"/sessions/{sid}/accept", json={"tokens": [token]})
        assert accepted.status_code == 200, accepted.text[:300]
        if accepted.json()["terminated"]:
            terminated = True
            break
    state = (await client.get(f"/sessions/{sid}")).json()
    await client.delete(f"/sessions/{sid}")
    return Walk(state["text"], state["tokens"], state["variables"], terminated)
