"""Helpers for the service tests: the programs they use, an in-process server, problem checks."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
from fastapi import FastAPI

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
