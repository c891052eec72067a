"""What new work is admitted, decided before its body is read.

Two checks need no body and are made before one is read (an upload can be 64 MiB):

- **Admin-only routes** (those that declare :data:`~service.dependencies.AdminDep`, such as
  ``POST /tokenizers``): a key that may not make server-wide changes gets 403 ``forbidden`` at
  once. The route's dependency still says the same, for the documentation and for apps built
  without this middleware.
- **The memory budget** (:class:`~service.memory.MemoryBudget`): requests that make the server
  hold more (``POST /compile``, ``POST /sessions``, ``POST /sessions/{id}/fork``,
  ``POST /tokenizers``) get 503 ``memory-exhausted`` with ``Retry-After`` while the process is
  above it. Everything else, masks, steps and closing sessions included, is served: that is how
  memory comes back.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Receive, Scope, Send

from core.errors import GuidanceError
from service.auth import PRINCIPAL_SCOPE_KEY, Principal, require_admin
from service.errors import Forbidden
from service.middleware import route_path
from service.problems import guidance_error_response

__all__ = ["NEW_WORK", "AdmissionMiddleware", "admin_routes"]

NEW_WORK = re.compile(r"/compile|/sessions|/sessions/[^/]+/fork|/tokenizers")
"""``POST`` paths that make the server hold more memory."""


def admin_routes(routes: Iterable[BaseRoute]) -> list[BaseRoute]:
    """The routes that declare the admin dependency."""
    found = []
    for route in routes:
        dependant = getattr(route, "dependant", None)
        if dependant is not None and any(d.call is require_admin for d in dependant.dependencies):
            found.append(route)
    return found


class AdmissionMiddleware:
    """Refuse, before the body is read, what a key may not do and new work past the memory budget.

    Installed inside the authentication middleware (it reads the principal that one sets) and
    outside the body limit and the text guard (which read the body).

    Args:
        app: the wrapped application.
        admin_only: routes that need an admin key (see :func:`admin_routes`).
    """

    def __init__(self, app: ASGIApp, admin_only: Iterable[BaseRoute] = ()) -> None:
        self.app = app
        self.admin_only = list(admin_only)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            error = self._refusal(scope)
            if error is not None:
                await guidance_error_response(scope.get("app"), error)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _refusal(self, scope: Scope) -> GuidanceError | None:
        principal: Principal | None = scope.get(PRINCIPAL_SCOPE_KEY)
        if principal is not None and not principal.admin:
            for route in self.admin_only:
                if route.matches(scope)[0] is Match.FULL:
                    return Forbidden("this is a server-wide change: it needs an admin API key")
        if NEW_WORK.fullmatch(route_path(scope)):
            state = getattr(getattr(scope.get("app"), "state", None), "service", None)
            if state is not None:
                try:
                    state.memory.check()
                except GuidanceError as e:
                    return e
        return None
