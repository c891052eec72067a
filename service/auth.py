"""API keys: who may use the server, whose sessions are whose, who may change the server.

Off unless keys are configured (``api_keys``, ``api_keys_file``, ``admin_api_keys``,
``admin_api_keys_file``): the loopback quick start needs none. With keys, three rules, each
written once here and applied to every route, the mask fast path and ``/step`` included:

* **Who may use it.** Every request but the open paths (:func:`is_open`) carries
  ``Authorization: Bearer <key>``; otherwise 401 ``unauthorized`` with ``WWW-Authenticate``
  (:class:`AuthMiddleware`, outside every other middleware but the error guard, so nothing of an
  unauthenticated request is read or routed). The key is hashed and compared with every
  configured key's hash by ``hmac.compare_digest``, all of them every time: how long it takes
  says neither whether nor which key matched.
* **Whose session.** A session belongs to the key that opened it (:func:`owner_of` gives the
  request's :attr:`Principal.owner`; ``SessionStore`` compares it on every lookup), and another
  key gets exactly the answer an unknown id gets (404 ``session-not-found``).
* **Who may watch a session.** Its events (``GET /sessions/{id}/events``) and its place in the
  list of sessions are for the key that opened it, and for admin keys where admin keys are
  configured (:func:`may_watch`); when none are, a key sees its own sessions only.
* **Who may change the server.** Server-wide changes (uploading a tokenizer) depend on
  :func:`require_admin`: when admin keys are configured, another key gets 403 ``forbidden``;
  when none are, every key may.

Keys are never kept as text after start-up, never logged, never a metric label: a request's
principal is the key's position in the ring.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from fastapi import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from service.errors import Forbidden, Unauthorized
from service.middleware import route_path
from service.problems import guidance_error_response
from service.settings import API_KEY_PATTERN, API_KEY_RULE, Settings

__all__ = [
    "PRINCIPAL_SCOPE_KEY",
    "PROBE_PATHS",
    "AuthMiddleware",
    "KeyConfigError",
    "KeyRing",
    "Principal",
    "is_open",
    "may_watch",
    "owner_of",
    "principal_of",
    "read_key_file",
    "require_admin",
]

PRINCIPAL_SCOPE_KEY = "guidance.principal"
"""Where :class:`AuthMiddleware` puts the request's :class:`Principal` in the ASGI scope."""

PROBE_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
"""Open without a key while ``public_health_and_metrics`` is on (the default)."""

