"""The client's errors: a small tree, so a worker catches ours and never a transport library's::

    GuidanceClientError          anything this package raises on purpose
    ├── TransportError           the request or its answer was lost (connect, reset, timeout)
    │   └── TimeoutError         no answer within the client's timeout (also a builtin TimeoutError)
    ├── ProtocolError            an answer that is not what the server's API defines
    ├── RemoteError              an error answer: the server's RFC 9457 problem document
    └── VocabularyMismatch       the model's vocabulary is not the server tokenizer's: no mask
                                 of that tokenizer may be applied to the model's logits

Calls that go through a remote grammar or a batch replay their session and retry after a
:class:`TransportError`, or a :class:`RemoteError` for a lost session or an unavailable replica
(:func:`guidance_client.protocol.retryable`); anything else surfaces at once. Misuse of the API
(a bad argument) raises ``ValueError`` or ``TypeError``, as usual in Python.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "GuidanceClientError",
    "ProtocolError",
    "RemoteError",
    "TimeoutError",
    "TransportError",
    "VocabularyMismatch",
]


class GuidanceClientError(Exception):
    """The base of every error this package raises on purpose."""


class TransportError(GuidanceClientError):
    """The request or its answer was lost: refused or reset connection, DNS, TLS, timeout."""


class TimeoutError(TransportError, builtins.TimeoutError):  # noqa: A001 - the name says what it is
    """No answer within the client's ``timeout``."""


class ProtocolError(GuidanceClientError):
    """An answer the server's API does not define (a truncated or malformed body)."""


class RemoteError(GuidanceClientError):
    """An error answer from the server (an RFC 9457 problem document).

    Attributes:
        status: the HTTP status.
        code: the problem's stable code (``token-rejected``, ``session-expired``, ...).
        title: the problem's title.
        detail: the explanation.
        index: for ``token-rejected``: the position of the refused token in the request.
        retry_after: seconds to wait, for 429 and 503 answers.
        problem: the whole problem document.
    """

    def __init__(self, status: int, problem: Mapping[str, Any]) -> None:
        self.status = status
        self.problem = dict(problem)
        self.code: str = str(problem.get("code") or f"http-{status}")
        self.title: str = str(problem.get("title") or "")
        self.detail: str = str(problem.get("detail") or self.title)
        index = problem.get("index")
        self.index: int | None = index if isinstance(index, int) else None
        retry = problem.get("retry_after")
        self.retry_after: float | None = float(retry) if isinstance(retry, (int, float)) else None
        super().__init__(f"{status} {self.code}: {self.detail}")


class VocabularyMismatch(GuidanceClientError):
    """The model's vocabulary differs from the server tokenizer's; raised before any mask is applied.

    Attributes:
        tokenizer: the server tokenizer the model was checked against.
        differences: what differs, one sentence each (the logits width, the end tokens, a
            token's bytes ...), as the server's check (``POST /tokenizers/{name}/check``) or the
            adapter found them.
    """

    def __init__(self, tokenizer: str, differences: Sequence[str]) -> None:
        self.tokenizer = tokenizer
        self.differences = list(differences) or ["the server reports the vocabularies as not aligned"]
        listed = "; ".join(self.differences)
        super().__init__(
            f"the model's vocabulary does not match the server's tokenizer {tokenizer!r}, so its masks "
            f"cannot be applied: {listed}"
        )
