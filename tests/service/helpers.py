"""Helpers for the service tests: the programs they use, an in-process server, problem checks."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import httpx
import numpy as np
from fastapi import FastAPI
from numpy.typing import NDArray

from core import allowed_tokens

TEMPLATE = "Name: {{gen 'name' regex='[A-Z][a-z]+'}}\nAge: {{gen 'age' regex='[0-9]{1,3}'}}"
TEMPLATE_ORACLE = r"Name: ([A-Z][a-z]+)\nAge: ([0-9]{1,3})"
PERSON_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "age": {"type": "integer", "minimum": 0, "maximum": 130},
        "tags": {"type": "array", "items": {"enum": ["a", "b", "c"]}, "maxItems": 3},
        "active": {"type": "boolean"},
    },
    "required": ["name", "age", "active"],
    "additionalProperties": False,
}

AppFactory = Callable[..., FastAPI]


@contextlib.asynccontextmanager
async def serve(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Run ``app``'s lifespan and yield an HTTP client talking to it in-process."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client


def assert_problem(resp: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """``resp`` is an RFC 9457 problem with this status and code; returns its body."""
    assert resp.status_code == status, (resp.status_code, resp.text[:500])
    assert resp.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = resp.json()
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"] == f"urn:guidance:problem:{code}"
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str) and body["detail"]
    return body


def sample_next(
    terminated: Sequence[bool],
    bitmask: NDArray[np.int32],
    vocab_size: int,
    eos: int,
    rngs: Sequence[np.random.Generator],
    eos_bias: float,
) -> list[list[int]]:
    """One sampled token per live sequence, drawn only from its mask row (row i = sequence i):
    EOS with probability ``eos_bias`` when allowed (or when nothing else is), else any other
    allowed token; nothing for a terminated sequence."""
    out: list[list[int]] = []
    for i, done in enumerate(terminated):
        if done:
            out.append([])
            continue
        allowed = allowed_tokens(bitmask[i], vocab_size)
        others = allowed[allowed != eos]
        if eos in allowed and (others.size == 0 or rngs[i].random() < eos_bias):
            out.append([eos])
        else:
            out.append([int(others[rngs[i].integers(others.size)])])
    return out
