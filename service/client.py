"""Deprecated: the worker-side client moved to its own package, ``guidance_client``.

``pip install ./client`` installs it alone (numpy and httpx only); the server's install includes
it. This module re-exports the old names (``service.CLIENT_NAMES``) for one release and warns on
import; change ``from service.client import X`` to ``from guidance_client import X``. Transport
failures are now :class:`guidance_client.TransportError` (no longer ``httpx.TransportError``).
"""

from __future__ import annotations

import warnings
from typing import Any

import guidance_client
from service import CLIENT_NAMES

__all__ = sorted(CLIENT_NAMES)


def __getattr__(name: str) -> Any:
    if name not in CLIENT_NAMES:
        raise AttributeError(f"module 'service.client' has no attribute {name!r}")
    return getattr(guidance_client, name)


warnings.warn(
    "service.client is deprecated and will be removed in the next release; import guidance_client instead",
    DeprecationWarning,
    stacklevel=2,
)
