"""llama.cpp (llama-cpp-python): a logits processor that takes its masks from the server.

::

    from guidance_client import GuidanceClient
    from guidance_client.llamacpp import GuidanceLogitsProcessor
    from llama_cpp import Llama, LogitsProcessorList

    llm = Llama("model.gguf")
    with GuidanceClient("http://127.0.0.1:8000") as client:
        processor = GuidanceLogitsProcessor(client, {"regex": "[0-9]{3}", "tokenizer": "my-model"})
        completion = llm.create_completion(prompt, logits_processor=LogitsProcessorList([processor]))
        processor.finish(completion)                  # the final EOS: the grammar is terminated
        processor.grammar.get_variable_values()

llama-cpp-python samples one sequence per call, and calls the processor once per token with every
token evaluated so far (the prompt, then the prompt and the tokens sampled). Each call sends the
new token and gets the next mask in one ``POST /step``. The server's tokenizer must be the model's
(upload its ``tokenizer.json`` with ``POST /tokenizers`` and name it in the spec).

llama.cpp never evaluates the token that ends a completion, so the processor does not see it:
:meth:`GuidanceLogitsProcessor.finish` takes the completion and, when it stopped on EOS, accepts
EOS. A completion cut by ``max_tokens`` ends inside the constraint (its last token is not sent;
the grammar is not terminated). Stop sequences cut the text outside the constraint's knowledge:
leave ``stop`` empty. No pipelining: llama-cpp-python's stopping criteria run before the sampled
token is evaluated and cannot see it.

numpy only: this module does not import llama_cpp.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from guidance_client._sync.client import GrammarBatch, GuidanceClient, RemoteGrammar
from guidance_client.errors import GuidanceClientError
from guidance_client.logits import MaskPlan, apply_numpy
from guidance_client.wire import MaskEncoding

__all__ = ["GuidanceLogitsProcessor"]


class GuidanceLogitsProcessor:
    """A llama-cpp-python logits processor constraining one completion with a server program.

    Args:
        client: the client of the server.
        spec: the ``POST /compile`` body (a dict), naming the model's tokenizer as uploaded.
        mask_encoding: how masks travel (``"dense"``, or ``"blocks"`` for slow links).

    Attributes:
        grammar: the completion's grammar (``get_variable_values()``, ``is_terminated()``).
        eos_token_id: EOS of the spec's tokenizer on the server.
        steps: ``/step`` calls made so far.
    """

    def __init__(self, client: GuidanceClient, spec: Mapping[str, Any], *, mask_encoding: MaskEncoding = "dense") -> None:
        self.client = client
        self.grammar = RemoteGrammar.open(client, spec)
        name = spec.get("tokenizer") or "default"
        eos = [t["eos_token_id"] for t in client.tokenizers() if t["tokenizer"] == name]
        if not eos:
            raise ValueError(f"the server has no tokenizer {name!r}")
        self.eos_token_id: int = eos[0]
        self._batch = GrammarBatch(client, [self.grammar], mask_encoding=mask_encoding, forced_tokens=False)
        self._bitmask = np.zeros((1, self.grammar.mask_words), dtype=np.int32)
        self._sent: int | None = None  # tokens evaluated so far that the server has (prompt included)
        self._last = -1
        self.steps = 0

    def __call__(self, input_ids: NDArray[np.intc], scores: NDArray[np.float32]) -> NDArray[np.float32]:
        """Mask ``scores`` (one row, the vocabulary) for the next token after ``input_ids``."""
        n = int(input_ids.shape[0])
        if self._sent is None:
            tokens: list[int] = []
        else:
            if n < self._sent or (self._sent and int(input_ids[self._sent - 1]) != self._last):
                raise ValueError("the tokens changed between calls: use a new processor for each completion")
            tokens = input_ids[self._sent : n].tolist()
        if self.grammar.is_terminated():
            raise GuidanceClientError("the constraint has ended (EOS accepted) but llama.cpp asked for more")
        (status,) = self._batch.step([tokens], self._bitmask)
        self.steps += 1
        if status.status != "ok":
            raise GuidanceClientError(f"the server refused the completion's tokens: {status.status} {status.error or ''}")
        self._sent, self._last = n, int(input_ids[n - 1]) if n else -1
        plan = MaskPlan.build(self._bitmask, self.grammar.vocab_size, scores.shape[-1])
        if plan.empty_rows.size:
            raise GuidanceClientError("the constraint allows no token")
        apply_numpy(scores.reshape(1, -1), plan)
        return scores

    def finish(self, completion: Mapping[str, Any]) -> None:
        """Take the end of ``completion`` (what ``create_completion`` returned) into the grammar.

        When it stopped on EOS (every other completion token was seen by the processor), EOS is
        accepted and the grammar terminates; its variables are then final.
        """
        choice = completion["choices"][0]
        used = int(completion["usage"]["completion_tokens"])
        seen = len(self.grammar.tokens)
        if choice["finish_reason"] == "stop" and used == seen and not self.grammar.is_terminated():
            if not self.grammar.accept_tokens([self.eos_token_id]):
                raise GuidanceClientError("the completion stopped where the constraint does not allow EOS")
        else:  # the steps did not ask for variables: read them once
            info = self.client.get(self.grammar.session_id)
            self.grammar._update(info.terminated, info.variables)

    def close(self) -> None:
        """Close the server session."""
        self.grammar.close()
