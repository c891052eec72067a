"""The HTTP routes, one module per area."""

from __future__ import annotations

from service.routes import compile, events, ops, sessions, step, tokenizers, ui

__all__ = ["ROUTERS"]

# The hot paths first (mask, step): routes are matched in order.
ROUTERS = (
    sessions.mask_router,
    step.router,
    compile.router,
    sessions.router,
    events.router,
    tokenizers.router,
    ops.router,
    ui.router,
)
