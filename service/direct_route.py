"""Routes called as ``endpoint(request)``, directly, for the hot paths (``/step`` and the mask)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

__all__ = ["DirectRoute"]


class DirectRoute(APIRoute):
    """An APIRoute documented like any other but called as ``endpoint(request)``, directly.

    No dependency solving, parameter validation or response serialisation, for the hot paths:
    the endpoint reads the request itself and returns a ``Response``; its parameters and body are
    documented through ``openapi_extra``. ``/step`` is served this way. The mask's route is
    declared the same way for the schema (and answers other methods with 405), but its GETs never
    reach the router: ``MaskFastPathMiddleware`` serves them all, calling the same endpoint.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        endpoint: Callable[[Request], Coroutine[Any, Any, Response]] = self.endpoint
        return endpoint
