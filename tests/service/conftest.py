"""Fixtures for the service tests: apps driven in-process, each with its own lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from core import Tokenizer
from service import Settings, create_app
from tests.service.helpers import AppFactory, serve


@pytest.fixture()
def make_app(default_tokenizer: Tokenizer) -> AppFactory:
    """``make_app(**settings)``: an app on the default tokenizer (already built: starts fast).

    Compiles run on the server's threads unless a test asks for worker processes
    (``compile_processes=True``): starting workers costs seconds per app. The servers started
    as processes (``tests/server.py``, the reliability tests) run with the workers, as deployed.
    """

    def make(**overrides: Any) -> FastAPI:
        settings = Settings(**{"compile_processes": False, **overrides})
        return create_app(settings, tokenizers={"default": default_tokenizer})

    return make


@pytest.fixture()
async def client(make_app: AppFactory) -> AsyncIterator[httpx.AsyncClient]:
    """A client of a fresh app with default settings."""
    async with serve(make_app()) as c:
        yield c
