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
    """``make_app(**settings)``: an app on the default tokenizer (already built: starts fast)."""

    def make(**overrides: Any) -> FastAPI:
        return create_app(Settings(**overrides), tokenizers={"default": default_tokenizer})

    return make


@pytest.fixture()
async def client(make_app: AppFactory) -> AsyncIterator[httpx.AsyncClient]:
    """A client of a fresh app with default settings."""
    async with serve(make_app()) as c:
        yield c