# The page and the API's own description are static text for people: the page asks for the key
# and sends it with every API call it makes.
_DOC_PATHS = frozenset({"/", "/ui", "/ui/", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
_DOC_PREFIXES = ("/ui/", "/docs/")


def is_open(path: str, probes_open: bool) -> bool:
    """Whether ``path`` (without any root path) answers without a key."""
    if path in _DOC_PATHS or path.startswith(_DOC_PREFIXES):
        return True
    return probes_open and path in PROBE_PATHS


class KeyConfigError(ValueError):
    """A key file that cannot be read or holds something that is not a key (start-up)."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request comes from.

    Attributes:
        owner: which key: its position in the key ring (the key itself is not kept).
        admin: whether the key may make server-wide changes.
    """

    owner: int
    admin: bool


def _digest(key: bytes) -> bytes:
    # Hashes have one length: compare_digest then takes the same time whatever the lengths.
    return hashlib.sha256(key).digest()


class KeyRing:
    """The configured keys, as hashes, each with the principal it stands for.

    Args:
        keys: keys that may use the server.
        admin_keys: keys that may also make server-wide changes. Admin keys are keys too; when
            there are none, every key is an admin.
    """

    def __init__(self, keys: Iterable[str], admin_keys: Iterable[str] = ()) -> None:
        admin = dict.fromkeys(_digest(k.encode()) for k in admin_keys)  # in order: stable owners
        principals: dict[bytes, Principal] = {}
        for digest in [*admin, *(_digest(k.encode()) for k in keys)]:
            if digest not in principals:  # a key listed twice (or as both) is one principal
                principals[digest] = Principal(len(principals), digest in admin or not admin)
        self._entries: tuple[tuple[bytes, Principal], ...] = tuple(principals.items())
        self.admin_restricted = bool(admin)

    def __len__(self) -> int:
        return len(self._entries)

    def authenticate(self, key: bytes) -> Principal | None:
        """The principal of ``key``, or None when it is not a configured key.

        Every configured key is compared, in constant time, whatever the outcome.
        """
        digest = _digest(key)
        found: Principal | None = None
        for expected, principal in self._entries:
            if hmac.compare_digest(digest, expected):
                found = principal
        return found

    @classmethod
    def from_settings(cls, settings: Settings) -> KeyRing:
        """The keys of ``settings`` (files read now).

        Raises:
            KeyConfigError: a key file cannot be read or holds an invalid line.
        """
        keys = [k.get_secret_value() for k in settings.api_keys]
        admin = [k.get_secret_value() for k in settings.admin_api_keys]
        if settings.api_keys_file is not None:
            keys += read_key_file(settings.api_keys_file)
        if settings.admin_api_keys_file is not None:
            admin += read_key_file(settings.admin_api_keys_file)
        return cls(keys, admin)


def read_key_file(path: Path) -> list[str]:
    """Keys from a file: one per line, optionally followed by a ``# comment`` (e.g. whose key it
    is); blank lines and lines starting with ``#`` are skipped.

    Raises:
        KeyConfigError: the file cannot be read, or a line is not a key (the message names the
            line, never its text).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise KeyConfigError(f"cannot read the API key file {path}: {e.__class__.__name__}") from None
    keys: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split(maxsplit=1)
        if not fields or fields[0].startswith("#"):
            continue
        if not API_KEY_PATTERN.fullmatch(fields[0]) or (len(fields) > 1 and not fields[1].startswith("#")):
            raise KeyConfigError(
                f"{path}, line {number}: not an API key ({API_KEY_RULE}), or text after it that is not a # comment"
            )
        keys.append(fields[0])
    return keys


def _bearer(scope: Scope) -> bytes | None:
    """The token of the request's ``Authorization: Bearer`` header, if it has one."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.strip().partition(b" ")
            token = token.strip()
            return token if scheme.lower() == b"bearer" and token else None
    return None


class AuthMiddleware:
    """Refuse every request without a configured key with 401, except the open paths.

    Puts the request's :class:`Principal` in the scope (``PRINCIPAL_SCOPE_KEY``) for
    :func:`owner_of` and :func:`require_admin`. Installed only when keys are configured.

    Args:
        app: the wrapped application.
        keys: the key ring.
        probes_open: ``/healthz``, ``/readyz`` and ``/metrics`` answer without a key.
    """

    def __init__(self, app: ASGIApp, keys: KeyRing, probes_open: bool) -> None:
        self.app = app
        self.keys = keys
        self.probes_open = probes_open

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            if not is_open(route_path(scope), self.probes_open):
                token = _bearer(scope)
                principal = None if token is None else self.keys.authenticate(token)
                if principal is None:
                    if scope["type"] == "websocket":  # refused before the handshake (HTTP 403)
                        await send({"type": "websocket.close", "code": 1008})
                        return
                    error = (
                        Unauthorized("this server needs an API key: send Authorization: Bearer <key>")
                        if token is None
                        else Unauthorized("the API key is not valid for this server", invalid=True)
                    )
                    await guidance_error_response(scope.get("app"), error)(scope, receive, send)
                    return
                scope[PRINCIPAL_SCOPE_KEY] = principal
        await self.app(scope, receive, send)


def owner_of(request: Request) -> int | None:
    """The owner a request's sessions get and must match: its key's, or None without keys."""
    principal: Principal | None = request.scope.get(PRINCIPAL_SCOPE_KEY)
    return None if principal is None else principal.owner


async def require_admin(request: Request) -> None:
    """Dependency of server-wide changes: 403 ``forbidden`` unless the key may make them.

    Without keys (no principal) everything is allowed; with keys, the principal says.
    """
    principal: Principal | None = request.scope.get(PRINCIPAL_SCOPE_KEY)
    if principal is not None and not principal.admin:
        raise Forbidden("this is a server-wide change: it needs an admin API key")


def principal_of(request: Request) -> Principal | None:
    """The request's principal (None without keys)."""
    principal: Principal | None = request.scope.get(PRINCIPAL_SCOPE_KEY)
    return principal


def may_watch(principal: Principal | None, owner: int | None, admin_restricted: bool) -> bool:
    """Whether ``principal`` may watch a session of ``owner``.

    Without keys, anyone; with keys, the session's own key, or an admin key where admin keys are
    configured (where none are, every key counts as admin for server-wide changes, but that does
    not open other keys' sessions).
    """
    if principal is None:
        return True
    return principal.owner == owner or (admin_restricted and principal.admin)
