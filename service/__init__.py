"""The Guidance constraint server: the HTTP service over ``core``.

The worker-side client is its own package, ``guidance_client`` (``from guidance_client import
GuidanceClient``). For one release its names (:data:`CLIENT_NAMES`) are still reachable here
(``service.GuidanceClient``) and in ``service.client`` (which warns), deprecated. Names are
imported lazily, so neither pulls in FastAPI or llguidance.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from service.app import create_app as create_app
    from service.settings import Settings as Settings

CLIENT_NAMES = (
    "AcceptResult",
    "AsyncGrammarBatch",
    "AsyncGuidanceClient",
    "AsyncRemoteGrammar",
    "GrammarBatch",
    "GuidanceClient",
    "ProgramInfo",
    "RemoteError",
    "RemoteGrammar",
    "SessionInfo",
    "StepResult",
    "StepStatus",
    "WORKER_HEADER",
    "program_spec",
)
"""The client's names re-exported here and by ``service.client`` for one release (deprecated)."""

_HOMES = {"create_app": "service.app", "Settings": "service.settings", **dict.fromkeys(CLIENT_NAMES, "guidance_client")}

__all__ = sorted(["CLIENT_NAMES", *_HOMES])


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'service' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
