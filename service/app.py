"""The app factory: ``create_app(settings)`` builds a FastAPI app whose lifespan owns everything.

The lifespan loads the tokenizers, builds one :class:`~core.backend.GuidanceBackend` (its
program cache is shared by every tokenizer: program ids include the vocabulary) and the compile
executor the service owns, the memory budget, the session
store, the scheduler of engine work (with its slow lane), the metrics registry and a task closing
idle sessions; and tears them down
on shutdown (after uvicorn has drained the connections, see ``docs/reliability.md``).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import logging
from collections.abc import AsyncIterator, Mapping
from importlib import metadata
from typing import Any

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from core.backend import GuidanceBackend
from core.threads import LLGuidanceThreadPool
from core.tokenizers import Tokenizer
from service.admission import AdmissionMiddleware, admin_routes
from service.auth import AuthMiddleware, KeyRing, is_open
from service.dependencies import ServiceResources
from service.events import EventHub
from service.memory import RELEASED_TOKENS_TRIM, MemoryBudget, release_memory
from service.metrics import Metrics
from service.middleware import (
    BodySizeLimitMiddleware,
    BodyTimeoutMiddleware,
    ErrorGuardMiddleware,
    MaskFastPathMiddleware,
    TextGuardMiddleware,
)
from service.problems import document_problems, install_problem_handlers, problem_responses
from service.routes import ROUTERS
from service.routes.sessions import get_mask
from service.routes.step import openapi_components as step_components
from service.scheduling import Scheduler, SlowLane
from service.schemas import Problem
from service.sessions import SessionStore
from service.settings import Settings
from service.tokenizers import load_configured

__all__ = ["DOCS_ASSETS", "create_app"]

DOCS_ASSETS = "/docs/assets"
"""Where the API description pages' scripts and styles are served."""

log = logging.getLogger("service")

_DESCRIPTION = """\
A constraint server for LLM inference. Compile a constraint once (template, JSON schema, regex,
Lark grammar or choice list), open a session per request, and at each decoding step send the
tokens sampled and read back the packed bitmask of the tokens allowed next.

Errors are RFC 9457 `application/problem+json` documents with a stable `code`.

Where the server is configured with API keys, every request carries `Authorization: Bearer <key>`
(401 `unauthorized` otherwise; `/healthz`, `/readyz` and `/metrics` stay open unless configured
not to); a session belongs to the key that opened it (another key gets 404, as for an unknown id),
and server-wide changes may be limited to admin keys (403 `forbidden`).
"""


# Metrics are ours (Prometheus); FastAPI's built-in OpenTelemetry hooks would add their cost to
# every request on the mask path. Older FastAPI versions have no such option.
_NO_TELEMETRY: dict[str, Any] = (
    {"telemetry": {"tracing": False, "metrics": False, "logs": False}}
    if "telemetry" in inspect.signature(FastAPI.__init__).parameters
    else {}
)


def _version() -> str:
    try:
        return metadata.version("guidance-server")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0.0.0"


async def _sweep(state: ServiceResources, interval: float) -> None:
    """Close idle sessions and event streams; give back the memory of large answers served and of
    long sessions closed since."""
    while True:
        await asyncio.sleep(interval)
        state.sessions.sweep()
        state.events.sweep()
        if state.large_answers or state.sessions.tokens_released >= RELEASED_TOKENS_TRIM:
            state.large_answers = 0
            state.sessions.tokens_released = 0
            await asyncio.to_thread(release_memory)


