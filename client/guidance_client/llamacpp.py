"""llama.cpp (llama-cpp-python): a logits processor that takes its masks from the server.

::

    from guidance_client import GuidanceClient
    from guidance_client.llamacpp import GuidanceLogitsProcessor
    from llama_cpp import Llama, LogitsProcessorList

    llm = Llama("model.gguf")
    with GuidanceClient("http://127.0.0.1:8000") as client:
        processor = GuidanceLogitsProcessor(client, {"regex": "[0-9]{3}"}, llama=llm)
        completion = llm.create_completion(prompt, logits_processor=LogitsProcessorList([processor]))
        processor.finish(completion)                  # the end token: the grammar is terminated
        processor.grammar.get_variable_values()

llama-cpp-python samples one sequence per call, and calls the processor once per token with every
token evaluated so far (the prompt, then the prompt and the tokens sampled). Each call sends the
new token and gets the next mask in one ``POST /step``.

**Alignment.** The processor aligns from the ``Llama`` itself, before any mask: its vocabulary is
registered with the server by content (a vocab-only GGUF written from the model file's
``tokenizer.ggml.*`` metadata, a few MB; the weights never leave the worker), the spec compiles
against it, and the server compares the model's side with it: ``n_vocab()`` (the logits width),
the end tokens (llama.cpp's EOS, EOT and, where the binding has it, EOM) and a sample of token
bytes (llama.cpp's own pieces, control tokens by name). A spec naming a server tokenizer is
checked against the model instead. A difference raises
:class:`~guidance_client.errors.VocabularyMismatch`. The model's side is computed once per
``Llama`` and kept.

llama.cpp never evaluates the token that ends a completion, so the processor does not see it. So
that :meth:`GuidanceLogitsProcessor.finish` knows which end token the completion stopped on, a
mask allowing several end tokens keeps the model's most likely one of them only (greedy decoding
is unchanged; sampling ends with the probability of that one token). ``finish`` accepts it when
the completion stopped on it. A completion cut by ``max_tokens`` ends inside the constraint (its
last token is not sent; the grammar is not terminated). Stop sequences cut the text outside the
constraint's knowledge: leave ``stop`` empty. No pipelining: llama-cpp-python's stopping criteria
run before the sampled token is evaluated and cannot see it.

numpy only: this module does not import llama_cpp (the vocabulary's builder does, when it runs).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from guidance_client._sync.client import GrammarBatch, GuidanceClient, RemoteGrammar
from guidance_client.aligned import Aligned
from guidance_client.errors import GuidanceClientError, VocabularyMismatch
from guidance_client.logits import MaskPlan, apply_numpy
from guidance_client.vocabulary import ModelVocabulary
from guidance_client.wire import MaskEncoding

__all__ = ["GuidanceLogitsProcessor", "llama_vocabulary"]

_VOCABULARIES: weakref.WeakKeyDictionary[Any, ModelVocabulary] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def llama_vocabulary(llm: Any) -> ModelVocabulary:
    """The vocabulary of a ``Llama`` (:meth:`ModelVocabulary.from_llama`), computed once per model."""
    with _LOCK:
        vocabulary = _VOCABULARIES.get(llm)
        if vocabulary is None:
            vocabulary = _VOCABULARIES[llm] = ModelVocabulary.from_llama(llm)
        return vocabulary


class GuidanceLogitsProcessor:
    """A llama-cpp-python logits processor constraining one completion with a server program.

    Args:
        client: the client of the server.
        spec: the ``POST /compile`` body (a dict); its ``tokenizer``, if any, is checked against
            the model, else the model's own vocabulary is registered and used.
        llama: the ``Llama`` that runs the completion: what the processor aligns with.
        mask_encoding: how masks travel (``"dense"``, or ``"blocks"`` for slow links).

    Attributes:
        grammar: the completion's grammar (``get_variable_values()``, ``is_terminated()``).
        aligned: the alignment with the model (``aligned.tokenizer``: the server tokenizer).
        eos_token_ids: the model's end tokens (any of them ends the constraint).
        eos_token_id: the end token the completion stopped on, once :meth:`finish` accepted it.
        steps: ``/step`` calls made so far.

    Raises:
        VocabularyMismatch: the model's vocabulary is not the server tokenizer's.
    """

    def __init__(
        self, client: GuidanceClient, spec: Mapping[str, Any], *, llama: Any, mask_encoding: MaskEncoding = "dense"
    ) -> None:
        self.client = client
        self.aligned = Aligned(client, llama_vocabulary(llama), spec.get("tokenizer"))
        self.vocab_size = self.aligned.vocabulary.vocab_size
        self.eos_token_ids = self.aligned.eos_token_ids
        self.eos_token_id: int | None = None
        self.grammar = RemoteGrammar.open(client, self.aligned.spec(spec))
        self._batch = GrammarBatch(client, [self.grammar], mask_encoding=mask_encoding, forced_tokens=False)
        self._bitmask = np.zeros((1, self.grammar.mask_words), dtype=np.int32)
        self._sent: int | None = None  # tokens evaluated so far that the server has (prompt included)
        self._last = -1
        self._end: int | None = None  # the one end token the last mask left allowed
        self.steps = 0

    def __call__(self, input_ids: NDArray[np.intc], scores: NDArray[np.float32]) -> NDArray[np.float32]:
        """Mask ``scores`` (one row, the vocabulary) for the next token after ``input_ids``."""
        if self.vocab_size is not None and scores.shape[-1] != self.vocab_size:
            raise VocabularyMismatch(
                self.aligned.tokenizer,
                [f"vocabulary size: the logits have {scores.shape[-1]} ids, the model {self.vocab_size}"],
            )
        n = int(input_ids.shape[0])
        if self._sent is None:
            tokens: list[int] = []
        else:
            if n < self._sent or (self._sent and int(input_ids[self._sent - 1]) != self._last):
                raise ValueError("the tokens changed between calls: use a new processor for each completion")
            tokens = input_ids[self._sent : n].tolist()
        if self.grammar.is_terminated():
            raise GuidanceClientError("the constraint has ended (an end token accepted) but llama.cpp asked for more")
        (status,) = self._batch.step([tokens], self._bitmask)
        self.steps += 1
        if status.status != "ok":
            detail = f"{status.status} {status.error or ''}"
            raise GuidanceClientError(f"the server refused the completion's tokens: {detail}")
        self._sent, self._last = n, int(input_ids[n - 1]) if n else -1
        plan = MaskPlan.build(self._bitmask, self.grammar.vocab_size, scores.shape[-1])
        if plan.empty_rows.size:
            raise GuidanceClientError("the constraint allows no token")
        row = scores.reshape(1, -1)
        apply_numpy(row, plan)
        self._end = _keep_one_end(row[0], self.eos_token_ids)
        return scores

    def finish(self, completion: Mapping[str, Any]) -> None:
        """Take the end of ``completion`` (what ``create_completion`` returned) into the grammar.

        When it stopped on an end token (every other completion token was seen by the
        processor), that token is accepted and the grammar terminates; its variables are then
        final.
        """
        choice = completion["choices"][0]
        used = int(completion["usage"]["completion_tokens"])
        seen = len(self.grammar.tokens)
        if choice["finish_reason"] == "stop" and used == seen and not self.grammar.is_terminated():
            if self._end is None or not self.grammar.accept_tokens([self._end]):
                raise GuidanceClientError("the completion stopped where the constraint does not allow an end token")
            self.eos_token_id = self._end
        else:  # the steps did not ask for variables: read them once
            info = self.client.get(self.grammar.session_id)
            self.grammar._update(info.terminated, info.variables)

    def close(self) -> None:
        """Close the server session."""
        self.grammar.close()


def _keep_one_end(scores: NDArray[np.float32], ends: tuple[int, ...]) -> int | None:
    """Leave at most one end token allowed in ``scores`` (the most likely); it, or None if none is."""
    allowed = [t for t in ends if t < scores.shape[0] and np.isfinite(scores[t])]
    if not allowed:
        return None
    keep = max(allowed, key=lambda t: float(scores[t]))
    for t in allowed:
        if t != keep:
            scores[t] = -np.inf
    return keep
