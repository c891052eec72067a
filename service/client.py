"""Deprecated: the worker-side client moved to its own package, ``guidance_client``.

``pip install ./client`` installs it alone (numpy and httpx only); the server's install includes
it. This module re-exports the old names for one release and warns on import; change
``from service.client import X`` to ``from guidance_client import X``. Transport failures are now
:class:`guidance_client.TransportError` (no longer ``httpx.TransportError``).
"""

from __future__ import annotations

import warnings

from guidance_client import (
    WORKER_HEADER,
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
    program_spec,
)

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
    "StepResult",
    "StepStatus",
    "WORKER_HEADER",
    "program_spec",
]

warnings.warn(
    "service.client is deprecated and will be removed in the next release; import guidance_client instead",
    DeprecationWarning,
    stacklevel=2,
)
