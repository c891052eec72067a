"""The service fixtures (``make_app``, ``client``) for the reliability tests too."""

from __future__ import annotations

from tests.service.conftest import client, make_app

__all__ = ["client", "make_app"]
