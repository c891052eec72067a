"""Settings of the plugins an inference server builds itself (vLLM, SGLang).

A vLLM logits processor or an SGLang grammar backend is constructed by the engine, in its own
processes, so no caller hands it a client: it reads where the constraint server is from the
environment, which the engine's processes inherit: its API server (vLLM validates constraints
there) and its model workers alike.

=============================  ============================================  =========================
variable                       meaning                                       default
=============================  ============================================  =========================
``GUIDANCE_CLIENT_URL``        the server, or a balancer before replicas     ``http://127.0.0.1:8000``
``GUIDANCE_CLIENT_API_KEY``    sent as ``Authorization: Bearer``             none
``GUIDANCE_CLIENT_WORKER_ID``  sent as ``X-Worker-Id``                       none
``GUIDANCE_CLIENT_TIMEOUT``    seconds per request                           30
``GUIDANCE_CLIENT_TOKENIZER``  the server tokenizer of specs naming none     the server's default
=============================  ============================================  =========================
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from guidance_client._sync.client import GuidanceClient

__all__ = ["ENV_PREFIX", "ServingConfig"]

ENV_PREFIX = "GUIDANCE_CLIENT_"
"""The prefix of the environment variables the engine plugins read."""


@dataclass(frozen=True)
class ServingConfig:
    """Where the constraint server is, for a plugin the engine builds.

    Attributes:
        url: the server, or a balancer in front of replicas.
        api_key: sent as ``Authorization: Bearer``.
        worker_id: sent as ``X-Worker-Id`` (a balancer hashing on it keeps the sessions on one
            replica).
        timeout: seconds per request.
        tokenizer: the server-side tokenizer of the specs that name none (it must be the
            model's: the masks are over its ids).
    """

    url: str = "http://127.0.0.1:8000"
    api_key: str | None = None
    worker_id: str | None = None
    timeout: float = 30.0
    tokenizer: str | None = None

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None) -> ServingConfig:
        """The settings of ``environ`` (default: the process's environment).

        Raises:
            ValueError: a timeout that is not a number.
        """
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            value = environ.get(ENV_PREFIX + f.name.upper())
            if value:
                values[f.name] = value
        if "timeout" in values:
            try:
                values["timeout"] = float(values["timeout"])
            except (TypeError, ValueError) as e:
                raise ValueError(f"guidance_client timeout must be a number of seconds, not {values['timeout']!r}") from e
        return cls(**values)

    def client(self) -> GuidanceClient:
        """A synchronous client of the server with these settings."""
        from guidance_client._sync.client import GuidanceClient

        return GuidanceClient(self.url, self.timeout, worker_id=self.worker_id, api_key=self.api_key)

    def spec(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        """``spec`` (a ``POST /compile`` body) with the default tokenizer if it names none."""
        out = dict(spec)
        if self.tokenizer is not None and "tokenizer" not in out:
            out["tokenizer"] = self.tokenizer
        return out
