"""Operations: liveness, readiness, statistics, Prometheus metrics."""

from __future__ import annotations

import gc
from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from service.dependencies import ResourcesDep, resources_of
from service.errors import NotReady
from service.problems import problem_responses
from service.schemas import Status

__all__ = ["router"]

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="Liveness", response_model=Status)
async def healthz() -> Status:
    """Liveness: the process answers."""
    return Status(status="ok")


@router.get("/readyz", summary="Readiness", response_model=Status, responses=problem_responses(503))
async def readyz(request: Request) -> Status:
    """Readiness: 200 once the tokenizers are loaded; 503 `not-ready` before that and while draining."""
    state = resources_of(request)
    if state.draining:
        raise NotReady("the server is draining", state.settings.retry_after_seconds)
    if not state.ready:
        raise NotReady("the server is starting", state.settings.retry_after_seconds)
    return Status(status="ready")


@router.get("/stats", summary="Statistics", response_model=dict[str, Any])
async def stats(state: ResourcesDep) -> dict[str, Any]:
    """The engine's `get_stats()` (cache figures, default tokenizer) plus session figures.

    `events`: event streams open (`watchers`) and sessions with a channel (`watched`).

    Also the process's garbage collector: objects frozen at start-up (out of its full passes)
    and the collections run per generation.
    """
    out = state.backend.get_stats()
    out["sessions"] = state.sessions.stats()
    out["events"] = state.events.stats()
    out["compiles_pending"] = state.compiles_pending
    out["memory"] = state.memory.stats()
    out["tokenizers"] = sorted(name for name, _ in state.tokenizers.items())
    out["gc"] = {"frozen_objects": gc.get_freeze_count(), "collections": [g["collections"] for g in gc.get_stats()]}
    return out


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={
        200: {
            "description": "Prometheus text exposition.",
            "content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}},
        }
    },
)
async def metrics(state: ResourcesDep) -> Response:
    """Prometheus metrics of this process (see service/metrics.py for the list)."""
    return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
