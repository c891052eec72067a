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
``GUIDANCE_CLIENT_TOKENIZER``  a server tokenizer to align with, instead of  the engine's own,
                               registering the engine's tokenizer            registered by content
=============================  ============================================  =========================
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from guidance_client.errors import GuidanceClientError, VocabularyMismatch
from guidance_client.protocol import retryable
from guidance_client.vocabulary import ModelVocabulary, hf_vocabulary

if TYPE_CHECKING:
    from guidance_client._sync.client import GuidanceClient
    from guidance_client.aligned import Aligned

__all__ = ["ENV_PREFIX", "Alignment", "ServingConfig", "model_vocabulary"]

log = logging.getLogger(__name__)

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
        tokenizer: a server tokenizer to align the model with (checked against the model),
            instead of registering the engine's own tokenizer by content.
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
                raise ValueError(
                    f"guidance_client timeout must be a number of seconds, not {values['timeout']!r}"
                ) from e
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


def model_vocabulary(tokenizer: Any, vocab_size: int, eos_token_ids: Iterable[int]) -> ModelVocabulary:
    """The model's side of an alignment, from what an engine hands its plugin.

    Args:
        tokenizer: the engine's Hugging Face tokenizer, or None (an engine started without one:
            then only the width and the end tokens can be compared).
        vocab_size: the model's logits width.
        eos_token_ids: the ids the engine stops on.
    """
    ends = sorted({int(t) for t in eos_token_ids})
    if tokenizer is not None:
        return hf_vocabulary(tokenizer, eos_token_ids=ends or None, vocab_size=vocab_size)
    if not ends:
        raise ValueError("the engine has no tokenizer and no end token: nothing to align the server's masks with")
    return ModelVocabulary(vocab_size=vocab_size, eos_token_ids=tuple(ends), token_bytes={})


class Alignment:
    """An engine plugin's alignment with the server, made when the engine builds the plugin.

    A mismatch raises at once (the engine does not start), as does an error answer no retry mends
    (``GUIDANCE_CLIENT_TOKENIZER`` naming a tokenizer the server lacks). A server unreachable then
    is tried again when a constraint needs it, so an outage at start does not keep the engine down.

    Args:
        client: the plugin's client.
        vocabulary: the model's side (:func:`model_vocabulary`).
        tokenizer: a server tokenizer to align with (``GUIDANCE_CLIENT_TOKENIZER``); None: the
            engine's tokenizer, registered by content (required when the vocabulary has no file).

    Raises:
        VocabularyMismatch: the model's vocabulary is not the server tokenizer's.
        ValueError: no tokenizer file and no server tokenizer named.
        RemoteError: an error answer a retry would not mend.
    """

    def __init__(self, client: GuidanceClient, vocabulary: ModelVocabulary, tokenizer: str | None) -> None:
        if vocabulary.tokenizer_file is None and tokenizer is None:
            raise ValueError(
                "without the engine's tokenizer, name the model's server tokenizer in GUIDANCE_CLIENT_TOKENIZER"
            )
        self.client = client
        self.vocabulary = vocabulary
        self.tokenizer = tokenizer
        self._aligned: Aligned | None = None
        self._lock = threading.Lock()
        try:
            self.aligned()
        except GuidanceClientError as e:
            if isinstance(e, VocabularyMismatch) or not retryable(e):
                raise  # a mismatch, or an answer (an unknown tokenizer, a refused key) no retry mends
            log.warning("guidance constraint server unreachable at start, aligning at the first constraint: %s", e)

    def aligned(self) -> Aligned:
        """The alignment, made now if it was not yet.

        Raises:
            VocabularyMismatch: the vocabularies differ.
            GuidanceClientError: the server cannot be reached.
        """
        from guidance_client.aligned import Aligned

        with self._lock:
            if self._aligned is None:
                self._aligned = Aligned(self.client, self.vocabulary, self.tokenizer)
            return self._aligned

    def spec(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        """``spec`` compiling against a tokenizer aligned with the model (see :meth:`Aligned.spec`)."""
        return self.aligned().spec(spec)
