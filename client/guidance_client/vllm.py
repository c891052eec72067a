"""vLLM v1: a logits-processor plugin that takes each request's constraint from the server.

Installed with this package, the plugin is found by vLLM through the entry-point group
``vllm.logits_processors``; it can also be named, ``--logits-processors
guidance_client.vllm:GuidanceLogitsProcessor`` (or ``LLM(logits_processors=[...])``). A request
is constrained when its ``SamplingParams.extra_args`` hold :data:`EXTRA_ARGS_KEY` (``"guidance"``):
a ``POST /compile`` body, as a dict or as its JSON text (over vLLM's HTTP API, ``vllm_xargs``
values are strings, numbers or lists)::

    SamplingParams(extra_args={"guidance": {"regex": "[0-9]+"}})
    {"vllm_xargs": {"guidance": "{\\"json_schema\\": {\\"type\\": \\"object\\"}}"}}   # HTTP

Any kind of the server goes there, vLLM's own ``structured_outputs`` object and OpenAI's
``response_format`` included (``{"guidance": {"structured_outputs": {"choice": ["yes", "no"]}}}``).
vLLM's own ``SamplingParams.structured_outputs`` (and ``response_format``) is not read: vLLM applies
it with its own backend whatever a logits processor does, so the same object under ``guidance``
is how a request is served from here instead.

Where the server is: :mod:`guidance_client.serving` (``GUIDANCE_CLIENT_URL`` ...).

**Alignment.** When vLLM builds the processor it aligns with the engine's own tokenizer (the one
vLLM loads from the model config, ``cached_tokenizer_from_config``): the tokenizer is registered
with the server by content and the server compares it with the model: the logits width
(``model_config.get_vocab_size()``), the end tokens (the tokenizer's EOS and the generation
config's ``eos_token_id``, what vLLM stops on) and a sample of token bytes. A difference raises
:class:`~guidance_client.errors.VocabularyMismatch` there, so vLLM does not start. With
``GUIDANCE_CLIENT_TOKENIZER`` set, that server tokenizer is checked instead of registering the
engine's. Specs compile against the aligned tokenizer; a spec naming another one is checked
against the model first, and a mismatch fails that request (it may only stop). Without a tokenizer
(``--skip-tokenizer-init``) ``GUIDANCE_CLIENT_TOKENIZER`` is required and only the width and the
end tokens are checked. A server unreachable at start is aligned with at the first step instead
(requests opened before then may only stop).

How a step goes, as vLLM 0.33's model runner calls it (``GPUModelRunner.execute_model``:
``_update_states`` -> ``InputBatch.refresh_metadata`` -> ``update_state``, then the forward pass,
then the sampler -> ``apply``):

- :meth:`~GuidanceLogitsProcessor.update_state` follows the batch (removed, added, moved and
  swapped rows), and sends one ``POST /step`` for every constrained row, from a background thread,
  with the tokens each row sampled since the last step. Sessions are opened (and closed) in that
  thread too. So the round trip overlaps the forward pass.
- With async scheduling (vLLM's default), the token sampled at the previous step is still on the
  GPU when ``update_state`` runs (a ``-1`` placeholder in the request's output list); vLLM fills
  it in just before the sampler. The step then goes out at the start of ``apply``, which the CPU
  reaches while the GPU still computes the forward pass it has queued: the round trip overlaps the
  GPU's work, not the CPU's.
- :meth:`~GuidanceLogitsProcessor.apply` waits for the answer and sets the forbidden tokens' logits
  to ``-inf`` (:func:`guidance_client.torch_masks.apply_masks`: the packed masks go to the device
  and are unpacked there).

A request whose constraint cannot be served (the server unreachable after the client's retries,
its session lost for good, a token the constraint refused) can only end: its row then allows the
request's stop tokens alone, and the reason is logged. vLLM gives a logits processor no way to
fail one request; it finishes as if stopped.

Name the processor (``--logits-processors guidance_client.vllm:GuidanceLogitsProcessor``) when
vLLM schedules asynchronously: vLLM 0.33 fills in the placeholders of the output lists only when
some processor was given by name (``logitsprocs_need_output_token_ids``), not for one loaded from
its entry point alone; such a row could not be stepped, and fails as below.

Not supported: speculative decoding. vLLM 0.33 refuses a named logits processor with it, and
builds none from entry points (the constraint would not be applied).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from numpy.typing import NDArray
from vllm import SamplingParams
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor, MoveDirectionality

from guidance_client import protocol
from guidance_client._sync.client import GrammarBatch, GuidanceClient, RemoteGrammar
from guidance_client.errors import GuidanceClientError, RemoteError, VocabularyMismatch
from guidance_client.serving import Alignment, ServingConfig, model_vocabulary
from guidance_client.torch_masks import allow_only, apply_masks

if TYPE_CHECKING:
    from vllm.config import VllmConfig

__all__ = ["EXTRA_ARGS_KEY", "GuidanceLogitsProcessor", "constraint_of"]

log = logging.getLogger(__name__)

EXTRA_ARGS_KEY = "guidance"
"""The key of ``SamplingParams.extra_args`` (``vllm_xargs`` over HTTP) holding a compile body."""


def constraint_of(params: SamplingParams) -> dict[str, Any] | None:
    """The compile body in ``params.extra_args[EXTRA_ARGS_KEY]``, or None if the request has none.

    Raises:
        ValueError: the value is not a compile body (a dict, or its JSON text, with exactly one kind
            of :data:`guidance_client.specs.KINDS` and only the fields of ``POST /compile``,
            ``reasoning`` included).
    """
    value = (params.extra_args or {}).get(EXTRA_ARGS_KEY)
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as e:
            raise ValueError(f"extra_args[{EXTRA_ARGS_KEY!r}] is not JSON: {e}") from e
    if not isinstance(value, Mapping):
        raise ValueError(
            f"extra_args[{EXTRA_ARGS_KEY!r}] must be a POST /compile body (an object), not {type(value).__name__}"
        )
    try:
        return protocol.program_spec(**value)
    except TypeError as e:  # a field program_spec does not take
        raise ValueError(f"extra_args[{EXTRA_ARGS_KEY!r}]: {e}") from e
    except ValueError as e:
        raise ValueError(f"extra_args[{EXTRA_ARGS_KEY!r}]: {e}") from e


@dataclass(eq=False)
class _Row:
    """One constrained request of the batch."""

    spec: dict[str, Any]
    output: list[int]  # vLLM's live list of the request's output tokens
    stops: tuple[int, ...]  # the request's stop tokens: all a failed row may emit
    grammar: RemoteGrammar | None = None
    sent: int = 0  # output tokens the session has
    failed: str | None = None
    tokens: list[int] = field(default_factory=list)  # this step's new tokens

    def fail(self, reason: str) -> None:
        if self.failed is None:
            self.failed = reason
            log.error("guidance constraint abandoned, the request may only stop now: %s", reason)


class _Step:
    """One step's masks: ``masks[k]`` is the packed mask of batch row ``rows[k]``."""

    def __init__(self, rows: list[int], entries: list[_Row]) -> None:
        self.rows = rows
        self.entries = entries
        self.masks: NDArray[np.int32] = np.zeros((0, 0), dtype=np.int32)


