"""What the lifespan builds, and the one-line dependencies that hand it to route handlers.

Tests override any of ``get_*`` through ``app.dependency_overrides``.
"""

from __future__ import annotations

from collections.abc import Hashable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from core.backend import GuidanceBackend
from service.auth import owner_of, require_admin
from service.errors import NotReady
from service.events import EventHub
from service.memory import MemoryBudget
from service.metrics import Metrics
from service.scheduling import Scheduler
from service.sessions import SessionStore
from service.settings import Settings
from service.tenants import KeyPrograms
from service.tokenizers import TokenizerRegistry

__all__ = [
    "AdminDep",
    "BackendDep",
    "MetricsDep",
    "OwnerDep",
    "ResourcesDep",
    "ServiceResources",
    "SessionsDep",
    "SettingsDep",
    "TenantDep",
    "TokenizersDep",
    "get_backend",
    "get_metrics",
    "get_owner",
    "get_resources",
    "get_sessions",
    "get_settings",
    "get_tenant",
    "get_tokenizers",
    "resources_of",
    "tenant_of",
]


@dataclass
class ServiceResources:
    """Everything one running app owns (built by the lifespan, torn down with it).

    ``backend`` is the synchronous library backend (compiles, the program cache, fills): the
    service decides where its work runs. ``compile_executor`` is the service's: compiles run there
    (``service/operations/compile.py``). ``memory`` is the server-wide memory budget.
    """

    settings: Settings
    tokenizers: TokenizerRegistry
    backend: GuidanceBackend
    sessions: SessionStore
    metrics: Metrics
    scheduler: Scheduler
    compile_executor: Executor
    memory: MemoryBudget
    events: EventHub = field(default_factory=EventHub)
    ready: bool = False
    draining: bool = False
    compiles_pending: int = 0
    large_answers: int = 0  # answers of LARGE_ANSWER_BYTES or more since the last memory release
    key_programs: KeyPrograms = field(default_factory=KeyPrograms)  # what each key compiled (service/tenants.py)


def resources_of(request: Request) -> ServiceResources:
    """The running app's state (raises 503 ``not-ready`` before startup)."""
    state: ServiceResources | None = getattr(request.app.state, "service", None)
    if state is None:
        raise NotReady("the server is starting")
    return state


def tenant_of(request: Request) -> Hashable:
    """Whose work a request is, for the slow lane's fairness: its API key's owner, or, where keys
    are off, the client's address."""
    owner = owner_of(request)
    if owner is not None:
        return owner
    client = request.client
    return client.host if client is not None else None


# Dependencies are ``async def`` on purpose: FastAPI runs plain ``def`` ones in a thread pool.


async def get_resources(request: Request) -> ServiceResources:
    """The running app's state (503 ``not-ready`` before startup)."""
    return resources_of(request)


async def get_settings(request: Request) -> Settings:
    return resources_of(request).settings


async def get_backend(request: Request) -> GuidanceBackend:
    return resources_of(request).backend


async def get_sessions(request: Request) -> SessionStore:
    return resources_of(request).sessions


async def get_tokenizers(request: Request) -> TokenizerRegistry:
    return resources_of(request).tokenizers


async def get_metrics(request: Request) -> Metrics:
    return resources_of(request).metrics


async def get_owner(request: Request) -> int | None:
    """The owner of the sessions this request may see and opens (see ``service/auth.py``)."""
    return owner_of(request)


ResourcesDep = Annotated[ServiceResources, Depends(get_resources)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
BackendDep = Annotated[GuidanceBackend, Depends(get_backend)]
SessionsDep = Annotated[SessionStore, Depends(get_sessions)]
TokenizersDep = Annotated[TokenizerRegistry, Depends(get_tokenizers)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
OwnerDep = Annotated[int | None, Depends(get_owner)]


async def get_tenant(request: Request) -> Hashable:
    """Whose work this request is (see :func:`tenant_of`)."""
    return tenant_of(request)


TenantDep = Annotated[Hashable, Depends(get_tenant)]
AdminDep = Depends(require_admin)
"""For ``dependencies=[AdminDep]`` of a route that changes the whole server (403 unless admin)."""
