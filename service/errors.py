"""The service's own errors: the branches it adds to ``core``'s error tree.

Every error the service answers with (besides routing and validation failures, see
``service/problems.py``) is a :class:`~core.errors.GuidanceError`: the same root, the same stable
``code`` and ``status``, one handler. ``core/errors.py`` draws the engine's part of the tree; these
are the service's::

    GuidanceError                    code                   status
    ├── (core's errors)
    ├── BodyTooLarge                 body-too-large         413
    ├── BodyTimeout                  request-timeout        408   Connection: close
    ├── InvalidText                  unicode-invalid        422   (location, field)
    ├── RollbackOutOfRange           rollback-out-of-range  422
    ├── TokenizerExists              tokenizer-exists       409
    ├── Unauthorized                 unauthorized           401   WWW-Authenticate
    ├── Forbidden                    forbidden              403   WWW-Authenticate
    ├── TooManySessions              too-many-sessions      429   Retry-After
    ├── TooManyWatchers              too-many-watchers      429   Retry-After
    ├── CompileQueueFull             compile-queue-full     503   Retry-After
    ├── MemoryExhausted              memory-exhausted       503   Retry-After
    └── NotReady                     not-ready              503   Retry-After

An error with a ``retry_after`` extra is answered with a ``Retry-After`` header; one with a
``headers`` attribute with those headers too.
"""

from __future__ import annotations

from core.errors import GuidanceError

__all__ = [
    "BodyTimeout",
    "BodyTooLarge",
    "CompileQueueFull",
    "Forbidden",
    "InvalidText",
    "MemoryExhausted",
    "NotReady",
    "RollbackOutOfRange",
    "TokenizerExists",
    "TooManySessions",
    "TooManyWatchers",
    "Unauthorized",
]

_REALM = 'Bearer realm="guidance-server"'


class _RetryLater(GuidanceError):
    """A bound reached for now: the answer says when to retry (``Retry-After``)."""

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail, retry_after=retry_after)


class TooManySessions(_RetryLater):
    """The open-session cap is reached: new sessions are refused, never evicted for (429)."""

    code = "too-many-sessions"
    status = 429
    title = "Too many sessions"


class TooManyWatchers(_RetryLater):
    """A bound on event streams (per session or in total) is reached (429)."""

    code = "too-many-watchers"
    status = 429
    title = "Too many watchers"


class CompileQueueFull(_RetryLater):
    """Too many compiles are running or queued (503)."""

    code = "compile-queue-full"
    status = 503
    title = "Compile queue full"


class MemoryExhausted(_RetryLater):
    """The server holds its memory budget (``max_memory_bytes``): new work waits (503)."""

    code = "memory-exhausted"
    status = 503
    title = "Memory exhausted"


class NotReady(_RetryLater):
    """The server is starting (tokenizers loading) or draining (503)."""

    code = "not-ready"
    status = 503
    title = "Not ready"

    def __init__(self, detail: str, retry_after: int = 1) -> None:
        super().__init__(detail, retry_after)


class BodyTooLarge(GuidanceError):
    """A request body over the configured limit (413), refused before or while it is read."""

    code = "body-too-large"
    status = 413
    title = "Content Too Large"

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body larger than {limit} bytes")


class BodyTimeout(GuidanceError):
    """A request body that did not arrive whole in time (408); the connection is closed after the answer."""

    code = "request-timeout"
    status = 408
    title = "Request Timeout"

    def __init__(self, seconds: float) -> None:
        super().__init__(f"the request body did not arrive within {seconds:g} s")
        self.headers = {"Connection": "close"}


class RollbackOutOfRange(GuidanceError):
    """A rollback of more tokens than the session has accepted (422)."""

    code = "rollback-out-of-range"
    status = 422
    title = "Rollback out of range"


class TokenizerExists(GuidanceError):
    """An upload under a name already taken by a different vocabulary (409)."""

    code = "tokenizer-exists"
    status = 409
    title = "Tokenizer name taken"


class Unauthorized(GuidanceError):
    """No API key, or not one of the server's, where keys are configured (401).

    Answered with ``WWW-Authenticate: Bearer`` (RFC 6750: with ``error="invalid_token"`` when a
    key was sent but is not valid). The detail never repeats what was sent.
    """

    code = "unauthorized"
    status = 401
    title = "Unauthorized"

    def __init__(self, detail: str, *, invalid: bool = False) -> None:
        super().__init__(detail)
        self.headers = {"WWW-Authenticate": _REALM + (', error="invalid_token"' if invalid else "")}


class Forbidden(GuidanceError):
    """A valid key that may not do this: a server-wide change by a key that is not an admin key (403)."""

    code = "forbidden"
    status = 403
    title = "Forbidden"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.headers = {"WWW-Authenticate": _REALM + ', error="insufficient_scope"'}


class InvalidText(GuidanceError):
    """A string of the request that UTF-8 cannot encode (a lone surrogate), or bytes that are not UTF-8 (422).

    ``location`` is ``body``, ``path`` or ``query``; ``field`` the RFC 6901 pointer into the body
    (``""``: the body as a whole), the query parameter's name, or the path (see ``service.text``).
    """

    code = "unicode-invalid"
    status = 422
    title = "Invalid Unicode"

    def __init__(self, location: str, field: str, detail: str, offset: int | None = None) -> None:
        super().__init__(detail, location=location, field=field, offset=offset)
        self.location = location
        self.field = field
