"""The HTTP routes, one module per area."""

from __future__ import annotations

from service.routes import compile, ops, sessions, tokenizers

__all__ = ["ROUTERS"]

# The mask route first: it is the hottest path, and routes are matched in order.
ROUTERS = (sessions.mask_router, compile.router, sessions.router, tokenizers.router, ops.router)
