"""Hugging Face transformers: a logits processor that takes its masks from the server.

::

    from guidance_client import GuidanceClient
    from guidance_client.transformers import GuidanceLogitsProcessor
    from transformers import LogitsProcessorList, StoppingCriteriaList

    specs = [{"json_schema": schema}, {"regex": "[0-9]{3}"}]          # one compile body per row
    with GuidanceClient("http://127.0.0.1:8000") as client, \
            GuidanceLogitsProcessor(client, specs, tokenizer=tokenizer, model=model, pipelined=True) as processor:
        out = model.generate(
            **inputs,
            logits_processor=LogitsProcessorList([processor]),
            stopping_criteria=StoppingCriteriaList([processor.stopping_criteria]),
        )
        processor.finish(out)                                          # the final end token
        processor.grammars[0].get_variable_values()

One ``POST /step`` per generation step carries the whole batch: each unfinished row's new token
and its next mask. A row is finished once its constraint has accepted one of its end tokens; its
later (padding) tokens are not sent and its logits are left alone.

**Alignment.** With ``tokenizer=`` (the model's own) the processor registers that tokenizer with
the server by content, compiles every spec against it (a spec naming another server tokenizer is
checked against the model instead), and has the server compare the model's side with it before
the first forward pass: the logits width (from ``model``; without it, from the first logits, before
any mask is applied), the end tokens (``model.generation_config``'s, or ``generation_config=``'s,
else the tokenizer's EOS), and a sample of token bytes. Anything that differs raises
:class:`~guidance_client.errors.VocabularyMismatch`. Without ``tokenizer=`` the specs compile
against the tokenizers they name (the server's default otherwise), and only what the processor
knows is checked: the logits width (from ``model``, else the first logits), and the end tokens
when ``model`` or ``generation_config`` is given; not the tokens themselves.

**Pipelined.** transformers calls its stopping criteria right after the new tokens are appended
and before the next forward pass. With ``pipelined=True`` that is where the step is sent (from a
background thread), so the round trip overlaps the forward pass and the processor only waits for
the answer. The first masks, which need no token, are asked for as soon as the processor is made,
overlapping the prompt's forward pass. Pass ``processor.stopping_criteria`` to ``generate``;
without it the processor steps synchronously after the first step, with the same result.

**Sessions.** Each row holds a server session until :meth:`~GuidanceLogitsProcessor.finish` or
:meth:`~GuidanceLogitsProcessor.close`; use the processor as a context manager so that a
``generate`` call that raises does not leave them open until the server's idle TTL.

**Not supported** (a ``ValueError`` says so): beam search and anything else that reorders rows
between steps (each row's history is checked against what the server was sent), a batch whose
size is not ``len(specs)``, and reusing one processor for a second ``generate`` call.

torch is imported with this module; :mod:`guidance_client` itself never imports it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from guidance_client._sync.client import GrammarBatch, GuidanceClient, RemoteGrammar
from guidance_client.aligned import Aligned, check_tokenizers
from guidance_client.errors import GuidanceClientError
from guidance_client.logits import MaskPlan
from guidance_client.protocol import StepStatus
from guidance_client.vocabulary import ModelVocabulary, hf_vocabulary
from guidance_client.wire import MaskEncoding

__all__ = ["GuidanceLogitsProcessor", "StepSender", "apply_plan"]


def apply_plan(scores: torch.Tensor, plan: MaskPlan) -> torch.Tensor:
    """Set the disallowed logits of ``scores`` (``[batch, vocab]``, in place) to ``-inf``."""
    device = scores.device
    if plan.sparse_rows.size:
        rows = torch.from_numpy(plan.keep_rows).to(device, non_blocking=True)
        ids = torch.from_numpy(plan.keep_ids).to(device, non_blocking=True)
        keep = scores[rows, ids]
        scores.index_fill_(0, torch.from_numpy(plan.sparse_rows).to(device, non_blocking=True), float("-inf"))
        scores[rows, ids] = keep
    if plan.dense_rows.size:
        disallowed = torch.from_numpy(plan.dense_disallowed).to(device, non_blocking=True)
        n = scores.shape[0]
        if plan.dense_rows.size == n and np.array_equal(plan.dense_rows, np.arange(n)):
            scores.masked_fill_(disallowed, float("-inf"))
        else:
            for k, row in enumerate(plan.dense_rows.tolist()):  # in place, row by row: no copies
                scores[row].masked_fill_(disallowed[k], float("-inf"))
    return scores


class GuidanceLogitsProcessor:
    """A ``transformers`` logits processor constraining each batch row with a server program.

    Args:
        client: the client of the server.
        specs: one ``POST /compile`` body per batch row (a dict, as the HTTP API takes it, e.g.
            ``{"regex": "[0-9]+"}`` or ``{"template": ..., "tokenizer": "mine"}``).
        tokenizer: the model's own tokenizer (a fast ``transformers`` tokenizer): registered with
            the server by content, the specs compile against it, and the model is checked
            against it before the first forward pass (see the module's "Alignment").
        model: the model ``generate`` runs: its logits width and its ``generation_config``'s end
            tokens are checked at once (without it, the width is checked at the first logits).
        generation_config: the end tokens' source when no ``model`` is given (a
            ``GenerationConfig``, or a dict with ``eos_token_id``).
        pipelined: send each step from the stopping-criteria hook (:attr:`stopping_criteria`),
            overlapping the next forward pass.
        mask_encoding: how masks travel (``"dense"``, or ``"blocks"`` for slow links).

    Attributes:
        grammars: row ``i``'s grammar (``get_variable_values()``, ``is_terminated()``).
        aligned: the alignment with the model's tokenizer (None without ``tokenizer=``).
        eos_token_ids: row ``i``'s end tokens (any of them ends its constraint).
        ended_on: the end token that ended row ``i``'s constraint, as the server says (None while
            it runs).
        stopping_criteria: the hook to pass to ``generate`` (it ends a row on any of its end
            tokens; in pipelined mode it also sends the step).
        steps: ``/step`` calls made so far.
        apply_seconds: time spent applying masks to logits (``applies`` times), for measurements.

    Raises:
        VocabularyMismatch: the model's vocabulary is not the server tokenizer's (at construction,
            or at the first call when the logits width was not known before).
    """

    supports_continuous_batching = False  # one processor per generate call: rows must stay put

    def __init__(
        self,
        client: GuidanceClient,
        specs: Sequence[Mapping[str, Any]],
        *,
        tokenizer: Any = None,
        model: Any = None,
        generation_config: Any = None,
        pipelined: bool = False,
        mask_encoding: MaskEncoding = "dense",
    ) -> None:
        if not specs:
            raise ValueError("give one compile body per batch row")
        self.client = client
        width = _logits_width(model) if model is not None else None
        if generation_config is None and model is not None:
            generation_config = getattr(model, "generation_config", None)
        self.aligned: Aligned | None = None
        self.eos_token_ids: list[frozenset[int]]
        if tokenizer is not None:
            self.aligned = Aligned(client, _vocabulary(tokenizer, generation_config, width))
            specs = [self.aligned.spec(spec) for spec in specs]  # every tokenizer has the model's end tokens
            self.eos_token_ids = [frozenset(self.aligned.eos_token_ids)] * len(specs)
        else:
            model_ends = _end_tokens(generation_config) if generation_config is not None else None
            rows = [str(spec.get("tokenizer") or "default") for spec in specs]
            if width is not None or model_ends is not None:
                check_tokenizers(client, rows, vocab_size=width, eos_token_ids=model_ends)
            ends = {t["tokenizer"]: frozenset(t["eos_token_ids"]) for t in client.tokenizers()}
            self.eos_token_ids = [ends.get(name, frozenset()) for name in rows]
        self._width_checked = width is not None
        self.ended_on: list[int | None] = [None] * len(specs)
        self.grammars: list[RemoteGrammar] = []
        try:
            for spec in specs:
                self.grammars.append(RemoteGrammar.open(client, spec))
            words = {g.mask_words for g in self.grammars}
            if len(words) != 1:
                raise ValueError("every row's program must use the same vocabulary")
        except BaseException:  # the rows opened so far are not left to the server's idle TTL
            for g in self.grammars:
                g.close()
            raise
        self.pipelined = pipelined
        self.mask_encoding: MaskEncoding = mask_encoding
        self.stopping_criteria = StepSender(self)
        self.steps = 0
        self.apply_seconds = 0.0
        self.applies = 0
        self._bitmask = np.zeros((len(specs), words.pop()), dtype=np.int32)
        self._sent_len: int | None = None  # sequence length whose tokens the server has
        self._last: NDArray[np.int64] | None = None  # each row's last token sent
        self._rows: list[int] = []  # the rows of the step in flight (or done), in bitmask order
        self._pending: Future[list[StepStatus]] | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._finished = False
        self._closed = False
        if pipelined:  # the first masks need no token: ask now, behind the prompt's forward pass
            self._rows = list(range(len(specs)))
            self._pending = self._background(self._batch(self._rows).step, [[] for _ in specs], self._bitmask)
            self.steps += 1

    def __enter__(self) -> GuidanceLogitsProcessor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def vocab_size(self) -> int:
        """The programs' vocabulary size."""
        return self.grammars[0].vocab_size

    # -- the generation loop

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """Mask ``scores`` (``[batch, vocab]``) for the next token of every unfinished row."""
        if not self._width_checked:  # before any mask is applied
            self._check_width(int(scores.shape[-1]))
        if self._sent_len is None and self._pending is not None:
            self._adopt_first_step(input_ids)
        elif self._pending is None or self._sent_len != input_ids.shape[1]:
            self._wait()  # a step sent at another length (not in generate's loop) is finished first
            self._send(input_ids, background=False)
        statuses = self._wait()
        rows = self._rows
        if not rows:
            return scores
        self._check(statuses, rows)
        start = time.perf_counter()
        plan = MaskPlan.build(self._bitmask[: len(rows)], self.vocab_size, scores.shape[-1], np.asarray(rows))
        if plan.empty_rows.size:
            i = rows[int(plan.empty_rows[0])]
            raise GuidanceClientError(f"row {i}: the constraint allows no token (session error?)")
        apply_plan(scores, plan)
        self.apply_seconds += time.perf_counter() - start
        self.applies += 1
        return scores

    def finish(self, sequences: torch.Tensor) -> None:
        """Accept what ``generate`` appended after the last call (the final end token), with variables.

        Args:
            sequences: the tensor ``generate`` returned (``[batch, length]``; ``.sequences`` of a
                ``GenerateOutput``).
        """
        self._wait()
        if self._sent_len is None:
            raise ValueError("finish() before the processor was called")
        self._check_history(sequences)
        self._finished = True
        tails = [[] if g.is_terminated() else self._row_tail(sequences, i) for i, g in enumerate(self.grammars)]
        batch = GrammarBatch(self.client, self.grammars, variables=True, forced_tokens=False)
        statuses = batch.step(tails)
        self.steps += 1
        self._check(statuses, list(range(len(self.grammars))))
        self._sent_len = sequences.shape[1]
        self.close()

    def close(self) -> None:
        """Stop the background sender and close every row's server session (idempotent)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self._closed:
            return
        self._finished = self._closed = True
        for g in self.grammars:
            g.close()

    # -- internals

    def _check_width(self, width: int) -> None:
        if self.aligned is not None:
            self.aligned.check_width(width)
        else:
            names = {g.spec.get("tokenizer") or "default" for g in self.grammars}
            check_tokenizers(self.client, names, vocab_size=width)
        self._width_checked = True

    def _row_tail(self, sequences: torch.Tensor, i: int) -> list[int]:
        assert self._sent_len is not None
        tail: list[int] = sequences[i, self._sent_len :].tolist()
        # Padding after a row's end token: generate pads finished rows; the end token ends the constraint.
        return tail

    def _check_history(self, input_ids: torch.Tensor) -> None:
        if input_ids.shape[0] != len(self.grammars):
            raise ValueError(
                f"a batch of {input_ids.shape[0]} rows for {len(self.grammars)} specs: give one spec per row "
                "(num_return_sequences multiplies the rows; beam search is not supported)"
            )
        if self._finished:
            raise ValueError("this processor has finished: use a new one for each generate call")
        if self._last is not None and self._sent_len is not None:
            if input_ids.shape[1] < self._sent_len:
                raise ValueError("the sequences are shorter than what was sent: one processor per generate call")
            last = input_ids[:, self._sent_len - 1].cpu().numpy()
            if not np.array_equal(last, self._last):
                raise ValueError(
                    "rows were reordered or rewritten between steps (beam search, or another generate "
                    "call): not supported"
                )

    def _send(self, input_ids: torch.Tensor, background: bool) -> None:
        """Send the tokens appended since the last step (all of them at the first) and ask for masks."""
        self._check_history(input_ids)
        length = int(input_ids.shape[1])
        first = self._sent_len is None
        new = None if first else input_ids[:, self._sent_len : length].cpu().numpy()
        rows = [i for i, g in enumerate(self.grammars) if not g.is_terminated()]
        tokens = [[] if new is None else new[i].tolist() for i in rows]
        self._rows = rows
        self._sent_len = length
        self._last = input_ids[:, length - 1].cpu().numpy()
        batch = self._batch(rows)
        self.steps += 1
        if background:
            self._pending = self._background(batch.step, tokens, self._bitmask)
        else:
            done: Future[list[StepStatus]] = Future()
            try:
                done.set_result(batch.step(tokens, self._bitmask))
            except BaseException as e:  # surfaces from _wait, as a background step's would
                done.set_exception(e)
            self._pending = done

    def _adopt_first_step(self, input_ids: torch.Tensor) -> None:
        """Take the first step, sent when the processor was made, as the step for ``input_ids``."""
        self._check_history(input_ids)
        self._sent_len = int(input_ids.shape[1])
        self._last = input_ids[:, -1].cpu().numpy()

    def _batch(self, rows: Sequence[int]) -> GrammarBatch:
        grammars = [self.grammars[i] for i in rows]
        return GrammarBatch(self.client, grammars, mask_encoding=self.mask_encoding, forced_tokens=False)

    def _background(self, fn: Any, *args: Any) -> Future[list[StepStatus]]:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="guidance-step")
        future: Future[list[StepStatus]] = self._pool.submit(fn, *args)
        return future

    def _wait(self) -> list[StepStatus]:
        if self._pending is None:
            return []
        pending, self._pending = self._pending, None
        return pending.result()

    def _check(self, statuses: Sequence[StepStatus], rows: Sequence[int]) -> None:
        for i, st in zip(rows, statuses):
            if st.eos_token_id is not None:
                self.ended_on[i] = st.eos_token_id
            if st.status == "rejected":
                raise GuidanceClientError(
                    f"row {i}: token {st.index} of the step was refused by the constraint (was the row "
                    "stopped, or its logits changed after this processor?)"
                )
            if st.status == "error":
                detail = (st.error or {}).get("detail", "")
                raise GuidanceClientError(f"row {i}: the server could not step this row: {detail}")


class StepSender:
    """The stopping criterion of a :class:`GuidanceLogitsProcessor`.

    It ends a row whose last token is one of its end tokens (any of the set ends the constraint,
    whatever ``generate``'s own end tokens are), and in pipelined mode sends the step early.
    """

    def __init__(self, processor: GuidanceLogitsProcessor) -> None:
        self.processor = processor

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        p = self.processor
        if p.pipelined and p._pending is None and p._sent_len is not None and not p._finished:
            p._send(input_ids, background=True)
        last = input_ids[:, -1].tolist()
        done = [t in ends for t, ends in zip(last, p.eos_token_ids)]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


def _vocabulary(tokenizer: Any, generation_config: Any, width: int | None) -> ModelVocabulary:
    ends = _end_tokens(generation_config) if generation_config is not None else None
    return hf_vocabulary(tokenizer, eos_token_ids=ends, vocab_size=width)


def _end_tokens(generation_config: Any) -> list[int] | None:
    """The end tokens of a ``GenerationConfig`` (or a dict): its ``eos_token_id``, an int or a list."""
    if isinstance(generation_config, Mapping):
        value = generation_config.get("eos_token_id")
    else:
        value = getattr(generation_config, "eos_token_id", None)
    if value is None:
        return None
    return [int(value)] if isinstance(value, int) else [int(v) for v in value]


def _logits_width(model: Any) -> int:
    """The width of ``model``'s logits: its output embedding's rows, else its config's ``vocab_size``."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    weight = getattr(head, "weight", None)
    if weight is not None:
        return int(weight.shape[0])
    return int(model.config.vocab_size)