def create_app(
    settings: Settings | None = None, *, tokenizers: Mapping[str, Tokenizer] | None = None, freeze_gc: bool = False
) -> FastAPI:
    """Build the app.

    Args:
        settings: the configuration; ``Settings()`` (environment and defaults) when None.
        tokenizers: tokenizers already built, by name (they skip loading; the first, or the one
            named ``"default"``, is the default unless ``settings.tokenizers`` names another).
        freeze_gc: once started, move every object alive to the garbage collector's permanent
            generation (``gc.freeze()``): they live as long as the process, and a full collection
            over them is a pause in the middle of some request (``docs/benchmarks.md``). The server's command
            line sets it; an app embedded in another process (tests) should not.

    Returns:
        The FastAPI app. Nothing heavy happens until its lifespan starts.

    Raises:
        KeyConfigError: an API key file cannot be read or holds an invalid line.
    """
    settings = settings or Settings()
    preloaded = dict(tokenizers or {})
    keys = KeyRing.from_settings(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        registry = await asyncio.to_thread(load_configured, settings.tokenizers, preloaded, settings.max_tokenizers)
        backend = GuidanceBackend(
            registry.default,
            max_cache_size=settings.cache_max_entries,
            max_cache_bytes=settings.cache_max_bytes,
            cache_probation_share=settings.cache_probation_share,
            negative_cache_ttl=settings.negative_cache_ttl_seconds,
            negative_cache_entries=settings.negative_cache_max_entries,
            limits=settings.limits(),
            num_threads=settings.mask_threads,
            compile_processes=settings.compile_workers if settings.compile_processes else 0,
            compile_nice=settings.compile_nice,
        )
        # The service's compile executor. With worker processes, each compile thread mostly
        # waits on its worker's pipe: twice as many threads as workers, so that a compile can
        # reach a spare worker while heavy ones hold the others (core/workers.py).
        threads = settings.compile_workers * (2 if settings.compile_processes else 1)
        executor = LLGuidanceThreadPool(
            threads, "guidance-compile", backend.limits.llguidance_stack_bytes, nice=settings.compile_nice
        )
        # Workers start now, in the background: the first compiles need not wait for them.
        backend.start_workers([tok for _, tok in registry.items()])
        sessions = SessionStore(
            max_sessions=settings.max_sessions,
            ttl_seconds=settings.session_ttl_seconds,
            expired_ids_remembered=settings.expired_ids_remembered,
            retry_after=settings.retry_after_seconds,
            max_tokens=settings.max_session_tokens,
            max_per_owner=settings.sessions_per_key(len(keys)),
        )
        # The service owns the threads its sessions' slow work runs on (stopped with it).
        lane_pool = LLGuidanceThreadPool(
            settings.slow_lane_workers, "guidance-slow", backend.limits.llguidance_stack_bytes
        )
        lane = SlowLane(
            settings.slow_mask_ms / 1000,
            settings.slow_lane_workers,
            probation=settings.slow_lane_probation_calls,
            executor=lane_pool,
        )
        scheduler = Scheduler(lane)
        events = EventHub(
            max_watchers=settings.max_watchers,
            max_watchers_per_session=settings.max_watchers_per_session,
            buffer=settings.events_buffer,
            resume_seconds=settings.events_resume_seconds,
            heartbeat_seconds=settings.events_heartbeat_seconds,
            retry_after=settings.retry_after_seconds,
            admin_restricted=keys.admin_restricted,
        )
        metrics = Metrics(backend, sessions, scheduler.lane)
        memory = MemoryBudget(settings.max_memory_bytes, settings.retry_after_seconds)
        state = ServiceResources(settings, registry, backend, sessions, metrics, scheduler, executor, memory, events)
        app.state.service = state
        interval = min(max(settings.session_ttl_seconds / 4, 0.05), 30.0)
        sweeper = asyncio.create_task(_sweep(state, interval), name="guidance-session-sweeper")
        if freeze_gc:
            gc.collect()
            gc.freeze()
        state.ready = True
        log.info(
            "ready: tokenizers %s, default %s (%d ids)",
            ", ".join(sorted(n for n, _ in registry.items())),
            registry.default.name,
            registry.default.vocab_size,
        )
        try:
            yield
        finally:
            state.ready = False
            state.draining = True
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
            executor.shutdown(wait=False, cancel_futures=True)
            backend.close()
            scheduler.close()
            lane_pool.shutdown(wait=False, cancel_futures=True)
            sessions.clear()
            del app.state.service

    # /docs and /redoc with Swagger UI's and ReDoc's files from the fastapi-offline package, not a
    # CDN: the API's page works on a machine without Internet access.
    app = FastAPIOffline(
        static_url=DOCS_ASSETS,
        **_NO_TELEMETRY,
        title="Guidance constraint server",
        version=_version(),
        description=_DESCRIPTION,
        lifespan=lifespan,
        # A body without Content-Type is read as JSON (curl -d); another content type is refused.
        strict_content_type=False,
    )
    install_problem_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    # Outermost last: guard > mask fast path > body time > body size > text guard > FastAPI's
    # exception handling > routes. The text guard reads bodies the limits have already bounded.
    app.add_middleware(TextGuardMiddleware, binary_paths=frozenset({"/tokenizers"}))
    app.add_middleware(
        BodySizeLimitMiddleware,
        max_bytes=settings.max_body_bytes,
        path_limits={"/tokenizers": settings.max_tokenizer_body_bytes},
    )
    app.add_middleware(BodyTimeoutMiddleware, timeout=settings.body_timeout_seconds)
    app.add_middleware(MaskFastPathMiddleware, endpoint=get_mask)
    # Inside the key check (it reads the principal), outside the body limit and the text guard.
    app.add_middleware(AdmissionMiddleware, admin_only=admin_routes(r for router in ROUTERS for r in router.routes))
    if len(keys):  # no keys: no check at all (the loopback quick start)
        app.add_middleware(AuthMiddleware, keys=keys, probes_open=settings.public_health_and_metrics)
    app.add_middleware(ErrorGuardMiddleware)
    _install_openapi(app)
    return app


_BEARER_SCHEME: dict[str, Any] = {
    "type": "http",
    "scheme": "bearer",
    "description": (
        "An API key, where the server is configured with keys (`GUIDANCE_SERVER_API_KEYS`, "
        "`GUIDANCE_SERVER_API_KEYS_FILE`); without keys configured no header is needed."
    ),
}


def _document_security(schema: dict[str, Any]) -> None:
    """Declare the bearer scheme: needed on every operation but the open ones, with its 401."""
    schema["components"]["securitySchemes"] = {"bearerAuth": _BEARER_SCHEME}
    for path, operations in schema.get("paths", {}).items():
        for operation in operations.values():
            if is_open(path, probes_open=False):
                continue
            # ``{}``: anonymous too, as on a server without keys (``is_open`` of a probe depends
            # on the configuration: a probe is documented both ways).
            operation["security"] = [{"bearerAuth": []}] + ([{}] if is_open(path, probes_open=True) else [])
            responses = {**operation["responses"], "401": problem_responses(401)[401]}
            operation["responses"] = dict(sorted(responses.items()))


def _install_openapi(app: FastAPI) -> None:
    """Generate the schema with every error documented as a problem document."""
    from fastapi.openapi.utils import get_openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            schema.setdefault("components", {}).setdefault("schemas", {}).update(step_components())
            _document_security(schema)
            app.openapi_schema = document_problems(schema, Problem.model_json_schema())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented customisation
