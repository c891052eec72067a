"""Use cases between the HTTP routes and core: routes parse and answer, use cases hold draining,
bounds, metrics and the mapping of errors."""

from __future__ import annotations

__all__: list[str] = []
