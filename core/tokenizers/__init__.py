"""Tokenizers: the vocabularies masks are defined against.

A :class:`Tokenizer` pairs an encoder (text -> ids) with the ``llguidance.LLTokenizer`` that the
matchers use, built once per tokenizer and shared. Three sources, one module each:

* the embedded default, Mistral **tekken** (:mod:`~core.tokenizers.tekken`), loaded once per
  process by :func:`load_default_tokenizer`;
* a Hugging Face ``tokenizer.json`` (:mod:`~core.tokenizers.hf`, :meth:`Tokenizer.from_hf_json`),
  parsed and encoded by llguidance itself;
* a small explicit vocabulary with a greedy longest-match encoder
  (:mod:`~core.tokenizers.vocabulary`, :meth:`Tokenizer.from_vocabulary`), for fast unit tests,
  and the validation tokenizers of compile workers (:func:`validation_tokenizer`).

:mod:`~core.tokenizers.load` resolves names and paths (:func:`load_tokenizer`).
"""

from core.tokenizers.hf import BOS_CANDIDATES, EOS_CANDIDATES
from core.tokenizers.load import DEFAULT_TOKENIZER_NAMES, load_default_tokenizer, load_tokenizer
from core.tokenizers.tokenizer import Tokenizer
from core.tokenizers.vocabulary import validation_tokenizer

__all__ = [
    "BOS_CANDIDATES",
    "DEFAULT_TOKENIZER_NAMES",
    "EOS_CANDIDATES",
    "Tokenizer",
    "load_default_tokenizer",
    "load_tokenizer",
    "validation_tokenizer",
]
