"""The Guidance constraint server: the HTTP service over ``core``.

The worker-side client is its own package, ``guidance_client`` (``from guidance_client import
GuidanceClient``). Its names are still reachable here (``service.GuidanceClient``) and in
``service.client`` for one release, deprecated; names are imported lazily, so neither pulls in
FastAPI or llguidance.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from service.app import create_app
    from guidance_client import (
        AcceptResult,
        AsyncGrammarBatch,
        AsyncGuidanceClient,
        AsyncRemoteGrammar,
        GrammarBatch,
        GuidanceClient,
        ProgramInfo,
        RemoteError,
        RemoteGrammar,
        SessionInfo,
        StepResult,
        StepStatus,
    )
    from service.settings import Settings

__all__ = [
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
    "Settings",
    "StepResult",
    "StepStatus",
    "create_app",
]

_HOMES = {
    "create_app": "service.app",
    "Settings": "service.settings",
    **{name: "guidance_client" for name in __all__ if name not in ("create_app", "Settings")},
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'service' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
