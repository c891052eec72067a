"""The adapters' side of an alignment: which server tokenizer each spec compiles against, checked first.

An adapter holds one :class:`Aligned` per model: made from the model's own vocabulary
(:class:`~guidance_client.vocabulary.ModelVocabulary`), it registers the model's tokenizer by
content (or takes the server tokenizer the worker names) and has the server check it. A spec that
names no tokenizer then compiles against that one; a spec naming another tokenizer is checked
against the model before it is compiled; the logits width, when known only at the first logits,
is checked then, before any mask is applied. Every refusal is a
:class:`~guidance_client.errors.VocabularyMismatch` listing what differs.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from guidance_client._sync.client import GuidanceClient
from guidance_client.alignment import verdict
from guidance_client.vocabulary import ModelVocabulary

__all__ = ["Aligned", "check_tokenizers"]


class Aligned:
    """A model aligned with the server's tokenizers.

    Args:
        client: the client of the server.
        vocabulary: the model's vocabulary.
        tokenizer: a server tokenizer to align with instead of registering the model's own.

    Attributes:
        tokenizer: the server tokenizer the model's specs compile against by default.
        vocabulary: the model's vocabulary.
        eos_token_ids: the model's end tokens (the same set as every aligned tokenizer's).

    Raises:
        VocabularyMismatch: the model and the tokenizer differ (the message lists how).
    """

    def __init__(self, client: GuidanceClient, vocabulary: ModelVocabulary, tokenizer: str | None = None) -> None:
        self.client = client
        self.vocabulary = vocabulary
        self.tokenizer = client.align_vocabulary(vocabulary, tokenizer=tokenizer)
        self.eos_token_ids = vocabulary.eos_token_ids
        self._checked = {self.tokenizer}
        self._lock = threading.Lock()

    @property
    def tokenizers(self) -> list[str]:
        """Every server tokenizer the model was checked against."""
        with self._lock:
            return sorted(self._checked)

    def spec(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        """``spec`` (a compile body) set to compile against a tokenizer the model is aligned with.

        A spec naming no tokenizer gets :attr:`tokenizer`; one naming another is checked against
        the model first (once per name).

        Raises:
            VocabularyMismatch: the spec's tokenizer is not the model's vocabulary.
        """
        out = dict(spec)
        name = out.get("tokenizer")
        if name is None:
            out["tokenizer"] = self.tokenizer
            return out
        with self._lock:
            known = name in self._checked
        if not known:
            self.client.align_vocabulary(self.vocabulary, tokenizer=str(name))
            with self._lock:
                self._checked.add(str(name))
        return out

    def check_width(self, width: int) -> None:
        """Check logits ``width`` wide against every tokenizer the model was aligned with.

        Raises:
            VocabularyMismatch: narrower than a tokenizer's vocabulary.
        """
        check_tokenizers(self.client, self.tokenizers, vocab_size=width)


def check_tokenizers(
    client: GuidanceClient,
    names: Iterable[str],
    *,
    vocab_size: int | None = None,
    eos_token_ids: Sequence[int] | None = None,
) -> None:
    """Have the server check a model's logits width and end tokens against each named tokenizer.

    What a worker can check without its model's tokenizer at hand: no token's bytes.

    Raises:
        VocabularyMismatch: a tokenizer differs (the message lists how).
    """
    for name in sorted(set(names)):
        verdict(client.check_vocabulary(name, vocab_size=vocab_size, eos_token_ids=eos_token_ids))
