"""Use cases between the routes and ``core``: one function per operation.

A route parses its request and writes the answer; the operation it calls holds the rest: the
bounds checked before any work, draining, where the engine work runs (through the scheduler), the
metrics, and which errors the client gets. An operation reads nothing of the HTTP request but, for
a compile, whether its client has gone (to stop the compile).
"""

from __future__ import annotations

__all__: list[str] = []
