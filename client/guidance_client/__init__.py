"""The worker-side client of the Guidance constraint server: numpy and httpx, nothing else.

Two clients with the same methods, :class:`GuidanceClient` (sync) and
:class:`AsyncGuidanceClient`, and grammar objects shaped like ``core.GuidanceGrammar`` (vLLM's
``StructuredOutputGrammar``), :class:`RemoteGrammar` and :class:`AsyncRemoteGrammar`::

    from guidance_client import GuidanceClient

    with GuidanceClient("http://127.0.0.1:8000", api_key="...") as client:
        grammar = client.grammar(json_schema={"type": "object", "properties": {"a": {"type": "integer"}}})
        bitmask = numpy.zeros((batch, grammar.mask_words), dtype=numpy.int32)
        grammar.fill_next_token_bitmask(bitmask, 0)      # row 0: the allowed next tokens
        grammar.accept_tokens([token])                   # False if the constraint forbids it

A whole decoding batch steps in one round trip with :class:`GrammarBatch`. A constraint is any of the
server's kinds, other engines' request forms (``response_format=``, ``structured_outputs=``, ``gbnf=``...),
or a Python value that says the same (:mod:`guidance_client.specs`): a ``guidance`` grammar object, a
Pydantic model (``grammar.parse(Model)`` gives the validated instance back), ``Literal``, ``Enum``.
Masks fit one vocabulary: ``client.align_vocabulary(ModelVocabulary.from_hf(tokenizer, ...))``
registers the model's tokenizer by content, has the server compare it with the model, and answers
the tokenizer to compile against, or raises :class:`VocabularyMismatch` naming what differs. The
wire format is in :mod:`guidance_client.wire`; requests and answers without I/O in
:mod:`guidance_client.protocol` (and :mod:`guidance_client.alignment`, :mod:`guidance_client.events`);
the model's side of an alignment in :mod:`guidance_client.vocabulary`; the errors in
:mod:`guidance_client.errors`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from guidance_client._async.client import AsyncGrammarBatch, AsyncGuidanceClient, AsyncRemoteGrammar
    from guidance_client._sync.client import GrammarBatch, GuidanceClient, RemoteGrammar
    from guidance_client.alignment import TokenizerInfo, VocabularyCheck
    from guidance_client.errors import (
        GuidanceClientError,
        ProtocolError,
        RemoteError,
        TimeoutError,
        TransportError,
        VocabularyMismatch,
    )
    from guidance_client.protocol import (
        WORKER_HEADER,
        AcceptResult,
        ProgramInfo,
        SessionEvent,
        SessionInfo,
        StepResult,
        StepStatus,
    )
    from guidance_client.specs import program_spec
    from guidance_client.vocabulary import ModelVocabulary
    from guidance_client.wire import MaskEncoding

__all__ = [
    "AcceptResult",
    "AsyncGrammarBatch",
    "AsyncGuidanceClient",
    "AsyncRemoteGrammar",
    "GrammarBatch",
    "GuidanceClient",
    "GuidanceClientError",
    "MaskEncoding",
    "ModelVocabulary",
    "ProgramInfo",
    "ProtocolError",
    "RemoteError",
    "RemoteGrammar",
    "SessionEvent",
    "SessionInfo",
    "StepResult",
    "StepStatus",
    "TimeoutError",
    "TokenizerInfo",
    "TransportError",
    "VocabularyCheck",
    "VocabularyMismatch",
    "WORKER_HEADER",
    "program_spec",
]

__version__ = "0.1.0"

# Names load on first use, so the server's engine code can import ``guidance_client.wire``
# (numpy only) without httpx and the clients.
_ERRORS = (
    "GuidanceClientError",
    "ProtocolError",
    "RemoteError",
    "TimeoutError",
    "TransportError",
    "VocabularyMismatch",
)
_HOMES = {
    **dict.fromkeys(
        ("AsyncGrammarBatch", "AsyncGuidanceClient", "AsyncRemoteGrammar"), "guidance_client._async.client"
    ),
    **dict.fromkeys(("GrammarBatch", "GuidanceClient", "RemoteGrammar"), "guidance_client._sync.client"),
    **dict.fromkeys(_ERRORS, "guidance_client.errors"),
    **dict.fromkeys(
        (
            "WORKER_HEADER",
            "AcceptResult",
            "ProgramInfo",
            "SessionEvent",
            "SessionInfo",
            "StepResult",
            "StepStatus",
        ),
        "guidance_client.protocol",
    ),
    **dict.fromkeys(("TokenizerInfo", "VocabularyCheck"), "guidance_client.alignment"),
    "ModelVocabulary": "guidance_client.vocabulary",
    "program_spec": "guidance_client.specs",
    "MaskEncoding": "guidance_client.wire",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'guidance_client' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