class GuidanceLogitsProcessor(LogitsProcessor):
    """Constrains the requests that carry a ``guidance`` compile body in their extra args.

    Args:
        vllm_config: the engine's configuration.
        device: where the logits live.
        is_pin_memory: unused (the masks are small).
    """

    _validator: GuidanceClient | None = None  # the API server process's client (validation)

    def __init__(self, vllm_config: VllmConfig, device: torch.device, is_pin_memory: bool) -> None:
        self.device = device
        self.config = ServingConfig.load()
        self.client = self.config.client()
        self.vocab_size = _model_vocab_size(vllm_config)
        model_config = vllm_config.model_config
        tokenizer = _engine_tokenizer(model_config)
        ends = _generation_end_tokens(model_config)
        if tokenizer is not None and tokenizer.eos_token_id is not None:
            ends.append(int(tokenizer.eos_token_id))  # vLLM stops on both
        try:
            vocabulary = model_vocabulary(tokenizer, self.vocab_size, ends)
            self.alignment = Alignment(self.client, vocabulary, self.config.tokenizer)  # a mismatch raises here
        except BaseException:
            self.client.close()
            raise
        self.rows: dict[int, _Row] = {}
        self._closing: list[RemoteGrammar] = []
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="guidance-vllm")
        self._step: _Step | None = None
        self._sent: Future[_Step] | None = None

    @classmethod
    def validate_params(cls, sampling_params: SamplingParams) -> None:
        """Refuse a request whose constraint is malformed or does not compile.

        Runs in vLLM's API server process when the request arrives: the body is checked here, then
        compiled by the server against ``GUIDANCE_CLIENT_TOKENIZER`` (or the server's default): a
        constraint's syntax does not depend on the vocabulary. The worker compiles it again against
        the model's aligned tokenizer (the same program, a cache hit, when that variable names it).
        A ``ValueError`` becomes vLLM's HTTP 400, with the server's problem detail in its message.
        """
        spec = constraint_of(sampling_params)
        if spec is None:
            return
        config = ServingConfig.load()
        if cls._validator is None:
            cls._validator = config.client()
        try:
            cls._validator.compile_spec(config.spec(spec))
        except RemoteError as e:
            raise ValueError(f"guidance constraint refused by the server ({e.status} {e.code}): {e.detail}") from e
        except GuidanceClientError as e:
            raise ValueError(f"guidance constraint server at {config.url} unreachable: {e}") from e

    def is_argmax_invariant(self) -> bool:
        """False: masking changes which token is the most likely."""
        return False

    # -- the batch

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        """Follow the batch's changes, then send the step (before the forward pass when possible)."""
        self._finish()  # a step apply() never took (a step without sampling) is dropped
        if batch_update is not None:
            for index in batch_update.removed:
                self._drop(index)
            for index, params, _prompt, output in batch_update.added:
                self._drop(index)  # an added request may take the place of another
                self._add(index, params, output)
            for a, b, direction in batch_update.moved:
                self._move(a, b, direction is MoveDirectionality.SWAP)
        if not self.rows and not self._closing:
            return
        order = sorted(self.rows)
        step = _Step(order, [self.rows[i] for i in order])
        self._step = step
        if not any(-1 in row.output[row.sent :] for row in step.entries):
            self._sent = self._pool.submit(self._run, step, self._take_closing())

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        """Set the logits the constraints forbid to ``-inf`` (in place)."""
        step = self._step
        if step is None:
            return logits
        if self._sent is None:  # async scheduling: the last tokens are known only now
            self._sent = self._pool.submit(self._run, step, self._take_closing())
        self._step, sent, self._sent = None, self._sent, None
        step = sent.result()
        if step.rows:
            apply_masks(logits, step.rows, step.masks)
        return logits

    def close(self) -> None:
        """Close the sessions and stop the background sender."""
        self._finish()
        self._closing.extend(row.grammar for row in self.rows.values() if row.grammar is not None)
        self.rows.clear()
        self._pool.submit(self._close_all, self._take_closing()).result()
        self._pool.shutdown(wait=True)
        self.client.close()

    def _finish(self) -> None:
        if self._sent is not None:
            self._sent.result()
        self._step = self._sent = None

    def _add(self, index: int, params: SamplingParams, output: list[int]) -> None:
        try:
            spec = constraint_of(params)
        except ValueError as e:  # validate_params refused it already, unless it was skipped
            spec = {}
            reason: str | None = str(e)
        else:
            reason = None
        if spec is None:
            return
        row = _Row(spec, output, tuple(sorted(params.all_stop_token_ids)))
        if reason is not None:
            row.fail(reason)
        self.rows[index] = row

    def _drop(self, index: int) -> None:
        row = self.rows.pop(index, None)
        if row is not None and row.grammar is not None:
            self._closing.append(row.grammar)

    def _move(self, a: int, b: int, swap: bool) -> None:
        ra, rb = self.rows.pop(a, None), self.rows.pop(b, None)
        if ra is not None:
            self.rows[b] = ra
        if swap and rb is not None:
            self.rows[a] = rb
        elif not swap and rb is not None and rb.grammar is not None:
            self._closing.append(rb.grammar)  # overwritten by the move

    def _take_closing(self) -> list[RemoteGrammar]:
        closing, self._closing = self._closing, []
        return closing

    # -- the background thread

    def _run(self, step: _Step, closing: list[RemoteGrammar]) -> _Step:
        """Close, open, then step every row; fill ``step.masks``. Never raises for a row's failure."""
        self._close_all(closing)
        for row in step.entries:
            if row.grammar is None and row.failed is None:
                self._open(row)
        live: list[_Row] = []
        for row in step.entries:
            if row.failed is None:
                assert row.grammar is not None
                known = row.output[:]  # a snapshot: vLLM appends to the live list
                if -1 in known[row.sent :]:
                    row.fail(_UNFILLED)
                    continue
                if row.sent > len(known):  # tokens vLLM discarded (a failed KV load): undo them
                    try:
                        row.grammar.rollback(row.sent - len(known))
                    except GuidanceClientError as e:
                        row.fail(f"rolling back {row.sent - len(known)} discarded tokens: {e}")
                        continue
                    row.sent = len(known)
                row.tokens = known[row.sent :]
                live.append(row)
        words = max((r.grammar.mask_words for r in live if r.grammar is not None), default=0)
        words = max(words, -(-self.vocab_size // 32))
        masks = np.zeros((len(step.entries), words), dtype=np.int32)
        if live:
            self._step_rows(live, masks, [step.entries.index(r) for r in live])
        for k, row in enumerate(step.entries):
            if row.failed is not None:
                allow_only(masks[k], row.stops)
        step.masks = masks
        return step

    def _open(self, row: _Row) -> None:
        try:
            row.spec = self.alignment.spec(row.spec)
            row.grammar = RemoteGrammar.open(self.client, row.spec)
        except VocabularyMismatch as e:
            row.fail(str(e))
        except GuidanceClientError as e:
            row.fail(f"compiling {row.spec}: {e}")

    def _step_rows(self, live: list[_Row], masks: NDArray[np.int32], at: list[int]) -> None:
        grammars = [r.grammar for r in live if r.grammar is not None]
        block = np.zeros((len(live), masks.shape[1]), dtype=np.int32)
        try:
            statuses = GrammarBatch(self.client, grammars, forced_tokens=False).step([r.tokens for r in live], block)
        except (GuidanceClientError, ValueError) as e:
            for row in live:
                row.fail(f"step failed: {e}")
            return
        for row, status in zip(live, statuses):
            if status.status == "ok":
                row.sent += len(row.tokens)
            elif status.status == "rejected":
                row.fail(f"the constraint refused token {row.tokens[status.index or 0]} of {row.tokens}")
            else:
                row.fail(f"session error: {status.error}")
        masks[at] = block

    def _close_all(self, grammars: Sequence[RemoteGrammar]) -> None:
        for grammar in grammars:
            try:
                grammar.close()
            except GuidanceClientError as e:  # the server drops idle sessions anyway
                log.warning("closing guidance session %s: %s", grammar.session_id, e)


_UNFILLED = (
    "vLLM did not fill in the tokens sampled at the last step (async scheduling, with the processor "
    "loaded from its entry point only: vLLM tracks output tokens for the processors it is given by "
    "name). Start vLLM with --logits-processors guidance_client.vllm:GuidanceLogitsProcessor, or with "
    "--no-async-scheduling"
)


def _model_vocab_size(vllm_config: Any) -> int:
    model_config = getattr(vllm_config, "model_config", None)
    if model_config is None:
        raise ValueError("guidance_client.vllm needs vllm_config.model_config (the model's vocabulary size)")
    return int(model_config.get_vocab_size())


def _engine_tokenizer(model_config: Any) -> Any:
    """The tokenizer vLLM uses for this model (None with ``skip_tokenizer_init``)."""
    if getattr(model_config, "skip_tokenizer_init", False):
        return None
    from vllm.tokenizers import cached_tokenizer_from_config

    return cached_tokenizer_from_config(model_config)


def _generation_end_tokens(model_config: Any) -> list[int]:
    """The generation config's ``eos_token_id`` (an id or a list), which vLLM adds to each request's stops."""
    value = model_config.try_get_generation_config().get("eos_token_id")
    if value is None:
        return []
    return [int(value)] if isinstance(value, int) else [int(v) for v in value]
