"""The service fixtures (``make_app``, ``client``) for the client tests: they talk to a real app."""

from __future__ import annotations

from tests.service.conftest import client, make_app

__all__ = ["client", "make_app"]
